"""Fault tests: real processes SIGKILLed at chosen and random points, then restarted.

Each test starts `tests/fault_runner.py` (a small two-phase `tfft.fine_tune` run with
dropout 0.2, 3 head epochs on cached features then 3 fine-tune epochs under a cosine
schedule) in a fresh process that kills itself with SIGKILL at a named point, or is
killed from outside after a random delay. Then:

* every file the killed run left under its final name loads (`model.keras` with
  `keras.models.load_model`, weights files read in full, JSON parsed, `history.csv`
  well formed): a half-written file is never left where a good one is expected;
* the same command, started again without the kill, resumes at the expected epoch, and
  at every epoch start it has the same trainable variables, optimizer step (hence the
  learning-rate schedule position), learning rate, optimizer slots and weights as the run
  that was never interrupted;
* it ends with the same final metrics, history and weights.

Tolerance: relative 1e-6 on checksums and learning rates, 1e-5 on metrics (measured: the
resumed runs match the uninterrupted one exactly on this CPU; the margin covers float
summation order only). Dropout masks match too: tfft saves the random layers' seed
states with each backup and phase record (`tfft.order.seed_states`).

The same is done for KerasTuner searches (`fault_runner.py --tune=hyperband|random`): a
search killed mid-trial, between trials or while writing its results resumes without
rerunning finished trials, which keep their scores, and ends with the same trials (ids and
hyperparameters). And for the entry point `python -m experiments.train`, killed from
outside, whose rerun scores the same as an uninterrupted run.

Kill points: 7 by default (5 chosen, 1 random, 1 in a Hyperband trial); `-m slow` adds 29
(17 chosen, 2 random, a run killed 3 times in a row, 4 chosen and 1 random in searches, 2 in
the entry point): 36 in all.
"""

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

from tfft import io as io_lib
from tfft import weights as weights_lib

RUNNER = str(Path(__file__).with_name("fault_runner.py"))
REPO = str(Path(__file__).resolve().parents[1])
EPOCHS = 6  # 3 head + 3 fine-tune, as in fault_runner.py
TIMEOUT = 300

# (kill spec, first epoch the restarted process trains, or None when it trains none).
# Epochs 0-2: head phase (on cached features); 3-5: fine-tune phase. Per epoch end the
# writes come in this order: run_state.json (the epoch's logs), history.csv, model.keras (when
# val_loss improved, which it does every epoch here), then the backup: epoch_*.weights.h5, then
# run_state.json again (the commit). So run_state.json's writes number 2e+1 (epoch e's logs)
# and 2e+2 (its backup) for the head epochs, 7 for the head phase's end, then 2e+2 and 2e+3.
DEFAULT_POINTS = [
    ("batch:1:5", 1),  # head phase, mid-epoch
    ("before_replace:run_state.json:4", 1),  # head backup weights written, not committed
    ("before_replace:head.weights.h5:1", 3),  # phase switch: end-of-head weights half-saved
    ("batch:4:3", 4),  # fine-tune phase, mid-epoch (schedule mid-way, dropout active)
    ("torn_write:epoch_*.weights.h5:5", 4),  # fine-tune backup torn while written
]
SLOW_POINTS = [
    ("batch:0:3", 0),
    ("epoch_end:0", 1),
    ("epoch_begin:2", 2),
    ("after_replace:run_state.json:1", 0),
    ("torn_write:history.csv:2", 1),
    ("torn_write:model.keras:1", 0),
    ("before_replace:epoch_*.weights.h5:2", 1),
    ("after_replace:head.weights.h5:1", 3),
    ("before_replace:run_state.json:7", 3),  # the write that marks the head phase done
    ("phase_done:head", 3),
    ("epoch_begin:3", 3),
    ("batch:3:0", 3),
    ("epoch_end:4", 5),
    ("torn_write:model.keras:5", 4),
    ("after_replace:run_state.json:11", 5),
    ("epoch_end:5", None),  # every epoch done, the fine-tune phase not yet recorded
    ("phase_done:finetune", None),  # both phases recorded, final metrics not yet written
]
CHAIN = ["batch:1:2", "before_replace:head.weights.h5:1", "batch:5:1"]


def start(workdir, kill=None, extra=()):
    args = [sys.executable, RUNNER, str(workdir)] + ([f"--kill={kill}"] if kill else []) + list(extra)
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def finish(proc):
    out, _ = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out


def run_to_end(workdir, extra=()):
    code, out = finish(start(workdir, extra=extra))
    assert code == 0, out[-4000:]
    return out


def run_killed(workdir, kill, extra=()):
    code, out = finish(start(workdir, kill, extra))
    assert code == -signal.SIGKILL, f"the run was not killed at {kill}:\n{out[-4000:]}"
    assert f"SIGKILL at {kill.split(':')[0]}" in out, out[-4000:]


def probes(workdir):
    """The Probe rows of a workdir, one per epoch start, in the order they were written."""
    path = Path(workdir) / "probes.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def read_result(workdir):
    return json.loads((Path(workdir) / "result.json").read_text())


def reference_run(workdir, extra=(), epochs=tuple(range(EPOCHS))):
    run_to_end(workdir, extra)
    rows = probes(workdir)
    assert [r["epoch"] for r in rows] == list(epochs)
    result = read_result(workdir)
    result["rows"] = {r["epoch"]: r for r in rows}
    result["train_seconds"] = (Path(workdir) / "result.json").stat().st_mtime - rows[0]["time"]
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run: its result and its probe row of every epoch."""
    return reference_run(tmp_path_factory.mktemp("reference"))


EARLY_STOP = ["--patience=1", "--head-lr=0.2"]  # the head phase's val_loss rises at epoch 1: it stops there


@pytest.fixture(scope="module")
def early_stop_reference(tmp_path_factory):
    """An uninterrupted run whose head phase early-stops after epoch 1 (of 0-2) and restores epoch 0."""
    return reference_run(tmp_path_factory.mktemp("early_stop_reference"), EARLY_STOP, epochs=[0, 1, 3, 4, 5])


def assert_files_load(workdir):
    """Every file under its final name is complete; temporary files are hidden `.tmp` names."""
    for path in Path(workdir).rglob("*"):
        name = path.name
        if not path.is_file() or path.parent.name == "logs" or "logs" in path.parts:
            continue
        if name.startswith(".") and ".tmp" in name:
            continue  # a write the kill interrupted: never read by tfft
        if name.endswith(".weights.h5"):
            assert weights_lib.read_weights_file(path), path
        elif name.endswith(".keras"):
            model = keras.models.load_model(path)
            assert model.output.shape[0] is None and len(model.output.shape) == 2
        elif name.endswith(".json"):
            json.loads(path.read_text())
        elif name == "history.csv":
            rows = list(csv.reader(path.open()))
            assert rows and all(len(r) == len(rows[0]) for r in rows), rows
            epochs = [int(r[0]) for r in rows[1:]]
            assert epochs == sorted(set(epochs)), epochs  # each epoch once, in order
    keras.backend.clear_session()


def restart_and_compare(workdir, reference, resume_epoch=..., extra=()):
    """Checks what the kill left, restarts the run, and compares it with the reference.

    `resume_epoch`: the first epoch the restarted process must train (None: none at all);
    `...` when unknown (random kills).
    """
    assert_files_load(workdir)
    before = len(probes(workdir))
    run_to_end(workdir, extra)
    rows = probes(workdir)
    if resume_epoch is not ...:
        first = rows[before]["epoch"] if len(rows) > before else None
        assert first == resume_epoch, [r["epoch"] for r in rows]
    for row in rows:  # killed and restarted processes alike
        expected = reference["rows"][row["epoch"]]
        assert row["trainable"] == expected["trainable"], row["epoch"]
        assert row["iterations"] == expected["iterations"], row["epoch"]
        for key in ("learning_rate", "weights", "optimizer"):
            assert row[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), (row["epoch"], key)
    result = read_result(workdir)
    assert result["metrics"] == pytest.approx(reference["metrics"], rel=1e-5, abs=1e-7)
    assert result["weights"] == pytest.approx(reference["weights"], rel=1e-6)
    assert set(result["history"]) == set(reference["history"])
    for key, values in reference["history"].items():
        assert result["history"][key] == pytest.approx(values, rel=1e-5, abs=1e-7), key
    assert_files_load(workdir)
    stray = [p for p in Path(workdir).rglob(".*") if io_lib._TEMPORARY.match(p.name)]
    assert not stray, stray  # half-written files of the killed process were removed by the restart
    return rows[before:]


@pytest.mark.parametrize("kill, resume_epoch", DEFAULT_POINTS + [
    pytest.param(*point, marks=pytest.mark.slow) for point in SLOW_POINTS])
def test_killed_run_resumes_where_it_stopped_and_ends_the_same(tmp_path, reference, kill, resume_epoch):
    run_killed(tmp_path, kill)
    restart_and_compare(tmp_path, reference, resume_epoch)


@pytest.mark.parametrize("kill, resume_epoch", [
    ("batch:1:3", 1),  # mid-epoch 1: the restart must remember epoch 0's best val_loss to stop after epoch 1
    ("epoch_end:1", 3),  # early stopping has decided, the phase is not finished: train no further head epoch
])
def test_killed_run_keeps_early_stopping_state(tmp_path, early_stop_reference, kill, resume_epoch):
    """EarlyStopping's counters, best value and best weights survive the kill (patience 1)."""
    run_killed(tmp_path, kill, EARLY_STOP)
    restart_and_compare(tmp_path, early_stop_reference, resume_epoch, EARLY_STOP)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_killed_at_a_random_moment(tmp_path, reference, seed):
    """`proc.kill()` after a random delay into training (chosen by `random.Random(seed)`)."""
    delay = random.Random(seed).uniform(0.0, 0.9) * reference["train_seconds"]
    proc = start(tmp_path)
    deadline = time.time() + TIMEOUT
    while not (tmp_path / "probes.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # training has started (imports and model building took their time)
    time.sleep(delay)
    proc.kill()
    code, out = finish(proc)
    assert code in (0, -signal.SIGKILL), out[-4000:]
    restart_and_compare(tmp_path, reference)


@pytest.mark.slow
def test_killed_three_times_in_a_row(tmp_path, reference):
    """Resume after resume: each restart is killed again, further on."""
    for kill in CHAIN:
        run_killed(tmp_path, kill)
        assert_files_load(tmp_path)
    new_rows = restart_and_compare(tmp_path, reference, resume_epoch=5)
    assert [r["epoch"] for r in new_rows] == [5]


# --------------------------------------------------------------------------------------------
# Tuning searches: a search killed mid-trial resumes without rerunning finished trials
# --------------------------------------------------------------------------------------------

TUNING_POINTS = [  # (algorithm, kill spec)
    ("hyperband", "trial_batch:4:3"),  # mid-way through a Hyperband trial that continues an earlier one
    pytest.param("hyperband", "trial_end:2", marks=pytest.mark.slow),
    pytest.param("hyperband", "torn_write:best_config.json:2", marks=pytest.mark.slow),
    pytest.param("random", "trial_batch:2:5", marks=pytest.mark.slow),
    pytest.param("random", "before_replace:trials.csv:3", marks=pytest.mark.slow),
]


def start_search(workdir, algorithm, kill=None):
    args = [sys.executable, RUNNER, str(workdir), f"--tune={algorithm}"] + ([f"--kill={kill}"] if kill else [])
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def search_reference(tmp_path_factory):
    """The uninterrupted searches' trials, per algorithm (run on first use)."""
    cache = {}

    def get(algorithm):
        if algorithm not in cache:
            workdir = tmp_path_factory.mktemp(f"search_{algorithm}")
            code, out = finish(start_search(workdir, algorithm))
            assert code == 0, out[-4000:]
            cache[algorithm] = read_result(workdir)["trials"]
        return cache[algorithm]

    return get


def trial_records(workdir):
    """{trial_id: (status, score)} from KerasTuner's own trial files."""
    records = {}
    for path in (Path(workdir) / "search").glob("trial_*/trial.json"):
        trial = json.loads(path.read_text())  # a torn trial.json would fail here
        records[trial["trial_id"]] = (trial["status"], trial["score"])
    return records


def started(workdir):
    path = Path(workdir) / "trials_started.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def restart_search_and_compare(workdir, algorithm, reference):
    assert_files_load(workdir)  # best_config.json, trials.csv, oracle.json, trial.json files
    finished = {k: v for k, v in trial_records(workdir).items() if v[0] == "COMPLETED"}
    before = len(started(workdir))
    code, out = finish(start_search(workdir, algorithm))
    assert code == 0, out[-4000:]
    rerun = [row["trial_id"] for row in started(workdir)[before:]]
    assert not set(rerun) & set(finished), f"finished trials {sorted(finished)} were run again: {rerun}"
    trials = read_result(workdir)["trials"]
    assert sorted(trials) == sorted(reference) and all(t["status"] == "COMPLETED" for t in trials.values())
    for trial_id, trial in trials.items():  # the same trials, with the same hyperparameters
        assert trial["values"] == reference[trial_id]["values"], trial_id
    for trial_id, (_, score) in finished.items():  # finished trials keep their scores
        assert trials[trial_id]["score"] == score
    json.loads((Path(workdir) / "search" / "best_config.json").read_text())
    return finished, rerun


@pytest.mark.parametrize("algorithm, kill", TUNING_POINTS)
def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path, search_reference, algorithm, kill):
    code, out = finish(start_search(tmp_path, algorithm, kill))
    assert code == -signal.SIGKILL and "SIGKILL at" in out, out[-4000:]
    finished, rerun = restart_search_and_compare(tmp_path, algorithm, search_reference(algorithm))
    assert finished, "the kill came before any trial finished: the test would prove nothing"
    assert len(rerun) <= len(search_reference(algorithm)) - len(finished)


@pytest.mark.slow
def test_search_killed_at_a_random_moment(tmp_path, search_reference):
    reference = search_reference("hyperband")
    proc = start_search(tmp_path, "hyperband")
    deadline = time.time() + TIMEOUT
    while not (tmp_path / "trials_started.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(3).uniform(2.0, 10.0))
    proc.kill()
    finish(proc)
    restart_search_and_compare(tmp_path, "hyperband", reference)


# --------------------------------------------------------------------------------------------
# The entry point: `python -m experiments.train`, killed from outside, then rerun
# --------------------------------------------------------------------------------------------

TRAIN = ["-m", "experiments.train", "--config=experiments/configs/digits_efficientnet_lite0.py:smoke",
         "--config.head_epochs=2", "--config.finetune_epochs=2"]


def start_train(workdir):
    return subprocess.Popen([sys.executable, *TRAIN, f"--workdir={workdir}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO)


def scores(workdir):
    metrics = json.loads((Path(workdir) / "metrics.json").read_text())
    return {split: {k: v for k, v in metrics[split].items() if k != "per_class"} for split in ("validation", "test")}


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    pytest.importorskip("experiments.train", reason="experiments/ is not in this checkout")
    workdir = tmp_path_factory.mktemp("train_reference")
    code, out = finish(start_train(workdir))
    assert code == 0, out[-4000:]
    return scores(workdir)


@pytest.mark.slow
@pytest.mark.parametrize("phase, epoch", [("head", "0"), ("finetune", "2")])
def test_killed_entry_point_resumes_and_scores_the_same(tmp_path, train_reference, phase, epoch):
    """SIGKILL once the run state shows `epoch` of `phase` finished, rerun the same command."""
    proc = start_train(tmp_path)
    state, deadline = tmp_path / "run_state.json", time.time() + TIMEOUT
    while proc.poll() is None and time.time() < deadline:
        try:
            if epoch in json.loads(state.read_text()).get("phases", {}).get(phase, {}).get("epochs", {}):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    code, out = finish(proc)
    assert code == -signal.SIGKILL, out[-4000:]
    assert not (tmp_path / "metrics.json").exists()
    assert_files_load(tmp_path)
    code, out = finish(start_train(tmp_path))
    assert code == 0, out[-4000:]
    assert "resuming" in out
    assert _close(scores(tmp_path), train_reference)


def _close(got, expected):
    for split, values in expected.items():
        for key, value in values.items():
            if isinstance(value, (int, float)):
                assert got[split][key] == pytest.approx(value, rel=1e-5, abs=1e-7), (split, key)
            else:
                assert got[split][key] == value, (split, key)
    return True
