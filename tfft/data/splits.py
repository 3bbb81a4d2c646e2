"""Stratified splits, k-fold cross-validation and class weights."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils.class_weight import compute_class_weight

from tfft.data.bundle import DEFAULT_SEED, SPLITS, DataBundle, Examples


def check_fraction(name: str, value: float) -> float:
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
    validation_split = check_fraction("validation_split", validation_split)
    test_split = check_fraction("test_split", test_split)
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
    evenly as possible over the folds (scikit-learn's `StratifiedKFold`, or
    `KFold` when a class has fewer than `k` examples or `stratify=False`).

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
    if stratify:  # scikit-learn's folds, over one group per distinct label (row, for multi-hot labels)
        groups = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
        if np.bincount(groups).min() < k:
            splitter = KFold(n_splits=k, shuffle=True, random_state=seed)  # a class too small to stratify
        else:
            splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    else:
        groups, splitter = np.zeros(len(labels), dtype=int), KFold(n_splits=k, shuffle=True, random_state=seed)
    return [(np.sort(train), np.sort(val)) for train, val in splitter.split(np.zeros(len(labels)), groups)]


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
    >>> from tfft.data import from_arrays
    >>> bundle = from_arrays(np.zeros((10, 3)), [0, 1] * 5, batch_size=4)
    >>> len(list(kfold(bundle, k=5)))
    5
    """
    if not bundle.examples or bundle.pipeline is None:
        raise ValueError(
            "kfold needs the examples behind the bundle; TFDS bundles stream "
            "them. Load the data with from_image_directory / from_text_files "
            "/ from_arrays, or split TFDS with split slices."
        )
    parts = [bundle.examples[s] for s in ("train", "validation") if s in bundle.examples]
    examples = Examples.concat(parts)
    seed = bundle.seed if seed is None else seed
    stratify = bundle.task == "multiclass"
    for train_idx, val_idx in kfold_indices(examples.labels, k, seed, stratify):
        yield (
            bundle.pipeline.build(examples.take(train_idx), "train"),
            bundle.pipeline.build(examples.take(val_idx), "validation"),
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
    present = np.flatnonzero(np.bincount(labels, minlength=num_classes or 0))
    weights = compute_class_weight("balanced", classes=present, y=labels)  # n / (k * count), scikit-learn's
    return {int(c): float(w) for c, w in zip(present, weights)}


def split_sources(path: Any) -> dict[str, Any]:
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


def make_splits(
    sources: Mapping[str, Examples],
    validation_split: float,
    test_split: float,
    seed: int | None,
    stratify: bool,
) -> dict[str, Examples]:
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

