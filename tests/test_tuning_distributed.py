"""KerasTuner's chief / worker protocol as real processes: a worker killed mid-trial and
restarted loses and repeats nothing; mistakes in setting up the protocol end in one sentence.

The chief and two workers, and a trial under MirroredStrategy, are in tests/test_tuning.py.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfft import tuning

REPO = Path(__file__).resolve().parents[1]
WORKER = str(REPO / "tests" / "tuning_worker.py")
DIGITS = str(REPO / "experiments" / "configs" / "digits_efficientnet_lite0.py")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _env(role=None, port=None, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_") and k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3")
    if role:
        env.update(tuning.worker_env(role, "127.0.0.1", port, env))
    env.update(extra)
    return env


def test_a_worker_killed_mid_trial_and_restarted_loses_and_repeats_no_trial(tmp_path):
    port = tuning.free_port()
    args = [sys.executable, WORKER, f"--directory={tmp_path}", "--max_trials=3", "--head_epochs=3",
            "--epoch_sleep=0.7"]
    chief = subprocess.Popen(args, env=_env("chief", port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, cwd=REPO)
    worker = subprocess.Popen(args, env=_env("tuner0", port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=REPO)
    table, deadline = tmp_path / "worker_test" / "trials.csv", time.time() + 180
    try:
        while time.time() < deadline and worker.poll() is None:  # the chief writes the table as trials end
            rows = read_csv(table) if table.exists() else []
            if sum(r["status"] == "COMPLETED" for r in rows) >= 1 and any(r["status"] == "RUNNING" for r in rows):
                break
            time.sleep(0.2)
        worker.send_signal(signal.SIGKILL)  # in the middle of the second trial
        worker.communicate()
        finished = {r["trial_id"]: r["score"] for r in read_csv(table) if r["status"] == "COMPLETED"}
        assert len(finished) == 1, read_csv(table)

        again = subprocess.run(args, env=_env("tuner0", port), capture_output=True, text=True, timeout=180, cwd=REPO)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        out, _ = chief.communicate(timeout=60)
        assert chief.returncode == 0, out[-3000:]
    finally:
        for proc in (chief, worker):
            if proc.poll() is None:
                proc.kill()
    rows = read_csv(table)
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2"] and {r["status"] for r in rows} == {"COMPLETED"}
    assert {r["trial_id"]: r["score"] for r in rows if r["trial_id"] in finished} == finished
    started = [line for line in again.stdout.splitlines() if line.startswith("[tfft] trial") and "started" in line]
    assert started[0].startswith("[tfft] trial 1 started")  # the interrupted trial, rerun by the restarted worker
    assert len(started) == 2


def _tune(workdir, env, timeout=120, extra=()):
    # `timeout` is the hang guard: these runs must end on their own with one error line (a worker waits
    # launch.CHIEF_TIMEOUT seconds for its chief, then gives up); wall time itself belongs to benchmarks.
    cmd = [sys.executable, "-m", "experiments.tune", f"--config={DIGITS}:smoke", f"--workdir={workdir}",
           "--config.tune.max_trials=2", "--config.tune.algorithm=random", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def _one_sentence(proc):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_tuner_id_without_the_chiefs_address(tmp_path):
    proc = _tune(tmp_path / "w", _env(KERASTUNER_TUNER_ID="tuner0"))
    error = _one_sentence(proc)
    assert "KERASTUNER_TUNER_ID=tuner0 is set but KERASTUNER_ORACLE_IP is not" in error


def test_a_worker_without_a_reachable_chief(tmp_path):
    proc = _tune(tmp_path / "w", _env("tuner0", tuning.free_port()))
    error = _one_sentence(proc)
    assert "No KerasTuner chief answers at 127.0.0.1:" in error and "No trial was started" in error
    assert not (tmp_path / "w" / "tuner").exists()


def test_a_chief_whose_port_is_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = _tune(tmp_path / "w", _env("chief", busy.getsockname()[1]))
    error = _one_sentence(proc)
    assert "The chief cannot serve on 127.0.0.1:" in error and "KERASTUNER_ORACLE_PORT" in error


def test_two_chiefs_on_one_directory(tmp_path):
    workdir = tmp_path / "w"
    first = subprocess.Popen(
        [sys.executable, "-m", "experiments.tune", f"--config={DIGITS}:smoke", f"--workdir={workdir}",
         "--config.tune.max_trials=2", "--config.tune.algorithm=random"],
        env=_env("chief", tuning.free_port()), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        ready = [workdir / "tuner" / name for name in ("tfft_chief.lock", "oracle.json", "chief.json")]
        deadline = time.time() + 60
        while time.time() < deadline and not all(p.exists() for p in ready):  # the first chief serves
            assert first.poll() is None, first.communicate()[0][-3000:]
            time.sleep(0.2)
        before = {p.name: p.stat().st_mtime_ns for p in (workdir / "tuner").iterdir()}
        proc = _tune(workdir, _env("chief", tuning.free_port()))
        error = _one_sentence(proc)
        assert "is already served by chief pid" in error and "two chiefs" in error
        assert first.poll() is None  # the first chief goes on serving, its files untouched
        assert {p.name: p.stat().st_mtime_ns for p in (workdir / "tuner").iterdir()} == before
        assert json.loads((workdir / "config.json").read_text())["tune"]["max_trials"] == 2
    finally:
        first.kill()
        first.communicate()


@pytest.mark.parametrize("env", [{"KERASTUNER_ORACLE_IP": "127.0.0.1"}])
def test_an_address_without_port_or_id(tmp_path, env):
    proc = _tune(tmp_path / "w", _env(**env))
    assert "KERASTUNER_ORACLE_IP=127.0.0.1 is set but KERASTUNER_ORACLE_PORT and KERASTUNER_TUNER_ID are not" \
        in _one_sentence(proc)


def test_launch_local_gives_each_worker_its_own_gpu(tmp_path):
    """Recipe (b): N workers, one GPU each through CUDA_VISIBLE_DEVICES, and the chief none."""
    show = "import os; print(os.environ['KERASTUNER_TUNER_ID'], repr(os.environ['CUDA_VISIBLE_DEVICES']))"
    codes = tuning.launch_local([sys.executable, "-c", show], num_workers=3, gpus_per_worker=1, timeout=60,
                                log_dir=str(tmp_path))
    assert codes == {"chief": 0, "tuner0": 0, "tuner1": 0, "tuner2": 0}
    seen = dict((tmp_path / f"{role}.log").read_text().split() for role in codes)
    assert seen == {"chief": "''", "tuner0": "'0'", "tuner1": "'1'", "tuner2": "'2'"}


def test_experiments_tune_with_workers_runs_a_chief_and_workers_with_one_command(tmp_path):
    workdir = tmp_path / "w"
    cmd = [sys.executable, "-m", "experiments.tune", f"--config={DIGITS}:smoke", f"--workdir={workdir}",
           "--config.tune.max_trials=2", "--config.tune.algorithm=random", "--workers=2",
           '--config.tune.search_space={"unfreeze": "none", "batch_size": 8}']
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "starting a chief and 2 workers on this machine" in proc.stdout
    assert "tuner0: done" in proc.stdout and "tuner1: done" in proc.stdout and "chief: done" in proc.stdout
    rows = read_csv(workdir / "trials.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"COMPLETED"}
    assert json.loads((workdir / "best_config.json").read_text())["monitor"] == "val_accuracy"
    logs = {role: (workdir / "logs" / "tuning" / f"{role}.log").read_text() for role in ("tuner0", "tuner1")}
    assert all("1 replica" in log for log in logs.values())  # each worker trains on its own device
