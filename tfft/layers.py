"""Serializable layers that tfft places in front of a backbone.

Each one turns what users feed (raw 0-255 RGB pixels, raw strings) into what the backbone
was trained on, so that a saved `.keras` model carries its own preprocessing.
"""

import keras
from keras import ops

# Per-channel ImageNet statistics, as in `keras.applications.imagenet_utils`.
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)
# How TextPreprocessor pads: to the longest sequence of each batch, or to sequence_length.
PAD_TO = ("batch", "max")


@keras.saving.register_keras_serializable(package="tfft")
class ImageNetPreprocessing(keras.layers.Layer):
    """`keras.applications` input preprocessing as a layer (raw 0-255 RGB in).

    Args:
        mode: `"caffe"` (RGB to BGR, ImageNet mean subtracted: ResNet v1, VGG),
            `"tf"` (scaled to [-1, 1]: ResNet v2) or `"torch"` (scaled to [0, 1], then
            normalized by the ImageNet mean and standard deviation).

    Example:
    >>> layer = ImageNetPreprocessing("tf")
    >>> float(layer(ops.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
    1.0
    """

    def __init__(self, mode="caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "tf", "torch"):
            raise ValueError(f"Unknown preprocessing mode {mode!r}; use 'caffe', 'tf' or 'torch'.")
        self.mode = mode

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "torch":
            mean = ops.convert_to_tensor(_TORCH_MEAN, dtype=x.dtype)
            std = ops.convert_to_tensor(_TORCH_STD, dtype=x.dtype)
            return (x / 255.0 - mean) / std
        x = ops.flip(x, axis=-1)
        return x - ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["mode"] = self.mode
        return config


@keras.saving.register_keras_serializable(package="tfft")
class TextPreprocessor(keras.layers.Layer):
    """Wraps a keras-hub text preprocessor so that it can sit inside a functional model.

    keras-hub keeps its preprocessors outside the model graph; tfft puts the tokenizer
    inside, so the model takes raw strings. The wrapper declares its output spec up front:
    a saved model can then be rebuilt before the tokenizer's vocabulary asset is restored.

    With `pad_to="batch"` each batch is padded to its own longest sequence ([CLS] and
    [SEP] included), at most `sequence_length`: a batch of short sentences costs what
    its tokens cost, not what `sequence_length` tokens would. The tokens of each example
    are those of fixed-length padding (truncation happens at `sequence_length` either
    way), and the padding mask hides the rest, so predictions equal those of
    `pad_to="max"` up to float rounding.

    Args:
        preprocessor: a `keras_hub.models.TextClassifierPreprocessor` (e.g.
            `BertTextClassifierPreprocessor`) with `sequence_length` set.
        pad_to: `"batch"` (the longest sequence of the batch, capped at `sequence_length`)
            or `"max"` (always `sequence_length`). Saved models without this setting load
            as `"max"`, the padding they were trained with.

    Example:
    >>> import keras_hub
    >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "movie"]
    >>> tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab)
    >>> hub = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=8)
    >>> import tensorflow as tf
    >>> TextPreprocessor(hub)(tf.constant(["a movie", "a"]))["token_ids"].shape
    TensorShape([2, 4])
    """

    def __init__(self, preprocessor, pad_to="batch", **kwargs):
        super().__init__(**kwargs)
        if pad_to not in PAD_TO:
            raise ValueError(f"Unknown pad_to {pad_to!r}; use one of {PAD_TO}.")
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor
        self.pad_to = pad_to

    @property
    def sequence_length(self):
        return self.preprocessor.sequence_length

    def build(self, input_shape):
        self.built = True

    def call(self, inputs):
        if isinstance(inputs, list):
            inputs = tuple(inputs)
        # By keyword: keras-hub reads a positional tuple as (x, y), so a sentence pair
        # (first, second) would tokenize the first sentence only and drop the second.
        tokens = self.preprocessor(x=inputs)
        if self.pad_to == "max":
            return tokens
        return self._trim_to_longest(tokens)

    def _trim_to_longest(self, tokens):
        """Cuts the padding columns that every example of the batch has.

        keras-hub's packer takes a `sequence_length=` but reads it as a Python number
        (`sequence_length or self.sequence_length`), which a traced batch length is not;
        packing to `sequence_length` and slicing is as cheap next to the encoder and gives
        the same tokens.
        """
        mask = tokens["padding_mask"]
        width = ops.shape(mask)[-1]
        positions = ops.arange(1, width + 1, dtype="int32")
        # The last real token's position + 1 (a "[PAD]" inside a sentence does not end it).
        ends = ops.where(mask, positions, ops.zeros_like(positions))
        length = ops.maximum(ops.max(ends), 1)
        if getattr(getattr(self.preprocessor, "packer", None), "padding_side", "right") == "left":
            return {key: value[..., width - length:] for key, value in tokens.items()}
        return {key: value[..., :length] for key, value in tokens.items()}

    def compute_output_spec(self, inputs):
        first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        shape = (first.shape[0], self.sequence_length if self.pad_to == "max" else None)
        return {
            "token_ids": keras.KerasTensor(shape, dtype="int32"),
            "segment_ids": keras.KerasTensor(shape, dtype="int32"),
            "padding_mask": keras.KerasTensor(shape, dtype="bool"),
        }

    def get_config(self):
        config = super().get_config()
        config["preprocessor"] = keras.saving.serialize_keras_object(self.preprocessor)
        config["pad_to"] = self.pad_to
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("pad_to", "max")  # saved before tfft padded per batch
        return cls(**config)
