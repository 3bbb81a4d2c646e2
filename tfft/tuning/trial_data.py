"""The search's data as every trial gets it: the same dataset objects each time.

The feature cache recognizes a pipeline by identity, so trials must get the very same
dataset objects; arrays are batched once, a zero-argument data function is called once,
and cross-validation folds are built once per data object.
"""

import numpy as np
import tensorflow as tf

from tfft import batches as batches_lib
from tfft import data as data_lib
from tfft import order as order_lib

BATCH_SIZE = 32  # batch size of array inputs (a trial's batch_size rebatches)


def _take(x, idx):
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, np.ndarray)) and len(x) == 2:
        return tuple(np.asarray(part)[idx] for part in x)  # sentence pairs
    return np.asarray(x)[idx]


class TrialData:
    """Turns what `tuner.search(...)` was given into `(train, validation)` datasets, memoized."""

    def __init__(self, hypermodel):
        self.hypermodel = hypermodel
        self._memo = {}

    def _remember(self, key, anchor, make):
        """`make()`, memoized under `key` for as long as the same `anchor` object(s) come back.

        The memo holds the user's objects, so their ids stay unique.
        """
        anchors = anchor if isinstance(anchor, tuple) else (anchor,)
        hit = self._memo.get(key)
        if hit is None or len(hit[0]) != len(anchors) or any(a is not b for a, b in zip(hit[0], anchors)):
            hit = (anchors, make())
            self._memo[key] = hit
        return hit[1]

    def _called(self, x):
        if callable(x) and not isinstance(x, tf.data.Dataset):
            return self._remember(("call", id(x)), x, x)
        return x

    def _counted(self, dataset):
        """`dataset`, with its number of examples recorded once (tfft's loaders record their own)."""
        if dataset is not None and order_lib.order_of(dataset) is None:
            def count():
                size = batches_lib.count_examples(dataset)
                order_lib.record_order(dataset, order_lib.DatasetOrder(None, size, None))  # its own batches
                return size

            self._remember(("count", id(dataset)), dataset, count)
        return dataset

    def splits(self, x, y, validation_data):
        """`(train, validation)`: batched datasets, the same objects for every trial."""
        seed = self.hypermodel.seed
        x = self._called(x)
        validation_data = self._called(validation_data)
        if isinstance(x, tuple) and len(x) == 2 and y is None and isinstance(x[0], tf.data.Dataset):
            x, validation_data = x[0], validation_data or x[1]
        if isinstance(x, data_lib.DataBundle):
            if x.train is None:
                raise ValueError("The DataBundle has no train split.")
            train, val = x.train, validation_data if validation_data is not None else x.validation
        elif isinstance(x, tf.data.Dataset):
            if y is not None:
                raise ValueError("Pass y only with array inputs; a dataset yields (x, y) batches.")
            train, val = self._counted(x), validation_data
        elif x is not None and y is not None:
            train = self._remember(("train", id(x), id(y)), (x, y),
                                   lambda: batches_lib.as_batches((x, y), BATCH_SIZE, shuffle=True, seed=seed))
            val = validation_data
        else:
            raise ValueError(
                "No training data: call tuner.search(train_dataset, validation_data=...), "
                "tuner.search(x, y, validation_data=(x_val, y_val)) or tuner.search(data_bundle).")
        if val is not None and not isinstance(val, tf.data.Dataset):
            val = self._remember(("val", id(val)), val,
                                 lambda: batches_lib.as_batches(tuple(val), BATCH_SIZE, shuffle=False, seed=seed))
        return train, val

    def folds(self, x, y):
        """The k `(train, validation)` folds, built once per data object."""
        hm = self.hypermodel
        x = self._called(x)
        k = hm.cv_folds
        if isinstance(x, data_lib.DataBundle):
            return self._remember(("folds", id(x)), x, lambda: list(data_lib.kfold(x, k=k, seed=hm.seed)))
        if x is None or y is None or isinstance(x, tf.data.Dataset):
            raise ValueError(
                "cv_folds needs all the examples: pass a tfft.data.DataBundle (its train and validation "
                "examples are folded) or arrays x, y to tuner.search, not a tf.data.Dataset.")

        def make():
            labels = np.asarray(y)
            seed = hm.seed if hm.seed is not None else data_lib.DEFAULT_SEED
            return [(batches_lib.as_batches((_take(x, tr), labels[tr]), BATCH_SIZE, shuffle=True, seed=hm.seed),
                     batches_lib.as_batches((_take(x, va), labels[va]), BATCH_SIZE, shuffle=False, seed=hm.seed))
                    for tr, va in data_lib.kfold_indices(labels, k, seed, hm.task == "multiclass")]

        return self._remember(("folds", id(x), id(y)), (x, y), make)
