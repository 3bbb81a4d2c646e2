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

    Args:
        preprocessor: a `keras_hub.models.TextClassifierPreprocessor` (e.g.
            `BertTextClassifierPreprocessor`) with `sequence_length` set.
    """

    def __init__(self, preprocessor, **kwargs):
        super().__init__(**kwargs)
        if isinstance(preprocessor, dict):
            preprocessor = keras.saving.deserialize_keras_object(preprocessor)
        self.preprocessor = preprocessor

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
        return self.preprocessor(x=inputs)

    def compute_output_spec(self, inputs):
        first = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        shape = (first.shape[0], self.sequence_length)
        return {
            "token_ids": keras.KerasTensor(shape, dtype="int32"),
            "segment_ids": keras.KerasTensor(shape, dtype="int32"),
            "padding_mask": keras.KerasTensor(shape, dtype="bool"),
        }

    def get_config(self):
        config = super().get_config()
        config["preprocessor"] = keras.saving.serialize_keras_object(self.preprocessor)
        return config
