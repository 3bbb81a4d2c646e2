"""Tests of tfft.tuning: TransferHyperModel, make_tuner, export_results, distributed tuning."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import keras
import keras_tuner as kt
import numpy as np
import pytest

from keras_tuner.src.engine import tuner_utils

import tfft
from tiny import tiny_cnn, two_class_images
from tfft import features as features_lib
from tfft import tuning

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "tuning_worker.py")
HEAD_ONLY = {"unfreeze": "none", "head_epochs": 1, "batch_size": [4, 8], "learning_rate": [1e-3, 1e-2],
             "optimizer": "adam", "head_units": [0, 8], "dropout": [0.0, 0.2], "weight_decay": 0.0,
             "warmup_fraction": 0.0, "label_smoothing": 0.0}


tiny_backbone = tiny_cnn
tiny_arrays = two_class_images


@pytest.fixture
def data():
    x, y = tiny_arrays()
    return tfft.data.from_arrays(x, y, validation_split=0.25, batch_size=8, seed=0)


def hypermodel(search_space=None, **kwargs):
    kwargs.setdefault("weights", None)
    kwargs.setdefault("seed", 0)
    return tuning.TransferHyperModel(tiny_backbone(), num_classes=2, search_space=search_space, **kwargs)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


class Record(keras.callbacks.Callback):
    """Appends what each epoch saw to a file (callbacks are deep-copied per trial)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps({"epoch": epoch, "keys": sorted(logs or {})}) + "\n")


# --------------------------------------------------------------------------------------------
# Search space
# --------------------------------------------------------------------------------------------


def test_default_space_covers_the_issue_keys():
    hm = hypermodel()
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    tuned = {p.name for p in hp.space if not isinstance(p, kt.engine.hyperparameters.Fixed)}
    assert tuned == {"learning_rate", "optimizer", "weight_decay", "dropout", "head_units", "unfreeze",
                     "warmup_fraction", "label_smoothing", "batch_size"}
    assert hp.space[0].sampling == "log"  # learning_rate
    config = hm.trial_config(hp)
    assert set(config) <= set(tuning.CONFIG_KEYS)
    # the searched keys in the recipe's vocabulary; what the search leaves open is left to fine_tune's rule
    assert {"head_learning_rate", "finetune_learning_rate", "head_optimizer", "finetune_optimizer", "unfreeze",
            "batch_size", "dropout", "head_units"} <= set(config)
    assert "head_epochs" not in config and "finetune_schedule" not in config
    assert config["finetune_learning_rate"] == pytest.approx(config["head_learning_rate"] * hm.finetune_lr_factor)


def test_search_space_fixes_narrows_and_drops():
    hm = hypermodel({"learning_rate": (1e-4, 1e-3), "optimizer": "sgd", "dropout": [0.1, 0.3], "batch_size": None,
                     "head_epochs": (1, 3), "label_smoothing": None})
    hp = kt.HyperParameters()
    config = hm.trial_config(hp)
    by_name = {p.name: p for p in hp.space}
    assert (by_name["learning_rate"].min_value, by_name["learning_rate"].max_value) == (1e-4, 1e-3)
    assert isinstance(by_name["optimizer"], kt.engine.hyperparameters.Fixed)
    assert by_name["dropout"].values == [0.1, 0.3]
    assert isinstance(by_name["head_epochs"], kt.engine.hyperparameters.Int)
    assert "batch_size" not in by_name and "batch_size" not in config  # dropped: the data's own
    assert "label_smoothing" not in by_name and "label_smoothing" not in config  # dropped: fine_tune's rule


def test_search_space_errors_name_the_fix():
    with pytest.raises(ValueError, match="Did you mean 'learning_rate'"):
        hypermodel({"learning_rat": 1e-3})
    with pytest.raises(ValueError, match=r"\(low, high\)"):
        hypermodel({"dropout": (0.1, 0.2, 0.3)})
    with pytest.raises(ValueError, match="regression"):
        tuning.TransferHyperModel(tiny_backbone(), num_classes=1, task="regression", weights=None,
                                  search_space={"label_smoothing": 0.1})
    with pytest.raises(ValueError, match="Unknown algorithm"):
        tuning.make_tuner(hypermodel(), algorithm="bayes", directory="unused")


def test_build_freezes_the_backbone_and_compiles():
    hm = hypermodel({"head_units": 16, "dropout": 0.3, "unfreeze": "backbone"})
    model = hm.build(kt.HyperParameters())
    assert not model.get_layer("backbone").trainable_weights
    assert model.get_layer("head_dense_0").units == 16
    assert model.compiled
    # a two-phase trial trains its backbone: a fresh copy per trial, with the original weights
    again = hm.build(kt.HyperParameters())
    assert again.get_layer("backbone") is not model.get_layer("backbone")
    np.testing.assert_array_equal(again.get_layer("backbone").get_weights()[0],
                                  model.get_layer("backbone").get_weights()[0])


def test_head_only_trials_share_one_frozen_backbone():
    hm = hypermodel({"unfreeze": "none", "head_units": [8, 16]})
    models = [hm.build(kt.HyperParameters()) for _ in range(3)]
    assert models[0].get_layer("backbone") is models[2].get_layer("backbone")
    assert models[0].get_layer("head_logits") is not models[1].get_layer("head_logits")
    # earlier trials' heads are not kept alive by the shared graph
    assert len(hm._shared["producer"]._outbound_nodes) == len(hm._shared["outbound"]) + 1
    x, _ = tiny_arrays(4)
    np.testing.assert_allclose(models[2].predict(x, verbose=0).sum(axis=1), 1.0, rtol=1e-5)
    hm.share_frozen_backbone = False
    assert hm.build(kt.HyperParameters()).get_layer("backbone") is not models[0].get_layer("backbone")


def test_impossible_unfreeze_raises_failed_trial():
    hm = hypermodel({"unfreeze": "top:2"})  # the tiny backbone has no block structure
    with pytest.raises(kt.errors.FailedTrialError, match="unfreeze"):
        hm.build(kt.HyperParameters())


# --------------------------------------------------------------------------------------------
# Searches
# --------------------------------------------------------------------------------------------


def test_random_search_caches_features_reaches_callbacks_and_exports(tmp_path, data):
    store = features_lib.FeatureStore()
    hm = hypermodel(HEAD_ONLY, feature_store=store)
    tuner = tuning.make_tuner(hm, algorithm="random", max_trials=3, seed=1, directory=str(tmp_path),
                              project_name="p")
    log = tmp_path / "epochs.jsonl"
    tuner.search(data.train, validation_data=data.validation, callbacks=[Record(str(log))], verbose=0)

    assert (store.misses, store.hits) == (2, 4)  # train and validation features computed once for 3 trials
    epochs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(epochs) == 3 and all("val_accuracy" in e["keys"] for e in epochs)

    project = tmp_path / "p"
    rows = read_csv(project / "trials.csv")
    assert [r["status"] for r in rows] == ["COMPLETED"] * 3
    assert {"score", "batch_size", "learning_rate", "val_accuracy"} <= set(rows[0])
    best = json.loads((project / "best_config.json").read_text())
    assert set(best) - {"objective", "score", "tuning", "seed"} <= set(tuning.CONFIG_KEYS)
    assert {"backbone", "dropout", "head_learning_rate", "batch_size", "monitor", "seed"} <= set(best)
    assert best["objective"] == "val_accuracy"
    assert best["score"] == max(float(r["score"]) for r in rows)
    assert best["finetune_epochs"] == 0 and best["unfreeze"] == "none"
    assert (project / "trials.png").stat().st_size > 1000

    # The trial's checkpoint holds the FULL model's weights although the head trained on features.
    model = tuner.get_best_models(1)[0]
    assert model.get_layer("backbone") is not None
    scores = model.evaluate(data.validation, return_dict=True, verbose=0)
    assert scores["accuracy"] == pytest.approx(best["score"], abs=1e-6)


def test_trial_checkpoint_of_a_cached_head_phase_holds_the_best_epoch(tmp_path):
    hm = hypermodel({"unfreeze": "backbone", "head_units": 0, "dropout": 0.0})
    model = hm.build(kt.HyperParameters())
    path = str(tmp_path / "checkpoint.weights.h5")
    saver = tuner_utils.SaveBestEpoch(kt.Objective("val_accuracy", "max"), path)
    writes = []
    saver_save = saver._save_model
    saver._save_model = lambda: (writes.append(1), saver_save())
    deferred = tuning.DeferredBestEpoch(saver, model)
    deferred.set_model(features_lib.split_at_features(model)[1])  # what fit does: the head model is being fit
    logits = model.get_layer("head_logits")
    deferred.on_train_begin()
    for epoch, score in enumerate([0.5, 0.9, 0.7]):
        logits.set_weights([np.full_like(w, epoch) for w in logits.get_weights()])
        deferred.on_epoch_end(epoch, {"val_accuracy": score})
    assert not writes and not os.path.exists(path)
    deferred.on_train_end()
    assert len(writes) == 1 and saver.best_value == 0.9
    np.testing.assert_array_equal(logits.get_weights()[0], 2.0)  # the model keeps its last weights
    fresh = hm.build(kt.HyperParameters())
    fresh.load_weights(path)  # the full model's weights, at the best epoch
    np.testing.assert_array_equal(fresh.get_layer("head_logits").get_weights()[0], 1.0)


def test_two_phase_trial_trains_the_backbone(tmp_path, data):
    space = dict(HEAD_ONLY, unfreeze="backbone", finetune_epochs=1, batch_size=8, warmup_fraction=0.5)
    store = features_lib.FeatureStore()
    hm = hypermodel(space, feature_store=store)
    hp = kt.HyperParameters()
    model = hm.build(hp)
    before = model.get_layer("backbone").get_weights()[0].copy()
    history = hm.fit(hp, model, data.train, validation_data=data.validation, verbose=0)
    assert len(history.history["val_accuracy"]) == 2  # one head epoch, one fine-tune epoch
    assert store.misses == 2  # the head phase ran on cached features
    assert not np.allclose(before, model.get_layer("backbone").get_weights()[0])
    assert model.get_layer("backbone").get_layer("bn1").trainable is False  # BatchNorm stays frozen


def test_augmented_data_is_not_cached(tmp_path):
    x, y = tiny_arrays()
    bundle = tfft.data.from_arrays(x, y, validation_split=0.25, batch_size=8, augment=["flip"])
    store = features_lib.FeatureStore()
    hm = hypermodel(dict(HEAD_ONLY, batch_size=8, head_units=0, dropout=0.0, learning_rate=1e-3),
                    feature_store=store)
    hp = kt.HyperParameters()
    hm.fit(hp, hm.build(hp), bundle, verbose=0)
    assert store.misses == 0
    with pytest.raises(ValueError, match="augmented"):
        hm.cache_features = True
        hm.fit(hp, hm.build(hp), bundle, verbose=0)


def test_hyperband_continues_trials_from_their_checkpoints(tmp_path, data):
    space = dict(HEAD_ONLY, head_epochs=3)
    tuner = tuning.make_tuner(hypermodel(space), algorithm="hyperband", max_epochs=3, factor=3, seed=1,
                              directory=str(tmp_path), project_name="hb")
    tuner.search(data.train, validation_data=data.validation, verbose=0)
    trials = tuning.list_trials(tuner)
    continued = [t for t in trials if t.hyperparameters.values.get("tuner/initial_epoch", 0) > 0]
    assert continued and all(t.status == "COMPLETED" for t in trials)
    rows = read_csv(tmp_path / "hb" / "trials.csv")
    assert "tuner/initial_epoch" in rows[0] and len(rows) == len(trials)


def test_bayesian_and_grid_tuners(tmp_path, data):
    space = dict(HEAD_ONLY, batch_size=8, head_units=0, learning_rate=1e-3)
    grid = tuning.make_tuner(hypermodel(space), algorithm="grid", max_trials=10, directory=str(tmp_path),
                             project_name="grid")
    grid.search(data.train, validation_data=data.validation, verbose=0)
    assert len(tuning.list_trials(grid)) == 2  # dropout 0.0 and 0.2: the grid is exhausted
    bayes = tuning.make_tuner(hypermodel(space), algorithm="bayesian", max_trials=2, seed=0,
                              directory=str(tmp_path), project_name="bayes")
    assert isinstance(bayes, kt.BayesianOptimization)
    bayes.search(data.train, validation_data=data.validation, verbose=0)
    assert [t.status for t in tuning.list_trials(bayes)] == ["COMPLETED"] * 2


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, data):
    space = dict(HEAD_ONLY, unfreeze=["none", "top:1"], batch_size=8, learning_rate=1e-3, head_units=0, dropout=0.0)
    tuner = tuning.make_tuner(hypermodel(space), algorithm="grid", max_trials=20, directory=str(tmp_path),
                              project_name="f")
    tuner.search(data.train, validation_data=data.validation, verbose=0)
    statuses = {t.hyperparameters.values["unfreeze"]: set() for t in tuning.list_trials(tuner)}
    for t in tuning.list_trials(tuner):
        statuses[t.hyperparameters.values["unfreeze"]].add(t.status)
    assert statuses == {"none": {"COMPLETED"}, "top:1": {"FAILED"}}


def test_resume_keeps_finished_trials(tmp_path, data):
    def search(max_trials):
        tuner = tuning.make_tuner(hypermodel(HEAD_ONLY), algorithm="random", max_trials=max_trials, seed=1,
                                  directory=str(tmp_path), project_name="r")
        tuner.search(data.train, validation_data=data.validation, verbose=0)
        return {t.trial_id: t.score for t in tuning.list_trials(tuner)}

    first = search(2)
    second = search(3)
    assert len(second) == 3 and all(second[k] == v for k, v in first.items())
    assert len(read_csv(tmp_path / "r" / "trials.csv")) == 3


def test_trials_are_seeded_by_search_seed_and_trial_id(tmp_path, data):
    """The same search twice in one process (so the global random state differs at the start
    of the second): each trial starts from the same weights and ends with the same val_loss,
    so a trial rerun after a restart repeats the interrupted one."""
    def search(name, global_seed):
        keras.utils.set_random_seed(0)
        hm = hypermodel(dict(HEAD_ONLY, dropout=0.2))  # the same backbone weights (the user's model)
        keras.utils.set_random_seed(global_seed)  # what other code did to the global random state
        tuner = tuning.make_tuner(hm, algorithm="random", max_trials=2, seed=1, objective="val_loss",
                                  directory=str(tmp_path), project_name=name)
        tuner.search(data.train, validation_data=data.validation, verbose=0)
        return {t.trial_id: t.score for t in tuning.list_trials(tuner)}

    first = search("a", 1)
    second = search("b", 12345)
    assert first == second and len(first) == 2


def test_cross_validation_scores_the_mean_and_records_the_spread(tmp_path):
    x, y = tiny_arrays(n=16)
    store = features_lib.FeatureStore()
    space = dict(HEAD_ONLY, batch_size=4, head_units=0, dropout=0.0)
    hm = hypermodel(space, cv_folds=2, feature_store=store)
    tuner = tuning.make_tuner(hm, algorithm="random", max_trials=2, seed=1, directory=str(tmp_path),
                              project_name="cv")
    tuner.search(x, y, verbose=0)
    assert store.misses == 4  # two folds, train and validation each, shared by both trials
    rows = read_csv(tmp_path / "cv" / "trials.csv")
    assert len(rows) == 2 and "val_accuracy_std" in rows[0]
    assert all(0.0 <= float(r["val_accuracy_std"]) <= 0.5 for r in rows)
    with pytest.raises(ValueError, match="cv_folds"):
        tuning.make_tuner(hm, algorithm="hyperband", directory=str(tmp_path), project_name="cv2")


def test_export_results_to_another_place(tmp_path, data):
    tuner = tuning.make_tuner(hypermodel(HEAD_ONLY), algorithm="random", max_trials=1, seed=1,
                              directory=str(tmp_path), project_name="e", export=False)
    tuner.search(data.train, validation_data=data.validation, verbose=0)
    assert not (tmp_path / "e" / "trials.csv").exists()
    paths = tuning.export_results(tuner, str(tmp_path / "out" / "table.csv"))
    assert paths["trials"].endswith("table.csv")
    assert os.path.exists(tmp_path / "out" / "best_config.json") and os.path.exists(tmp_path / "out" / "trials.png")


# --------------------------------------------------------------------------------------------
# Subprocess tests: strategies, process isolation, kill / resume, chief and workers
# --------------------------------------------------------------------------------------------


def run_worker(args, env=None, timeout=240):
    proc = subprocess.run([sys.executable, WORKER] + args, capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return result_of(proc.stdout)


def result_of(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    result = run_worker([f"--directory={tmp_path}", "--max_trials=1", "--logical_cpus=2", "--strategy=mirrored",
                         "--unfreeze=backbone", "--finetune_epochs=1"])
    assert result["is_mirrored"] and len(result["completed"]) == 1
    # both phases' epochs ran on 2 replicas, with the batch size counted globally
    assert all(b["replicas"] == 2 for b in result["batches"]) and len(result["batches"]) == 2
    n = result["train_examples"]
    assert {b["steps"] for b in result["batches"]} <= {-(-n // 4), -(-n // 8)}


@pytest.mark.slow
def test_trial_isolation_runs_each_trial_in_a_fresh_process(tmp_path):
    x, y = tiny_arrays()
    space = dict(HEAD_ONLY, batch_size=8)
    tuner = tuning.make_tuner(hypermodel(space, trial_isolation="process"), algorithm="random", max_trials=2,
                              seed=1, directory=str(tmp_path), project_name="iso")
    tuner.search(x, y, validation_data=tiny_arrays(8, seed=1), verbose=0)
    trials = tuning.list_trials(tuner)
    assert [t.status for t in trials] == ["COMPLETED"] * 2
    model = tuner.get_best_models(1)[0]  # the child saved the checkpoint
    assert model.get_layer("backbone") is not None
    with pytest.raises(ValueError, match="pickle"):
        tuner.search(tfft.data.from_arrays(x, y).train, verbose=0)


@pytest.mark.slow
def test_kill_mid_search_and_resume(tmp_path):
    args = [WORKER, f"--directory={tmp_path}", "--max_trials=5", "--head_epochs=3", "--epoch_sleep=1.5"]
    proc = subprocess.Popen([sys.executable] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=REPO)
    table = tmp_path / "worker_test" / "trials.csv"
    deadline = time.time() + 180
    while time.time() < deadline and (not table.exists() or len(read_csv(table)) < 2):
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {r["trial_id"]: r["score"] for r in read_csv(table)}
    assert 2 <= len(finished) < 5

    again = subprocess.run([sys.executable] + args, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert again.returncode == 0, again.stdout[-3000:]
    started = [line for line in again.stdout.splitlines() if line.startswith("[tfft] trial") and "started" in line]
    rows = read_csv(table)
    assert len(rows) == 5 and all(r["status"] == "COMPLETED" for r in rows)
    assert {r["trial_id"]: r["score"] for r in rows if r["trial_id"] in finished} == finished
    assert len(started) <= 5 - len(finished) + 1  # at most the trial that was running is rerun


def test_chief_and_two_workers_on_loopback(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    codes = tuning.launch_local([sys.executable, WORKER, f"--directory={tmp_path}", "--max_trials=4"],
                                num_workers=2, timeout=300, log_dir=str(logs))
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0}
    results = {r["role"]: r for r in (result_of((logs / f"{role}.log").read_text()) for role in codes)}
    assert results["chief"]["completed"] == ["0", "1", "2", "3"]
    assert results["tuner0"]["completed"] is None  # a worker's oracle is a client without trials
    ran = sum(len(results[w]["batches"]) for w in ("tuner0", "tuner1"))
    assert ran == 4 and results["tuner0"]["batches"] and results["tuner1"]["batches"]  # both workers trained
    # Only the chief writes the results, as trials end and at the end.
    assert results["chief"]["exports"] >= 2 and results["tuner0"]["exports"] == results["tuner1"]["exports"] == 0
    rows = read_csv(tmp_path / "worker_test" / "trials.csv")
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2", "3"] and {r["status"] for r in rows} == {"COMPLETED"}
    best = json.loads((tmp_path / "worker_test" / "best_config.json").read_text())
    assert best["score"] == max(float(r["score"]) for r in rows) and "seed" in best


def test_launch_local_stops_every_process_on_timeout(tmp_path):
    start = time.time()
    with pytest.raises(TimeoutError):
        tuning.launch_local([sys.executable, "-c", "import time; time.sleep(60)"], num_workers=1, timeout=1)
    assert time.time() - start < 20


def test_works_with_a_plain_keras_tuner_tuner(tmp_path, data):
    store = features_lib.FeatureStore()
    tuner = kt.RandomSearch(hypermodel(dict(HEAD_ONLY, batch_size=8), feature_store=store),
                            objective="val_accuracy", max_trials=2, seed=1, directory=str(tmp_path), project_name="kt")
    tuner.search(data.train, validation_data=data.validation, verbose=0)
    assert store.misses == 2 and store.hits == 2
    paths = tuning.export_results(tuner)
    assert len(read_csv(paths["trials"])) == 2
    assert json.loads(open(paths["best_config"]).read())["objective"] == "val_accuracy"


@pytest.mark.slow
def test_text_backbone_two_phase_search(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "great", "good", "bad", "awful", "movie", "plot"]
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=1, hidden_dim=4,
                                             intermediate_dim=8, max_sequence_length=8)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocab), sequence_length=6)
    texts = ["a great movie", "good plot", "a good movie", "great plot", "a bad movie", "awful plot", "bad plot",
             "an awful movie"]
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    hm = tuning.TransferHyperModel(backbone, task="binary", weights=None, seed=0,
                                   build_kwargs={"preprocessor": preprocessor},
                                   search_space={"unfreeze": ["none", "backbone"], "head_epochs": 1,
                                                 "finetune_epochs": 1, "batch_size": 4, "warmup_fraction": None,
                                                 "learning_rate": 1e-3, "optimizer": "adamw", "weight_decay": 0.01,
                                                 "dropout": 0.1, "head_units": 0, "label_smoothing": 0.1})
    assert hm.modality == "text"
    tuner = tuning.make_tuner(hm, algorithm="grid", objective="val_loss", max_trials=4, directory=str(tmp_path),
                              project_name="text")
    tuner.search(texts, labels, validation_data=(texts, labels), verbose=0)
    rows = read_csv(tmp_path / "text" / "trials.csv")
    assert sorted((r["unfreeze"], r["status"]) for r in rows) == [("backbone", "COMPLETED"), ("none", "COMPLETED")]
