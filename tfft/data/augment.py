"""Image augmentation for training batches: Keras preprocessing layers by name, and label-aware
MixUp / CutMix.

Everything runs inside `tf.data.Dataset.map` on batches of raw 0-255 float32 images. With a seed,
the random layers draw, in each epoch that `tfft.order.EpochSeed` pins, from a state that depends on
(seed, epoch) only (`tfft.order.key_by_epoch`), so a run resumed at epoch e augments and mixes epoch e
exactly as the run that never stopped.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence

import keras
import tensorflow as tf

from tfft import order as order_lib
from tfft.errors import did_you_mean

_augmented_datasets: weakref.WeakSet = weakref.WeakSet()

_RANGE = (0, 255)  # tfft's images are raw 0-255 RGB; the backbone's preprocessing sits in the model.

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
        0.2, value_range=_RANGE, seed=seed, dtype="float32"
    ),
    "brightness": lambda seed: keras.layers.RandomBrightness(
        0.1, value_range=_RANGE, seed=seed, dtype="float32"
    ),
    # Keras's RandAugment policy: 2 of 11 operations per image at strength 0.5.
    "randaugment": lambda seed: keras.layers.RandAugment(
        value_range=_RANGE, num_ops=2, factor=0.5, seed=seed, dtype="float32"
    ),
    # Random erasing as in timm's `reprob=0.25`: a noise rectangle (2-33% of the area) on a quarter
    # of the images (`factor=(p, p)` is a fixed probability p in Keras).
    "erasing": lambda seed: keras.layers.RandomErasing(
        factor=(0.25, 0.25), value_range=_RANGE, seed=seed, dtype="float32"
    ),
    "augmix": lambda seed: keras.layers.AugMix(
        value_range=_RANGE, seed=seed, dtype="float32"
    ),
    # Saturation 0.5 is the identity in Keras: (0.3, 0.7) desaturates or saturates a little.
    "color_jitter": lambda seed: keras.layers.RandomColorJitter(
        value_range=_RANGE, brightness_factor=0.2, contrast_factor=0.2, saturation_factor=(0.3, 0.7),
        hue_factor=0.05, seed=seed, dtype="float32"
    ),
}
DEFAULT_AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast")
# The strong recipe of timm / DeiT fine-tuning, on Keras's layers: flip, RandAugment, random erasing
# (MixUp / CutMix, which change the labels too, come from `mix_batches`).
STRONG_AUGMENTATIONS = ("flip", "randaugment", "erasing")
PRESETS = {"default": DEFAULT_AUGMENTATIONS, "strong": STRONG_AUGMENTATIONS}


def augmentation_names() -> tuple[str, ...]:
    """The names `augmentation_layer` takes: single augmentations, then presets.

    Example:

    >>> "randaugment" in augmentation_names() and "strong" in augmentation_names()
    True
    """
    return tuple(_AUGMENTATIONS) + tuple(PRESETS)


def augmentation_layer(
    augment: bool | str | Sequence[str | keras.layers.Layer] | keras.layers.Layer,
    seed: int | None = None,
) -> keras.layers.Layer | None:
    """Builds the image augmentation that `augment=` asks for.

    Args:
        augment: `False`/`None`/`""` for none; `True` for `DEFAULT_AUGMENTATIONS`;
            a name, a comma-separated string of names or a list of names from
            `flip`, `rotation`, `zoom`, `translation`, `contrast`, `brightness`,
            `randaugment`, `erasing`, `augmix`, `color_jitter`, and the presets
            `default` (`DEFAULT_AUGMENTATIONS`) and `strong`
            (`STRONG_AUGMENTATIONS`), applied in the order given (Keras layers
            may be mixed in); or any Keras layer / callable taking a batch of
            0-255 float32 images.
        seed: seed for the random layers; with it, epoch e's augmentation
            depends on (seed, e) only in a `fit` with `tfft.order.EpochSeed`
            (tfft's callbacks), so a resumed run augments as before.

    Returns:
        A layer (or the given callable), or `None` for no augmentation.

    Raises:
        ValueError: for a name that is not one of the above (the message lists
            them, with the closest matches).

    Example:

    >>> layer = augmentation_layer("flip,randaugment", seed=0)
    >>> [type(sub).__name__ for sub in layer.layers]
    ['RandomFlip', 'RandAugment']
    >>> [type(sub).__name__ for sub in augmentation_layer("strong").layers]
    ['RandomFlip', 'RandAugment', 'RandomErasing']
    """
    if augment is None or augment is False:
        return None
    if augment is True:
        augment = DEFAULT_AUGMENTATIONS
    if isinstance(augment, str):
        augment = [part.strip() for part in augment.split(",") if part.strip()]
    if callable(augment) and not isinstance(augment, (list, tuple)):
        return _keyed(augment, seed)
    layers = []
    for item in augment:
        if isinstance(item, str):
            layers.extend(_AUGMENTATIONS[name](seed) for name in _expand(item))
        else:
            layers.append(item)
    if not layers:
        return None
    return _keyed(keras.Sequential(layers, name="augmentation"), seed)


def _expand(name: str) -> tuple[str, ...]:
    """The augmentation names behind `name` (a preset's list, or the name itself)."""
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    if key not in _AUGMENTATIONS:
        names = augmentation_names()
        raise ValueError(
            f"Unknown augmentation {name!r}.{did_you_mean(key, names)} Use one of {list(_AUGMENTATIONS)}, "
            f"a preset of {list(PRESETS)}, or a Keras layer."
        )
    return (key,)


def _keyed(augment, seed):
    """With a seed, the random layers draw per epoch from (seed, epoch): a resumed run
    augments as the one that never stopped (`tfft.order.key_by_epoch`)."""
    if seed is not None and isinstance(augment, keras.layers.Layer):
        order_lib.key_by_epoch(augment)
    return augment


def _map_batches(dataset: tf.data.Dataset, fn, layer: keras.layers.Layer) -> tf.data.Dataset:
    """`dataset.map(fn)` over `(x, y[, w])` batches, one batch after the other.

    Sequential on purpose: the random layers draw from a Keras `SeedGenerator` (a variable that
    each batch advances), and parallel calls read it in a varying order, so the same seed would
    give other augmentations from run to run. The ops inside still use every core. The dataset
    keeps `layer` (its generators' variables) alive.
    """
    mapped = dataset.map(fn).prefetch(tf.data.AUTOTUNE)
    mapped._tfft_layer = layer
    return mapped


def augment_batches(dataset: tf.data.Dataset, augment, *, seed: int | None = None) -> tf.data.Dataset:
    """Applies `augmentation_layer(augment, seed)` to the images of a batched dataset.

    For data that a tfft loader built without augmentation (`tfft.fine_tune` augments the
    training batches of the phases where the backbone trains). The result is marked as
    augmented (`is_augmented`), so no phase caches features of it.

    Args:
        dataset: batched `(images, labels[, sample_weights])`, images 0-255 float32.
        augment: anything `augmentation_layer` takes.
        seed: seed of the random layers (epoch-keyed, see `augmentation_layer`).

    Returns:
        The augmented dataset, or `dataset` itself when `augment` asks for none.

    Example:

    >>> import numpy as np
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), "float32"), [0, 1, 0, 1])).batch(2)
    >>> is_augmented(augment_batches(ds, "flip,erasing", seed=0))
    True
    """
    layer = augmentation_layer(augment, seed)
    if layer is None:
        return dataset
    return mark_augmented(_map_batches(dataset, lambda x, *rest: (layer(x, training=True), *rest), layer))


# ---------------------------------------------------------------------------
# MixUp / CutMix: images and labels together.

MIX_TASKS = ("multiclass", "binary", "multilabel")


@keras.saving.register_keras_serializable(package="tfft")
class MixBatch(keras.layers.Layer):
    """MixUp or CutMix on a batch of images and soft labels, chosen per batch as in timm's `Mixup`.

    With probability `prob` a batch is mixed (else it passes unchanged); when both alphas are
    set, CutMix is chosen with probability `switch_prob`, else MixUp. Unlike timm's default
    (one mixing weight per batch), Keras's layers draw one weight and one partner per image
    (timm's `mode="elem"`).

    MixUp is Keras's `MixUp` layer. CutMix takes its boxes and partners from Keras's `CutMix`,
    but its label weight is the fraction of pixels actually pasted (timm's `correct_lam`):
    Keras's weight is the box's continuous area, which differs from the pixel count by up to
    a row and a column, several percent on small images.

    Args:
        mixup_alpha: Beta(alpha, alpha) parameter of MixUp's weights; 0 for no MixUp.
        cutmix_alpha: Beta parameter of CutMix's box sizes, in (0, 1] (Keras's `CutMix`
            bounds it); 0 for no CutMix.
        prob: probability that a batch is mixed.
        switch_prob: probability of CutMix rather than MixUp when both are on.
        seed: seed of the draws.

    Example:

    >>> import numpy as np
    >>> mix = MixBatch(mixup_alpha=0.4, seed=0)
    >>> images, labels = mix(np.ones((4, 8, 8, 3), "float32"), np.eye(4, dtype="float32"))
    >>> np.allclose(np.sum(labels, axis=-1), 1.0)
    True
    """

    def __init__(self, mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.mixup_alpha, self.cutmix_alpha = float(mixup_alpha), float(cutmix_alpha)
        self.prob, self.switch_prob, self.seed = float(prob), float(switch_prob), seed
        if self.mixup_alpha < 0 or not 0 <= self.cutmix_alpha <= 1 or not self.mixup_alpha + self.cutmix_alpha:
            raise ValueError(
                f"MixBatch needs mixup_alpha > 0 and/or cutmix_alpha in (0, 1] (Keras's CutMix bounds it; timm's "
                f"default is 1.0); got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}."
            )
        if not (0 <= self.prob <= 1 and 0 <= self.switch_prob <= 1):
            raise ValueError(f"prob and switch_prob are probabilities in [0, 1]; got {prob} and {switch_prob}.")
        seeds = [None if seed is None else int(seed) + k for k in range(3)]  # three independent streams
        self.mixup = keras.layers.MixUp(self.mixup_alpha, seed=seeds[1], dtype="float32") if self.mixup_alpha else None
        self.cutmix = (keras.layers.CutMix((self.cutmix_alpha,) * 2, seed=seeds[2], dtype="float32")
                       if self.cutmix_alpha else None)
        self.generator = keras.random.SeedGenerator(seeds[0])

    def build(self, images_shape, labels_shape):
        pass  # Keras's MixUp and CutMix hold no weights

    def call(self, images, labels):
        images = tf.cast(images, "float32")
        labels = tf.cast(labels, "float32")
        draws = keras.random.uniform((2,), seed=self.generator)  # (mix this batch?, CutMix or MixUp?)
        if self.prob >= 1:
            return self._mix(images, labels, draws[1])
        return tf.cond(draws[0] < self.prob, lambda: self._mix(images, labels, draws[1]), lambda: (images, labels))

    def _mix(self, images, labels, switch):
        if self.cutmix is None:
            return self._mixup(images, labels)
        if self.mixup is None:
            return self._cutmix(images, labels)
        return tf.cond(switch < self.switch_prob, lambda: self._cutmix(images, labels),
                       lambda: self._mixup(images, labels))

    def _mixup(self, images, labels):
        out = self.mixup({"images": images, "labels": labels}, training=True)
        return out["images"], out["labels"]

    def _cutmix(self, images, labels):
        transformation = self.cutmix.get_random_transformation({"images": images, "labels": labels})
        mixed = self.cutmix.transform_images(images, transformation)
        order = transformation["permutation_order"]
        kept = 1.0 - tf.reduce_mean(tf.cast(transformation["batch_masks"][..., :1], "float32"), axis=[1, 2])
        return mixed, kept * labels + (1.0 - kept) * tf.gather(labels, order)

    def get_config(self):
        config = super().get_config()
        config.update(mixup_alpha=self.mixup_alpha, cutmix_alpha=self.cutmix_alpha, prob=self.prob,
                      switch_prob=self.switch_prob, seed=self.seed)
        return config


def soft_labels(labels, *, task: str, num_classes: int | None = None):
    """Labels as float vectors that can be mixed: one-hot (multiclass), `(batch, 1)` 0/1
    targets (binary), multi-hot as given (multilabel).

    Example:

    >>> soft_labels(tf.constant([2, 0]), task="multiclass", num_classes=3).numpy().tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    if task == "multiclass":
        labels = tf.reshape(tf.cast(labels, "int32"), [-1])
        return tf.one_hot(labels, int(num_classes), dtype="float32")
    if task == "binary":
        return tf.reshape(tf.cast(labels, "float32"), [-1, 1])
    return tf.cast(labels, "float32")


def mix_batches(
    dataset: tf.data.Dataset,
    *,
    task: str,
    num_classes: int | None = None,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    seed: int | None = None,
) -> tf.data.Dataset:
    """MixUp / CutMix over a batched dataset: yields `(images, soft_labels[, sample_weights])`.

    Integer labels are one-hot encoded first (multiclass); a binary head's 0/1 labels become
    `(batch, 1)` targets and are mixed like any other (binary cross-entropy with a mixed target
    is exactly the mixture of the two images' losses); multilabel multi-hot vectors are mixed
    as they are. Compile with `tfft.compile_model`: its loss and metrics take these soft labels
    (metrics score against their argmax / 0.5 threshold) as well as the hard labels of the
    validation data. Parameters follow timm's `Mixup` (see `MixBatch`).

    Args:
        dataset: batched `(images, labels[, sample_weights])`, images 0-255 float32.
        task: `"multiclass"`, `"binary"` or `"multilabel"`.
        num_classes: number of classes (needed for multiclass).
        mixup_alpha: MixUp's Beta parameter (timm: 0.8); 0 for none.
        cutmix_alpha: CutMix's Beta parameter, in (0, 1] (timm: 1.0); 0 for none.
        prob: probability that a batch is mixed.
        switch_prob: probability of CutMix rather than MixUp when both are on.
        seed: seed of the draws; with it, epoch e mixes as a function of (seed, e) only in a
            `fit` with `tfft.order.EpochSeed`, so a resumed run mixes the same.

    Returns:
        The mixed dataset (marked as augmented: `is_augmented`).

    Raises:
        ValueError: for a regression task, or multiclass without `num_classes`.

    Example:

    >>> import numpy as np
    >>> ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 8, 8, 3), "float32"), [0, 1, 2, 1])).batch(4)
    >>> mixed = mix_batches(ds, task="multiclass", num_classes=3, mixup_alpha=0.8, cutmix_alpha=1.0, seed=0)
    >>> next(iter(mixed))[1].shape
    TensorShape([4, 3])
    """
    if task not in MIX_TASKS:
        raise ValueError(f"MixUp / CutMix mix class labels, so they need task in {MIX_TASKS}; got task={task!r}.")
    if task == "multiclass" and not num_classes:
        raise ValueError("mix_batches(task='multiclass') needs num_classes to one-hot encode the labels.")
    layer = MixBatch(mixup_alpha, cutmix_alpha, prob=prob, switch_prob=switch_prob, seed=seed)
    _keyed(layer, seed)

    def mix(images, labels, *rest):
        return (*layer(images, soft_labels(labels, task=task, num_classes=num_classes)), *rest)

    return mark_augmented(_map_batches(dataset, mix, layer))


def is_augmented(dataset: tf.data.Dataset) -> bool:
    """Returns whether `dataset` came from a tfft loader with augmentation.

    Example:

    >>> import numpy as np
    >>> from tfft.data import from_arrays
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
