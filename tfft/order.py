"""Epoch-keyed shuffling: the order of epoch `e` depends on `(seed, e)` only.

`Dataset.shuffle(reshuffle_each_iteration=True)` draws each epoch's order from the number
of times the dataset was iterated, so a run that resumes at epoch 3 after a crash sees
epoch 0's order again, and ends elsewhere than the run that never stopped. tfft's training
datasets shuffle with `epoch_shuffle`: the shuffle seed is read when an epoch's iterator
starts, from the epoch that `EpochSeed` (a callback in `tfft.default_callbacks` and in
every `tfft.fine_tune` phase) pins at `on_epoch_begin`. Outside such a `fit` the dataset
counts its own iterations, as plain reshuffling would.

tfft's loaders also record how a training dataset is ordered (`DatasetOrder`: the
examples before shuffling, the shuffle buffer and seed, the batch size), so that the
feature cache can serve backbone features in exactly the order the images would come
(`tfft.features`), and `reshuffles` tells whether any other dataset reshuffles per epoch.
"""

import dataclasses
import weakref
from typing import Any, Optional

import keras
import numpy as np
import tensorflow as tf

_PINNED = None


def _pinned_epoch():
    global _PINNED
    if _PINNED is None:
        with tf.init_scope():
            _PINNED = tf.Variable(-1, dtype=tf.int64, trainable=False, name="tfft_pinned_epoch")
    return _PINNED


def epoch_shuffle(dataset, buffer_size, seed):
    """Shuffles `dataset` anew each epoch, in an order that is a function of `(seed, epoch)`.

    Args:
        dataset: a finite dataset (cached or not: a `cache()` before it is kept).
        buffer_size: the shuffle buffer.
        seed: an int; None falls back to plain `shuffle(reshuffle_each_iteration=True)`.
    """
    buffer_size = max(1, int(buffer_size))
    if seed is None:
        return dataset.shuffle(buffer_size, reshuffle_each_iteration=True)
    seed = int(seed)
    pinned = _pinned_epoch()
    with tf.init_scope():
        counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="tfft_epoch_counter")
    cardinality = dataset.cardinality()

    def one_epoch(_):
        epoch = tf.cond(pinned >= 0, lambda: pinned.read_value(), lambda: counter.assign_add(1) - 1)
        # Seeded by (seed, epoch) alone: the graph-level seed is set aside while the shuffle is
        # built (tf's get_seed also compares a tensor seed with 0 when the global seed is 0).
        graph = tf.compat.v1.get_default_graph()
        saved, graph.seed = graph.seed, None
        try:
            return dataset.shuffle(buffer_size, seed=tf.constant(seed, tf.int64) * 1000003 + epoch)
        finally:
            graph.seed = saved

    shuffled = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    if int(cardinality) >= 0:
        shuffled = shuffled.apply(tf.data.experimental.assert_cardinality(cardinality))
    shuffled._tfft_counter = counter  # keep the variable alive with the dataset
    _EPOCH_SHUFFLED.add(shuffled)
    return shuffled


# --------------------------------------------------------------------------------------------
# How a dataset is ordered
# --------------------------------------------------------------------------------------------

_EPOCH_SHUFFLED = weakref.WeakSet()  # datasets made by epoch_shuffle
_ORDERS = weakref.WeakKeyDictionary()  # final dataset -> DatasetOrder


@dataclasses.dataclass(frozen=True)
class DatasetOrder:
    """How a batched dataset that a tfft loader made is ordered.

    The dataset yields `elements` (unbatched, in their own order) shuffled each epoch by
    `epoch_shuffle(elements, buffer, seed)` (or not at all when `buffer` is None), in
    batches of `batch_size` (None: a dataset that tfft did not batch, in its own batches).
    `examples` is the number of elements.
    """

    elements: Any
    examples: int
    batch_size: int
    buffer: Optional[int] = None
    seed: Optional[int] = None

    def arrange(self, elements):
        """`elements` (unbatched, in the order of `self.elements`) ordered and batched as the dataset is."""
        if self.buffer is not None:
            elements = epoch_shuffle(elements, self.buffer, self.seed)
        return elements.batch(self.batch_size)


def record_order(dataset, order):
    """Records `order` (a `DatasetOrder`) for `dataset`; returns `dataset`."""
    _ORDERS[dataset] = order
    return dataset


def order_of(dataset):
    """The `DatasetOrder` recorded for `dataset`, or None."""
    try:
        return _ORDERS.get(dataset)
    except TypeError:
        return None


def _upstream(dataset):
    """`dataset` and every dataset it reads from (tf.data's private `_inputs()`)."""
    queue, seen = [dataset], set()
    while queue:
        ds = queue.pop()
        if id(ds) in seen:
            continue
        seen.add(id(ds))
        yield ds
        try:
            queue.extend(ds._inputs())
        except (AttributeError, NotImplementedError, TypeError):
            continue


def reshuffles(dataset):
    """Whether `dataset` comes in another order each epoch (a `shuffle` that reshuffles, or
    `epoch_shuffle`, anywhere upstream)."""
    for ds in _upstream(dataset):
        if ds in _EPOCH_SHUFFLED or getattr(ds, "_reshuffle_each_iteration", False):
            return True
    return False


_KEYED_GENERATORS = []  # (weak reference to a SeedGenerator, its initial state)


def key_by_epoch(layer):
    """Makes the random layers in `layer` (an input-pipeline augmentation) draw, in each epoch
    that `EpochSeed` pins, from a state that depends on their seed and the epoch only, so a
    resumed run augments epoch e exactly as the run that never stopped. Returns `layer`."""
    for generator in _seed_generators(layer):
        _KEYED_GENERATORS.append((weakref.ref(generator), np.array(keras.ops.convert_to_numpy(generator.state))))
    return layer


def _key_generators(epoch):
    alive = []
    for ref, initial in _KEYED_GENERATORS:
        generator = ref()
        if generator is None:
            continue
        alive.append((ref, initial))
        state = initial.copy()
        state[0] = state[0] + epoch * 1000003 + 1
        generator.state.assign(keras.ops.convert_to_tensor(state, dtype=generator.state.dtype))
    _KEYED_GENERATORS[:] = alive


class EpochSeed(keras.callbacks.Callback):
    """Pins the epoch that `epoch_shuffle` datasets and `key_by_epoch` augmentations use, so a
    resumed run reproduces the order and the augmentation."""

    def on_epoch_begin(self, epoch, logs=None):
        _pinned_epoch().assign(int(epoch))
        _key_generators(int(epoch))

    def on_train_end(self, logs=None):
        _pinned_epoch().assign(-1)


# Random layers (Dropout, RandomFlip, ...) draw from a `keras.random.SeedGenerator` whose
# state advances at every training step. Keras saves no such state with the weights, so a
# run restored from a backup would draw other dropout masks than the run that never
# stopped; tfft's backups and phase records save these states and put them back.


def _seed_generators(model):
    """The model's seed generators, in a fixed order (nested models included, no duplicates)."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", ()):
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def seed_states(model):
    """The states of `model`'s seed generators, as lists of ints (JSON-ready).

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dropout(0.5)])
    >>> len(seed_states(model))
    1
    """
    return [[int(v) for v in keras.ops.convert_to_numpy(g.state)] for g in _seed_generators(model)]


def set_seed_states(model, states):
    """Puts back states from `seed_states` (of a model of the same architecture).

    Returns False, changing nothing, when `states` is None or does not fit the model's
    generators (a backup written before tfft saved them, or another model).
    """
    generators = _seed_generators(model)
    if states is None or len(states) != len(generators):
        return False
    if any(tuple(g.state.shape) != (len(s),) for g, s in zip(generators, states)):
        return False
    for generator, state in zip(generators, states):
        generator.state.assign(keras.ops.convert_to_tensor(state, dtype=generator.state.dtype))
    return True
