"""Core: registry, build_model, freeze specs, compile_model, callbacks, .keras round trip."""

import os
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import optim

SHAPE = (32, 32, 3)


def images(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n,) + SHAPE) * 255).astype("float32"), (np.arange(n) % 3).astype("int32")


def snapshot(layer):
    return {v.path: np.array(v.numpy()) for v in layer.weights}


# ---------------------------------------------------------------- registry and build_model


def test_registry_names_the_contract():
    names = tfft.list_backbones()
    for name in ["resnet50", "resnet101", "resnet152", "resnet50v2", "resnet101v2", "resnet152v2", "vgg16",
                 "vgg19", "bert_tiny_en_uncased", "bert_base_en_uncased", "bert_base_multi",
                 "all_minilm_l6_v2_en", "efficientnet_lite0"]:
        assert name in names
    assert "resnet50" in tfft.list_backbones("image") and "resnet50" not in tfft.list_backbones("text")


def test_unknown_backbone_names_close_matches():
    with pytest.raises(ValueError, match="resnet50"):
        tfft.build_model("resnet5O", num_classes=2, weights=None)


@pytest.mark.parametrize("name", ["resnet50", "vgg16"])
def test_build_model_structure(name):
    model = tfft.build_model(name, num_classes=3, weights=None, input_shape=SHAPE, head_units=(8,), l2=1e-4)
    backbone = model.get_layer("backbone")
    assert backbone.layers[1].name in ("conv1_pad", "block1_conv1")  # the network's own layers
    names = [layer.name for layer in model.layers]
    assert names.index("preprocessing") < names.index("backbone")
    assert all(n.startswith("head_") for n in names[names.index("backbone") + 1:])
    assert model.output.shape == (None, 3)
    assert model.tfft_info["task"] == "multiclass"
    assert not backbone.trainable_weights  # freeze="backbone" by default
    probs = model.predict(images(4)[0], verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_preprocessing_matches_keras_applications():
    x = images(2)[0]
    layer = tfft.ImageNetPreprocessing("caffe")
    expected = keras.applications.resnet.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(layer(x)), expected, rtol=1e-5, atol=1e-3)
    expected_v2 = keras.applications.resnet_v2.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(tfft.ImageNetPreprocessing("tf")(x)), expected_v2, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "task,num_classes,units,activation",
    [("multiclass", 4, 4, "softmax"), ("binary", None, 1, "sigmoid"), ("multilabel", 5, 5, "sigmoid"),
     ("regression", None, 1, "linear")],
)
def test_tasks_heads(task, num_classes, units, activation):
    model = tfft.build_model("vgg16", task=task, num_classes=num_classes, weights=None, input_shape=SHAPE)
    assert model.output.shape == (None, units)
    assert model.get_layer("head_output").get_config()["activation"] == activation


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="task"):
        tfft.build_model("vgg16", task="multi-class", num_classes=3, weights=None, input_shape=SHAPE)
    with pytest.raises(ValueError, match="num_classes"):
        tfft.build_model("vgg16", num_classes=1, weights=None, input_shape=SHAPE)
    with pytest.raises(ValueError, match="channels"):
        tfft.build_model("resnet50", num_classes=2, input_shape=(32, 32, 4))
    with pytest.raises(ValueError, match="height, width, channels"):
        tfft.build_model("resnet50", num_classes=2, weights=None, input_shape=(32, 32))
    with pytest.raises(FileNotFoundError):
        tfft.build_model("resnet50", num_classes=2, weights="/nonexistent/w.h5", input_shape=SHAPE)


def test_mixed_precision_outputs_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=SHAPE)
        assert model.get_layer("head_logits").compute_dtype == "bfloat16"
        assert model.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_keras_model_and_keras_file_backbones(tmp_path):
    inner = keras.Sequential([keras.Input(SHAPE), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Conv2D(4, 3, name="c2")])
    model = tfft.build_model(inner, num_classes=2, input_shape=SHAPE)
    assert model.get_layer("backbone") is inner
    path = tmp_path / "first.keras"
    model.save(path)
    again = tfft.build_model(str(path), num_classes=5)
    assert again.output.shape == (None, 5)
    assert [layer.name for layer in again.get_layer("backbone").layers] == ["c1", "bn", "c2"]


def test_keras_round_trip_predicts_the_same(tmp_path):
    model = tfft.build_model("resnet50", num_classes=3, weights=None, input_shape=SHAPE, head_units=(4,))
    tfft.compile_model(model, optimizer="adamw", schedule="cosine", warmup_steps=2, decay_steps=10,
                       weight_decay=0.01, label_smoothing=0.1)
    x, y = images(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, tfft.TransferModel) and loaded.tfft_info == model.tfft_info
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    loaded.fit(x, y, epochs=1, batch_size=4, verbose=0)  # the compiled state came along


# ---------------------------------------------------------------- freezing


def fit_and_compare(model, spec, train_batchnorm=False):
    """Freezes, fits, and returns (frozen_names, before, after) of the backbone variables."""
    summary = tfft.freeze(model, spec, train_batchnorm=train_batchnorm)
    tfft.compile_model(model, optimizer="sgd", learning_rate=0.05)
    model.run_eagerly = True  # the same trainable flags and BatchNorm modes, without tracing a ResNet50 train step
    backbone = model.get_layer("backbone")
    before = snapshot(backbone)
    x, y = images(8)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    return summary, before, snapshot(backbone)


@pytest.mark.parametrize(
    "name,spec,expected_frozen",
    [
        ("resnet50", "backbone", lambda names: set(names)),
        ("resnet50", 40, lambda names: set(names[:40])),
        ("resnet50", "re:conv[1-4]_.*",
         lambda names: {n for n in names if n[:5] in ("conv1", "conv2", "conv3", "conv4")}),
        ("vgg16", 0.5, lambda names: set(names[: round(0.5 * len(names))])),
        ("vgg16", "until:block3_pool", lambda names: set(names[: names.index("block3_pool") + 1])),
        ("vgg16", "bottom:2", lambda names: {n for n in names if not n.startswith(("block3", "block4", "block5"))}),
        ("vgg16", "none", lambda names: set()),
    ],
)
def test_frozen_is_bit_identical_and_the_rest_moves(name, spec, expected_frozen):
    model = tfft.build_model(name, num_classes=3, weights=None, input_shape=SHAPE, freeze="none")
    backbone = model.get_layer("backbone")
    names = [layer.name for layer in backbone.layers]
    frozen = expected_frozen(names)
    summary, before, after = fit_and_compare(model, spec)
    for layer in backbone.layers:
        for v in layer.weights:
            is_bn_stat = "moving_" in v.path
            if layer.name in frozen or isinstance(layer, keras.layers.BatchNormalization):
                assert np.array_equal(before[v.path], after[v.path]), f"{v.path} changed but is frozen"
            elif not is_bn_stat and v.trainable:
                assert not np.array_equal(before[v.path], after[v.path]), f"{v.path} did not train"
    assert set(summary.frozen_layers) >= frozen
    assert summary.trainable_params == sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def test_batchnorm_statistics_train_only_when_asked():
    model = tfft.build_model("resnet50", num_classes=3, weights=None, input_shape=SHAPE, freeze="none")
    _, before, after = fit_and_compare(model, "none", train_batchnorm=True)
    moved = [p for p in before if "moving_mean" in p and not np.array_equal(before[p], after[p])]
    assert moved, "train_batchnorm=True must update moving statistics"
    _, before, after = fit_and_compare(model, "re:conv5_.*", train_batchnorm=False)
    assert all(np.array_equal(before[p], after[p]) for p in before if "moving_" in p)


def test_head_is_never_frozen():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    tfft.freeze(model, "backbone")
    assert all(layer.trainable for layer in model.layers if layer.name.startswith("head_"))
    assert {v.path.split("/")[0] for v in model.trainable_weights} == {"head_logits"}


@pytest.mark.parametrize(
    "spec,match",
    [("until:block9_conv1", "block1_conv1"), ("re:conv.*", "matches no backbone layer"), (999, "layers"),
     (1.5, r"\(0, 1\)"), ("top:9", "blocks"), ("frozen", "not understood"), ("until:blok3_pool", "block3_pool")],
)
def test_bad_freeze_specs(spec, match):
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    with pytest.raises(ValueError, match=match):
        tfft.freeze(model, spec)


def test_unfreeze_counts_from_the_top_and_unions():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    names = [layer.name for layer in model.get_layer("backbone").layers]
    summary = tfft.unfreeze(model, 4)
    assert summary.trainable_layers == names[-4:]
    summary = tfft.unfreeze(model, "re:block5_conv3+re:block1_conv1")
    assert summary.trainable_layers == ["block1_conv1", "block5_conv3"]
    summary = tfft.unfreeze(model, "top:1")
    assert summary.trainable_layers == [n for n in names if n.startswith("block5")]


# ---------------------------------------------------------------- compile_model and schedules


@pytest.mark.parametrize("optimizer,cls",
                         [("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"), ("rmsprop", "RMSprop")])
def test_named_optimizers(optimizer, cls):
    model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=SHAPE)
    tfft.compile_model(model, optimizer=optimizer, learning_rate=0.01, nesterov=True)
    assert type(model.optimizer).__name__ == cls
    if optimizer == "sgd":
        assert model.optimizer.nesterov and model.optimizer.momentum == 0.9


def test_optimizer_instance_and_unknown_name():
    model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=SHAPE)
    opt = keras.optimizers.Lion(1e-4)
    tfft.compile_model(model, optimizer=opt)
    assert model.optimizer is opt
    with pytest.raises(ValueError, match="adamw"):
        tfft.compile_model(model, optimizer="adamv")


@pytest.mark.parametrize(
    "schedule,points",
    [
        ("constant", {0: 0.0, 5: 0.5, 10: 1.0, 50: 1.0}),
        ("linear", {0: 0.0, 10: 1.0, 60: 0.5, 110: 0.0}),
        ("cosine", {10: 1.0, 60: 0.5, 110: 0.0}),
        ("exponential", {10: 1.0, 110: 0.1}),
        ("step", {10: 1.0, 43: 1.0, 44: 0.1, 77: 0.01}),
    ],
)
def test_schedules_read_back(schedule, points):
    lr = optim.make_schedule(1.0, schedule, warmup_steps=10, decay_steps=100)
    for step, expected in points.items():
        assert float(lr(step)) == pytest.approx(expected, abs=1e-4), (schedule, step)


def test_schedule_needs_decay_steps():
    with pytest.raises(ValueError, match="decay_steps"):
        optim.make_schedule(1e-3, "cosine")


def test_schedule_position_follows_the_optimizer():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    tfft.compile_model(model, optimizer="sgd", learning_rate=0.1, schedule="linear", warmup_steps=2, decay_steps=8)
    x, y = images(16)
    model.fit(x, y, epochs=1, batch_size=4, verbose=0)  # 4 steps
    assert int(model.optimizer.iterations) == 4
    assert optim.current_learning_rate(model.optimizer) == pytest.approx(0.1 * (1 - 2 / 8))


@pytest.mark.parametrize(
    "task,num_classes,expected",
    [
        ("multiclass", 3, {"accuracy", "f1"}),
        ("multiclass", 10, {"accuracy", "top5_accuracy", "f1"}),
        ("binary", None, {"accuracy", "precision", "recall", "auc", "f1"}),
        ("multilabel", 4, {"accuracy", "precision", "recall", "auc", "f1"}),
        ("regression", None, {"mae", "rmse"}),
    ],
)
def test_task_metrics_train(task, num_classes, expected):
    model = tfft.build_model("vgg16", task=task, num_classes=num_classes, weights=None, input_shape=SHAPE)
    tfft.compile_model(model, label_smoothing=0.1 if task != "regression" else 0.0)
    x = images(8)[0]
    rng = np.random.default_rng(0)
    y = {"multiclass": rng.integers(0, num_classes or 2, 8), "binary": np.arange(8) % 2,
         "multilabel": rng.integers(0, 2, (8, num_classes or 1)).astype("float32"),
         "regression": rng.random(8).astype("float32")}[task]
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert expected <= set(history.history)
    assert np.isfinite(history.history["loss"][0])


def test_sparse_f1_matches_one_hot_f1():
    y_true = np.array([0, 1, 2, 2, 1])
    y_pred = np.eye(3)[[0, 2, 2, 1, 1]].astype("float32")
    ours = optim.F1Score(average="macro")
    ours.update_state(y_true, y_pred)
    keras_f1 = keras.metrics.F1Score(average="macro")
    keras_f1.update_state(np.eye(3)[y_true].astype("float32"), y_pred)
    assert float(ours.result()) == pytest.approx(float(keras_f1.result()))


def test_label_smoothing_loss_matches_categorical():
    loss = optim.SparseCategoricalCrossentropy(label_smoothing=0.2)
    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(np.eye(3)[[0, 2]], y_pred)
    assert float(loss(np.array([0, 2]), y_pred)) == pytest.approx(float(expected), rel=1e-6)


def test_weight_decay_skips_biases():
    model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=SHAPE)
    tfft.compile_model(model, optimizer="adamw", weight_decay=0.1)
    kernel = model.get_layer("head_logits").kernel
    bias = model.get_layer("head_logits").bias
    assert model.optimizer._use_weight_decay(kernel)
    assert not model.optimizer._use_weight_decay(bias)


def test_layerwise_decay_scales_lower_blocks():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE, freeze="none")
    tfft.compile_model(model, optimizer="sgd", learning_rate=0.1, momentum=0.0, layerwise_decay=0.5)
    multipliers = model.optimizer.lr_multipliers
    assert multipliers["block5_conv1/kernel"] == 0.5 and multipliers["block1_conv1/kernel"] == 0.5**5
    backbone = model.get_layer("backbone")
    before = snapshot(backbone)
    head_before = np.array(model.get_layer("head_logits").kernel.numpy())
    x, y = images(4)
    # One SGD step: the update of each variable is lr * multiplier * gradient.
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x=x, y=y, y_pred=model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    model.optimizer.apply(grads, model.trainable_variables)
    for g, v in zip(grads, model.trainable_variables):
        if v.path == "block1_conv1/kernel":
            np.testing.assert_allclose(before[v.path] - v.numpy(), 0.1 * 0.5**5 * np.asarray(g), rtol=1e-2, atol=1e-7)
        if v.path == "head_logits/kernel":
            np.testing.assert_allclose(head_before - v.numpy(), 0.1 * np.asarray(g), rtol=1e-2, atol=1e-7)


# ---------------------------------------------------------------- callbacks


def test_default_callbacks_set_and_switches(tmp_path):
    cbs = tfft.default_callbacks(str(tmp_path))
    kinds = {type(c).__name__ for c in cbs}
    assert kinds == {"EpochSeed", "TerminateOnNaN", "ReduceLROnPlateau", "EarlyStopping", "ModelCheckpoint",
                     "CSVLogger",
                     "TensorBoard", "BackupAndRestore"}
    early = next(c for c in cbs if type(c).__name__ == "EarlyStopping")
    assert early.restore_best_weights
    cbs = tfft.default_callbacks(str(tmp_path), tensorboard=False, backup=False, reduce_lr_on_plateau=False)
    assert {type(c).__name__ for c in cbs} == {"EpochSeed", "TerminateOnNaN", "EarlyStopping", "ModelCheckpoint",
                                               "CSVLogger"}


def test_callbacks_in_a_users_own_fit(tmp_path):
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    tfft.compile_model(model)
    x, y = images(8)
    model.fit(x, y, validation_data=(x, y), epochs=2, batch_size=4, verbose=0,
              callbacks=tfft.default_callbacks(str(tmp_path)) + [keras.callbacks.History()])
    assert (tmp_path / "model.keras").exists() and (tmp_path / "history.csv").exists()
    assert not (tmp_path / "backup").exists()  # removed after a successful finish
    keras.models.load_model(tmp_path / "model.keras")
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temporary files left


def test_reduce_lr_on_plateau_steps_aside_for_schedules():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    tfft.compile_model(model, schedule="cosine", decay_steps=10)
    x, y = images(8)
    cb = tfft.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=1e9)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[cb])  # Keras's own would raise


VAL_LOSSES = [1.0, 0.8, 0.9, 0.95, 0.7, 0.85, 0.9, 0.92, 0.93, 0.94, 0.95, 0.96]


class ScriptedValLoss(keras.callbacks.Callback):
    """Replaces each epoch's `val_loss` with VAL_LOSSES[epoch] (Keras passes the same logs
    dict to every callback), and raises at the start of `interrupt_at` (a simulated crash)."""

    def __init__(self, interrupt_at=None):
        super().__init__()
        self.interrupt_at = interrupt_at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.interrupt_at:
            raise KeyboardInterrupt(f"crash at epoch {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = VAL_LOSSES[epoch]


def _counter_run(workdir, interrupt_at=None, **kwargs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="out")])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((32, 4)).astype("float32")
    y = np.arange(32) % 3
    cbs = [ScriptedValLoss(interrupt_at)] + tfft.default_callbacks(
        str(workdir), patience=3, lr_patience=2, tensorboard=False, **kwargs)
    history = model.fit(x, y, validation_data=(x, y), epochs=len(VAL_LOSSES), batch_size=8, shuffle=False,
                        verbose=0, callbacks=cbs)
    return model, history, cbs


def test_resume_keeps_early_stopping_plateau_and_checkpoint_counters(tmp_path):
    """A crash after epoch 5 (two epochs after the best, epoch 4) and a rerun: early stopping
    still stops at epoch 7 and restores epoch 4, the rate was lowered at the same epochs, and
    the checkpoint still holds epoch 4 (a restart without the counters stops at epoch 9,
    restores epoch 6 and overwrites the checkpoint with it)."""
    reference, ref_history, ref_cbs = _counter_run(tmp_path / "reference")
    assert len(ref_history.epoch) == 8  # stopped after epoch 7 (index), patience 3 after epoch 4
    ref_lr = float(reference.optimizer.learning_rate)
    assert ref_lr == pytest.approx(0.1 * 0.2 * 0.2)  # ReduceLROnPlateau lowered it after epochs 3 and 6
    assert not list((tmp_path / "reference").rglob("*.npz"))  # best-weights files removed with the backup

    with pytest.raises(KeyboardInterrupt):
        _counter_run(tmp_path / "run", interrupt_at=6)
    backup = tmp_path / "run" / "backup"
    assert [p.name for p in backup.glob("*.npz")] == ["best_epoch_4.npz"]  # best weights wait in a file
    model, history, cbs = _counter_run(tmp_path / "run")
    assert history.epoch == [6, 7]
    assert float(model.optimizer.learning_rate) == pytest.approx(ref_lr)
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    early = next(cb for cb in cbs if isinstance(cb, keras.callbacks.EarlyStopping))
    assert early.best_epoch == 4 and early.stopped_epoch == 7
    saved = keras.models.load_model(tmp_path / "run" / "model.keras")
    for a, b in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)  # the checkpoint is the best epoch, 4, too


def test_backup_keeps_a_plain_keras_early_stopping(tmp_path):
    """A user's `keras.callbacks.EarlyStopping` (best weights in memory) handed to the backup:
    its best weights go to a file at each backup, and a rerun after the crash stops at the
    same epoch with the same weights as the run that never stopped."""
    def run(workdir, interrupt_at=None):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((32, 4)).astype("float32")
        early = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True)
        backup = tfft.callbacks.BackupAndRestore(str(workdir), callbacks=[early])
        history = model.fit(x, np.arange(32) % 3, validation_data=(x, np.arange(32) % 3), epochs=12, batch_size=8,
                            shuffle=False, verbose=0, callbacks=[ScriptedValLoss(interrupt_at), early, backup])
        return model, history, early

    reference, _, _ = run(tmp_path / "reference")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run", interrupt_at=6)
    assert [p.name for p in (tmp_path / "run").glob("*.npz")] == ["early_stopping_best_epoch_4.npz"]
    model, history, early = run(tmp_path / "run")
    assert history.epoch == [6, 7] and early.best_epoch == 4
    for a, b in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_file_backed_early_stopping_restores_like_keras(tmp_path):
    """`tfft.callbacks.EarlyStopping(best_weights_dir=...)` ends with the same weights as
    Keras's in-memory one and leaves one file per best epoch at most."""
    results = []
    for directory in (None, tmp_path, "temporary"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).random((32, 4)).astype("float32")
        early = tfft.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True,
                                             best_weights_dir=directory)
        model.fit(x, np.arange(32) % 3, validation_data=(x, np.arange(32) % 3), epochs=12, batch_size=8,
                  shuffle=False, verbose=0, callbacks=[ScriptedValLoss(), early])
        assert early.best_epoch == 4
        results.append(model.get_weights())
        if directory == tmp_path:
            assert [p.name for p in tmp_path.glob("*.npz")] == ["best_epoch_4.npz"]
        if directory == "temporary":
            assert early.best_weights_dir == "temporary" and early.best_weights_file is None  # folder removed
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_offline_pretrained_fails_fast_with_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(tfft.OfflineError) as error:
        tfft.build_model("resnet50", num_classes=2, weights="pretrained", input_shape=SHAPE)
    assert time.monotonic() - start < 15
    message = str(error.value)
    assert "weights=None" in message and ".h5" in message


def test_python_list_labels_work_in_fit_and_evaluate():
    model = tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=SHAPE)
    tfft.compile_model(model)
    x, y = images(6)
    model.fit(x, [int(v) for v in y], epochs=1, batch_size=3, verbose=0)
    assert "accuracy" in model.evaluate(x, list(y), verbose=0, return_dict=True)
