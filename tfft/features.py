"""Frozen-backbone feature caching.

While the backbone is frozen and nothing random runs before it, every epoch of the head
phase recomputes the same backbone outputs. `split_at_features` cuts a tfft model into a
feature extractor (inputs through the backbone and pooling) and a head model that shares
the real head layers, so training the head model trains the model's head. `FeatureStore`
computes each (extractor, dataset) pair's features once, in memory or on disk past a size
limit, and hands out `tf.data` pipelines over them; a changed backbone, weights, input
shape or dataset gets a new key, so stale features are never reused.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tfft import order as order_lib
from tfft.info import model_info

logger = logging.getLogger("tfft")

DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes of features kept in memory before going to disk


def _head_layers(model):
    return [layer for layer in model.layers if layer.name.startswith("head_")]


def split_at_features(model):
    """Returns `(extractor, head_model)` for a model built by `tfft.build_model`.

    The extractor maps the model's inputs to the pooled backbone features (the output of
    `head_pool`, or the input of the first head layer); the head model maps features to
    the outputs through the same layer objects. Returns `(None, None)` when the head is
    not a simple chain of `head_*` layers.
    """
    heads = _head_layers(model)
    if not heads:
        return None, None
    if heads[0].name == "head_pool":
        features = heads[0].output
        chain = heads[1:]
    else:
        features = heads[0].input
        chain = heads
    if isinstance(features, (list, tuple, dict)) or not chain:
        return None, None
    extractor = keras.Model(model.inputs, features, name="feature_extractor")
    head_in = keras.Input(shape=tuple(features.shape[1:]), dtype=features.dtype, name="features")
    x = head_in
    for layer in chain:
        if len(layer._inbound_nodes) != 1:
            return None, None
        x = layer(x)
    head = keras.Model(head_in, x, name="head")
    head.tfft_info = model_info(model)
    return extractor, head


def has_random_preprocessing(model):
    """True when a layer before the backbone is random (augmentation inside the model)."""
    for layer in model.layers:
        if layer.name == "backbone":
            return False
        if "Random" in type(layer).__name__ or layer.name.startswith("augment"):
            return True
    return False


def backbone_is_frozen(model):
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        return False
    return not backbone.trainable_weights


def fingerprint(model):
    """A hash of the extractor's architecture, input shape and weight values."""
    digest = hashlib.sha1()
    config = {
        "inputs": [list(map(str, t.shape)) + [str(t.dtype)] for t in model.inputs],
        "layers": [type(layer).__name__ + ":" + layer.name for layer in model.layers],
    }
    digest.update(json.dumps(config, sort_keys=True).encode())
    for v in model.weights:
        digest.update(v.path.encode())
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(v)).tobytes())
    return digest.hexdigest()


def _unpack(batch):
    return keras.utils.unpack_x_y_sample_weight(batch)


class _Entry:
    def __init__(self, dataset, features_spec, batch_size, tensors=None, path=None):
        self.dataset = dataset  # a strong reference: identity checks stay valid
        self.batch_size = batch_size
        self.tensors = tensors
        self.path = path
        self.served = {}  # (batch size, order, seed) -> the dataset handed out
        self.spec = features_spec


class FeatureStore:
    """Features of (frozen extractor, dataset) pairs, computed once and reused.

    Args:
        memory_limit: bytes of features kept in memory; larger sets are written with
            `tf.data.Dataset.save` under `directory` (a temporary one by default).
        directory: where on-disk features go.
    """

    def __init__(self, memory_limit=DEFAULT_MEMORY_LIMIT, directory=None):
        self.memory_limit = int(memory_limit)
        self.directory = directory
        self._entries = {}
        self.hits = 0
        self.misses = 0

    def __len__(self):
        return len(self._entries)

    def clear(self):
        for entry in self._entries.values():
            if entry.path and os.path.isdir(entry.path):
                shutil.rmtree(entry.path, ignore_errors=True)
        self._entries.clear()

    def dataset(self, extractor, data, *, seed=None, key=None, batch_size=None, shuffle=None):
        """A `tf.data.Dataset` of `(features, labels[, weights])` batches for `data`.

        The features come in the order the images of `data` would: in `data`'s own order
        for a dataset whose order is fixed; in exactly the order of each epoch for a
        training split of a `tfft.data` loader (its order is recorded:
        `tfft.order.DatasetOrder`); and for any other dataset that reshuffles each epoch,
        in a seeded order of their own that changes each epoch as well
        (`tfft.order.epoch_shuffle`, resumable), which is not the dataset's order.

        Args:
            extractor: the feature extractor (`split_at_features`).
            data: the batched dataset the features are of.
            seed: seed of the epoch order of a reshuffling dataset that is not a tfft one.
            key: the extractor's `fingerprint` (computed when None).
            batch_size: batch the features in batches of this size instead of `data`'s.
            shuffle: `True` forces tfft's seeded per-epoch order, `False` the fixed order;
                None (default) follows `data` as above.
        """
        key = (key or fingerprint(extractor), id(data))
        entry = self._entries.get(key)
        order = order_lib.order_of(data)
        if entry is None or entry.dataset is not data:
            self.misses += 1
            source = data if order is None or order.elements is None else order.elements.batch(order.batch_size)
            entry = self._compute(extractor, source, key)
            entry.dataset = data
            self._entries[key] = entry
        else:
            self.hits += 1
        batch = int(batch_size or (order.batch_size if order is not None and order.batch_size else entry.batch_size))
        exact = shuffle is None and order is not None and order.elements is not None
        reshuffled = not exact and (shuffle or (shuffle is None and order_lib.reshuffles(data)))
        if reshuffled and shuffle is None and not getattr(entry, "warned", False):
            entry.warned = True
            logger.info("The training dataset reshuffles each epoch; its cached features reshuffle each epoch too, "
                        "in tfft's seeded order (seed %s), not in the dataset's own order.", seed or 0)
        # Served datasets are kept per form: trials that ask again get the same tf.data object (no new graph
        # holding the features again, nothing that grows trial after trial).
        form = (batch, "exact" if exact else "shuffled" if reshuffled else "fixed", seed if reshuffled else None)
        if form not in entry.served:
            ds = (tf.data.Dataset.from_tensor_slices(entry.tensors) if entry.tensors is not None
                  else tf.data.Dataset.load(entry.path))
            if exact:
                ds = order_lib.DatasetOrder(ds, order.examples, batch, order.buffer, order.seed).arrange(ds)
            elif reshuffled:
                ds = order_lib.epoch_shuffle(ds, _count(entry), 0 if seed is None else seed).batch(batch)
            else:
                ds = ds.batch(batch)
            entry.served[form] = ds.prefetch(tf.data.AUTOTUNE)
        return entry.served[form]

    def _compute(self, extractor, data, key):
        batches, batch_size, nbytes, path, writer_parts = [], None, 0, None, []
        forward = _forward(extractor, data.element_spec)
        for batch in data:
            x, y, w = _unpack(batch)
            features = np.asarray(forward(x))
            batch_size = batch_size or int(features.shape[0])
            part = tuple(np.asarray(t) for t in (features, y, w) if t is not None)
            nbytes += sum(p.nbytes for p in part)
            batches.append(part)
            if nbytes > self.memory_limit:
                path = self._spill(batches, key, writer_parts)
                batches = []
        if not batches and not writer_parts:
            raise ValueError("The dataset is empty: no batch to compute features from.")
        if path is None:
            tensors = tuple(np.concatenate([b[i] for b in batches]) for i in range(len(batches[0])))
            logger.info("Cached %d frozen-backbone feature vectors in memory (%.1f MB).",
                        len(tensors[0]), nbytes / 1e6)
            return _Entry(data, tensors[0].shape[1:], batch_size, tensors=tensors)
        if batches:
            self._spill(batches, key, writer_parts)
        path = self._merge(writer_parts, key)
        logger.info("Cached frozen-backbone features on disk in %s (%.1f MB).", path, nbytes / 1e6)
        return _Entry(data, None, batch_size, path=path)

    def _root(self):
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="tfft_features_")
        os.makedirs(self.directory, exist_ok=True)
        return self.directory

    def _spill(self, batches, key, parts):
        tensors = tuple(np.concatenate([b[i] for b in batches]) for i in range(len(batches[0])))
        path = os.path.join(self._root(), f"{key[0][:16]}_{key[1]}_part{len(parts)}")
        tf.data.Dataset.from_tensor_slices(tensors).save(path)
        parts.append(path)
        return path

    def _merge(self, parts, key):
        ds = tf.data.Dataset.load(parts[0])
        for part in parts[1:]:
            ds = ds.concatenate(tf.data.Dataset.load(part))
        path = os.path.join(self._root(), f"{key[0][:16]}_{key[1]}")
        ds.save(path)
        for part in parts:
            shutil.rmtree(part, ignore_errors=True)
        return path


def _forward(extractor, element_spec):
    """The extractor as one traced graph for any batch size (instead of an eager layer-by-layer
    call per batch), traced once per input signature and shared by the training and the
    validation split."""
    x_spec = _unpack(element_spec)[0]
    specs = tf.nest.flatten(x_spec)
    signature = None
    if all(type(s) is tf.TensorSpec and s.shape.rank for s in specs):
        signature = tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), x_spec)
    forwards = extractor.__dict__.setdefault("_tfft_forwards", {})  # lives and dies with the extractor
    name = repr(signature)
    if name not in forwards:
        if signature is None:  # e.g. ragged inputs: traced on first use, generalized on the next shape
            forwards[name] = tf.function(lambda inputs: extractor(inputs, training=False), reduce_retracing=True)
        else:
            forwards[name] = tf.function(lambda inputs: extractor(inputs, training=False), input_signature=[signature])
    return forwards[name]


def _count(entry):
    if entry.tensors is not None:
        return int(len(entry.tensors[0]))
    return int(tf.data.Dataset.load(entry.path).cardinality())


# One store per process: trials of a search and phases of a run share it.
default_store = FeatureStore()
