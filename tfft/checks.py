"""Checks of training data against the model, before any step is taken or file written.

Without them a mismatch shows up as a TensorFlow error deep in the graph (`Input 0 ... is
incompatible`, `Received a label value of 4 which is outside the valid range`), or not at
all: a grayscale batch broadcasts over the RGB preprocessing, labels out of range give NaN
on GPUs, and NaN inputs train a model to NaN. `tfft.fine_tune` calls `check_data` first.

What is checked:

* shapes and types, from the dataset's `element_spec` (free): image size and channels
  (grayscale and RGBA named as such), strings into an image model, numbers into a text model;
* values, on arrays in full and on the first batch of a `tf.data.Dataset` (of the
  validation data when there is some, since it is not shuffled): labels of the task's form
  and range (`num_classes`), and NaN or infinite inputs and labels;
* the number of classes against the model's (a binary model takes 2), for a
  `tfft.data.DataBundle` and for a dataset that is a split of one (`tfft.data` datasets remember
  their bundle's classes, also through `prefetch`, `cache`, `shuffle`, `take` and the like;
  a dataset the user `map`s is checked on its first batch only, since the map may relabel).
"""

import numpy as np
import tensorflow as tf

from tfft.data.bundle import dataset_classes
from tfft.info import model_info


def check_data(model, data, split="training"):
    """Raises `ValueError` naming the problem and the fix when `data` does not fit `model`.

    Args:
        model: a model from `tfft.build_model` (others are checked for shapes only).
        data: a `tf.data.Dataset` of `(x, y[, w])` batches, or an `(x, y[, w])` tuple of arrays.
        split: the name used in messages (`"training"`, `"validation"`).

    Example:
    >>> model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=(32, 32, 3))
    >>> check_data(model, (np.zeros((4, 32, 32, 1)), np.zeros(4)))
    Traceback (most recent call last):
    ValueError: The training images have 1 channel (grayscale), but the model takes 3 (RGB): convert them ...
    """
    if data is None:
        return
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise ValueError(f"The {split} dataset must yield (inputs, labels) or (inputs, labels, sample_weight) "
                             f"batches; it yields {spec}.")
        _check_inputs(model, spec[0].shape, spec[0].dtype, split)
        if int(data.cardinality()) == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"The {split} dataset repeats forever; pass a finite dataset (no .repeat()): "
                             "tfft counts epochs as passes over the data.")
        return
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        x, y = data[0], np.asarray(data[1])
        if isinstance(x, np.ndarray) and x.dtype.kind in "fiub":
            _check_inputs(model, tf.TensorShape(x.shape), tf.as_dtype(x.dtype), split)
            _check_finite(x, f"{split} inputs")
        _check_labels(model, y, split)


def check_values(model, dataset, split):
    """Checks the labels and inputs of the first batch of `dataset` (see `check_data`)."""
    if dataset is None:
        return
    batch = next(iter(dataset.take(1)), None)
    if batch is None:
        raise ValueError(f"The {split} dataset is empty.")
    x, y = batch[0], batch[1]
    if isinstance(x, tf.Tensor) and x.dtype.is_floating:
        _check_finite(x.numpy(), f"{split} inputs (first batch)")
    _check_labels(model, np.asarray(y), f"{split} (first batch)")


def check_bundle(model, bundle):
    """A `tfft.data.DataBundle` must have as many classes as the model predicts (see `check_classes`)."""
    check_classes(model, getattr(bundle, "num_classes", None))


def check_classes(model, num_classes, what="The data"):
    """Raises `ValueError` when data of `num_classes` classes does not fit the model's outputs.

    Multiclass and multilabel models must have `num_classes` outputs; a binary model takes 2 classes.

    Args:
        model: a model from `tfft.build_model` (others are not checked).
        num_classes: the data's number of classes, or `None` (nothing to check).
        what: the subject of the message (`"The training dataset"`).

    Example:
    >>> model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=(32, 32, 3))
    >>> check_classes(model, 2)
    Traceback (most recent call last):
    ValueError: The data has 2 classes but the model was built with num_classes=3: build it with ...
    """
    info = model_info(model)
    task, ours = info.get("task"), info.get("num_classes")
    if not num_classes:
        return
    theirs = int(num_classes)
    if task in ("multiclass", "multilabel") and ours and int(ours) != theirs:
        raise ValueError(f"{what} has {theirs} classes but the model was built with num_classes={ours}: "
                         f"build it with num_classes=bundle.num_classes ({theirs}).")
    if task == "binary" and theirs != 2:
        raise ValueError(f"{what} has {theirs} class{'es' if theirs != 1 else ''} but a binary model takes 2: "
                         f"build it with task='multiclass', num_classes={theirs}.")


def _loader_classes(dataset):
    """The class names that a `tfft.data` dataset remembers from its bundle, or `None`."""
    if not isinstance(dataset, tf.data.Dataset):
        return None
    return dataset_classes(dataset)


def _check_inputs(model, shape, dtype, split):
    info = model_info(model)
    modality = info.get("modality", "image")
    if modality == "text":
        if dtype != tf.string:
            raise ValueError(f"The {split} inputs are {dtype.name} tensors, but this is a text model: pass raw "
                             "strings (tokenization is part of the model).")
        return
    if dtype == tf.string:
        raise ValueError(f"The {split} inputs are strings, but this is an image model: pass decoded images "
                         "(tfft.data.from_image_directory loads files).")
    expected = tuple(getattr(model, "input_shape", ())[1:]) if not isinstance(model.input_shape, list) else ()
    if len(expected) != 3 or shape.rank is None:
        return
    got = tuple(shape.as_list()[1:])
    if len(got) != 3:
        raise ValueError(f"The {split} images have shape {got} per example; the model takes (height, width, "
                         f"channels) = {expected}.")
    channels, want = got[-1], expected[-1]
    if channels is not None and want is not None and channels != want:
        kind = {1: "1 channel (grayscale)", 4: "4 channels (RGBA)"}.get(channels, f"{channels} channels")
        fix = {1: "convert them with tf.image.grayscale_to_rgb", 4: "drop the alpha channel (x[..., :3])"}.get(
            channels, "convert them to RGB")
        raise ValueError(f"The {split} images have {kind}, but the model takes {want} (RGB): {fix}, or load "
                         "them with tfft.data, which converts every image to RGB.")
    if any(g is not None and w is not None and g != w for g, w in zip(got[:2], expected[:2])):
        raise ValueError(f"The {split} images are {got[0]}x{got[1]}, but the model takes {expected[0]}x"
                         f"{expected[1]}: resize them (tfft.data loaders take image_size=...) or build the model "
                         f"with input_shape=({got[0]}, {got[1]}, 3).")


def _check_finite(values, what):
    values = np.asarray(values)
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"The {what} hold {bad} NaN or infinite value(s): clean or drop those examples "
                         "before training (they would turn the loss to NaN).")


def _check_labels(model, y, split):
    info = model_info(model)
    task, n = info.get("task"), info.get("num_classes")
    if task is None or y.dtype.kind not in "fiub":
        return
    _check_finite(y, f"{split} labels")
    if task == "multiclass":
        if y.ndim == 2 and y.shape[-1] == n and n > 1 and set(np.unique(y)) <= {0, 1}:
            raise ValueError(f"The {split} labels look one-hot (shape {y.shape}); tfft's multiclass models take "
                             "class indices: pass np.argmax(labels, axis=-1), or build with task='multilabel' "
                             "for multi-hot labels.")
        if y.ndim > 1 and not (y.ndim == 2 and y.shape[-1] == 1):
            raise ValueError(f"The {split} labels have shape {y.shape}; multiclass labels are class indices, one "
                             "per example.")
        _check_range(y, n, split, "class indices")
    elif task == "binary":
        if y.size and not set(np.unique(y)) <= {0, 1}:
            raise ValueError(f"The {split} labels of a binary model must be 0 or 1; found values "
                             f"{sorted(np.unique(y))[:5]}. For more classes build with task='multiclass' and "
                             "num_classes=...")
    elif task == "multilabel":
        if y.ndim != 2 or y.shape[-1] != n:
            raise ValueError(f"The {split} labels have shape {y.shape}; a multilabel model with num_classes={n} "
                             f"takes multi-hot labels of shape (batch, {n}).")
        if y.size and not set(np.unique(y)) <= {0, 1}:
            raise ValueError(f"The {split} multilabel labels must be 0 or 1 (multi-hot).")


def _check_range(y, n, split, what):
    if not y.size or n is None:
        return
    if y.dtype.kind == "f" and not np.all(np.equal(np.mod(y, 1), 0)):
        raise ValueError(f"The {split} labels must be integer {what}; found fractional values such as "
                         f"{y[np.mod(y, 1) != 0].flat[0]}.")
    low, high = int(np.min(y)), int(np.max(y))
    if low < 0 or high >= n:
        raise ValueError(f"The {split} labels go from {low} to {high}, but the model has num_classes={n} "
                         f"(labels 0..{n - 1}): build the model with num_classes={max(high + 1, n)} or fix the "
                         "labels.")


def check_before_training(model, train_data, validation_data, train, validation, bundle=None):
    """What `fine_tune` runs first: `check_bundle` (or `check_classes` on datasets from
    `tfft.data`), `check_data` on the data as given and as datasets, and `check_values` on
    the first batch of a dataset that was not checked in full (the validation one when there
    is one: it is not shuffled, so this is cheap)."""
    if bundle is not None:
        check_bundle(model, bundle)
    for raw, split in ((train_data, "training"), (validation_data, "validation")):
        names = _loader_classes(raw)
        if names:
            check_classes(model, len(names), f"The {split} dataset (from tfft.data)")
    for raw, dataset, split in ((train_data, train, "training"), (validation_data, validation, "validation")):
        check_data(model, raw, split)
        if dataset is not raw:
            check_data(model, dataset, split)
    as_arrays = [not isinstance(raw, tf.data.Dataset) for raw in (validation_data, train_data)]
    if validation is not None and not as_arrays[0]:
        check_values(model, validation, "validation")
    elif validation is None and not as_arrays[1]:
        check_values(model, train, "training")
