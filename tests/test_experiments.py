"""experiments/: configs, the train / evaluate / export / tune entry points, and the command line."""

import ast
import pathlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from experiments import config as config_lib
from experiments import inputs, modeling
from experiments import workdir as workdir_lib, evaluate, export, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG_DIR = pathlib.Path(REPO) / "experiments" / "configs"
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob("*.py") if not p.name.startswith("_"))
ARTEFACTS = ("config.json", "model.keras", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png",
             "per_class.csv")


TINY_BACKBONE = {}


@pytest.fixture(autouse=True, scope="module")
def tiny_backbone(tmp_path_factory):
    """A two-conv random backbone in a .keras file: the entry points' plumbing without a big network's cost
    (the registry's backbones run in the command-line test and the slow smoke tests)."""
    path = str(tmp_path_factory.mktemp("backbone") / "tiny_cnn.keras")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="block1_rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="block2_conv")(x)
    keras.Model(inputs, x, name="tiny_cnn").save(path)
    TINY_BACKBONE["path"] = path
    return path


def tiny_config(**overrides):
    """Digits (bundled with scikit-learn) at 32 px, 4 images per class, on a tiny random CNN."""
    config = config_lib.load_config(str(CONFIG_DIR / "digits_efficientnet_lite0.py") + ":smoke")
    config.backbone = TINY_BACKBONE["path"]
    config.weights = "none"
    config.data.limit = 4
    config.data.validation_split = 0.25
    config.data.test_split = 0.25
    config.verbose = "0"
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    config.lock()
    return config


def _png(path):
    with open(path, "rb") as f:
        return f.read(4) == b"\x89PNG"


class ConfigWritten(keras.callbacks.Callback):
    """Records whether config.json existed when training began."""

    def __init__(self, workdir):
        super().__init__()
        self.workdir, self.seen = workdir, []

    def on_train_begin(self, logs=None):
        self.seen.append(os.path.exists(os.path.join(self.workdir, "config.json")))


class Crash(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {epoch}")


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_locked_with_its_smoke_variant(name):
    path = str(CONFIG_DIR / name)
    with open(path) as f:
        doc = ast.get_docstring(ast.parse(f.read()))
    assert "python -m experiments." in doc and f"{name}:smoke" in doc  # the docstring is the command line
    full, smoke = config_lib.load_config(path), config_lib.load_config(path + ":smoke")
    assert full.backbone and smoke.head_epochs == 1 and smoke.finetune_epochs == 1
    assert (smoke.data.limit or smoke.data.mock_examples) and smoke.image_size <= 48
    assert config_lib.config_differences(config_lib.to_dict(full), config_lib.to_dict(full)) == []
    smoke.lock()
    with pytest.raises(AttributeError):
        smoke.batch_sise = 3
    with pytest.raises(config_lib.UsageError, match="variant"):
        config_lib.load_config(path + ":huge")


def test_missing_config_file_names_the_configs():
    with pytest.raises(config_lib.UsageError, match="flowers_resnet50.py"):
        config_lib.load_config("experiments/configs/nope.py")


def test_best_config_json_maps_onto_the_tuning_runs_config(tmp_path):
    """A best config is the recipe's vocabulary (plus the model's keys); the data come from the tuning
    run's config.json beside it, and keys the search left to the rule stay unset."""
    base = tiny_config(batch_size=8)
    (tmp_path / "config.json").write_text(json.dumps(config_lib.to_dict(base)))
    best = {"backbone": "efficientnet_lite0", "num_classes": 10, "task": "multiclass", "head_learning_rate": 0.003,
            "finetune_learning_rate": 0.0003, "head_optimizer": "sgd", "finetune_optimizer": "adamw", "dropout": 0.3,
            "head_units": [64], "unfreeze": "0.5", "batch_size": 16, "head_epochs": 2, "finetune_epochs": 3,
            "monitor": "val_accuracy", "augment": ["flip", "zoom"], "seed": 123, "objective": "val_accuracy",
            "score": 0.9, "tuning": {"trial_id": "03"}}
    (tmp_path / "best_config.json").write_text(json.dumps(best))
    config = config_lib.load_config(str(tmp_path / "best_config.json"))
    assert config.data.source == "digits" and config.data.limit == 4
    assert (config.head_optimizer, config.finetune_optimizer, config.monitor, config.seed) == ("sgd", "adamw",
                                                                                               "val_accuracy", 123)
    assert config.augment == "flip,zoom" and config.batch_size == 16 and config.warmup_fraction is None
    recipe = modeling.recipe_from_config(config)
    assert recipe.augment == ["flip", "zoom"] and recipe.unfreeze == 0.5 and recipe.label_smoothing is None


def test_best_config_json_of_an_older_tfft_still_loads(tmp_path):
    base = tiny_config(batch_size=8)
    (tmp_path / "config.json").write_text(json.dumps(config_lib.to_dict(base)))
    best = {"backbone": "efficientnet_lite0", "num_classes": 10, "task": "multiclass", "learning_rate": 0.003,
            "finetune_learning_rate": 0.0003, "optimizer": "sgd", "weight_decay": 0.0, "dropout": 0.3,
            "head_units": [64], "unfreeze": "0.5", "warmup_fraction": 0.1, "label_smoothing": 0.1,
            "batch_size": None, "head_epochs": 2, "finetune_epochs": 3, "objective": "val_accuracy",
            "score": 0.9, "tuning": {"trial_id": "03"}}
    (tmp_path / "best_config.json").write_text(json.dumps(best))
    config = config_lib.load_config(str(tmp_path / "best_config.json"))
    assert config.data.source == "digits" and config.data.limit == 4  # the data come from config.json
    assert (config.head_learning_rate, config.finetune_learning_rate, config.finetune_optimizer) == (0.003, 0.0003,
                                                                                                     "sgd")
    assert config.head_optimizer == "sgd"
    assert config.head_units == (64,) and config.unfreeze == "0.5" and config.batch_size == 8
    assert (config.head_epochs, config.finetune_epochs, config.dropout) == (2, 3, 0.3)


# --------------------------------------------------------------------------------------------
# train.run: artefacts, resume, evaluate, export
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run shared by the tests that read its workdir."""
    workdir = str(tmp_path_factory.mktemp("run"))
    probe = ConfigWritten(workdir)
    metrics = train.run(tiny_config(), workdir, callbacks=[probe])
    return workdir, metrics, probe


def test_run_writes_every_artefact(trained):
    workdir, metrics, probe = trained
    assert probe.seen and all(probe.seen)  # config.json existed before training started
    for name in ARTEFACTS:
        assert os.path.isfile(os.path.join(workdir, name)), name
    assert os.listdir(os.path.join(workdir, "logs"))  # TensorBoard
    assert _png(os.path.join(workdir, "curves.png")) and _png(os.path.join(workdir, "confusion_matrix.png"))
    on_disk = json.load(open(os.path.join(workdir, "metrics.json")))
    assert on_disk["test"]["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    for split, n in (("validation", 10), ("test", 10)):
        assert on_disk[split]["examples"] == n
        assert len(on_disk[split]["per_class"]) == 10
        assert {"precision", "recall", "f1", "support"} <= set(on_disk[split]["per_class"][0])
        assert np.sum(on_disk[split]["confusion_matrix"]) == n
    assert [p["name"] for p in on_disk["phases"]] == ["head", "finetune"]
    rows = open(os.path.join(workdir, "history.csv")).read().splitlines()
    assert rows[0].startswith("epoch,phase,") and [r.split(",")[:2] for r in rows[1:]] == [["0", "head"],
                                                                                            ["1", "finetune"]]
    saved = json.load(open(os.path.join(workdir, "config.json")))
    assert saved["data"]["source"] == "digits" and saved["backbone"].endswith("tiny_cnn.keras")


def test_rerun_resumes_the_finished_run(trained):
    workdir, metrics, _ = trained
    again = train.run(tiny_config(), workdir)
    assert all(p["resumed"] for p in again["phases"])
    assert again["test"]["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-5)


def test_a_different_experiment_in_the_workdir_is_refused(trained):
    workdir, _, _ = trained
    with pytest.raises(config_lib.UsageError, match="different experiment.*batch_size"):
        train.run(tiny_config(batch_size=4), workdir)
    # run-control keys may change
    old, new = {"overwrite": False, "verbose": "0"}, {"overwrite": True, "verbose": "1"}
    assert config_lib.config_differences(old, new) == []


def test_evaluate_rescores_the_saved_model(trained):
    workdir, metrics, _ = trained
    result = evaluate.run(workdir, split="test")
    assert result["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert result["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-4)
    assert os.path.isfile(os.path.join(workdir, "evaluation", "test", "metrics.json"))
    assert _png(os.path.join(workdir, "evaluation", "test", "confusion_matrix.png"))


def test_evaluate_on_new_data(trained, tmp_path):
    workdir, _, _ = trained
    x, y = inputs.digits_arrays()
    np.savez(tmp_path / "new.npz", x=x[:30], y=y[:30])
    result = evaluate.run(workdir, data=str(tmp_path / "new.npz"))
    assert result["examples"] == 30 and 0.0 <= result["accuracy"] <= 1.0
    with pytest.raises(config_lib.UsageError, match="does not exist"):
        evaluate.run(workdir, data=str(tmp_path / "missing"))


def test_export_round_trips(trained):
    workdir, _, _ = trained
    report = export.run(workdir, "all", examples=4)
    assert set(report) == {"saved_model", "tflite", "keras"}
    for fmt, result in report.items():
        assert os.path.exists(result["path"]), fmt
        for check in result["checks"].values():
            assert check["ok"] and check["examples"] == 4, (fmt, check)
    assert set(report["saved_model"]["checks"]) == {"image_bytes", "pixels"}


def test_overwrite_starts_over(trained):
    workdir, _, _ = trained
    metrics = train.run(tiny_config(overwrite=True, head_epochs=2, finetune_epochs=0), workdir)
    assert [(p["name"], p["resumed"]) for p in metrics["phases"]] == [("head", False)]
    assert not os.path.exists(os.path.join(workdir, "export"))  # the old run's files are gone
    assert json.load(open(os.path.join(workdir, "config.json")))["head_epochs"] == 2


def test_interrupted_run_resumes_at_the_next_epoch(tmp_path):
    config = tiny_config(head_epochs=1, finetune_epochs=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train.run(config, str(tmp_path), callbacks=[Crash(epoch=1)])  # dies after the first fine-tune epoch
    assert not (tmp_path / "metrics.json").exists()
    metrics = train.run(config, str(tmp_path))
    head, finetune = metrics["phases"]
    assert head["resumed"] and finetune["resumed"]  # head restored; fine-tune continued from its backup
    rows = (tmp_path / "history.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1", "2"]  # each epoch once


def test_cross_validation_reports_mean_and_std(tmp_path):
    metrics = train.run(tiny_config(cv_folds=2, finetune_epochs=0), str(tmp_path))
    assert metrics["cv_folds"] == 2 and len(metrics["folds"]) == 2
    accuracies = [f["validation"]["accuracy"] for f in metrics["folds"]]
    assert metrics["mean"]["validation"]["accuracy"] == pytest.approx(np.mean(accuracies))
    assert metrics["std"]["validation"]["accuracy"] == pytest.approx(np.std(accuracies))
    assert sum(f["validation"]["examples"] for f in metrics["folds"]) == 30  # train + validation, folded
    assert (tmp_path / "fold_0" / "model.keras").exists() and (tmp_path / "metrics.json").exists()


def test_mixed_precision_and_strategy_come_from_the_config(tmp_path):
    config = tiny_config(mixed_precision="mixed_bfloat16", strategy="mirrored", finetune_epochs=0)
    train.run(config, str(tmp_path))
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.get_layer("head_logits").dtype_policy.name == "mixed_bfloat16"
    assert model.output.dtype == "float32"


# --------------------------------------------------------------------------------------------
# Text: a tiny random BERT with a vocabulary from the data
# --------------------------------------------------------------------------------------------


def test_text_run_with_tiny_bert_and_string_export(tmp_path):
    words = {0: ["dull", "boring", "awful", "bad"], 1: ["great", "lovely", "fun", "good"]}
    rng = np.random.default_rng(0)
    lines = ["sentence\tlabel"]
    for i in range(40):
        label = i % 2
        lines.append(f"a {' '.join(rng.choice(words[label], 3))} movie\t{label}")
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n")
    config = config_lib.load_config(str(CONFIG_DIR / "sst2_bert_base.py") + ":smoke")
    config.data.path = str(tmp_path / "train.tsv")
    config.data.validation_path = ""
    config.data.limit = 0
    config.sequence_length = 16
    config.verbose = "0"
    config.lock()
    workdir = str(tmp_path / "run")
    metrics = train.run(config, workdir)
    assert metrics["task"] == "binary" and [r["class"] for r in metrics["test"]["per_class"]] == ["0", "1"]
    for name in ARTEFACTS:
        assert os.path.isfile(os.path.join(workdir, name)), name
    model = keras.models.load_model(os.path.join(workdir, "model.keras"))
    assert model.predict(["a great fun movie"], verbose=0).shape == (1, 1)
    report = export.run(workdir, "saved_model", examples=4)
    assert report["saved_model"]["checks"]["strings"]["ok"]
    with pytest.raises(config_lib.UsageError, match="image models"):
        export.run(workdir, "tflite")


# --------------------------------------------------------------------------------------------
# Errors a user can cause
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, match", [
    ({"backbone": "resnet51"}, "Did you mean 'resnet50'"),
    ({"data.source": "folder", "data.path": "/no/such/folder"}, "does not exist"),
    ({"mixed_precision": "float8"}, "mixed_precision"),
    ({"data.source": "tfds", "data.name": ""}, "dataset's name"),
])
def test_bad_configs_fail_before_the_workdir_is_touched(tmp_path, overrides, match):
    with pytest.raises(config_lib.UsageError, match=match):
        train.run(tiny_config(**overrides), str(tmp_path / "w"))
    if "mixed_precision" not in overrides:
        assert not (tmp_path / "w").exists()


def test_a_non_tfft_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(config_lib.UsageError, match="not a tfft run"):
        workdir_lib.prepare_workdir(tiny_config(), str(tmp_path))


# --------------------------------------------------------------------------------------------
# The real command line
# --------------------------------------------------------------------------------------------


def _cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, match", [
    (["--workdir=/tmp/x"], "--config must have a value"),
    (["--config=experiments/configs/flowers_resnet50.py:smoke", "--workdir=W", "--config.batch_sise=3"],
     "--config.batch_sise: the config has no key 'batch_sise'. Did you mean 'batch_size'"),
    (["--config=experiments/configs/flowers_resnet50.py:smoke", "--workdir=W", "--config.backbone=resnet51"],
     "Unknown backbone 'resnet51'"),
])
def test_command_line_errors_are_one_paragraph(tmp_path, args, match):
    args = [a.replace("W", str(tmp_path / "w")) if a == "--workdir=W" else a for a in args]
    result = _cli("experiments.train", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert match in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_command_line_smoke_run(tmp_path, shared_data):
    workdir = tmp_path / "flowers"
    result = _cli("experiments.train", "--config=experiments/configs/flowers_resnet50.py:smoke",
                  f"--workdir={workdir}", f"--config.data.path={shared_data / 'flowers'}", "--config.data.limit=4")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ARTEFACTS:
        assert (workdir / name).is_file(), name
    assert f"workdir: {workdir}" in result.stdout
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["class_names"] == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    # What a user needs and nothing else: no TensorFlow C++ start-up lines, no Keras end-of-data warnings.
    for noise in ("I0000", "E0000", "oneDNN", "cuda drivers", "absl::InitializeLog", "ran out of data"):
        assert noise not in result.stderr + result.stdout, noise
    assert "[tfft] recipe for image data" in result.stdout and "label smoothing 0.1" in result.stdout


def test_validation_loss_means_what_it_meant_in_training(tmp_path):
    """metrics.json's validation loss is the best checkpoint's val_loss, label smoothing included."""
    metrics = train.run(tiny_config(label_smoothing=0.2, monitor="val_loss"), str(tmp_path / "run"))
    rows = [r for r in json.loads((tmp_path / "run" / "run_state.json").read_text())["phases"].values()]
    best = min(logs["val_loss"] for phase in rows for logs in phase["epochs"].values())
    assert metrics["validation"]["loss"] == pytest.approx(best, abs=1e-4)
    assert metrics["recipe"]["label_smoothing"] == 0.2


def test_an_unfreeze_spec_that_cannot_work_is_refused_before_the_head_phase(tmp_path):
    with pytest.raises(ValueError, match=r"unfreeze='top3' does not fit this backbone: Freeze spec 'top3' is not "
                                         r"understood\. Did you mean 'top'"):
        train.run(tiny_config(unfreeze="top3"), str(tmp_path / "run"))
    assert not (tmp_path / "run" / "run_state.json").exists() and not (tmp_path / "run" / "model.keras").exists()


# --------------------------------------------------------------------------------------------
# Full smoke variants of the configs (the acceptance runs do these through the command line)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["flowers_vgg16.py", "flowers_efficientnet_lite0.py", "tfds_image.py",
                                  "sst2_minilm.py", "sst2_bert_base.py", "digits_efficientnet_lite0.py"])
def test_smoke_variant_runs(tmp_path, name, shared_data):
    config = config_lib.load_config(str(CONFIG_DIR / name) + ":smoke")
    metrics = train.run(config, str(tmp_path))
    for artefact in ARTEFACTS:
        assert (tmp_path / artefact).is_file(), artefact
    assert metrics["test"]["examples"] > 0


# --------------------------------------------------------------------------------------------
# Tuning: trials table, best_config.json, plot; the winner retrains from best_config.json
# --------------------------------------------------------------------------------------------


def test_tune_then_retrain_the_winner(tmp_path):
    from experiments import tune

    space = {"unfreeze": "none", "learning_rate": [0.001, 0.01], "optimizer": ["adam"], "batch_size": [8],
             "head_units": [0], "dropout": [0.0], "weight_decay": [0.0], "warmup_fraction": [0.0],
             "label_smoothing": [0.0]}
    config = tiny_config(**{"tune.algorithm": "random", "tune.max_trials": 2, "tune.search_space": json.dumps(space),
                            "finetune_epochs": 0})
    result = tune.run(config, str(tmp_path / "tune"))
    for name in ("trials.csv", "best_config.json", "trials.png", "config.json"):
        assert (tmp_path / "tune" / name).is_file(), name
    rows = (tmp_path / "tune" / "trials.csv").read_text().splitlines()
    assert len(rows) == 3  # header + 2 trials
    best = result["best"]
    assert best["objective"] == "val_accuracy" and best["head_learning_rate"] in (0.001, 0.01)
    retrain = config_lib.load_config(result["best_config"])
    assert retrain.head_learning_rate == best["head_learning_rate"] and retrain.data.source == "digits"
    assert retrain.seed == best["seed"] and retrain.monitor == "val_accuracy"
    retrain.lock()
    metrics = train.run(retrain, str(tmp_path / "best"))
    assert (tmp_path / "best" / "model.keras").is_file() and metrics["test"]["examples"] == 10
    # The winner retrains to the score it had in the search: a trial is the run experiments.train makes.
    assert metrics["validation"]["accuracy"] == pytest.approx(best["score"], abs=1e-4)
