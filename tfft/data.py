"""Input pipelines that feed tfft models.

Every loader returns a `DataBundle`: batched, prefetched `tf.data.Dataset`s for
the `train`, `validation` and `test` splits (a split that was not asked for is
`None`), with the class names, per-split class counts and the examples behind
each split. A model from `tfft.build_model` trains on `bundle.train` directly.

What the datasets yield:

* Images: `(images, labels)`, images float32 of shape `(batch, H, W, 3)` with
  RAW 0-255 RGB pixels (the backbone's own preprocessing sits inside the
  model). Grayscale is expanded to RGB, an alpha channel is dropped, and an
  animated GIF gives its first frame.
* Text: `(strings, labels)` with `tf.string` sentences (tokenization happens
  inside the model); sentence pairs give `((strings_a, strings_b), labels)`.
* Labels: int class indices (multiclass / binary), multi-hot float32 vectors
  (multilabel) or float32 values (regression, `from_arrays` only).

Policies:

* Labels come from the class folder name or the label column, never from an
  example's position, so dropping a bad file cannot shift a label. Class names
  are `class_names=` when given, else the sorted folder names / label values of
  the training source (integer-like label values sort numerically).
* `on_bad_file="skip"` (default) drops a file that has an image extension but
  does not decode, an unreadable text file, a row with an empty or unknown
  label, and logs one warning with the count and the first few paths.
  `on_bad_file="raise"` raises a `ValueError` naming them instead. Files with
  other extensions (`.DS_Store`, `notes.txt` next to images) are ignored.
* Images are checked before any dataset is built (`validate="decode"`: a
  parallel `tf.io.decode_image` pass with the decoder training uses, which
  catches truncated files; `"header"`: a cheaper PIL header check; `"none"`).
  With `"skip"` the pipeline also ignores decode errors at run time, so a file
  damaged later never stops training halfway.
* Structural problems always raise `ValueError`: a missing column, an empty
  class folder that was not named in `class_names`, a split that ends up
  empty, labels outside `[0, num_classes)` in `from_arrays`.
* Splits are stratified per class and reproducible with `seed` (default 42):
  `validation_split` and `test_split` are fractions of each class, rounded per
  class, and every class keeps at least one training example. `kfold` gives
  stratified folds from the same examples.
* Performance: files are streamed from disk (`tf.data` over the file list,
  decoded with `num_parallel_calls=AUTOTUNE`), never loaded into NumPy.
  `cache="auto"` caches the resized images in memory when they fit in
  `AUTO_CACHE_BYTES`; `cache=True|False` forces it; a path caches to files
  under that directory. The training split is reshuffled each epoch (from
  `seed`, so the order is reproducible); augmentation (Keras preprocessing
  layers) runs on training batches only; every split is prefetched.
* `from_tfds` finds the image / text / label features from the builder's
  `info.features`. When the dataset is not prepared in `data_dir` it only
  starts a download if the storage host answers within a few seconds; offline
  it raises `DatasetNotPreparedError` at once, saying how to prepare the data
  elsewhere and point `data_dir` at it.

Example:

```python
import tfft

bundle = tfft.data.from_image_directory(
    "flowers/", backbone="resnet50", validation_split=0.2, augment=True
)
print(bundle.summary())
model = tfft.build_model("resnet50", num_classes=bundle.num_classes)
model.fit(
    bundle.train,
    validation_data=bundle.validation,
    class_weight=tfft.data.class_weights(bundle),
)
```
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import logging
import math
import os
import socket
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfft import order as order_lib

logger = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TEXT_EXTENSIONS = (".txt",)
SPLITS = ("train", "validation", "test")
DEFAULT_IMAGE_SIZE = (224, 224)
DEFAULT_SEED = 42
# `cache="auto"` caches a split in memory when its decoded, resized images
# take at most this many bytes.
AUTO_CACHE_BYTES = 1 << 30
# Without an in-memory cache, decoded images are shuffled in a buffer of at
# most this many examples, so memory stays bounded for any folder size.
MAX_SHUFFLE_BUFFER = 1024
RESIZE_POLICIES = ("stretch", "crop", "pad")
BAD_FILE_POLICIES = ("skip", "raise")
VALIDATE_POLICIES = ("decode", "header", "none")
TASKS = ("multiclass", "binary", "multilabel", "regression")
# Host that TFDS downloads prepared datasets from; probed before a download.
TFDS_STORAGE_HOST = "storage.googleapis.com"
NETWORK_PROBE_TIMEOUT = 3.0
_MAX_LISTED = 5


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared locally and cannot be downloaded."""


# ---------------------------------------------------------------------------
# The bundle.


@dataclasses.dataclass(frozen=True)
class _Examples:
    """The examples of one split, held as paths, strings or arrays.

    Attributes:
        inputs: a NumPy array (file paths, strings or array data), or a tuple
            of two string arrays for sentence pairs.
        labels: NumPy array of labels, aligned with `inputs`.
        files: the source file of each example, or `None`.
    """

    inputs: Any
    labels: np.ndarray
    files: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> _Examples:
        """Returns the examples at `indices`."""
        if isinstance(self.inputs, tuple):
            inputs = tuple(part[indices] for part in self.inputs)
        else:
            inputs = self.inputs[indices]
        files = self.files[indices] if self.files is not None else None
        return _Examples(inputs, self.labels[indices], files)

    @staticmethod
    def concat(parts: Sequence[_Examples]) -> _Examples:
        """Concatenates the examples of several splits."""
        if isinstance(parts[0].inputs, tuple):
            inputs = tuple(
                np.concatenate([p.inputs[i] for p in parts])
                for i in range(len(parts[0].inputs))
            )
        else:
            inputs = np.concatenate([p.inputs for p in parts])
        files = None
        if all(p.files is not None for p in parts):
            files = np.concatenate([p.files for p in parts])
        return _Examples(inputs, np.concatenate([p.labels for p in parts]), files)


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Batched, prefetched datasets for the train / validation / test splits.

    Attributes:
        train: the training `tf.data.Dataset` (shuffled each epoch, augmented
            when asked), or `None`.
        validation: the validation dataset, or `None`.
        test: the test dataset, or `None`.
        class_names: class names; index `i` is label `i`. Empty for
            regression.
        counts: per split, the number of examples of each class (positives
            per class for multilabel); empty where not computed (TFDS).
        files: per split, the source file of each example, in the order of
            `labels` (image and text folders), else empty.
        labels: per split, the labels as a NumPy array (empty for TFDS).
        modality: `"image"`, `"text"`, `"text_pair"` or `"features"`.
        task: `"multiclass"`, `"multilabel"` or `"regression"`.
        image_size: `(height, width)` of the images, or `None`.
        batch_size: examples per batch.
        augmented: whether the training split is augmented.
        skipped: bad files / rows that were dropped.
        seed: the seed of the splits and shuffling.

    Example:

    >>> import numpy as np
    >>> bundle = from_arrays(np.zeros((10, 4)), [0] * 6 + [1] * 4,
    ...                      validation_split=0.5, batch_size=5)
    >>> bundle.num_classes, bundle.counts["validation"], bundle.class_counts
    (2, (3, 2), (6, 4))
    >>> print(bundle.summary().splitlines()[1])
    class       train  validation
    """

    train: tf.data.Dataset | None
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]
    files: Mapping[str, tuple[str, ...]]
    labels: Mapping[str, np.ndarray]
    modality: str
    task: str
    image_size: tuple[int, int] | None
    batch_size: int
    augmented: bool
    skipped: tuple[str, ...] = ()
    seed: int | None = DEFAULT_SEED
    _examples: Mapping[str, _Examples] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )
    _pipeline: Any = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (outputs for multilabel), `None` for regression."""
        return len(self.class_names) or None

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Per-class counts summed over all splits."""
        if not self.counts:
            return ()
        return tuple(int(sum(c)) for c in zip(*self.counts.values()))

    def split(self, name: str) -> tf.data.Dataset | None:
        """Returns the dataset of split `name` (`train`, `validation`, `test`)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, name)

    def summary(self) -> str:
        """Returns a table of per-split class counts and the pipeline settings."""
        head = [f"{self.modality} data, task {self.task}"]
        if self.class_names:
            head.append(f"{len(self.class_names)} classes")
        if self.image_size:
            head.append(f"image size {self.image_size[0]}x{self.image_size[1]}")
        head.append(f"batch size {self.batch_size}")
        head.append("augmented train" if self.augmented else "no augmentation")
        lines = [", ".join(head)]
        splits = [s for s in SPLITS if self.split(s) is not None]
        if self.counts and self.class_names:
            width = max(len(n) for n in self.class_names + ("class", "total"))
            lines.append(
                "class".ljust(width) + "".join(f"{s:>12}" for s in splits)
            )
            for i, name in enumerate(self.class_names):
                row = "".join(f"{self.counts[s][i]:>12}" for s in splits)
                lines.append(name.ljust(width) + row)
            totals = "".join(f"{len(self.labels[s]):>12}" for s in splits)
            lines.append("total".ljust(width) + totals)
        else:
            sizes = [
                f"{s}: {len(self.labels[s])}" if s in self.labels else s
                for s in splits
            ]
            lines.append("splits: " + ", ".join(sizes))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad file(s) / row(s)")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# Augmentation.

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


def _mark_augmented(dataset: tf.data.Dataset) -> tf.data.Dataset:
    _augmented_datasets.add(dataset)
    return dataset


# ---------------------------------------------------------------------------
# Image preprocessing.


def _as_size(image_size: int | Sequence[int]) -> tuple[int, int]:
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
        return _as_size(image_size)
    if backbone is None:
        return DEFAULT_IMAGE_SIZE
    if isinstance(backbone, keras.Model):
        shape = tuple(backbone.input_shape)[1:3]
    else:
        try:
            from tfft import backbones  # Lazy: tfft.data must not need it.

            shape = tuple(backbones.get_backbone_spec(backbone).input_shape)[:2]
        except (ImportError, AttributeError) as error:
            raise ValueError(
                f"Cannot look up the input size of backbone {backbone!r} "
                f"({error}); pass image_size=(height, width)."
            ) from error
    if len(shape) < 2 or not all(isinstance(s, int) and s > 0 for s in shape):
        return DEFAULT_IMAGE_SIZE
    return shape


def _resizer(image_size: tuple[int, int], resize: str) -> keras.layers.Layer:
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


def _to_rgb(images: tf.Tensor) -> tf.Tensor:
    """Gives 1-, 3- or 4-channel images (static channel count) 3 channels."""
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    if channels != 3:
        raise ValueError(f"Images need 1, 3 or 4 channels, got shape {images.shape}.")
    return images


def _decode_image(data: tf.Tensor) -> tf.Tensor:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# ---------------------------------------------------------------------------
# Pipelines: from examples to batched datasets.


def _cache_dataset(
    dataset: tf.data.Dataset, cache: bool | str, key: str
) -> tuple[tf.data.Dataset, bool]:
    """Applies `cache`; returns the dataset and whether it is in memory."""
    if cache is False:
        return dataset, False
    if cache is True:
        return dataset.cache(), True
    os.makedirs(cache, exist_ok=True)
    return dataset.cache(os.path.join(os.fspath(cache), key)), False


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(repr(part).encode())
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class _Pipeline:
    """Turns `_Examples` into a batched, prefetched `tf.data.Dataset`.

    Attributes:
        modality: `image_files`, `image`, `text`, `text_pair`, `features`.
        batch_size: examples per batch.
        seed: shuffle seed.
        image_size: resize target, or `None` to keep array images as they are.
        resize: resize policy.
        augment: augmentation layer for the training split, or `None`.
        cache: `"auto"`, `True`, `False` or a directory.
        skip_errors: drop examples that fail to decode at run time.
    """

    modality: str
    batch_size: int
    seed: int | None
    image_size: tuple[int, int] | None = None
    resize: str = "stretch"
    augment: Any = None
    cache: bool | str = "auto"
    skip_errors: bool = True

    def build(self, examples: _Examples, split: str) -> tf.data.Dataset:
        """Returns the dataset of `examples` for `split`."""
        training = split == "train"
        if training and self.seed is not None:
            # A fixed first order, so that a cache holds a mixed order too.
            order = np.random.default_rng(self.seed).permutation(len(examples))
            examples = examples.take(order)
        if self.modality == "image_files":
            dataset = self._image_files(examples, split, training)
        else:
            dataset = self._tensors(examples, training)
        dataset = dataset.batch(self.batch_size)
        if training and self.augment is not None:
            layer = self.augment
            dataset = dataset.map(
                lambda x, y: (layer(x, training=True), y),
                num_parallel_calls=AUTOTUNE,
            )
        dataset = dataset.prefetch(AUTOTUNE)
        if training and self.augment is not None:
            _mark_augmented(dataset)
        return dataset

    def _shuffle(self, dataset: tf.data.Dataset, buffer: int) -> tf.data.Dataset:
        # Epoch-keyed: a run resumed at epoch e sees epoch e's order (tfft.order).
        return order_lib.epoch_shuffle(dataset, buffer, self.seed)

    def _image_files(
        self, examples: _Examples, split: str, training: bool
    ) -> tf.data.Dataset:
        height, width = self.image_size
        cache = self.cache
        if cache == "auto":
            cache = len(examples) * height * width * 3 * 4 <= AUTO_CACHE_BYTES
        key = None
        if isinstance(cache, str):
            key = f"{split}-" + _fingerprint(
                examples.inputs.tolist(), examples.labels.tolist(),
                self.image_size, self.resize,
            )
        resizer = _resizer(self.image_size, self.resize)

        def load(path, label):
            image = _decode_image(tf.io.read_file(path))
            return resizer(tf.cast(image, tf.float32)), label

        dataset = tf.data.Dataset.from_tensor_slices(
            (examples.inputs.astype(str), examples.labels)
        )
        if training and cache is False:
            # Shuffle paths, not decoded images: memory stays bounded.
            dataset = self._shuffle(dataset, len(examples))
        dataset = dataset.map(
            load,
            num_parallel_calls=AUTOTUNE,
            deterministic=True if self.seed is not None else None,
        )
        if self.skip_errors:
            dataset = dataset.ignore_errors(log_warning=True)
        dataset, in_memory = _cache_dataset(dataset, cache, key)
        if training and cache is not False:
            buffer = len(examples) if in_memory else MAX_SHUFFLE_BUFFER
            dataset = self._shuffle(dataset, min(buffer, len(examples)))
        return dataset

    def _tensors(self, examples: _Examples, training: bool) -> tf.data.Dataset:
        inputs = examples.inputs
        dataset = tf.data.Dataset.from_tensor_slices((inputs, examples.labels))
        if training:
            dataset = self._shuffle(dataset, len(examples))
        if self.modality == "image":
            resizer = (
                _resizer(self.image_size, self.resize) if self.image_size else None
            )

            def prepare(image, label):
                image = _to_rgb(tf.cast(image, tf.float32))
                return (resizer(image) if resizer else image), label

            dataset = dataset.map(prepare, num_parallel_calls=AUTOTUNE)
        elif self.modality == "features":
            dataset = dataset.map(
                lambda x, y: (tf.cast(x, tf.float32), y),
                num_parallel_calls=AUTOTUNE,
            )
        return dataset


# ---------------------------------------------------------------------------
# Splits, folds and class weights.


def _check_fraction(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return float(value)


def stratified_split_indices(
    labels: Sequence[int] | np.ndarray,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    stratify: bool = True,
) -> dict[str, np.ndarray]:
    """Splits example indices into train / validation / test, per class.

    Each class gives `round(count * fraction)` examples to validation and to
    test and keeps at least one for training, so class proportions carry over
    to every split.

    Args:
        labels: int class index per example (anything, if `stratify=False`).
        validation_split: fraction of each class for validation.
        test_split: fraction of each class for test.
        seed: seed of the random assignment.
        stratify: split per class; `False` splits the examples as one group
            (multilabel, regression).

    Returns:
        `{"train": idx, "validation": idx, "test": idx}`, sorted index arrays.

    Example:

    >>> parts = stratified_split_indices([0] * 10 + [1] * 10, 0.2, 0.1, seed=0)
    >>> [len(parts[s]) for s in ("train", "validation", "test")]
    [14, 4, 2]
    """
    validation_split = _check_fraction("validation_split", validation_split)
    test_split = _check_fraction("test_split", test_split)
    if validation_split + test_split >= 1.0:
        raise ValueError(
            "validation_split + test_split must be below 1, got "
            f"{validation_split} + {test_split}."
        )
    labels = np.asarray(labels)
    groups = (
        np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
        if stratify
        else np.zeros(len(labels), dtype=int)
    )
    rng = np.random.default_rng(seed)
    parts = {s: [] for s in SPLITS}
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        n = len(members)
        n_test = min(math.floor(n * test_split + 0.5), max(n - 1, 0))
        n_val = min(math.floor(n * validation_split + 0.5), max(n - 1 - n_test, 0))
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {
        s: np.sort(np.concatenate(p)).astype(np.int64) if p else np.zeros(0, int)
        for s, p in parts.items()
    }


def kfold_indices(
    labels: Sequence[int] | np.ndarray,
    k: int = 5,
    seed: int | None = DEFAULT_SEED,
    stratify: bool = True,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified k-fold: `(train_idx, val_idx)` per fold.

    Every example is in exactly one validation fold; each class is spread as
    evenly as possible over the folds.

    Args:
        labels: int class index per example.
        k: number of folds, at least 2.
        seed: seed of the assignment.
        stratify: `False` folds the examples as one group.

    Returns:
        A list of `k` `(train_indices, validation_indices)` pairs.

    Example:

    >>> folds = kfold_indices([0, 0, 0, 1, 1, 1], k=3, seed=0)
    >>> [len(val) for _, val in folds]
    [2, 2, 2]
    """
    labels = np.asarray(labels)
    if not 2 <= k <= len(labels):
        raise ValueError(f"k must be in [2, {len(labels)}] (the example count), got {k}.")
    groups = (
        np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
        if stratify
        else np.zeros(len(labels), dtype=int)
    )
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    offset = 0
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        # Continue where the last class stopped, so fold sizes stay even.
        fold_of[members] = (np.arange(len(members)) + offset) % k
        offset = (offset + len(members)) % k
    everything = np.arange(len(labels))
    return [
        (everything[fold_of != fold], everything[fold_of == fold])
        for fold in range(k)
    ]


def kfold(
    bundle: DataBundle, k: int = 5, seed: int | None = None
) -> Iterator[tuple[tf.data.Dataset, tf.data.Dataset]]:
    """Yields `(train, validation)` datasets for stratified k-fold CV.

    The folds are drawn from the bundle's train and validation examples (the
    test split stays out) and built with the bundle's pipeline: batch size,
    image size, caching, and augmentation of the training folds.

    Args:
        bundle: a bundle from `from_image_directory`, `from_text_files` or
            `from_arrays`.
        k: number of folds.
        seed: seed of the fold assignment; defaults to the bundle's seed.

    Yields:
        `(train_dataset, validation_dataset)` for each fold.

    Example:

    >>> import numpy as np
    >>> bundle = from_arrays(np.zeros((10, 3)), [0, 1] * 5, batch_size=4)
    >>> len(list(kfold(bundle, k=5)))
    5
    """
    if not bundle._examples or bundle._pipeline is None:
        raise ValueError(
            "kfold needs the examples behind the bundle; TFDS bundles stream "
            "them. Load the data with from_image_directory / from_text_files "
            "/ from_arrays, or split TFDS with split slices."
        )
    parts = [bundle._examples[s] for s in ("train", "validation") if s in bundle._examples]
    examples = _Examples.concat(parts)
    seed = bundle.seed if seed is None else seed
    stratify = bundle.task == "multiclass"
    for train_idx, val_idx in kfold_indices(examples.labels, k, seed, stratify):
        yield (
            bundle._pipeline.build(examples.take(train_idx), "train"),
            bundle._pipeline.build(examples.take(val_idx), "validation"),
        )


def class_weights(
    labels: DataBundle | Sequence[int] | np.ndarray,
    num_classes: int | None = None,
) -> dict[int, float]:
    """Balanced class weights for `model.fit(class_weight=...)`.

    The weight of class `c` is `n / (k * count_c)`, with `n` examples and `k`
    classes present; a class with no examples is left out.

    Args:
        labels: int labels, or a `DataBundle` (its training labels).
        num_classes: number of classes; defaults to the bundle's or
            `max(label) + 1`.

    Returns:
        `{class_index: weight}`.

    Example:

    >>> class_weights([0, 0, 0, 1])
    {0: 0.6666666666666666, 1: 2.0}
    """
    if isinstance(labels, DataBundle):
        if labels.task != "multiclass" or "train" not in labels.labels:
            raise ValueError("class_weights needs a multiclass bundle with train labels.")
        num_classes = num_classes or labels.num_classes
        labels = labels.labels["train"]
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "iub":
        raise ValueError("class_weights needs a non-empty 1-D array of int labels.")
    counts = np.bincount(labels, minlength=num_classes or 0)
    present = np.flatnonzero(counts)
    return {
        int(c): float(len(labels) / (len(present) * counts[c])) for c in present
    }


# ---------------------------------------------------------------------------
# Shared loader plumbing.


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {tuple(choices)}.")


def _report_bad(bad: Sequence[tuple[str, str]], on_bad_file: str, what: str) -> None:
    """Raises (`"raise"`) or logs (`"skip"`) the bad files / rows."""
    if not bad:
        return
    listed = "; ".join(f"{where} ({why})" for where, why in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    if on_bad_file == "raise":
        raise ValueError(
            f"{len(bad)} bad {what}: {listed}{more}. Fix or remove them, or "
            "pass on_bad_file='skip' to drop them."
        )
    logger.warning("Skipped %d bad %s: %s%s.", len(bad), what, listed, more)


def _split_sources(path: Any) -> dict[str, Any]:
    """`path` or `{split: path}` -> `{split: path}`, checked."""
    if isinstance(path, Mapping):
        unknown = set(path) - set(SPLITS)
        if unknown or "train" not in path:
            raise ValueError(
                f"A mapping of sources needs a 'train' key and keys from {SPLITS}; "
                f"got {sorted(path)}."
            )
        return dict(path)
    return {"train": path}


def _make_splits(
    sources: Mapping[str, _Examples],
    validation_split: float,
    test_split: float,
    seed: int | None,
    stratify: bool,
) -> dict[str, _Examples]:
    """Carves validation / test out of train where asked; checks emptiness."""
    for name, fraction in (("validation", validation_split), ("test", test_split)):
        if fraction and name in sources:
            raise ValueError(
                f"Both a {name} source and {name}_split={fraction} were given; "
                "use one."
            )
    splits = dict(sources)
    if validation_split or test_split:
        train = sources["train"]
        parts = stratified_split_indices(
            train.labels, validation_split, test_split, seed, stratify
        )
        splits["train"] = train.take(parts["train"])
        if validation_split:
            splits["validation"] = train.take(parts["validation"])
        if test_split:
            splits["test"] = train.take(parts["test"])
    for name, examples in splits.items():
        if len(examples) == 0:
            raise ValueError(
                f"The {name} split is empty ({len(sources['train'])} usable "
                "training examples). Add data, or lower validation_split / "
                "test_split."
            )
    return splits


def _bundle(
    splits: Mapping[str, _Examples],
    pipeline: _Pipeline,
    *,
    class_names: Sequence[str],
    task: str,
    modality: str,
    image_size: tuple[int, int] | None,
    skipped: Sequence[str] = (),
) -> DataBundle:
    """Builds every split's dataset and the bundle around them."""
    datasets = {name: pipeline.build(ex, name) for name, ex in splits.items()}
    counts = {}
    if task == "multiclass":
        counts = {
            name: tuple(int(c) for c in np.bincount(ex.labels, minlength=len(class_names)))
            for name, ex in splits.items()
        }
    elif task == "multilabel":
        counts = {
            name: tuple(int(c) for c in ex.labels.sum(axis=0)) for name, ex in splits.items()
        }
    return DataBundle(
        train=datasets.get("train"),
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=tuple(class_names),
        counts=counts,
        files={
            n: tuple(ex.files.tolist())
            for n, ex in splits.items()
            if ex.files is not None
        },
        labels={n: ex.labels for n, ex in splits.items()},
        modality=modality,
        task=task,
        image_size=image_size,
        batch_size=pipeline.batch_size,
        augmented=pipeline.augment is not None,
        skipped=tuple(skipped),
        seed=pipeline.seed,
        _examples=dict(splits),
        _pipeline=pipeline,
    )


def _list_class_folder(
    root: str, extensions: Sequence[str]
) -> dict[str, list[str]]:
    """`{class_name: sorted files}` for each non-hidden subfolder of `root`."""
    if not os.path.isdir(root):
        raise ValueError(f"{root!r} is not a directory (expected one subfolder per class).")
    classes = sorted(
        e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
    )
    if not classes:
        raise ValueError(f"{root!r} has no class subfolders; expected {root}/<class>/<files>.")
    listing = {}
    for name in classes:
        files = []
        for folder, dirs, names in os.walk(os.path.join(root, name)):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            files += [
                os.path.join(folder, f)
                for f in sorted(names)
                if f.lower().endswith(tuple(extensions)) and not f.startswith(".")
            ]
        listing[name] = files
    return listing


def _resolve_folder_classes(
    listing: Mapping[str, list[str]],
    class_names: Sequence[str] | None,
    root: str,
    what: str,
) -> tuple[str, ...]:
    """Checks class folders against `class_names`; returns the class names."""
    explicit = class_names is not None
    names = tuple(class_names) if explicit else tuple(listing)
    for name in names:
        if not listing.get(name):
            message = (
                f"Class folder {os.path.join(root, name)!r} has no {what}."
            )
            if not explicit:
                raise ValueError(
                    message + " Add files, remove the folder, or list the class in "
                    "class_names= to keep it with zero examples."
                )
            logger.warning("%s The class is kept with zero examples.", message)
    return names


def _folder_examples(
    listing: Mapping[str, list[str]],
    class_names: Sequence[str],
    root: str,
) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """Pairs each file with its folder's class; folders outside the list are bad."""
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels, bad = [], [], []
    for name, files in listing.items():
        if name not in index:
            if files:
                bad.append(
                    (os.path.join(root, name),
                     f"class {name!r} is not in class_names, {len(files)} file(s)")
                )
            continue
        paths += files
        labels += [index[name]] * len(files)
    return paths, labels, bad


# ---------------------------------------------------------------------------
# Image folders.


def _undecodable_images(paths: Sequence[str]) -> set[str]:
    """Paths that `tf.io.decode_image` cannot decode (parallel pass)."""
    if not paths:
        return set()

    def decode(path):
        return path, tf.shape(_decode_image(tf.io.read_file(path)))

    dataset = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
        .ignore_errors()
    )
    good = {p.decode() for p, _ in dataset.as_numpy_iterator()}
    return set(paths) - good


def _unreadable_headers(paths: Sequence[str]) -> set[str]:
    """Paths whose image header PIL cannot read (thread pool)."""
    from PIL import Image

    def bad(path):
        try:
            with Image.open(path) as image:
                image.verify()
            return None
        except Exception:  # PIL raises many types for bad files.
            return path

    workers = min(16, (os.cpu_count() or 1) * 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return {p for p in pool.map(bad, paths) if p is not None}


def find_bad_images(paths: Sequence[str], validate: str = "decode") -> set[str]:
    """Returns the image files that would fail in training.

    Args:
        paths: image file paths.
        validate: `"decode"` decodes every file with `tf.io.decode_image` (the
            decoder training uses; catches truncated files), `"header"` only
            reads headers with PIL (faster, misses truncation), `"none"`.

    Returns:
        The set of bad paths.

    Example:

    >>> find_bad_images([], "decode")
    set()
    """
    _check_choice("validate", validate, VALIDATE_POLICIES)
    if validate == "none":
        return set()
    if validate == "header":
        return _unreadable_headers(paths)
    return _undecodable_images(paths)


def _image_folder_examples(
    root: str,
    class_names: Sequence[str] | None,
    validate: str,
) -> tuple[_Examples, tuple[str, ...], list[tuple[str, str]]]:
    listing = _list_class_folder(root, IMAGE_EXTENSIONS)
    names = _resolve_folder_classes(listing, class_names, root, "image files")
    paths, labels, bad = _folder_examples(listing, names, root)
    broken = find_bad_images(paths, validate)
    bad += [(p, "not a decodable image") for p in paths if p in broken]
    keep = [i for i, p in enumerate(paths) if p not in broken]
    kept = np.asarray([paths[i] for i in keep], dtype=object)
    examples = _Examples(
        kept, np.asarray([labels[i] for i in keep], dtype=np.int64), kept
    )
    return examples, names, bad


def from_image_directory(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    image_size: int | Sequence[int] | None = None,
    backbone: Any = None,
    resize: str = "stretch",
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    class_names: Sequence[str] | None = None,
    augment: Any = False,
    cache: bool | str | os.PathLike = "auto",
    on_bad_file: str = "skip",
    validate: str = "decode",
) -> DataBundle:
    """Loads images from one subfolder per class.

    `path/<class>/**/*.{jpg,jpeg,png,bmp,gif}`; other files are ignored.
    Images are streamed from disk, decoded in parallel, made RGB and resized
    to `image_size` as float32 0-255 pixels.

    Args:
        path: the root folder, or `{"train": dir, "validation": dir,
            "test": dir}` for data that comes pre-split (each with class
            subfolders).
        image_size: `(height, width)` or an int; defaults to the input size
            of `backbone`, else 224x224.
        backbone: a tfft backbone name or `keras.Model` to take the size from.
        resize: `"stretch"` (plain resize), `"crop"` (central crop to the
            target aspect ratio, then resize) or `"pad"` (pad to the aspect
            ratio with black, then resize).
        batch_size: examples per batch.
        validation_split: fraction of each class of the training source held
            out for validation.
        test_split: fraction of each class held out for test.
        seed: seed of the splits, shuffling and augmentation.
        class_names: the classes, in label order; defaults to the sorted
            folder names of the training source.
        augment: augmentation of the training split (see
            `augmentation_layer`).
        cache: `"auto"` (in memory when the split fits `AUTO_CACHE_BYTES`),
            `True`, `False`, or a directory to cache into.
        on_bad_file: `"skip"` or `"raise"` for undecodable images and class
            folders outside `class_names`.
        validate: how to check images up front (see `find_bad_images`).

    Returns:
        A `DataBundle` of image datasets.

    Example:

    >>> import os, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for cls in ("cat", "dog"):
    ...     os.makedirs(f"{root}/{cls}")
    ...     for i in range(5):
    ...         Image.new("RGB", (40, 30)).save(f"{root}/{cls}/{i}.png")
    >>> bundle = from_image_directory(root, image_size=32, batch_size=4,
    ...                               validation_split=0.2)
    >>> bundle.counts["validation"]
    (1, 1)
    >>> images, labels = next(iter(bundle.train))
    >>> tuple(images.shape), images.dtype.name
    ((4, 32, 32, 3), 'float32')
    """
    _check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    size = resolve_image_size(image_size, backbone)
    _resizer(size, resize)  # Validates `resize` before any file work.
    sources = _split_sources(path)
    train, names, bad = _image_folder_examples(
        os.fspath(sources["train"]), class_names, validate
    )
    examples = {"train": train}
    for name in ("validation", "test"):
        if name in sources:
            examples[name], _, more = _image_folder_examples(
                os.fspath(sources[name]), names, validate
            )
            bad += more
    _report_bad(bad, on_bad_file, "image file(s)")
    splits = _make_splits(examples, validation_split, test_split, seed, True)
    pipeline = _Pipeline(
        modality="image_files",
        batch_size=batch_size,
        seed=seed,
        image_size=size,
        resize=resize,
        augment=augmentation_layer(augment, seed),
        cache=os.fspath(cache) if isinstance(cache, os.PathLike) else cache,
        skip_errors=on_bad_file == "skip",
    )
    bundle = _bundle(
        splits, pipeline, class_names=names, task="multiclass", modality="image",
        image_size=size, skipped=[where for where, _ in bad],
    )
    logger.info("Loaded %s\n%s", os.fspath(sources["train"]), bundle.summary())
    return bundle


# ---------------------------------------------------------------------------
# Text files.


def _class_order(values: Sequence[str]) -> tuple[str, ...]:
    """Sorted unique label values; numerically when all are integers."""
    unique = set(values)
    try:
        return tuple(str(v) for v in sorted(int(v) for v in unique))
    except ValueError:
        return tuple(sorted(unique))


def _label_index(value: str, index: Mapping[str, int], n: int) -> int | None:
    """Class index of a label value: by name, else as an in-range integer."""
    if value in index:
        return index[value]
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 <= number < n and str(number) == value.strip() else None


def _read_table(
    path: str, text_columns: tuple[str, ...] | None, label_column: str,
    delimiter: str | None,
) -> tuple[list[tuple[str, ...]], list[tuple[str, str]], tuple[str, ...]]:
    """Reads `(texts, label, where)` rows and `(where, reason)` problems."""
    is_tsv = path.lower().endswith((".tsv", ".tab")) if delimiter is None else delimiter == "\t"
    delimiter = delimiter or ("\t" if is_tsv else ",")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(
            handle,
            delimiter=delimiter,
            # TSV fields hold no tabs, so quotes in a sentence are text.
            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        )
        columns = tuple(reader.fieldnames or ())
        if label_column not in columns:
            raise ValueError(
                f"{path}: missing column {label_column!r}; the header has {columns}. "
                "Pass label_column= to name the label column."
            )
        if text_columns is None:
            text_columns = tuple(c for c in columns if c != label_column)
            if len(text_columns) != 1:
                raise ValueError(
                    f"{path}: cannot tell the text column among {columns}; pass "
                    "text_column='<name>' (or a pair of names for sentence pairs)."
                )
        for column in text_columns:
            if column not in columns:
                raise ValueError(
                    f"{path}: missing column {column!r}; the header has {columns}. "
                    "Pass text_column= to name the text column(s)."
                )
        rows, bad = [], []
        for line, row in enumerate(reader, start=2):
            label = (row.get(label_column) or "").strip()
            if not label or any(row.get(c) is None for c in text_columns):
                bad.append((f"{path}:{line}", "empty label or missing field"))
                continue
            rows.append((tuple(row[c] for c in text_columns), label, f"{path}:{line}"))
    return rows, bad, text_columns


def _text_folder_rows(root: str) -> tuple[list, list, dict[str, list[str]]]:
    listing = _list_class_folder(root, TEXT_EXTENSIONS)
    rows, bad = [], []
    for name, files in listing.items():
        for file in files:
            try:
                with open(file, encoding="utf-8") as handle:
                    rows.append(((handle.read(),), name, file))
            except (OSError, UnicodeDecodeError) as error:
                bad.append((file, f"unreadable: {error}"))
    return rows, bad, listing


def _text_examples(
    source: str,
    text_columns: tuple[str, ...] | None,
    label_column: str,
    delimiter: str | None,
    class_names: Sequence[str] | None,
) -> tuple[_Examples, tuple[str, ...], list, tuple[str, ...]]:
    """Reads one text source into examples (labels by name, never position)."""
    is_folder = os.path.isdir(source)
    if is_folder:
        rows, bad, listing = _text_folder_rows(source)
        if class_names is None:
            class_names = _resolve_folder_classes(listing, None, source, ".txt files")
        text_columns = text_columns or ("text",)
    else:
        if not os.path.isfile(source):
            raise ValueError(f"{source!r} is neither a CSV/TSV file nor a folder.")
        rows, bad, text_columns = _read_table(source, text_columns, label_column, delimiter)
        if class_names is None:
            class_names = _class_order([label for _, label, _ in rows])
    index = {name: i for i, name in enumerate(class_names)}
    keep, labels = [], []
    for i, (_, label, where) in enumerate(rows):
        value = _label_index(label, index, len(class_names))
        if value is None:
            bad.append((where, f"label {label!r} not in class_names {tuple(class_names)}"))
        else:
            keep.append(i)
            labels.append(value)
    columns = list(zip(*[rows[i][0] for i in keep])) or [()] * len(text_columns)
    inputs = tuple(np.asarray(c, dtype=object) for c in columns)
    examples = _Examples(
        inputs if len(inputs) == 2 else inputs[0],
        np.asarray(labels, dtype=np.int64),
        np.asarray([rows[i][2] for i in keep], dtype=object) if is_folder else None,
    )
    return examples, tuple(class_names), bad, text_columns


def from_text_files(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    text_column: str | Sequence[str] | None = None,
    label_column: str = "label",
    delimiter: str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    on_bad_file: str = "skip",
) -> DataBundle:
    """Loads text classification data from CSV / TSV files or .txt folders.

    A table needs a header row; `text_column` names the text (two names for
    sentence pairs) and `label_column` the label, given as a class name or a
    class index. A folder holds one subfolder of `.txt` files per class.
    Datasets yield `(strings, labels)`, or `((strings_a, strings_b), labels)`.

    Args:
        path: a `.csv` / `.tsv` file, a folder of class subfolders, or
            `{"train": ..., "validation": ..., "test": ...}` of those.
        text_column: the text column, or two for pairs; defaults to the only
            column that is not `label_column`.
        label_column: the label column.
        delimiter: field delimiter; defaults to tab for `.tsv`, else comma.
            TSV files are read without quoting.
        class_names: the classes in label order; defaults to the sorted label
            values of the training source (numerically when all integers).
        batch_size: examples per batch.
        validation_split: fraction of each class held out for validation.
        test_split: fraction of each class held out for test.
        seed: seed of the splits and shuffling.
        on_bad_file: `"skip"` or `"raise"` for rows with an empty or unknown
            label and unreadable files.

    Returns:
        A `DataBundle` of text datasets.

    Example:

    >>> import tempfile
    >>> tsv = tempfile.mktemp(suffix=".tsv")
    >>> with open(tsv, "w") as f:
    ...     _ = f.write("sentence\\tlabel\\n" + "good\\t1\\nbad\\t0\\n" * 5)
    >>> bundle = from_text_files(tsv, batch_size=4, validation_split=0.2)
    >>> bundle.class_names, bundle.counts["validation"]
    (('0', '1'), (1, 1))
    """
    _check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    if isinstance(text_column, str):
        text_column = (text_column,)
    columns = tuple(text_column) if text_column is not None else None
    if columns is not None and len(columns) not in (1, 2):
        raise ValueError(f"text_column takes one or two column names, got {columns}.")
    sources = {k: os.fspath(v) for k, v in _split_sources(path).items()}
    examples, bad = {}, []
    names = class_names
    for split in SPLITS:
        if split in sources:
            examples[split], names, more, columns = _text_examples(
                sources[split], columns, label_column, delimiter, names
            )
            bad += more
    _report_bad(bad, on_bad_file, "text file(s) / row(s)")
    modality = "text_pair" if isinstance(examples["train"].inputs, tuple) else "text"
    splits = _make_splits(examples, validation_split, test_split, seed, True)
    pipeline = _Pipeline(modality=modality, batch_size=batch_size, seed=seed)
    return _bundle(
        splits, pipeline, class_names=names, task="multiclass", modality=modality,
        image_size=None, skipped=[where for where, _ in bad],
    )


# ---------------------------------------------------------------------------
# Arrays.


def _infer_modality(x: Any) -> tuple[str, Any]:
    if isinstance(x, (tuple, list)) and len(x) == 2 and not isinstance(x[0], str):
        first, second = (np.asarray(part) for part in x)
        if first.dtype.kind in "USO" and second.dtype.kind in "USO" and first.ndim == 1:
            if len(first) != len(second):
                raise ValueError("The two text arrays of a pair differ in length.")
            return "text_pair", (first.astype(object), second.astype(object))
    array = np.asarray(x)
    if array.dtype.kind in "USO":
        if array.ndim != 1:
            raise ValueError(f"Text inputs must be 1-D, got shape {array.shape}.")
        return "text", array.astype(object)
    if array.ndim == 4:
        if array.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"Images must be (N, H, W, C) with C in 1, 3, 4; got {array.shape}."
            )
        if array.dtype.kind == "f" and array.size and float(array.max()) <= 1.0:
            logger.warning(
                "Image arrays look scaled to [0, 1]; tfft image models expect raw "
                "0-255 pixels."
            )
        return "image", array
    if array.ndim < 1:
        raise ValueError("x must hold one example per row.")
    return "features", array


def _infer_task(y: np.ndarray, task: str) -> str:
    if task == "auto":
        if y.ndim == 2 and y.shape[1] > 1:
            return "multilabel"
        if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
            return "regression"
        return "multiclass"
    _check_choice("task", task, TASKS + ("auto",))
    return "multiclass" if task == "binary" else task


def _check_class_labels(y: np.ndarray, num_classes: int | None) -> tuple[np.ndarray, int]:
    labels = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if labels.ndim != 1:
        raise ValueError(f"Class labels must be 1-D, got shape {y.shape}.")
    if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError("Class labels must be integers (class indices).")
    labels = labels.astype(np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        raise ValueError(
            f"{outside.size} label(s) outside [0, {num_classes}) (num_classes="
            f"{num_classes}), e.g. y[{outside[0]}] = {labels[outside[0]]}. "
            "Labels must be class indices; fix them or num_classes / class_names."
        )
    return labels, num_classes


def from_arrays(
    x: Any,
    y: Any,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    task: str = "auto",
    image_size: int | Sequence[int] | None = None,
    resize: str = "stretch",
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    augment: Any = False,
) -> DataBundle:
    """Wraps in-memory arrays: images, strings, string pairs or features.

    `x` is a `(N, H, W, C)` image array (C of 1, 3, 4; raw 0-255 pixels), a
    list / array of strings, a pair `(strings_a, strings_b)`, or a numeric
    `(N, ...)` feature array. `y` holds class indices, multi-hot rows
    (multilabel) or floats (regression).

    Args:
        x: the inputs.
        y: the labels, one per example.
        num_classes: number of classes; labels outside `[0, num_classes)` are
            refused. Defaults to `len(class_names)` or `max(y) + 1`.
        class_names: class names in label order.
        task: `"auto"` (2-D `y` is multilabel, non-integer floats are
            regression, else multiclass), or one of `TASKS`.
        image_size: resize images to this size; default keeps their size.
        resize: resize policy, as in `from_image_directory`.
        batch_size: examples per batch.
        validation_split: fraction held out for validation (stratified for
            multiclass).
        test_split: fraction held out for test.
        seed: seed of the splits and shuffling.
        augment: augmentation of the training images.

    Returns:
        A `DataBundle`.

    Example:

    >>> import numpy as np
    >>> x = np.random.randint(0, 256, (8, 16, 16, 3)).astype("uint8")
    >>> bundle = from_arrays(x, [0, 1] * 4, test_split=0.25, batch_size=2)
    >>> bundle.counts
    {'train': (3, 3), 'test': (1, 1)}
    """
    modality, inputs = _infer_modality(x)
    y = np.asarray(y)
    n = len(inputs[0]) if isinstance(inputs, tuple) else len(inputs)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)} labels.")
    task = _infer_task(y, task)
    if class_names is not None:
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(
                f"num_classes={num_classes} but {len(class_names)} class_names."
            )
        num_classes = len(class_names)
    if task == "multiclass":
        y, num_classes = _check_class_labels(y, num_classes)
    elif task == "multilabel":
        y = y.astype(np.float32)
        num_classes = num_classes or y.shape[1]
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"Multilabel y must be (N, {num_classes}), got {y.shape}.")
    else:
        y = y.astype(np.float32)
        num_classes = None
    if class_names is None:
        class_names = [str(i) for i in range(num_classes or 0)]
    if augment and modality != "image":
        raise ValueError(f"augment is for images; these inputs are {modality}.")
    size = _as_size(image_size) if image_size is not None else None
    if size is not None:
        _resizer(size, resize)
    splits = _make_splits(
        {"train": _Examples(inputs, y)}, validation_split, test_split, seed,
        task == "multiclass",
    )
    pipeline = _Pipeline(
        modality=modality, batch_size=batch_size, seed=seed, image_size=size,
        resize=resize, augment=augmentation_layer(augment, seed),
    )
    if modality == "image" and size is None:
        size = tuple(int(s) for s in inputs.shape[1:3])
    return _bundle(
        splits, pipeline, class_names=class_names, task=task, modality=modality,
        image_size=size if modality == "image" else None,
    )


# ---------------------------------------------------------------------------
# TensorFlow Datasets.


def network_available(
    host: str = TFDS_STORAGE_HOST, port: int = 443, timeout: float = NETWORK_PROBE_TIMEOUT
) -> bool:
    """Whether `host:port` (or the HTTPS proxy) accepts a connection in time.

    Name resolution runs in a daemon thread, so the probe never blocks longer
    than `timeout` even when DNS hangs.

    Example:

    >>> isinstance(network_available(timeout=0.5), bool)
    True
    """
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        host, port = parsed.hostname or host, parsed.port or 80
    result = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def _not_prepared_message(builder: Any, reason: str) -> str:
    name = builder.info.full_name
    short = builder.name + (
        f"/{builder.builder_config.name}" if builder.builder_config else ""
    )
    return (
        f"TFDS dataset {name!r} is not prepared in data_dir="
        f"{os.fspath(builder.data_dir_root)!r} (looked for {builder.data_dir}) and {reason}. "
        "On a machine with internet, prepare it with "
        f"`tfds build {short} --data_dir=DIR` or "
        f"`tfds.load({short!r}, data_dir='DIR')`, copy DIR here, and pass "
        "data_dir=DIR (or set TFDS_DATA_DIR=DIR)."
    )


def _ensure_prepared(builder: Any, download: bool) -> None:
    """Prepares a download builder, failing fast when that cannot work."""
    import tensorflow_datasets as tfds

    if not isinstance(builder, tfds.core.GeneratorBasedBuilder):
        return  # Folder and read-only builders read their files in place.
    prepare = getattr(type(builder).download_and_prepare, "__module__", "")
    if prepare.startswith("tensorflow_datasets.testing"):
        return  # Under tfds.testing.mock_data nothing is downloaded.
    if builder.is_prepared():
        return
    if not download:
        raise DatasetNotPreparedError(
            _not_prepared_message(builder, "download=False")
        )
    if not network_available():
        raise DatasetNotPreparedError(
            _not_prepared_message(
                builder, f"the network is unreachable ({TFDS_STORAGE_HOST}:443 did "
                "not answer), so it cannot be downloaded"
            )
        )
    builder.download_and_prepare()


_FIRST_OF_PAIR = ("premise", "question", "question1", "sentence1", "text_a")


def _feature_keys(
    info: Any, input_keys: str | Sequence[str] | None, label_key: str | None
) -> tuple[str, tuple[str, ...], str]:
    """Finds `(modality, input_keys, label_key)` from `info.features`."""
    import tensorflow_datasets as tfds

    features = info.features
    by_type = lambda kind: [k for k, f in features.items() if isinstance(f, kind)]
    supervised = info.supervised_keys
    simple = (
        isinstance(supervised, tuple) and len(supervised) == 2
        and all(isinstance(k, str) for k in supervised)
    )
    if label_key is None:
        labels = by_type(tfds.features.ClassLabel)
        if simple and supervised[1] in labels:
            label_key = supervised[1]
        elif len(labels) == 1 or "label" in labels:
            label_key = "label" if "label" in labels else labels[0]
        else:
            raise ValueError(
                f"Cannot pick the label among ClassLabel features {labels} of "
                f"{info.full_name}; pass label_key=."
            )
    if input_keys is None:
        images = by_type(tfds.features.Image)
        texts = [k for k in by_type(tfds.features.Text) if "/" not in k]
        if simple and supervised[0] in images + texts:
            input_keys = (supervised[0],)
        elif len(images) == 1:
            input_keys = tuple(images)
        elif len(texts) in (1, 2) and not images:
            input_keys = tuple(sorted(texts, key=lambda k: (k not in _FIRST_OF_PAIR, k)))
        else:
            raise ValueError(
                f"Cannot pick the inputs of {info.full_name} (images {images}, "
                f"texts {texts}); pass input_keys=."
            )
    input_keys = (input_keys,) if isinstance(input_keys, str) else tuple(input_keys)
    for key in input_keys + (label_key,):
        if key not in features:
            raise ValueError(
                f"{info.full_name} has no feature {key!r}; it has {list(features)}."
            )
    is_image = isinstance(features[input_keys[0]], tfds.features.Image)
    modality = "image" if is_image else ("text_pair" if len(input_keys) == 2 else "text")
    return modality, input_keys, label_key


def _tfds_split_specs(
    split: str | Mapping[str, str], validation_split: float, test_split: float,
    num_examples: int | None,
) -> dict[str, str]:
    """Bundle split -> TFDS split spec, slicing fractions off the train split."""
    specs = dict(split) if isinstance(split, Mapping) else {"train": split}
    _split_sources(specs)  # Checks the keys.
    if not (validation_split or test_split):
        return specs
    base = specs["train"]
    if "[" in base or "+" in base:
        raise ValueError(
            f"validation_split / test_split slice a plain split name, got {base!r}; "
            "pass split={'train': ..., 'validation': ...} with TFDS slices instead."
        )
    _check_fraction("validation_split", validation_split)
    _check_fraction("test_split", test_split)
    cut_val = 1.0 - validation_split - test_split
    cut_test = 1.0 - test_split
    if num_examples:
        at = lambda f: str(int(round(num_examples * f)))
    else:
        at = lambda f: f"{int(round(100 * f))}%"
    specs["train"] = f"{base}[:{at(cut_val)}]"
    for name, lo, hi, frac in (
        ("validation", cut_val, cut_test, validation_split),
        ("test", cut_test, 1.0, test_split),
    ):
        if frac:
            if name in specs:
                raise ValueError(f"Both split[{name!r}] and {name}_split were given.")
            specs[name] = f"{base}[{at(lo)}:{at(hi)}]"
    return specs


def from_tfds(
    name: Any,
    *,
    split: str | Mapping[str, str] = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    backbone: Any = None,
    resize: str = "stretch",
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    augment: Any = False,
    cache: bool | str | os.PathLike = "auto",
    download: bool = True,
    input_keys: str | Sequence[str] | None = None,
    label_key: str | None = None,
    on_bad_file: str = "skip",
) -> DataBundle:
    """Loads a TFDS image or text classification dataset.

    The inputs (an Image feature, or one or two Text features) and the
    ClassLabel feature are found from `info.supervised_keys` and
    `info.features`; `input_keys` / `label_key` override them. Class counts
    are not computed (the data is streamed), so `bundle.counts` is empty.

    When the dataset is not prepared in `data_dir`, it is downloaded only if
    `download=True` and the storage host answers within
    `NETWORK_PROBE_TIMEOUT` seconds; otherwise `DatasetNotPreparedError`
    explains how to prepare it elsewhere and point `data_dir` at it.

    Args:
        name: a TFDS name (`"tf_flowers"`, `"glue/sst2"`, ...) or a builder
            (e.g. `tfds.folder_dataset.ImageFolder(root)`).
        split: the TFDS split for training, or `{"train": spec,
            "validation": spec, "test": spec}` with TFDS split specs.
        data_dir: TFDS data directory (default `~/tensorflow_datasets` or
            `TFDS_DATA_DIR`).
        image_size: as in `from_image_directory`.
        backbone: as in `from_image_directory`.
        resize: as in `from_image_directory`.
        batch_size: examples per batch.
        validation_split: fraction sliced off the end of the training split
            (TFDS slicing: contiguous, not stratified).
        test_split: fraction sliced off after the validation part.
        seed: seed of the file shuffling and the shuffle buffer.
        augment: augmentation of the training images.
        cache: `"auto"` (in memory when the split's size is known and fits
            `AUTO_CACHE_BYTES`), `True`, `False`, or a directory.
        download: download and prepare the dataset when it is missing.
        input_keys: feature name(s) of the inputs.
        label_key: feature name of the label.
        on_bad_file: `"skip"` drops examples whose label is outside the
            class list (such as the -1 labels of unlabeled test splits);
            `"raise"` fails on them when the dataset is read.

    Returns:
        A `DataBundle`.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=8):
    ...     bundle = from_tfds("imdb_reviews", batch_size=4, download=False)
    >>> bundle.modality, bundle.class_names
    ('text', ('neg', 'pos'))
    """
    import tensorflow_datasets as tfds

    _check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    if isinstance(name, str):
        builder = tfds.builder(
            name, data_dir=os.fspath(data_dir) if data_dir is not None else None
        )
    else:
        builder = name
    info = builder.info
    modality, keys, label_key = _feature_keys(info, input_keys, label_key)
    class_names = tuple(info.features[label_key].names)
    size = resolve_image_size(image_size, backbone) if modality == "image" else None
    if augment and modality != "image":
        raise ValueError(f"augment is for images; {info.full_name} is {modality}.")
    base = split if isinstance(split, str) else split.get("train", "train")
    base_name = base.split("[")[0]
    num_examples = (
        info.splits[base_name].num_examples if base_name in info.splits else None
    )
    if (validation_split or test_split) and isinstance(
        builder, tfds.folder_dataset.ImageFolder
    ):
        raise ValueError(
            "ImageFolder builders cannot slice splits, so validation_split / "
            "test_split do not apply; use from_image_directory(<root>/train, "
            "validation_split=...) or split={'train': ..., 'validation': ...}."
        )
    specs = _tfds_split_specs(split, validation_split, test_split, num_examples)
    if info.splits:
        for spec in specs.values():
            for part in spec.split("+"):
                if part.split("[")[0] not in info.splits:
                    raise ValueError(
                        f"{info.full_name} has no split {part!r}; it has "
                        f"{list(info.splits)}."
                    )
    _ensure_prepared(builder, download)
    augment_layer = augmentation_layer(augment, seed)
    datasets = {
        bundle_split: _tfds_dataset(
            builder, spec, bundle_split == "train", modality=modality, keys=keys,
            label_key=label_key, num_classes=len(class_names), image_size=size,
            resize=resize, batch_size=batch_size, seed=seed,
            augment=augment_layer, cache=cache, on_bad_file=on_bad_file,
        )
        for bundle_split, spec in specs.items()
    }
    return DataBundle(
        train=datasets.get("train"),
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=class_names,
        counts={},
        files={},
        labels={},
        modality=modality,
        task="multiclass",
        image_size=size,
        batch_size=batch_size,
        augmented=augment_layer is not None,
        seed=seed,
    )


def _tfds_split_size(builder: Any, spec: str) -> tuple[int | None, int | None]:
    """`(num_examples, num_bytes)` of a split spec, when the info knows them."""
    try:
        split_info = builder.info.splits[spec]
        return split_info.num_examples, split_info.num_bytes
    except (KeyError, ValueError, TypeError, AttributeError):
        return None, None


def _tfds_dataset(
    builder: Any, spec: str, training: bool, *, modality: str, keys: tuple[str, ...],
    label_key: str, num_classes: int, image_size: tuple[int, int] | None,
    resize: str, batch_size: int, seed: int | None, augment: Any,
    cache: Any, on_bad_file: str,
) -> tf.data.Dataset:
    """One TFDS split as `(inputs, label)` batches."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(
        split=spec,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    resizer = _resizer(image_size, resize) if image_size else None

    def to_pair(example):
        label = example[label_key]
        if modality == "image":
            image = _to_rgb(tf.cast(example[keys[0]], tf.float32))
            return resizer(image), label
        inputs = tuple(example[k] for k in keys)
        return (inputs if len(inputs) == 2 else inputs[0]), label

    def label_ok(_, label):
        return (label >= 0) & (label < num_classes)

    def assert_label(inputs, label):
        check = tf.debugging.assert_equal(
            label_ok(inputs, label), True,
            message=f"label outside [0, {num_classes}) in {builder.info.full_name} "
            f"split {spec!r}; use on_bad_file='skip' to drop such examples",
        )
        with tf.control_dependencies([check]):
            return inputs, tf.identity(label)

    dataset = dataset.map(to_pair, num_parallel_calls=AUTOTUNE)
    if on_bad_file == "skip":
        dataset = dataset.filter(label_ok)
    else:
        dataset = dataset.map(assert_label, num_parallel_calls=AUTOTUNE)
    num_examples, num_bytes = _tfds_split_size(builder, spec)
    if cache == "auto":
        if num_examples is None:
            cache = False
        elif modality == "image":
            cache = num_examples * image_size[0] * image_size[1] * 12 <= AUTO_CACHE_BYTES
        else:
            cache = (num_bytes or 0) * 2 <= AUTO_CACHE_BYTES
    key = f"{builder.info.full_name.replace('/', '_')}-" + _fingerprint(
        spec, image_size, resize
    )
    dataset, in_memory = _cache_dataset(
        dataset, os.fspath(cache) if isinstance(cache, os.PathLike) else cache, key
    )
    if training:
        buffer = (num_examples if in_memory else None) or MAX_SHUFFLE_BUFFER
        dataset = order_lib.epoch_shuffle(dataset, buffer, seed)
    dataset = dataset.batch(batch_size)
    if training and augment is not None:
        dataset = dataset.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=AUTOTUNE
        )
    dataset = dataset.prefetch(AUTOTUNE)
    if training and augment is not None:
        _mark_augmented(dataset)
    return dataset
