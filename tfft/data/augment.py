"""Image augmentation for training batches: Keras preprocessing layers by name."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfft import order as order_lib

_augmented_datasets: weakref.WeakSet = weakref.WeakSet()

_AUGMENTATIONS: dict[str, Callable[[int | None], keras.layers.Layer]] = {
    "flip": lambda seed: keras.layers.RandomFlip(
        "horizontal", seed=seed, dtype="float32"
    ),
    "rotation": lambda seed: keras.layers.RandomRotation(
        0.1, fill_mode="reflect", seed=seed, dtype="float32"
    ),
    "zoom": lambda seed: keras.layers.RandomZoom(
        0.1, fill_mode="reflect", seed=seed, dtype="float32"
    ),
    "translation": lambda seed: keras.layers.RandomTranslation(
        0.1, 0.1, fill_mode="reflect", seed=seed, dtype="float32"
    ),
    "contrast": lambda seed: keras.layers.RandomContrast(
        0.2, value_range=(0, 255), seed=seed, dtype="float32"
    ),
    "brightness": lambda seed: keras.layers.RandomBrightness(
        0.1, value_range=(0, 255), seed=seed, dtype="float32"
    ),
}
DEFAULT_AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast")


def augmentation_layer(
    augment: bool | str | Sequence[str | keras.layers.Layer] | keras.layers.Layer,
    seed: int | None = None,
) -> keras.layers.Layer | None:
    """Builds the image augmentation that `augment=` asks for.

    Args:
        augment: `False`/`None` for none; `True` for `DEFAULT_AUGMENTATIONS`;
            a name or list of names from `flip`, `rotation`, `zoom`,
            `translation`, `contrast`, `brightness` (Keras layers may be
            mixed in); or any Keras layer / callable taking a batch of
            0-255 float32 images.
        seed: seed for the random layers; with it, epoch e's augmentation
            depends on (seed, e) only in a `fit` with `tfft.order.EpochSeed`
            (tfft's callbacks), so a resumed run augments as before.

    Returns:
        A layer (or the given callable), or `None` for no augmentation.

    Example:

    >>> layer = augmentation_layer(["flip", "zoom"], seed=0)
    >>> [l.__class__.__name__ for l in layer.layers]
    ['RandomFlip', 'RandomZoom']
    """
    if augment is None or augment is False:
        return None
    if augment is True:
        augment = DEFAULT_AUGMENTATIONS
    if isinstance(augment, str):
        augment = (augment,)
    if callable(augment) and not isinstance(augment, (list, tuple)):
        return _keyed(augment, seed)
    layers = []
    for item in augment:
        if isinstance(item, str):
            if item not in _AUGMENTATIONS:
                raise ValueError(
                    f"Unknown augmentation {item!r}; expected one of "
                    f"{sorted(_AUGMENTATIONS)} or a Keras layer."
                )
            layers.append(_AUGMENTATIONS[item](seed))
        else:
            layers.append(item)
    return _keyed(keras.Sequential(layers, name="augmentation"), seed)


def _keyed(augment, seed):
    """With a seed, the random layers draw per epoch from (seed, epoch): a resumed run
    augments as the one that never stopped (`tfft.order.key_by_epoch`)."""
    if seed is not None and isinstance(augment, keras.layers.Layer):
        order_lib.key_by_epoch(augment)
    return augment


def is_augmented(dataset: tf.data.Dataset) -> bool:
    """Returns whether `dataset` came from a tfft loader with augmentation.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((4, 8, 8, 3), "float32")
    >>> bundle = from_arrays(x, [0, 1, 0, 1], augment=True)
    >>> is_augmented(bundle.train)
    True
    """
    try:
        return dataset in _augmented_datasets
    except TypeError:
        return False


def mark_augmented(dataset: tf.data.Dataset) -> tf.data.Dataset:
    _augmented_datasets.add(dataset)
    return dataset

