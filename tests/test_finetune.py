"""fine_tune: phases, epoch accounting, feature caching, resume after a crash."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import features as features_lib
from tiny import tiny_vgg

SHAPE = (32, 32, 3)


def data(n=24, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype("int64")
    x = (rng.random((n,) + SHAPE) * 60 + y[:, None, None, None] * 60).astype("float32")  # learnable
    return x, y


def dataset(x, y, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def small_model(dropout=0.0):
    """VGG16's block structure at a thousandth of its size: every fine_tune here saves and backs up weights."""
    keras.utils.set_random_seed(1)
    return tfft.build_model(tiny_vgg(), num_classes=3, weights=None, dropout=dropout)


class Crash(keras.callbacks.Callback):
    """Raises at the end of a chosen epoch (after the backup of that epoch was written)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {epoch}")


def test_two_phases_count_epochs_across_phases(tmp_path):
    x, y = data()
    model = small_model()
    result = tfft.fine_tune(model, dataset(x, y), dataset(x, y), head_epochs=2, finetune_epochs=3,
                            workdir=str(tmp_path), verbose=0)
    head, finetune = result.phases
    assert (head.initial_epoch, head.final_epoch, finetune.initial_epoch, finetune.final_epoch) == (0, 2, 2, 5)
    assert len(result.head_history["loss"]) == 2 and len(result.finetune_history["loss"]) == 3
    assert head.cached_features and not finetune.cached_features
    assert head.summary.trainable_params < finetune.summary.trainable_params
    assert {"val_loss", "val_accuracy", "val_f1"} <= set(result.metrics)
    # The fine-tune phase got a fresh optimizer: its step count is that phase's alone.
    assert int(model.optimizer.iterations) == 3 * 3
    rows = (tmp_path / "history.csv").read_text().strip().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:] if r[0].isdigit()] == [0, 1, 2, 3, 4]
    assert (tmp_path / "model.keras").exists()
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert loaded.output.shape == (None, 3)
    state = json.loads((tmp_path / "run_state.json").read_text())
    assert {name: p["status"] for name, p in state["phases"].items()} == {"head": "done", "finetune": "done"}
    assert state["phases"]["head"]["weights"] == os.path.join("phases", "head.weights.h5")
    assert not (tmp_path / "backup" / "head").exists() and not (tmp_path / "backup" / "finetune").exists()


def test_cached_head_phase_equals_uncached():
    x, y = data(n=12)
    one_batch = dataset(x, y, batch_size=12)  # a single batch: order cannot differ
    results = {}
    for cache in (False, True):
        model = small_model()
        result = tfft.fine_tune(model, one_batch, one_batch, head_epochs=3, finetune_epochs=0,
                                cache_features=cache, verbose=0, default_callbacks=False)
        assert result.phases[0].cached_features is cache
        results[cache] = (model.get_layer("head_logits").get_weights(), result.history["loss"])
    for a, b in zip(results[False][0], results[True][0]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(results[False][1], results[True][1], rtol=1e-4)


def test_cache_is_reused_and_never_stale():
    x, y = data(n=8)
    ds = dataset(x, y)
    store = features_lib.FeatureStore()
    model = small_model()
    extractor, head = features_lib.split_at_features(model)
    first = list(store.dataset(extractor, ds))
    store.dataset(extractor, ds)
    assert (store.misses, store.hits) == (1, 1)
    # Changed weights -> a new key, recomputed features.
    conv = model.get_layer("backbone").get_layer("block5_conv1")
    conv.kernel.assign(conv.kernel * 2.0)
    second = list(store.dataset(extractor, ds))
    assert store.misses == 2
    assert not np.allclose(first[0][0], second[0][0])
    # Another dataset object with other data -> recomputed.
    store.dataset(extractor, dataset(x[::-1].copy(), y[::-1].copy()))
    assert store.misses == 3
    np.testing.assert_allclose(head(second[0][0]), model(x[:8]), rtol=1e-5, atol=1e-6)


def test_cache_is_off_when_something_random_runs_before_the_backbone():
    x, y = data(n=8)
    inputs = keras.Input(SHAPE)
    flipped = keras.layers.RandomFlip(name="augment")(inputs)
    feats = keras.layers.GlobalAveragePooling2D(name="head_pool")(keras.layers.Conv2D(4, 3, name="backbone")(flipped))
    out = keras.layers.Dense(3, activation="softmax", name="head_output")(feats)
    model = tfft.TransferModel(inputs, out, tfft_info={"task": "multiclass", "num_classes": 3})
    result = tfft.fine_tune(model, dataset(x, y), head_epochs=1, finetune_epochs=0, verbose=0)
    assert not result.phases[0].cached_features
    with pytest.raises(ValueError, match="random layers"):
        tfft.fine_tune(model, dataset(x, y), head_epochs=1, finetune_epochs=0, cache_features=True, verbose=0)


def test_arrays_and_gradual_unfreezing():
    x, y = data(n=16)
    model = small_model()
    result = tfft.fine_tune(model, (x, y), (x, y), head_epochs=1, finetune_epochs=3, gradual=3, batch_size=8,
                            verbose=0)
    names = [p.name for p in result.phases]
    assert names == ["head", "finetune_0", "finetune_1", "finetune_2"]
    trainable = [len(p.summary.trainable_layers) for p in result.phases[1:]]
    assert trainable == sorted(trainable) and trainable[0] < trainable[-1]
    assert [p.initial_epoch for p in result.phases] == [0, 1, 2, 3]


def test_unfreeze_spec_is_what_trains():
    x, y = data(n=8)
    model = small_model()
    before = {v.path: v.numpy().copy() for v in model.get_layer("backbone").weights}
    tfft.fine_tune(model, dataset(x, y), head_epochs=0, finetune_epochs=1, unfreeze="re:block5_conv1",
                   finetune_learning_rate=1e-2, verbose=0)
    for v in model.get_layer("backbone").weights:
        changed = not np.array_equal(before[v.path], v.numpy())
        assert changed == v.path.startswith("block5_conv1"), v.path


def test_resume_after_a_crash_in_each_phase(tmp_path):
    x, y = data(n=16)
    train, val = dataset(x, y), dataset(x, y)
    kwargs = dict(head_epochs=2, finetune_epochs=3, verbose=0, patience=100)

    reference = small_model()
    expected = tfft.fine_tune(reference, train, val, workdir=str(tmp_path / "ref"), **kwargs)

    for crash_epoch in (0, 1, 3):  # in the head phase, at the phase switch, in the fine-tune phase
        workdir = str(tmp_path / f"crash{crash_epoch}")
        with pytest.raises(RuntimeError, match="simulated crash"):
            tfft.fine_tune(small_model(), train, val, workdir=workdir, callbacks=[Crash(crash_epoch)], **kwargs)
        state = json.load(open(os.path.join(workdir, "run_state.json")))
        assert str(crash_epoch) in state["phases"]["head" if crash_epoch < 2 else "finetune"]["epochs"]
        result = tfft.fine_tune(small_model(), train, val, workdir=workdir, **kwargs)
        assert len(result.history["loss"]) == 5, crash_epoch  # no epoch lost or repeated in the logs
        assert result.metrics["val_loss"] == pytest.approx(expected.metrics["val_loss"], rel=1e-4, abs=1e-6)
        np.testing.assert_allclose(result.history["loss"], expected.history["loss"], rtol=1e-4)


def test_finished_run_is_not_rerun(tmp_path):
    x, y = data(n=8)
    kwargs = dict(head_epochs=1, finetune_epochs=1, workdir=str(tmp_path), verbose=0)
    first = tfft.fine_tune(small_model(), dataset(x, y), dataset(x, y), **kwargs)
    again = tfft.fine_tune(small_model(), dataset(x, y), dataset(x, y), **kwargs)
    assert all(p.resumed for p in again.phases)
    assert again.metrics == pytest.approx(first.metrics)


def test_epoch_keyed_shuffle_reproduces_an_epochs_order():
    from tfft import order

    ds = order.epoch_shuffle(tf.data.Dataset.range(20), 20, seed=3)
    epochs = [list(ds.as_numpy_iterator()) for _ in range(3)]
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == list(range(20))
    pin = order.EpochSeed()
    pin.on_epoch_begin(2)  # a run resumed at epoch 2 sees epoch 2's order
    try:
        assert list(ds.as_numpy_iterator()) == epochs[2]
    finally:
        pin.on_train_end()
    assert int(ds.cardinality()) == 20
