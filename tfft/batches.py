"""What `fine_tune`, the tuner and the LR finder accept as data, made into batched datasets.

A `tf.data.Dataset` of `(x, y[, sample_weight])` batches passes through; an `(x, y[, w])`
tuple of arrays (Python lists of strings included) becomes a batched dataset shuffled in an
epoch-keyed order (`tfft.order`). Also: counting batches and examples, and rebatching to
another global batch size.
"""

import math

import numpy as np
import tensorflow as tf

from tfft import order as order_lib
from tfft.distribute import dataset_batch_size
from tfft.models import as_string_array


def as_batches(data, batch_size, *, shuffle, seed=None):
    """`data` as a batched dataset (None stays None).

    Args:
        data: a `tf.data.Dataset` (returned as is) or an `(x, y[, sample_weight])` tuple.
        batch_size: the batch size of array inputs.
        shuffle: shuffle array inputs each epoch (training data).
        seed: the shuffle seed (0 when None), so the order of epoch e is a function of (seed, e).

    Example:
    >>> ds = as_batches((np.zeros((5, 2)), np.arange(5)), 2, shuffle=False)
    >>> int(ds.cardinality())
    3
    """
    if data is None or isinstance(data, tf.data.Dataset):
        return data
    if not (isinstance(data, (tuple, list)) and len(data) in (2, 3)):
        raise TypeError("The data must be a tf.data.Dataset of (x, y[, sample_weight]) batches or an "
                        f"(x, y[, sample_weight]) tuple of arrays; got {type(data).__name__}.")
    parts = tuple(as_string_array(p) if i == 0 else np.asarray(p) for i, p in enumerate(data))
    elements = tf.data.Dataset.from_tensor_slices(parts)
    n = len(parts[1])
    seed = 0 if seed is None else int(seed)
    if not shuffle:
        dataset = elements.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        return order_lib.record_order(dataset, order_lib.DatasetOrder(None, n, int(batch_size)))
    dataset = order_lib.epoch_shuffle(elements, n, seed).batch(batch_size).prefetch(tf.data.AUTOTUNE)
    return order_lib.record_order(dataset, order_lib.DatasetOrder(elements, n, int(batch_size), n, seed))


def steps_in(dataset):
    """Batches per epoch of a finite dataset (counted once if tf.data cannot tell)."""
    n = int(dataset.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The training dataset repeats forever; pass a finite dataset (no .repeat()).")
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    return n


def count_examples(dataset):
    """Examples in one pass over a batched dataset: recorded by tfft's loaders, else counted
    (one pass over the labels; the inputs are still read)."""
    order = order_lib.order_of(dataset)
    if order is not None:
        return int(order.examples)

    def batch_len(*batch):
        return tf.cast(tf.shape(tf.nest.flatten(batch)[-1])[0], tf.int64)

    return int(dataset.map(batch_len).reduce(np.int64(0), lambda a, b: a + b))


def estimate_examples(dataset):
    """Examples per epoch without reading the data: recorded, or batches times the batch size
    (exact but for a short last batch); None when neither is known."""
    order = order_lib.order_of(dataset)
    if order is not None:
        return int(order.examples)
    batches, size = int(dataset.cardinality()), dataset_batch_size(dataset)
    return batches * size if batches >= 0 and size else None


def rebatch(dataset, batch_size, examples):
    """The same examples in batches of `batch_size` (a tuned global batch size).

    The order of a tfft dataset is kept (so the feature cache still serves it exactly).
    """
    steps = math.ceil(int(examples) / int(batch_size))
    rebatched = dataset.unbatch().batch(int(batch_size)).apply(tf.data.experimental.assert_cardinality(steps))
    return rebatched.prefetch(tf.data.AUTOTUNE)
