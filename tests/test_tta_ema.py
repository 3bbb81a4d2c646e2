"""Soft-label loss and metrics, EMA weights (`tfft.optim`), and test-time augmentation (`tfft.tta`,
`experiments.modeling.score`, `experiments.evaluate --tta`): tiny 32x32 models, no network."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from experiments import config as config_lib
from experiments import evaluate, modeling
from tfft import callbacks as callbacks_lib
from tfft import optim, tta

SHAPE = (32, 32, 3)


def images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n,) + SHAPE) * 255).astype("float32"), (np.arange(n) % 3).astype("int64")


def batches(x, y, batch_size=4):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def tiny_model(kernel=3, num_classes=3, task="multiclass", seed=0):
    """A tfft model on a one-conv backbone; a 1x1 kernel makes it exactly flip- and crop-order-invariant."""
    keras.utils.set_random_seed(seed)
    inner = keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(1 / 255.0),
                              keras.layers.Conv2D(4, kernel, name="conv")])
    return tfft.build_model(inner, num_classes=num_classes, task=task, input_shape=SHAPE)


def weights_of(model):
    return [np.array(v) for v in model.trainable_weights]


def assert_same(a, b, **kwargs):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, **kwargs)


# ---------------------------------------------------------------------------
# Loss and metrics on soft labels.


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_takes_hard_and_soft_labels_alike(smoothing):
    loss = optim.default_loss("multiclass", smoothing)
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], "float32")
    y = np.array([0, 2, 1])
    hard = float(loss(y, p))
    assert float(loss(y[:, None], p)) == pytest.approx(hard, rel=1e-6)
    assert float(loss(np.eye(3, dtype="float32")[y], p)) == pytest.approx(hard, rel=1e-6)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    assert hard == pytest.approx(float(reference(np.eye(3)[y], p)), rel=1e-6)
    mixed = 0.3 * np.eye(3)[y] + 0.7 * np.eye(3)[[1, 1, 0]]  # cross-entropy is linear in the target
    assert float(loss(mixed, p)) == pytest.approx(float(0.3 * reference(np.eye(3)[y], p)
                                                        + 0.7 * reference(np.eye(3)[[1, 1, 0]], p)), rel=1e-5)


def test_hard_label_loss_is_keras_sparse_crossentropy_on_a_model():
    """Also through a softmax head, where Keras computes the loss from the logits."""
    model = tiny_model()
    x, y = images(8)
    tfft.compile_model(model)
    ours = model.evaluate(x, y, verbose=0, return_dict=True)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(), metrics=[
        keras.metrics.SparseCategoricalAccuracy(name="accuracy"), optim.F1Score(name="f1")])
    theirs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_metrics_score_soft_labels_against_their_hard_labels():
    p = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]], "float32")
    soft = np.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0], [0.0, 0.2, 0.8], [0.1, 0.0, 0.9]], "float32")
    hard = soft.argmax(-1)
    for metric_soft, metric_hard in zip(optim.default_metrics("multiclass", 3), optim.default_metrics("multiclass", 3)):
        metric_soft.update_state(soft, p)
        metric_hard.update_state(hard, p)
        assert float(metric_soft.result()) == pytest.approx(float(metric_hard.result())), metric_soft.name
    top5 = optim.default_metrics("multiclass", 7)[1]
    ranked = np.array([[0.3, 0.25, 0.2, 0.15, 0.06, 0.03, 0.01]] * 2, "float32")
    top5.update_state(np.eye(7, dtype="float32")[[6, 0]] * 0.6 + 0.4 / 7, ranked)
    assert top5.name == "top5_accuracy" and float(top5.result()) == pytest.approx(0.5)  # class 6 is not in the top 5
    accuracy = optim.default_metrics("multiclass", 3)[0]
    accuracy.update_state(soft, p)
    assert accuracy.name == "accuracy" and float(accuracy.result()) == pytest.approx(0.75)
    pb = np.array([[0.8], [0.3], [0.6], [0.2]], "float32")
    yb = np.array([[0.9], [0.4], [0.3], [0.0]], "float32")  # mixed binary targets: hard 1, 0, 0, 0
    for metric_soft, metric_hard in zip(optim.default_metrics("binary"), optim.default_metrics("binary")):
        metric_soft.update_state(yb, pb)
        metric_hard.update_state((yb >= 0.5).astype("int64"), pb)
        assert float(metric_soft.result()) == pytest.approx(float(metric_hard.result())), metric_soft.name


@pytest.mark.parametrize("task,num_classes", [("multiclass", 7), ("binary", None), ("multilabel", 3)])
def test_wrapped_metrics_equal_plain_keras_metrics_on_hard_labels(task, num_classes):
    rng = np.random.default_rng(0)
    units = {"multiclass": 7, "binary": 1, "multilabel": 3}[task]
    p = rng.random((20, units)).astype("float32")
    if task == "multiclass":
        p, y = p / p.sum(-1, keepdims=True), rng.integers(0, 7, 20)
    else:
        y = rng.integers(0, 2, (20, units)).astype("float32" if task == "multilabel" else "int64")
    for wrapped in optim.default_metrics(task, num_classes):
        plain = wrapped.metric.__class__.from_config(wrapped.metric.get_config())
        wrapped.update_state(y, p)
        plain.update_state(y, p)
        assert float(wrapped.result()) == float(plain.result()), wrapped.name


def test_saved_models_with_old_and_new_losses_and_metrics_load(tmp_path):
    x, y = images(8)
    old = tiny_model()
    old.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    old.fit(x, y, epochs=1, verbose=0)
    old.save(tmp_path / "old.keras")
    smoothed = tiny_model()
    smoothed.compile(optimizer="adam", loss=optim.SparseCategoricalCrossentropy(0.1), metrics=[optim.F1Score()])
    smoothed.fit(x, y, epochs=1, verbose=0)
    smoothed.save(tmp_path / "smoothed.keras")
    new = tiny_model()
    tfft.compile_model(new, label_smoothing=0.1, ema=True)
    new.fit(x, y, epochs=1, verbose=0)
    new.save(tmp_path / "new.keras")
    for name, model in (("old", old), ("smoothed", smoothed), ("new", new)):
        loaded = keras.models.load_model(tmp_path / f"{name}.keras")
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        assert loaded.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(
            model.evaluate(x, y, verbose=0, return_dict=True), rel=1e-5)
    assert keras.models.load_model(tmp_path / "new.keras").optimizer.use_ema


# ---------------------------------------------------------------------------
# EMA weights.


class Snapshot(keras.callbacks.Callback):
    """The model's weights at each epoch's end, where this callback sits in the list."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(weights_of(self.model))


class StopAfter(keras.callbacks.Callback):
    """Stops training at the end of epoch `epoch`, as early stopping would."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def ema_fit(tmp_path, epochs=3, extra=()):
    x, y = images(12)
    model = tiny_model()
    tfft.compile_model(model, optimizer="sgd", learning_rate=0.05, ema=0.6)
    averaged, raw = Snapshot(), Snapshot()
    checkpoint = callbacks_lib.ModelCheckpoint(str(tmp_path / "last.weights.h5"), save_weights_only=True)
    cbs = optim.ema_callbacks(model, [averaged, checkpoint, *extra]) + [raw]
    history = model.fit(batches(x, y), validation_data=batches(x, y), epochs=epochs, callbacks=cbs, verbose=0)
    return model, history.history, averaged, raw, (x, y)


def test_ema_validates_checkpoints_and_ends_on_the_average(tmp_path):
    model, history, averaged, raw, (x, y) = ema_fit(tmp_path)
    opt = model.optimizer
    assert opt.use_ema and opt.ema_momentum == pytest.approx(0.6)
    final = weights_of(model)
    assert_same(final, [np.array(v) for v in opt._model_variables_moving_average])
    assert_same(final, averaged.seen[-1])  # what the callbacks after EMAWeights saw: the average
    assert max(np.abs(a - b).max() for a, b in zip(final, raw.seen[-1])) > 1e-4  # the raw weights differ
    assert history["val_loss"][-1] == pytest.approx(model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
                                                    rel=1e-5)
    saved = tiny_model(seed=9)
    saved.load_weights(tmp_path / "last.weights.h5")
    assert_same(weights_of(saved), final)


def test_an_early_stopped_ema_run_ends_on_the_average_too(tmp_path):
    model, history, averaged, raw, _ = ema_fit(tmp_path, epochs=4, extra=[StopAfter(1)])
    assert len(history["loss"]) == 2
    assert_same(weights_of(model), averaged.seen[-1])
    # Backups (placed after swap_back) see the raw weights, the average staying in the optimizer.
    assert max(np.abs(a - b).max() for a, b in zip(raw.seen[-1], averaged.seen[-1])) > 1e-4


def test_ema_run_resumed_from_a_backup_ends_as_the_uninterrupted_one(tmp_path):
    x, y = images(12)

    def run(workdir, crash_after=None):
        model = tiny_model()
        tfft.compile_model(model, optimizer="sgd", learning_rate=0.05, ema=0.6)
        crash = [Crash(crash_after)] if crash_after is not None else []
        cbs = optim.ema_callbacks(model, crash + [callbacks_lib.BackupAndRestore(str(workdir))])
        model.fit(batches(x, y), validation_data=batches(x, y), epochs=3, callbacks=cbs, verbose=0)
        return weights_of(model)

    uninterrupted = run(tmp_path / "a")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "b", crash_after=1)
    assert_same(run(tmp_path / "b"), uninterrupted, rtol=1e-5, atol=1e-6)


class Crash(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {epoch}")


def test_ema_callbacks_placement_and_no_op_without_ema(tmp_path):
    model = tiny_model()
    tfft.compile_model(model, ema=True)
    assert model.optimizer.ema_momentum == optim.DEFAULT_EMA_MOMENTUM
    stop, backup = keras.callbacks.TerminateOnNaN(), callbacks_lib.BackupAndRestore(str(tmp_path))
    cbs = optim.ema_callbacks(model, [stop, backup])
    assert [type(c).__name__ for c in cbs] == ["EMAWeights", "TerminateOnNaN", "_SwapBackEMA", "BackupAndRestore"]
    assert cbs[2] is cbs[0].swap_back
    tfft.compile_model(model)
    assert optim.ema_callbacks(model, [stop, backup]) == [stop, backup]


def test_ema_with_an_optimizer_instance_or_a_bad_value_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="cannot change the optimizer instance you passed .*use_ema=True"):
        tfft.compile_model(model, optimizer=keras.optimizers.SGD(0.1), ema=True)
    tfft.compile_model(model, optimizer=keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.9), ema=0.9)
    assert model.optimizer.use_ema
    with pytest.raises(ValueError, match=r"ema= takes True .* or a momentum in \(0, 1\)"):
        tfft.compile_model(model, ema=1.5)


# ---------------------------------------------------------------------------
# Test-time augmentation.


def test_flip_tta_on_a_flip_invariant_model_changes_nothing():
    model = tiny_model(kernel=1)  # 1x1 conv + global average pooling: exactly flip-invariant
    x, _ = images(6)
    plain = model.predict(x, verbose=0)
    np.testing.assert_allclose(tta.predict(model, x), plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tta.predict(model, x, views="original,flip,flip_vertical"), plain, rtol=1e-5,
                               atol=1e-6)


def test_tta_probabilities_are_the_average_of_the_views():
    model = tiny_model(kernel=3)
    x, _ = images(6)
    views = [x, x[:, :, ::-1], x[:, ::-1]]
    manual = np.mean([model.predict(v, verbose=0) for v in views], axis=0)
    averaged = tta.predict(model, x, views=("original", "flip", "flip_vertical"), batch_size=4)
    np.testing.assert_allclose(averaged, manual, rtol=1e-5, atol=1e-6)
    assert np.abs(averaged - model.predict(x, verbose=0)).max() > 1e-4
    np.testing.assert_allclose(averaged.sum(-1), 1.0, rtol=1e-5)


def test_crop_views():
    x, _ = images(2)
    np.testing.assert_array_equal(tta.apply_view(x, "crop:1@center").numpy(), x)
    ramp = np.tile(np.arange(32, dtype="float32")[None, None, :, None], (1, 32, 1, 3))
    centre = tta.apply_view(ramp, tta.parse_views("crop:0.5")[0]).numpy()[0, 0, :, 0]
    np.testing.assert_allclose(centre[[0, -1]], [7.75, 23.25], atol=1e-4)  # the middle half, stretched
    left = tta.apply_view(ramp, "crop:0.5@top_left").numpy()[0, 0, :, 0]
    np.testing.assert_allclose(left[[0, -1]], [0.0, 15.5], atol=1e-4)
    assert len(tta.parse_views("original,five_crop")) == 6
    assert tta.parse_views("scale:2") == ("crop:0.5@center",)


def test_tta_metrics_match_a_manual_computation():
    model = tiny_model(kernel=3)
    x, y = images(10)
    probs = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    metrics = tta.evaluate(model, batches(x, y))
    assert metrics["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == y))
    clipped = np.clip(probs / probs.sum(-1, keepdims=True), 1e-7, 1 - 1e-7)
    assert metrics["loss"] == pytest.approx(-np.mean(np.log(clipped[np.arange(10), y])), rel=1e-5)
    scored, report = modeling.score(model, batches(x, y), class_names=("a", "b", "c"), tta="flip")
    assert scored["accuracy"] == pytest.approx(metrics["accuracy"]) and scored["loss"] == pytest.approx(
        metrics["loss"], rel=1e-6)
    assert report["examples"] == 10


def test_tta_bad_inputs_are_refused_clearly():
    text_like = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    text_like.tfft_info = {"modality": "text", "task": "multiclass"}
    with pytest.raises(ValueError, match="flips and crops images, and .* takes text"):
        tta.predict(text_like, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="Unknown test-time augmentation view 'flp'. Did you mean 'flip'"):
        tta.parse_views("flp")
    with pytest.raises(ValueError, match=r"fraction in \(0, 1\]"):
        tta.parse_views("crop:1.5")
    with pytest.raises(config_lib.UsageError, match="--tta='flip,sideways'"):
        evaluate._tta_views("flip,sideways")
    assert evaluate._tta_views("flip,crop") == (("original", "flip", "crop:0.875@center"), "_tta_flip_crop")
    assert evaluate._tta_views("") == ((), "")
