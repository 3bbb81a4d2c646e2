"""`build_model`: a backbone with its preprocessing in front and a task head on top."""

import logging
import os

import keras
import numpy as np
from keras.src.models import functional as keras_functional  # private: see BUILD_NOTES, "Private APIs"

from tfft import backbones as backbones_lib
from tfft.errors import did_you_mean
from tfft.freezing import freeze as freeze_fn
from tfft.freezing import get_backbone  # noqa: F401  (part of tfft's API: tfft.get_backbone)
from tfft.info import model_info  # noqa: F401  (imported from here by the rest of tfft)
from tfft.layers import TextPreprocessor

logger = logging.getLogger("tfft")

TASKS = ("multiclass", "binary", "multilabel", "regression")
_IMAGE_POOLING = {"avg": keras.layers.GlobalAveragePooling2D, "max": keras.layers.GlobalMaxPooling2D}
_TEXT_POOLING = ("cls", "mean")


def as_string_array(x):
    """Python lists of strings (and NumPy unicode arrays) become object arrays Keras accepts."""
    if isinstance(x, str):
        return np.array([x], dtype=object)
    if isinstance(x, np.ndarray) and x.dtype.kind == "U":
        return x.astype(object)
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, str) for s in x):
        return np.array(x, dtype=object)
    if isinstance(x, (list, tuple)) and x and all(isinstance(s, (list, tuple, np.ndarray)) for s in x):
        return type(x)(as_string_array(s) for s in x)
    return x


def _as_array(y):
    """Python lists of labels become NumPy arrays (Keras's data adapters take no lists)."""
    return np.asarray(y) if isinstance(y, list) else y


@keras.saving.register_keras_serializable(package="tfft")
class TransferModel(keras.Model):
    """The functional `keras.Model` that `build_model` returns.

    It is a plain functional model (it saves, loads, fits, and nests like one) that also
    remembers what it was built for (`model.tfft_info`: task, number of classes, backbone
    name, modality) and accepts Python lists of strings in `fit` / `evaluate` / `predict`
    for text models.
    """

    def __init__(self, inputs, outputs, name=None, **kwargs):
        info = kwargs.pop("tfft_info", None)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.tfft_info = dict(info or {})

    def get_config(self):
        config = super().get_config()
        config["tfft_info"] = dict(self.tfft_info)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        info = config.pop("tfft_info", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.tfft_info = dict(info or {})
        return model

    def call(self, inputs, training=None, mask=None, **kwargs):
        """The functional graph; a fully frozen backbone runs in inference mode.

        While no weight of the backbone trains (the head phase), it runs with
        `training=False` also in `fit`: dropout and stochastic depth inside it are off and
        its features are those of inference, as the Keras transfer-learning guide's
        `base_model(x, training=False)` intends (Keras 3 would pass `training=True`
        through). So the head phase computes what `tfft.features` caches, and a cached
        head phase trains the same model. Once any backbone weight trains, the backbone
        runs in training mode as usual (BatchNormalization stays frozen by its own
        `trainable=False`, see `tfft.freeze`).
        """
        if training and mask is None and self._backbone_is_frozen():
            backbone = self.get_layer("backbone")
            flat = self._standardize_inputs(inputs)
            outputs = self._run_through_graph(flat, operation_fn=lambda op: keras_functional.operation_fn(
                op, training=op is not backbone, **kwargs))
            return keras_functional.unpack_singleton(outputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def _backbone_is_frozen(self):
        try:
            backbone = self.get_layer("backbone")
        except ValueError:
            return False
        return bool(backbone.weights) and not backbone.trainable_weights

    def fit(self, x=None, y=None, *args, **kwargs):
        return super().fit(as_string_array(x), _as_array(y), *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        return super().evaluate(as_string_array(x), _as_array(y), *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(as_string_array(x), *args, **kwargs)


def draw_head_seed():
    """A seed for a new head from NumPy's global generator (`keras.utils.set_random_seed` seeds it)."""
    return int(np.random.randint(0, 2**31 - 1 - 10_000))


def seed_head(model, seed):
    """Initializes the `head_*` layers from `seed` alone: Dense kernels Glorot-uniform, biases
    zero, Dropout seed states. A head then starts the same whether it was built with its
    backbone (`build_model`) or put on a shared one (`TransferHyperModel`'s head-only trials),
    whatever building the backbone drew from the global generators.

    Example:
    >>> a = build_model("vgg16", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> b = build_model("vgg16", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> seed_head(a, 7); seed_head(b, 7)
    >>> bool(np.array_equal(a.get_layer("head_logits").kernel, b.get_layer("head_logits").kernel))
    True
    """
    heads = [layer for layer in model.layers if layer.name.startswith("head_")]
    for i, layer in enumerate(heads):
        if isinstance(layer, keras.layers.Dense):
            layer.kernel.assign(keras.initializers.GlorotUniform(seed=seed + i)(tuple(layer.kernel.shape)))
            if layer.bias is not None:
                layer.bias.assign(keras.ops.zeros(tuple(layer.bias.shape), dtype=layer.bias.dtype))
        for j, generator in enumerate(getattr(layer, "_seed_generators", ())):
            generator.state.assign(keras.ops.convert_to_tensor([seed + 5_000 + 10 * i + j, 0],
                                                               dtype=generator.state.dtype))


# --------------------------------------------------------------------------------------------
# Resolving the `backbone` argument
# --------------------------------------------------------------------------------------------


def _check_image_shape(input_shape, spec_name, weights):
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels) for image backbone {spec_name!r}, got {shape}."
        )
    if shape[-1] != 3 and weights is not None:
        raise ValueError(
            f"input_shape {shape} has {shape[-1]} channels; pretrained {spec_name} weights need 3 (RGB). "
            "Convert images to RGB (tfft.data does) or use weights=None."
        )
    if min(shape[:2]) < 32:
        raise ValueError(f"input_shape {shape} is too small for {spec_name}: height and width must be >= 32.")
    return shape


def _resolve_image(spec, input_shape, weights):
    shape = _check_image_shape(input_shape or spec.input_shape, spec.name, weights)
    if weights is not None and (warning := backbones_lib.check_input_size(spec, shape)):
        logger.warning(warning)
    backbone = spec.build(input_shape=shape, weights=weights)
    backbone.name = "backbone"
    return backbone, spec.preprocessing(), shape


def _load_keras_file(path):
    """A backbone from a `.keras` file: its `"backbone"` layer if it has one, else the whole model."""
    import zipfile

    if not zipfile.is_zipfile(path):  # Keras says "File not found" for a truncated file
        raise ValueError(f"{path!r} is not a complete .keras file (a .keras file is a zip archive; this one is "
                         "truncated or in another format). Save the model again with model.save(path).")
    model = keras.models.load_model(path, compile=False)
    backbone = get_backbone(model)
    preprocessing = None
    if backbone is not model:
        preprocessing = [
            layer for layer in model.layers if layer.name.startswith("preprocessing")
        ]
    return backbone, preprocessing, model_info(model)


def _text_backbone_from_model(backbone, preprocessor, sequence_length):
    if preprocessor is None:
        raise ValueError(
            "A keras-hub text backbone passed as a keras.Model needs `preprocessor=` (a keras-hub "
            "TextClassifierPreprocessor, e.g. BertTextClassifierPreprocessor(tokenizer, sequence_length=...))."
        )
    if sequence_length is not None:
        backbones_lib.set_sequence_length(preprocessor, backbone, sequence_length)
    return backbone, preprocessor


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------


def output_units(task, num_classes):
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}.{did_you_mean(task, TASKS)} Choose one of {TASKS}.")
    if task == "binary":
        if num_classes not in (None, 1, 2):
            raise ValueError(f"task='binary' has one output; num_classes={num_classes} needs task='multiclass'.")
        return 1
    if task == "regression":
        return int(num_classes or 1)
    if not num_classes or int(num_classes) < 2:
        raise ValueError(f"task={task!r} needs num_classes >= 2, got {num_classes!r}.")
    return int(num_classes)


def add_head(features, *, task, units, dropout, head_units, l2, pool_layer=None):
    """Dropout, optional hidden layers, the output layer; every layer named `head_*`."""
    regularizer = keras.regularizers.L2(l2) if l2 else None
    x = pool_layer(features) if pool_layer is not None else features
    if dropout:
        x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    for i, width in enumerate(head_units or ()):
        x = keras.layers.Dense(
            int(width), activation="relu", kernel_regularizer=regularizer, name=f"head_dense_{i}"
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"head_dropout_{i}")(x)
    x = keras.layers.Dense(units, kernel_regularizer=regularizer, name="head_logits")(x)
    activation = {"multiclass": "softmax", "binary": "sigmoid", "multilabel": "sigmoid"}.get(task, "linear")
    # float32 outputs, also under a mixed-precision policy (Keras mixed-precision guide).
    return keras.layers.Activation(activation, dtype="float32", name="head_output")(x)


# --------------------------------------------------------------------------------------------
# build_model
# --------------------------------------------------------------------------------------------


def build_model(
    backbone,
    *,
    num_classes=None,
    task="multiclass",
    weights="pretrained",
    input_shape=None,
    freeze="backbone",
    dropout=None,
    head_units=(),
    l2=0.0,
    pooling=None,
    sequence_length=None,
    sentence_pairs=False,
    pad_to="batch",
    preprocessor=None,
    class_names=None,
    train_batchnorm=False,
    name=None,
):
    """Builds a transfer-learning model: preprocessing, the backbone, a task head.

    Args:
        backbone: a registry name (`tfft.list_backbones()`), a local keras-hub or Hugging
            Face preset directory, a `.keras` file, or a `keras.Model` (a headless image
            network, or a keras-hub text backbone together with `preprocessor=`).
        num_classes: number of classes (multiclass, multilabel), of targets (regression);
            not needed for `task="binary"`.
        task: `"multiclass"` (softmax, integer labels), `"binary"` (one sigmoid, 0/1
            labels), `"multilabel"` (sigmoids, multi-hot labels) or `"regression"`.
        weights: `"pretrained"` (ImageNet / the preset's weights, from the local cache or
            downloaded; offline it fails fast with the local alternatives), `None` (random
            initialization), or a path to a weights file (image backbones).
        input_shape: `(height, width, 3)` for images; the backbone's default when None.
        freeze: what is frozen after building, as for `tfft.freeze` (default: all of the
            backbone, ready for the head phase).
        dropout: dropout rate before the output layer (and after each hidden layer);
            default 0.2 for images, 0.1 for text.
        head_units: widths of optional hidden Dense+ReLU layers in the head.
        l2: L2 regularization factor of the head's kernels.
        pooling: images: `"avg"` (default) or `"max"`; text: `"cls"` (the pooled [CLS]
            output, default) or `"mean"` (mean of token embeddings, padding masked).
        sequence_length: text models: tokens per example, [CLS] and [SEP] included (pairs
            share it); capped at the backbone's maximum. Default: 128 for a preset, the
            preprocessor's own for `preprocessor=` or a `.keras` file.
        sentence_pairs: text models: take two string inputs, e.g. (premise, hypothesis).
        pad_to: text models: `"batch"` (default) pads each batch to its longest sequence,
            at most `sequence_length`, so short texts run faster; `"max"` always pads to
            `sequence_length`. Both predict the same (padding is masked).
        preprocessor: text models built from a keras-hub backbone object: its keras-hub
            `TextClassifierPreprocessor`.
        class_names: optional names of the classes, stored with the model.
        train_batchnorm: passed to `tfft.freeze`.
        name: the model's name.

    Returns:
        A `TransferModel` (a functional `keras.Model`): raw 0-255 RGB images (or raw
        strings) in, probabilities (or regression values) out, float32. The backbone is
        the layer named `"backbone"`, the preprocessing sits before it, head layers are
        named `head_*`.

    Example:
    >>> model = build_model("resnet50", num_classes=3, weights=None, input_shape=(32, 32, 3))
    >>> model.get_layer("backbone").name, model.output.shape
    ('backbone', (None, 3))
    """
    head_seed = draw_head_seed()  # first, so the head does not depend on what building the backbone draws
    units = output_units(task, num_classes)
    info = {"task": task, "num_classes": int(num_classes) if num_classes else units, "weights": _weights_tag(weights)}
    if class_names is not None:
        info["class_names"] = [str(c) for c in class_names]
        if task in ("multiclass", "multilabel") and len(class_names) != units:
            raise ValueError(f"{len(class_names)} class_names given for num_classes={num_classes}.")

    modality, parts = _resolve_backbone(backbone, weights, input_shape, sequence_length, preprocessor)
    info.update(parts.pop("info"))
    info["modality"] = modality
    if modality == "text":
        model = _build_text(parts, task=task, units=units, dropout=dropout, head_units=head_units, l2=l2,
                            pooling=pooling or "cls", sentence_pairs=sentence_pairs, pad_to=pad_to, name=name,
                            info=info)
    else:
        model = _build_image(parts, task=task, units=units, dropout=dropout, head_units=head_units, l2=l2,
                             pooling=pooling or "avg", name=name, info=info)
    seed_head(model, head_seed)
    freeze_fn(model, freeze, train_batchnorm=train_batchnorm)
    return model


def _weights_tag(weights):
    if weights is None or weights == "pretrained":
        return weights
    return os.fspath(weights)


def _resolve_backbone(backbone, weights, input_shape, sequence_length, preprocessor):
    """Returns `(modality, parts)` where parts holds backbone, preprocessing and info."""
    if isinstance(backbone, keras.Model):
        is_text = is_keras_hub_text_backbone(backbone)
        if is_text:
            bb, pre = _text_backbone_from_model(backbone, preprocessor, sequence_length)
            bb.name = "backbone"
            return "text", {"backbone": bb, "preprocessor": pre, "info": {"backbone": "custom"}}
        backbone.name = "backbone"
        return "image", {"backbone": backbone, "preprocessing": None, "input_shape": None,
                         "info": {"backbone": "custom"}}
    name = os.fspath(backbone) if isinstance(backbone, os.PathLike) else backbone
    if not isinstance(name, str):
        raise TypeError(f"backbone must be a registry name, a path or a keras.Model, got {type(backbone).__name__}.")
    if name.endswith(".keras"):
        if not os.path.exists(name):
            raise FileNotFoundError(f"Backbone file {name!r} does not exist.")
        bb, preprocessing, inner_info = _load_keras_file(name)
        modality = inner_info.get("modality", "image")
        if modality == "text":
            pre = [layer for layer in preprocessing or [] if isinstance(layer, TextPreprocessor)]
            bb, pre = _text_backbone_from_model(bb, pre[0].preprocessor if pre else None, sequence_length)
            return "text", {"backbone": bb, "preprocessor": pre, "info": {"backbone": name}}
        bb.name = "backbone"
        return "image", {"backbone": bb, "preprocessing": (preprocessing or [None])[0], "input_shape": None,
                         "info": {"backbone": name}}
    if backbones_lib.is_preset_dir(name):
        if backbones_lib.preset_modality(name) == "text":
            bb, pre = backbones_lib.load_text_preset(
                name, weights=weights, sequence_length=sequence_length or backbones_lib.DEFAULT_SEQUENCE_LENGTH
            )
            return "text", {"backbone": bb, "preprocessor": pre, "info": {"backbone": name}}
        return "image", _keras_hub_image_preset(name, weights, input_shape)
    if os.path.sep in name and not os.path.exists(name):
        raise FileNotFoundError(f"Backbone path {name!r} does not exist.")
    spec = backbones_lib.get_backbone_spec(name)
    info = {"backbone": spec.name, "family": spec.family}
    if spec.modality == "text":
        bb, pre = spec.build(weights=weights, sequence_length=sequence_length or backbones_lib.DEFAULT_SEQUENCE_LENGTH)
        return "text", {"backbone": bb, "preprocessor": pre, "info": info}
    bb, preprocessing, shape = _resolve_image(spec, input_shape, weights)
    return "image", {"backbone": bb, "preprocessing": preprocessing, "input_shape": shape, "info": info}


def _keras_hub_image_preset(path, weights, input_shape):
    import keras_hub

    bb = keras_hub.models.Backbone.from_preset(path, load_weights=weights == "pretrained")
    bb.name = "backbone"
    converter = keras_hub.layers.ImageConverter.from_preset(path)
    converter.image_size = None  # tfft.data resizes; the converter only rescales
    converter.name = "preprocessing"
    return {"backbone": bb, "preprocessing": converter, "input_shape": input_shape, "info": {"backbone": path}}


def is_keras_hub_text_backbone(model):
    try:
        import keras_hub
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, keras_hub.models.Backbone) and "token_ids" in getattr(model, "input", {})


def _build_image(parts, *, task, units, dropout, head_units, l2, pooling, name, info):
    bb = parts["backbone"]
    shape = parts["input_shape"] or tuple(bb.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"Pass input_shape=(height, width, 3): the backbone accepts {shape}.")
    inputs = keras.Input(shape=shape, name="image")
    x = inputs
    if parts["preprocessing"] is not None:
        x = parts["preprocessing"](x)
    features = bb(x)
    pool_layer = None
    if len(features.shape) == 4:
        if pooling not in _IMAGE_POOLING:
            raise ValueError(f"Unknown pooling {pooling!r} for images; use one of {sorted(_IMAGE_POOLING)}.")
        pool_layer = _IMAGE_POOLING[pooling](name="head_pool")
    outputs = add_head(features, task=task, units=units, dropout=0.2 if dropout is None else dropout,
                    head_units=head_units, l2=l2, pool_layer=pool_layer)
    info.update(input_shape=list(shape), pooling=pooling)
    return TransferModel(inputs, outputs, name=name, tfft_info=info)


def _build_text(parts, *, task, units, dropout, head_units, l2, pooling, sentence_pairs, pad_to, name, info):
    if pooling not in _TEXT_POOLING:
        raise ValueError(f"Unknown pooling {pooling!r} for text; use one of {_TEXT_POOLING}.")
    preprocessing = TextPreprocessor(parts["preprocessor"], pad_to=pad_to, name="preprocessing")
    if sentence_pairs:
        inputs = [keras.Input(shape=(), dtype="string", name="text_a"),
                  keras.Input(shape=(), dtype="string", name="text_b")]
        tokens = preprocessing(tuple(inputs))
    else:
        inputs = keras.Input(shape=(), dtype="string", name="text")
        tokens = preprocessing(inputs)
    outputs = parts["backbone"](tokens)
    if pooling == "cls":
        features = outputs["pooled_output"]
    else:
        features = keras.layers.GlobalAveragePooling1D(name="head_pool")(
            outputs["sequence_output"], mask=tokens["padding_mask"]
        )
    outputs = add_head(features, task=task, units=units, dropout=0.1 if dropout is None else dropout,
                    head_units=head_units, l2=l2)
    info.update(sequence_length=int(preprocessing.sequence_length), pooling=pooling,
                sentence_pairs=bool(sentence_pairs), pad_to=pad_to)
    if pooling == "mean":
        # The [CLS] pooler feeds nothing: freezing specs leave it frozen, so that no optimizer
        # keeps slots for it and Keras does not warn of variables without gradients.
        names = {layer.name for layer in getattr(parts["backbone"], "layers", [])}
        info["unused_layers"] = sorted(names & {"pooled_dense"})
    return TransferModel(inputs, outputs, name=name, tfft_info=info)
