"""A catalogue of bad inputs: each gives an error that names the problem and the fix, and
leaves the results of an earlier run intact.

Most cases call `tfft.fine_tune` on a copy of a finished earlier run's workdir (its
`model.keras`, `run_state.json`, phase weights and `history.csv`) and then check
that every one of those files is byte for byte what it was, and that `model.keras` still
loads. The rest cover model building, weight files, `.keras` files, configs, tuner
directories and safe loading.
"""

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import weights as weights_lib

SHAPE = (32, 32, 3)
REPO = Path(__file__).resolve().parents[1]


def tiny_backbone(width=8):
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(width, 3, strides=2, activation="relu", name="conv_1")(x)
    x = keras.layers.Conv2D(width, 3, strides=2, activation="relu", name="conv_2")(x)
    return keras.Model(inputs, x, name="tiny")


def tiny_model(num_classes=3, task="multiclass", width=8, dropout=0.0):
    keras.utils.set_random_seed(1)
    return tfft.build_model(tiny_backbone(width), num_classes=num_classes, task=task, dropout=dropout)


def arrays(n=16, classes=3, seed=0, size=32, channels=3):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype("int64")
    x = (rng.random((n, size, size, channels)) * 120 + y[:, None, None, None] * 60).astype("float32")
    return x, y


def dataset(x, y, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


KWARGS = dict(head_epochs=1, finetune_epochs=1, verbose=0, patience=100)


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """A finished fine_tune run: the results a failing second run must leave alone."""
    workdir = tmp_path_factory.mktemp("earlier")
    x, y = arrays()
    tfft.fine_tune(tiny_model(), (x, y), (x, y), workdir=str(workdir), **KWARGS)
    assert (workdir / "model.keras").exists() and (workdir / "phases" / "finetune.weights.h5").exists()
    keras.backend.clear_session()
    return workdir


def digests(workdir):
    return {str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in Path(workdir).rglob("*") if p.is_file() and "logs" not in p.parts}


@pytest.fixture
def workdir(earlier_run, tmp_path):
    """A copy of the earlier run; on teardown, checks that nothing in it changed."""
    path = tmp_path / "run"
    shutil.copytree(earlier_run, path)
    before = digests(path)
    yield str(path)
    after = digests(path)
    assert {k: after.get(k) for k in before} == before, "an earlier result was changed"
    assert not [k for k in after if k not in before and ".tmp" in k], "a temporary file was left behind"
    assert keras.models.load_model(path / "model.keras").output.shape[-1] == 3


def fine_tune(model, train, val=None, workdir=None, **kwargs):
    return tfft.fine_tune(model, train, val, workdir=workdir, **dict(KWARGS, **kwargs))


# --------------------------------------------------------------------------------------------
# Data that does not fit the model: caught before any step or write
# --------------------------------------------------------------------------------------------


def test_wrong_image_size_arrays(workdir):
    with pytest.raises(ValueError, match=r"images are 40x40, but the model takes 32x32: resize"):
        fine_tune(tiny_model(), arrays(size=40), workdir=workdir)


def test_wrong_image_size_dataset(workdir):
    with pytest.raises(ValueError, match=r"40x40.*image_size=.*input_shape=\(40, 40, 3\)"):
        fine_tune(tiny_model(), dataset(*arrays(size=40)), workdir=workdir)


def test_grayscale_images(workdir):
    # Without the check a 1-channel batch broadcasts over the model's RGB input: no error at all.
    with pytest.raises(ValueError, match=r"1 channel \(grayscale\).*grayscale_to_rgb"):
        fine_tune(tiny_model(), arrays(channels=1), workdir=workdir)


def test_rgba_images(workdir):
    with pytest.raises(ValueError, match=r"4 channels \(RGBA\).*drop the alpha channel"):
        fine_tune(tiny_model(), dataset(*arrays(channels=4)), workdir=workdir)


def test_grayscale_and_rgba_files_load_as_rgb(tmp_path):
    """Documented handling, not an error: tfft.data converts every image file to RGB."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, mode in (("gray", "L"), ("rgba", "RGBA")):
        (tmp_path / cls).mkdir()
        for i in range(3):
            channels = {"L": (), "RGBA": (4,)}[mode]
            pixels = rng.integers(0, 255, (40, 40) + channels, dtype=np.uint8)
            Image.fromarray(pixels, mode).save(tmp_path / cls / f"{i}.png")
    bundle = tfft.data.from_image_directory(tmp_path, image_size=32, batch_size=2, cache=False)
    x, _ = next(iter(bundle.train))
    assert x.shape[1:] == SHAPE
    model = tiny_model(num_classes=2)
    tfft.fine_tune(model, bundle, head_epochs=1, finetune_epochs=0, verbose=0)


def test_labels_beyond_num_classes(workdir):
    x, y = arrays(classes=5)
    with pytest.raises(ValueError, match=r"labels go from 0 to 4, but the model has num_classes=3.*num_classes=5"):
        fine_tune(tiny_model(), (x, y), workdir=workdir)


def test_labels_beyond_num_classes_in_a_dataset(workdir):
    x, y = arrays(classes=3)
    x5, y5 = arrays(classes=5)
    with pytest.raises(ValueError, match=r"validation \(first batch\) labels go from 0 to 4.*num_classes=3"):
        fine_tune(tiny_model(), dataset(x, y), dataset(x5, y5), workdir=workdir)


def test_negative_labels(workdir):
    x, y = arrays()
    with pytest.raises(ValueError, match=r"labels go from -1 to 1"):
        fine_tune(tiny_model(), (x, y - 1), workdir=workdir)


def test_one_hot_labels_for_a_multiclass_model(workdir):
    x, y = arrays()
    with pytest.raises(ValueError, match=r"look one-hot.*np.argmax"):
        fine_tune(tiny_model(), (x, np.eye(3)[y]), workdir=workdir)


def test_binary_model_with_three_classes():
    x, y = arrays(classes=3)
    with pytest.raises(ValueError, match=r"binary model must be 0 or 1.*task='multiclass'"):
        fine_tune(tiny_model(num_classes=None, task="binary"), (x, y))


def test_multilabel_labels_of_the_wrong_shape():
    x, y = arrays()
    with pytest.raises(ValueError, match=r"multilabel model with num_classes=3 takes multi-hot labels"):
        fine_tune(tiny_model(task="multilabel"), (x, y))


def test_data_bundle_with_other_num_classes(workdir):
    x, y = arrays(n=20, classes=4)
    bundle = tfft.data.from_arrays(x, y, validation_split=0.2, batch_size=8, seed=0)
    with pytest.raises(ValueError, match=r"data has 4 classes but the model was built with num_classes=3"):
        fine_tune(tiny_model(), bundle, workdir=workdir)


def test_datasets_of_a_two_class_bundle_for_a_three_class_model(tmp_path):
    """The datasets remember their bundle's classes: refused before training, nothing written."""
    x, y = arrays(n=20, classes=2)
    bundle = tfft.data.from_arrays(x, y, validation_split=0.2, batch_size=8, seed=0)
    workdir = tmp_path / "run"
    with pytest.raises(ValueError) as error:
        fine_tune(tiny_model(num_classes=3), bundle.train, bundle.validation, workdir=str(workdir))
    assert str(error.value) == ("The training dataset (from tfft.data) has 2 classes but the model was built with "
                                "num_classes=3: build it with num_classes=bundle.num_classes (2).")
    assert not workdir.exists()
    with pytest.raises(ValueError, match=r"^The training dataset \(from tfft.data\) has 2 classes"):
        fine_tune(tiny_model(num_classes=3), bundle.train.prefetch(1), workdir=str(workdir))
    assert not workdir.exists()


def test_datasets_of_a_three_class_bundle_for_a_binary_model(tmp_path):
    x, y = arrays(n=24, classes=3)
    bundle = tfft.data.from_arrays(x, y, validation_split=0.25, batch_size=8, seed=0)
    with pytest.raises(ValueError) as error:
        fine_tune(tiny_model(num_classes=None, task="binary"), bundle.train, bundle.validation,
                  workdir=str(tmp_path / "run"))
    assert str(error.value) == ("The training dataset (from tfft.data) has 3 classes but a binary model takes 2: "
                                "build it with task='multiclass', num_classes=3.")
    assert not (tmp_path / "run").exists()


def test_nan_in_the_inputs(workdir):
    x, y = arrays()
    x[3, 1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"training inputs hold 1 NaN or infinite value"):
        fine_tune(tiny_model(), (x, y), workdir=workdir)


def test_infinite_values_in_the_validation_dataset(workdir):
    x, y = arrays()
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"validation inputs \(first batch\) hold 1 NaN or infinite"):
        fine_tune(tiny_model(), dataset(x, y), dataset(bad, y), workdir=workdir)


def test_strings_into_an_image_model(workdir):
    with pytest.raises(ValueError, match=r"inputs are strings, but this is an image model"):
        fine_tune(tiny_model(), (np.array(["a.jpg"] * 8), np.zeros(8, "int64")), workdir=workdir)


def test_empty_dataset(workdir):
    x, y = arrays()
    with pytest.raises(ValueError, match=r"training dataset is empty"):
        fine_tune(tiny_model(), dataset(x[:0], y[:0]), workdir=workdir)


def test_dataset_that_repeats_forever(workdir):
    x, y = arrays()
    with pytest.raises(ValueError, match=r"repeats forever; pass a finite dataset"):
        fine_tune(tiny_model(), dataset(x, y).repeat(), dataset(x, y), workdir=workdir)


def test_workdir_of_another_model(workdir):
    x, y = arrays(classes=4)
    with pytest.raises(ValueError, match=r"holds a run of another model.*new workdir"):
        fine_tune(tiny_model(num_classes=4), (x, y), (x, y), workdir=workdir)


def test_nothing_to_train(workdir):
    with pytest.raises(ValueError, match=r"Nothing to train"):
        fine_tune(tiny_model(), arrays(), workdir=workdir, head_epochs=0, finetune_epochs=0)


# --------------------------------------------------------------------------------------------
# Failures during training: the last good state is kept
# --------------------------------------------------------------------------------------------


class PoisonWeights(keras.callbacks.Callback):
    """Makes the loss NaN from a chosen epoch on (a diverging run), by writing NaN into the head."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self._epoch == self.epoch and batch == 1:
            kernel = self.model.get_layer("head_logits").kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def test_loss_turning_nan_keeps_the_last_good_checkpoint(tmp_path):
    x, y = arrays(n=24)
    workdir = str(tmp_path)
    kwargs = dict(head_epochs=3, finetune_epochs=1, verbose=0, patience=100, batch_size=8)
    with pytest.raises(FloatingPointError, match=r"NaN or infinite in phase 'head', epoch 2.*last good state.*"
                                                 r"Lower the learning rate"):
        tfft.fine_tune(tiny_model(), (x, y), (x, y), workdir=workdir, callbacks=[PoisonWeights(1)], **kwargs)
    state = json.loads((tmp_path / "run_state.json").read_text())
    head = state["phases"]["head"]
    assert head["status"] == "running" and sorted(head["epochs"]) == ["0"]  # the NaN epoch is not logged
    best = keras.models.load_model(tmp_path / "model.keras")
    assert all(np.isfinite(w).all() for w in best.get_weights())
    assert head["backup"]["epoch"] == 1  # the backup of epoch 0, not the NaN one
    result = tfft.fine_tune(tiny_model(), (x, y), (x, y), workdir=workdir, **kwargs)  # resumes at epoch 1
    assert len(result.history["loss"]) == 4 and np.isfinite(result.metrics["val_loss"])


def disk_full(original, workdir, snapshots, fail_at=2):
    """Wraps a save method: its `fail_at`-th call writes a few bytes, then fails as a full disk does
    (after recording what the workdir held just before)."""
    calls = [0]

    def save(self, filepath, *args, **kwargs):
        calls[0] += 1
        if calls[0] < fail_at:
            return original(self, filepath, *args, **kwargs)
        snapshots.append(digests(workdir))
        with open(filepath, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filepath))

    return save


@pytest.mark.parametrize("method", ["save", "save_weights"])  # model.keras; backups and phase weights
def test_out_of_disk_while_checkpointing(tmp_path, monkeypatch, method):
    x, y = arrays()
    workdir, snapshots = str(tmp_path), []
    kwargs = dict(head_epochs=2, finetune_epochs=1, verbose=0, patience=100, batch_size=8)
    monkeypatch.setattr(keras.Model, method, disk_full(getattr(keras.Model, method), workdir, snapshots))
    with pytest.raises(OSError, match="No space left on device") as caught:
        tfft.fine_tune(tiny_model(), (x, y), (x, y), workdir=workdir, **kwargs)
    assert caught.value.errno == errno.ENOSPC
    monkeypatch.undo()
    (before,) = snapshots
    after = digests(workdir)
    assert before and {k: after.get(k) for k in before if not k.endswith("run_state.json")} == {
        k: v for k, v in before.items() if not k.endswith("run_state.json")}
    assert not [p for p in Path(workdir).rglob("*") if ".tmp" in p.name], "a half-written temporary file was left"
    if (tmp_path / "model.keras").exists():
        assert keras.models.load_model(tmp_path / "model.keras").output.shape[-1] == 3
    again = tfft.fine_tune(tiny_model(), (x, y), (x, y), workdir=workdir, **kwargs)  # the disk has room again
    assert len(again.history["loss"]) == 3 and np.isfinite(again.metrics["val_loss"])


def test_workdir_resumes_only_its_own_plan(workdir):
    with pytest.raises(ValueError, match=r"planned as head 1 epochs.*finetune 1 epochs.*finetune 3 epochs.*"
                                         r"new workdir"):
        fine_tune(tiny_model(), arrays(), arrays(), workdir=workdir, finetune_epochs=3)


# --------------------------------------------------------------------------------------------
# Models, weights and .keras files
# --------------------------------------------------------------------------------------------


def test_pretrained_weights_with_one_channel():
    with pytest.raises(ValueError, match=r"1 channels; pretrained vgg16 weights need 3 \(RGB\).*weights=None"):
        tfft.build_model("vgg16", num_classes=3, input_shape=(32, 32, 1))


def test_image_size_too_small():
    with pytest.raises(ValueError, match=r"too small for vgg16: height and width must be >= 32"):
        tfft.build_model("vgg16", num_classes=3, weights=None, input_shape=(16, 16, 3))


def test_unknown_backbone_name():
    with pytest.raises(ValueError, match=r"vgg16"):
        tfft.build_model("vgg61", num_classes=3, weights=None)


def test_truncated_keras_file_as_backbone(tmp_path, earlier_run):
    path = tmp_path / "cut.keras"
    data = (earlier_run / "model.keras").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"not a complete \.keras file.*model.save"):
        tfft.build_model(str(path), num_classes=3)


def test_missing_keras_file_as_backbone(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        tfft.build_model(str(tmp_path / "nothing.keras"), num_classes=3)


def test_keras_file_of_another_model_as_backbone_is_its_backbone(earlier_run):
    """Documented handling: a tfft `.keras` file lends its backbone (and weights) to a new head."""
    old = keras.models.load_model(earlier_run / "model.keras")
    model = tfft.build_model(str(earlier_run / "model.keras"), num_classes=5)
    assert model.output.shape[-1] == 5
    for a, b in zip(model.get_layer("backbone").get_weights(), old.get_layer("backbone").get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_of_the_wrong_shape(tmp_path):
    wide = tiny_model(width=16)
    path = str(tmp_path / "wide.weights.h5")
    wide.save_weights(path)
    model = tiny_model(width=8)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=r"(?s)does not fit model.*conv_1.*expected shape \(3, 3, 3, 8\), found "
                                         r"\(3, 3, 3, 16\).*same architecture"):
        weights_lib.load_local_weights(model, path)
    for a, b in zip(before, model.get_weights()):  # nothing was assigned
        np.testing.assert_array_equal(a, b)


def test_weights_file_of_another_architecture_for_build_model(tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    tiny_backbone().save_weights(path)
    with pytest.raises(ValueError, match=r"block1_conv1.*not in the file"):
        tfft.build_model("vgg16", num_classes=3, weights=path, input_shape=SHAPE)


def test_not_a_weights_file(tmp_path):
    path = tmp_path / "notes.weights.h5"
    path.write_text("not hdf5")
    with pytest.raises(OSError):
        weights_lib.load_local_weights(tiny_model(), path)


def test_unknown_freeze_layer():
    with pytest.raises(ValueError, match=r"conv_9"):
        tfft.freeze(tiny_model(), "until:conv_9")


def test_unknown_optimizer():
    with pytest.raises(ValueError, match=r"adamw"):
        tfft.compile_model(tiny_model(), optimizer="adamx")


# --------------------------------------------------------------------------------------------
# Configs and tuner directories
# --------------------------------------------------------------------------------------------


@pytest.fixture
def config_lib():
    return pytest.importorskip("experiments.config", reason="experiments/ is not in this checkout")


def test_config_override_of_the_wrong_type(tmp_path, config_lib):
    config = REPO / "experiments" / "configs" / "flowers_vgg16.py"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--config={config}", f"--workdir={tmp_path / 'w'}",
         "--config.head_epochs=three"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode != 0
    assert "head_epochs" in proc.stderr and "three" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "w" / "model.keras").exists()


def test_json_config_value_of_the_wrong_type(tmp_path, config_lib):
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps({"batch_size": "large", "dropout": 0.1}))
    with pytest.raises(config_lib.UsageError, match=r"batch_size.*large"):
        config_lib.config_from_json(str(path))


def test_truncated_best_config(tmp_path, config_lib):
    path = tmp_path / "best_config.json"
    path.write_text('{"learning_rate": 0.001, "batch_si')
    with pytest.raises(config_lib.UsageError, match=r"not valid JSON"):
        config_lib.config_from_json(str(path))


def test_json_configs_are_data_not_code(tmp_path, config_lib):
    marker = tmp_path / "pwned"
    path = tmp_path / "best_config.json"
    path.write_text(json.dumps({"backbone": f"__import__('pathlib').Path({str(marker)!r}).touch() or 'vgg16'"}))
    config = config_lib.config_from_json(str(path))
    assert config.backbone.startswith("__import__") and not marker.exists()


def test_tuner_directory_of_another_search(tmp_path):
    from tfft import tuning

    x, y = arrays(n=16, classes=2)
    space = {"unfreeze": "none", "head_epochs": 1, "finetune_epochs": 0, "batch_size": 8, "learning_rate": 1e-3,
             "optimizer": "adam", "head_units": 0, "dropout": [0.0, 0.2], "weight_decay": 0.0,
             "warmup_fraction": 0.0, "label_smoothing": 0.0}
    hypermodel = tuning.TransferHyperModel(tiny_backbone(), num_classes=2, weights=None, seed=0, search_space=space)
    tuner = tuning.make_tuner(hypermodel, algorithm="random", max_trials=1, seed=1, directory=str(tmp_path),
                              project_name="search")
    tuner.search(x, y, validation_data=(x, y), verbose=0)
    trials_before = digests(tmp_path)
    other = tuning.TransferHyperModel(tiny_backbone(), num_classes=3, weights=None, seed=0,
                                      search_space=dict(space, dropout=[0.3, 0.5]))
    with pytest.raises(ValueError, match=r"holds another search \(num_classes: 2 there, 3 now; "
                                         r"search_space.dropout.*another project_name.*overwrite=True"):
        tuning.make_tuner(other, algorithm="random", max_trials=2, directory=str(tmp_path), project_name="search")
    assert digests(tmp_path) == trials_before
    # The same search resumes (its identity matches): no error, nothing rerun.
    again = tuning.make_tuner(hypermodel, algorithm="random", max_trials=1, seed=1, directory=str(tmp_path),
                              project_name="search")
    assert len(again.oracle.trials) == 1


# --------------------------------------------------------------------------------------------
# Safe loading
# --------------------------------------------------------------------------------------------


def test_load_model_refuses_a_lambda_layer_by_default(tmp_path):
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(lambda t: t * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ValueError, match=r"safe_mode"):
        keras.models.load_model(path)
    with pytest.raises(ValueError, match=r"safe_mode"):
        tfft.build_model(str(path), num_classes=2)  # a downloaded .keras backbone runs no code either


def test_a_tfft_model_loads_in_safe_mode(earlier_run):
    model = keras.models.load_model(earlier_run / "model.keras", safe_mode=True)
    assert isinstance(model, tfft.TransferModel) and model.tfft_info["num_classes"] == 3


def test_tfft_never_turns_safe_mode_off():
    """No call in tfft/ or experiments/ passes safe_mode=False, nor evaluates file contents."""
    offenders = []
    for folder in ("tfft", "experiments"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text()
            for needle in ("safe_mode=False", "enable_unsafe_deserialization", "eval(", "pickle.load("):
                if needle in text:
                    offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert not offenders, offenders


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return pathlib.Path.touch, (pathlib.Path(self.marker),)


@pytest.mark.parametrize("where", ["header", "state"])
def test_a_crafted_pytorch_checkpoint_runs_no_code(tmp_path, where):
    """tfft reads legacy PyTorch files without torch; no part of the file may name code to run."""
    import pickle

    marker, path = tmp_path / "pwned", tmp_path / "evil.pth"
    with open(path, "wb") as f:
        if where == "header":
            pickle.dump(_RunsCode(str(marker)), f)
        else:
            for part in (weights_lib._TORCH_LEGACY_MAGIC, 1001, {"little_endian": True}, _RunsCode(str(marker))):
                pickle.dump(part, f)
    with pytest.raises(pickle.UnpicklingError, match=r"(?i)refus|unsupported"):
        weights_lib.read_torch_legacy_checkpoint(path)
    assert not marker.exists()
