"""Epoch-keyed shuffling: the order of epoch `e` depends on `(seed, e)` only.

`Dataset.shuffle(reshuffle_each_iteration=True)` draws each epoch's order from the number
of times the dataset was iterated, so a run that resumes at epoch 3 after a crash sees
epoch 0's order again, and ends elsewhere than the run that never stopped. tfft's training
datasets shuffle with `epoch_shuffle`: the shuffle seed is read when an epoch's iterator
starts, from the epoch that `EpochSeed` (a callback in `tfft.default_callbacks` and in
every `tfft.fine_tune` phase) pins at `on_epoch_begin`. Outside such a `fit` the dataset
counts its own iterations, as plain reshuffling would.
"""

import keras
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
    return shuffled


class EpochSeed(keras.callbacks.Callback):
    """Pins the epoch that `epoch_shuffle` datasets use, so a resumed run reproduces the order."""

    def on_epoch_begin(self, epoch, logs=None):
        _pinned_epoch().assign(int(epoch))

    def on_train_end(self, logs=None):
        _pinned_epoch().assign(-1)
