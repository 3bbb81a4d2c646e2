"""Length-grouped batches for text training data.

A text model pads each batch to its longest sequence (`tfft.layers.TextPreprocessor` with
`pad_to="batch"`), so a batch that mixes a 3-word phrase with a 50-word sentence costs
what 32 sentences of 50 words cost. `group_by_length` batches examples of similar length
together: it takes the (already epoch-shuffled) examples in windows of `window_batches`
batches, sorts each window by a cheap length proxy (whitespace-separated words, summed
over the two texts of a pair), cuts it into batches and shuffles the batches, keyed by
`(seed, epoch)` like every tfft training order (`tfft.order.epoch_shuffle`).

Every example appears exactly once per epoch; the window holds a whole number of batches,
so there are exactly `ceil(n / batch_size)` batches, as with plain batching, with one
partial batch at most (from the last window), placed anywhere in the epoch.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfft import order as order_lib

# Batches per sorted window: larger windows pad less but mix lengths less within a
# window's span of the shuffled data (bucketing samplers use 50-100).
DEFAULT_WINDOW_BATCHES = 64
# Buffer of the batch shuffle when tf.data cannot count the batches.
UNKNOWN_CARDINALITY_BUFFER = 1024
# [CLS] and [SEP]: what a tokenizer adds to each text.
SPECIAL_TOKENS = 2


def word_counts(texts) -> tf.Tensor:
    """Whitespace-separated words per example (int64), summed over the texts of a pair.

    Args:
        texts: a batch of strings, or a tuple of two batches (sentence pairs).

    Example:

    >>> word_counts(tf.constant(["a good film", "bad"])).numpy().tolist()
    [3, 1]
    """
    parts = texts if isinstance(texts, (tuple, list)) else (texts,)
    return tf.add_n([tf.strings.split(part).row_lengths() for part in parts])


def num_batches(num_examples: int, batch_size: int) -> int:
    """Batches per epoch: `ceil(num_examples / batch_size)`."""
    return math.ceil(int(num_examples) / int(batch_size))


def group_by_length(
    dataset: tf.data.Dataset,
    batch_size: int,
    seed: int | None,
    *,
    window_batches: int = DEFAULT_WINDOW_BATCHES,
) -> tf.data.Dataset:
    """Batches `dataset` so that each batch holds texts of similar length.

    Args:
        dataset: unbatched `(texts, label[, weight])` elements, `texts` a string or a
            pair of strings, in an order of the epoch (shuffled upstream: the windows are
            consecutive elements).
        batch_size: examples per batch (the last batch of the epoch may hold fewer).
        seed: seed of the batch order; with None the batches are reshuffled each
            iteration (not reproducible), as `epoch_shuffle` does.
        window_batches: batches per sorted window.

    Returns:
        A batched dataset with the same elements, `ceil(n / batch_size)` batches, in an
        order that depends only on the upstream order, `seed` and the epoch. Its
        cardinality is known whenever the input's is.

    Example:

    >>> texts = tf.constant(["a b c d", "a", "a b c", "a b", "a b c d e", "b"])
    >>> ds = tf.data.Dataset.from_tensor_slices((texts, tf.range(6)))
    >>> batches = group_by_length(ds, 2, seed=0, window_batches=3)
    >>> sorted(sorted(word_counts(x).numpy().tolist()) for x, _ in batches)
    [[1, 1], [2, 3], [4, 5]]
    """
    batch_size, window_batches = int(batch_size), int(window_batches)
    if batch_size < 1 or window_batches < 1:
        raise ValueError(f"batch_size and window_batches must be positive, got {batch_size}, {window_batches}.")

    def sorted_batches(*parts):
        order = tf.argsort(word_counts(parts[0]), stable=True)
        parts = tf.nest.map_structure(lambda t: tf.gather(t, order), parts)
        return tf.data.Dataset.from_tensor_slices(parts).batch(batch_size)

    batched = dataset.batch(batch_size * window_batches).flat_map(sorted_batches)
    examples = int(dataset.cardinality())
    if examples >= 0:
        count = num_batches(examples, batch_size)
        batched = batched.apply(tf.data.experimental.assert_cardinality(count))
    else:
        count = UNKNOWN_CARDINALITY_BUFFER
    # A seed of its own (the example shuffle upstream uses `seed`).
    shuffled = order_lib.epoch_shuffle(batched, count, None if seed is None else int(seed) + 1)
    # The batch happens inside flat_map, where `tfft.distribute.dataset_batch_size` cannot see
    # it; without it `fine_tune(batch_size=...)` would rebatch (undoing the grouping).
    shuffled._batch_size = tf.constant(batch_size, tf.int64)
    return shuffled


def token_lengths(texts) -> np.ndarray:
    """Words plus `SPECIAL_TOKENS` per text of each example: a proxy of its tokens.

    Example:

    >>> token_lengths((tf.constant(["a good film"]), tf.constant(["yes"]))).tolist()
    [8]
    """
    specials = SPECIAL_TOKENS * (len(texts) if isinstance(texts, (tuple, list)) else 1)
    return word_counts(texts).numpy() + specials


def padding_stats(dataset: tf.data.Dataset) -> dict[str, float]:
    """How much padding one epoch of `dataset` costs when each batch is padded to its longest text.

    Args:
        dataset: batched `(texts, label[, weight])` elements.

    Returns:
        `{"waste": 1 - real / padded positions, "mean_length": mean `token_lengths`,
        "mean_padded_length": mean padded length per example, "batches": count}`
        (zeros for an empty dataset).
    """
    real = padded = examples = batches = 0
    for element in dataset:
        lengths = token_lengths(element[0])
        if lengths.size:
            real += int(lengths.sum())
            padded += int(lengths.max()) * lengths.size
            examples += lengths.size
            batches += 1
    if not padded:
        return {"waste": 0.0, "mean_length": 0.0, "mean_padded_length": 0.0, "batches": 0}
    return {"waste": 1.0 - real / padded, "mean_length": real / examples, "mean_padded_length": padded / examples,
            "batches": batches}
