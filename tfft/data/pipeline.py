"""From examples to batched, prefetched `tf.data` pipelines: decoding, resizing, caching,
epoch-keyed shuffling and training-batch augmentation."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfft import backbones
from tfft import order as order_lib
from tfft.data import lengths as lengths_lib
from tfft.data.augment import mark_augmented
from tfft.data.bundle import Examples

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_IMAGE_SIZE = (224, 224)
# `cache="auto"` caches a split in memory when its decoded, resized images
# take at most this many bytes.
AUTO_CACHE_BYTES = 1 << 30
# Without an in-memory cache, decoded images are shuffled in a buffer of at
# most this many examples, so memory stays bounded for any folder size.
MAX_SHUFFLE_BUFFER = 1024
RESIZE_POLICIES = ("stretch", "crop", "pad")

def as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return (image_size, image_size)
    size = tuple(int(s) for s in image_size)
    if len(size) not in (2, 3) or min(size[:2]) <= 0:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}.")
    return size[:2]


def resolve_image_size(
    image_size: int | Sequence[int] | None = None, backbone: Any = None
) -> tuple[int, int]:
    """Returns the image size to load at: given, the backbone's, or 224x224.

    Args:
        image_size: an int or `(height, width)`; wins when given.
        backbone: a tfft registry name (its input size is used) or a
            `keras.Model` (its input shape is used).

    Returns:
        `(height, width)`.

    Example:

    >>> resolve_image_size(96)
    (96, 96)
    """
    if image_size is not None:
        return as_size(image_size)
    if backbone is None:
        return DEFAULT_IMAGE_SIZE
    if isinstance(backbone, keras.Model):
        shape = tuple(backbone.input_shape)[1:3]
    else:
        shape = tuple(backbones.get_backbone_spec(backbone).input_shape)[:2]
    if len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        return DEFAULT_IMAGE_SIZE
    return shape


def resize_layer(image_size: tuple[int, int], resize: str) -> keras.layers.Layer:
    if resize not in RESIZE_POLICIES:
        raise ValueError(
            f"resize={resize!r}; expected one of {RESIZE_POLICIES}: 'stretch' "
            "resizes, 'crop' crops to the aspect ratio, 'pad' pads to it."
        )
    return keras.layers.Resizing(
        *image_size,
        crop_to_aspect_ratio=resize == "crop",
        pad_to_aspect_ratio=resize == "pad",
        dtype="float32",
    )


def to_rgb(images: tf.Tensor) -> tf.Tensor:
    """Gives 1-, 3- or 4-channel images (static channel count) 3 channels."""
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    if channels != 3:
        raise ValueError(f"Images need 1, 3 or 4 channels, got shape {images.shape}.")
    return images


def decode_image(data: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# ---------------------------------------------------------------------------
# Pipelines: from examples to batched datasets.


def cache_dataset(
    dataset: tf.data.Dataset, cache: bool | str, key: str
) -> tuple[tf.data.Dataset, bool]:
    """Applies `cache`; returns the dataset and whether it is in memory."""
    if cache is False:
        return dataset, False
    if cache is True:
        return dataset.cache(), True
    os.makedirs(cache, exist_ok=True)
    return dataset.cache(os.path.join(os.fspath(cache), key)), False


def fingerprint(*parts: Any) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(repr(part).encode())
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Turns `Examples` into a batched, prefetched `tf.data.Dataset`.

    Attributes:
        modality: `image_files`, `image`, `text`, `text_pair`, `features`.
        batch_size: examples per batch.
        seed: shuffle seed.
        image_size: resize target, or `None` to keep array images as they are.
        resize: resize policy.
        augment: augmentation layer for the training split, or `None`.
        cache: `"auto"`, `True`, `False` or a directory.
        skip_errors: drop examples that fail to decode at run time.
        group_by_length: text modalities: batch training examples of similar length
            together (`tfft.data.lengths.group_by_length`); other splits keep file order.
    """

    modality: str
    batch_size: int
    seed: int | None
    image_size: tuple[int, int] | None = None
    resize: str = "stretch"
    augment: Any = None
    cache: bool | str = "auto"
    skip_errors: bool = True
    group_by_length: bool = True

    def build(self, examples: Examples, split: str) -> tf.data.Dataset:
        """Returns the dataset of `examples` for `split`."""
        training = split == "train"
        if training and self.seed is not None:
            # A fixed first order, so that a cache holds a mixed order too.
            order = np.random.default_rng(self.seed).permutation(len(examples))
            examples = examples.take(order)
        if self.modality == "image_files":
            dataset, unshuffled = self._image_files(examples, split, training)
        else:
            dataset, unshuffled = self._tensors(examples, training)
        grouped = training and self.group_by_length and self.modality in ("text", "text_pair")
        if grouped:
            dataset = lengths_lib.group_by_length(dataset, self.batch_size, self.seed)
        else:
            dataset = dataset.batch(self.batch_size)
        if training and self.augment is not None:
            layer = self.augment
            # One batch at a time: the random layers' state then advances in batch order, so a
            # seeded epoch augments the same way every time (parallel calls would race on it).
            dataset = dataset.map(lambda x, y: (layer(x, training=True), y))
        dataset = dataset.prefetch(AUTOTUNE)
        if training and self.augment is not None:
            mark_augmented(dataset)
        if not training or (unshuffled is not None and not grouped):
            # How the dataset is ordered, for the feature cache (tfft.order.DatasetOrder).
            elements, buffer = unshuffled or (None, None)
            order_lib.record_order(dataset, order_lib.DatasetOrder(
                elements=elements, examples=len(examples), batch_size=self.batch_size, buffer=buffer,
                seed=self.seed))
        return dataset

    def _shuffle(self, dataset: tf.data.Dataset, buffer: int) -> tf.data.Dataset:
        # Epoch-keyed: a run resumed at epoch e sees epoch e's order (tfft.order).
        return order_lib.epoch_shuffle(dataset, buffer, self.seed)

    def _image_files(self, examples: Examples, split: str, training: bool):
        """`(dataset, unshuffled)` of decoded, resized images, as `_tensors` returns."""
        height, width = self.image_size
        cache = self.cache
        if cache == "auto":
            cache = len(examples) * height * width * 3 * 4 <= AUTO_CACHE_BYTES
        key = None
        if isinstance(cache, str):
            key = f"{split}-" + fingerprint(
                examples.inputs.tolist(), examples.labels.tolist(),
                self.image_size, self.resize,
            )
        resizer = resize_layer(self.image_size, self.resize)

        def load(path, label):
            image = decode_image(tf.io.read_file(path))
            return resizer(tf.cast(image, tf.float32)), label

        paths = tf.data.Dataset.from_tensor_slices(
            (examples.inputs.astype(str), examples.labels)
        )

        def decoded(dataset):
            dataset = dataset.map(
                load,
                num_parallel_calls=AUTOTUNE,
                deterministic=True if self.seed is not None else None,
            )
            return dataset.ignore_errors(log_warning=True) if self.skip_errors else dataset

        seeded = training and self.seed is not None
        if training and cache is False:
            # Shuffle paths, not decoded images: memory stays bounded.
            shuffled = decoded(self._shuffle(paths, len(examples)))
            return shuffled, ((decoded(paths), len(examples)) if seeded else None)
        dataset, in_memory = cache_dataset(decoded(paths), cache, key)
        if not training:
            return dataset, None
        buffer = min(len(examples) if in_memory else MAX_SHUFFLE_BUFFER, len(examples))
        return self._shuffle(dataset, buffer), ((dataset, buffer) if seeded else None)

    def _tensors(self, examples: Examples, training: bool):
        """`(dataset, unshuffled)`: the elements (shuffled when training), and for a seeded
        training split `(the same elements unshuffled, shuffle buffer)`."""
        inputs = examples.inputs
        dataset = tf.data.Dataset.from_tensor_slices((inputs, examples.labels))
        if not training:
            return self._prepare(dataset), None
        shuffled = self._prepare(self._shuffle(dataset, len(examples)))
        return shuffled, ((self._prepare(dataset), len(examples)) if self.seed is not None else None)

    def _prepare(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        if self.modality == "image":
            resizer = (
                resize_layer(self.image_size, self.resize) if self.image_size else None
            )

            def prepare(image, label):
                image = to_rgb(tf.cast(image, tf.float32))
                return (resizer(image) if resizer else image), label

            return dataset.map(prepare, num_parallel_calls=AUTOTUNE)
        if self.modality == "features":
            return dataset.map(
                lambda x, y: (tf.cast(x, tf.float32), y),
                num_parallel_calls=AUTOTUNE,
            )
        return dataset
