"""In-memory arrays: images, strings, string pairs or feature vectors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from tfft.data.augment import augmentation_layer
from tfft.data.bundle import DEFAULT_SEED, TASKS, DataBundle, Examples, check_choice, label_mapping_note, make_bundle
from tfft.data.pipeline import Pipeline, as_size, resize_layer
from tfft.data.splits import make_splits

logger = logging.getLogger("tfft.data")

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
    check_choice("task", task, TASKS + ("auto",))
    return "multiclass" if task == "binary" else task


def _check_class_labels(
    y: np.ndarray, num_classes: int | None
) -> tuple[np.ndarray, int, list[str] | None]:
    """Class indices, the number of classes, and class names when labels 1..K were mapped to 0..K-1."""
    labels = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
    if labels.ndim != 1:
        raise ValueError(f"Class labels must be 1-D, got shape {y.shape}.")
    if labels.size and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise ValueError("Class labels must be integers (class indices).")
    labels = labels.astype(np.int64)
    low, high = (int(labels.min()), int(labels.max())) if labels.size else (0, -1)
    names, offset = None, 0
    if num_classes is None and low == 1:
        labels, num_classes, offset = labels - 1, high, 1
        names = [str(v) for v in range(1, high + 1)]
        logger.warning("%s; pass num_classes=%d to keep them as class indices (class 0 then has no examples).",
                       label_mapping_note(range(1, high + 1), names), high + 1)
    elif num_classes is None:
        num_classes = high + 1
    elif low == 1 and high == num_classes:
        raise ValueError(
            f"The labels go from 1 to {high}, but num_classes={num_classes} takes the class indices 0..{high - 1}: "
            f"pass y - 1, or num_classes={high + 1} to keep a class 0 without examples, or leave num_classes and "
            f"class_names out to map labels 1..{high} to classes 0..{high - 1}."
        )
    outside = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if outside.size:
        raise ValueError(
            f"{outside.size} label(s) outside [0, {num_classes}) (num_classes="
            f"{num_classes}), e.g. y[{outside[0]}] = {labels[outside[0]]}. "
            "Labels must be class indices; fix them or num_classes / class_names."
        )
    _warn_empty_classes(labels, offset)
    return labels, num_classes, names


def _warn_empty_classes(labels: np.ndarray, offset: int) -> None:
    """One warning naming the classes below the highest label that have no examples."""
    present = np.unique(labels).tolist()
    missing = sorted(set(range(present[-1] + 1)) - set(present)) if present else []
    if not missing:
        return

    def listed(values):
        return ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")

    which = listed(missing) + (f" (label {listed([c + offset for c in missing])})" if offset else "")
    labels_are = f"the labels are {listed([v + offset for v in present])}"
    relabel = f"relabel the classes 0..{len(present) - 1}"
    if len(missing) == 1:
        logger.warning("Class %s has no examples (%s); it is kept as an empty class: %s if it is not a class.",
                       which, labels_are, relabel)
    else:
        logger.warning("Classes %s have no examples (%s); they are kept as empty classes: %s if they are not "
                       "classes.", which, labels_are, relabel)


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
            refused. Defaults to `len(class_names)` or `max(y) + 1`; without
            either, labels 1..K (no 0) are mapped to classes 0..K-1 named
            "1".."K" (one warning says so). Classes below the highest label
            that have no examples (labels 0, 1, 3) are kept, with one warning.
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
    mapped_names = None
    if task == "multiclass":
        y, num_classes, mapped_names = _check_class_labels(y, num_classes)
    elif task == "multilabel":
        y = y.astype(np.float32)
        num_classes = num_classes or y.shape[1]
        if y.ndim != 2 or y.shape[1] != num_classes:
            raise ValueError(f"Multilabel y must be (N, {num_classes}), got {y.shape}.")
    else:
        y = y.astype(np.float32)
        num_classes = None
    if class_names is None:
        class_names = mapped_names or [str(i) for i in range(num_classes or 0)]
    if augment and modality != "image":
        raise ValueError(f"augment is for images; these inputs are {modality}.")
    size = as_size(image_size) if image_size is not None else None
    if size is not None:
        resize_layer(size, resize)
    splits = make_splits(
        {"train": Examples(inputs, y)}, validation_split, test_split, seed,
        task == "multiclass",
    )
    pipeline = Pipeline(
        modality=modality, batch_size=batch_size, seed=seed, image_size=size,
        resize=resize, augment=augmentation_layer(augment, seed),
    )
    if modality == "image" and size is None:
        size = tuple(int(s) for s in inputs.shape[1:3])
    return make_bundle(
        splits, pipeline, class_names=class_names, task=task, modality=modality,
        image_size=size if modality == "image" else None,
    )

