"""The run state of a `fine_tune` workdir: one file that says where the run stands.

`run_state.json` (written atomically, `tfft.io`) holds the model's signature and the plan
of phases, and per phase its status, the per-epoch logs (the history), the file that holds
its end weights once it finished (`phases/<phase>.weights.h5`) and, while it runs, the
backup of its last finished epoch (the weights file in `backup/<phase>/`, the epoch, the
random layers' seed states and the counters of early stopping, ReduceLROnPlateau and the
checkpoint: what `tfft.callbacks.BackupAndRestore` commits). `history.csv` is written from
it after every epoch, and only from it.

    {"version": 1, "model": "<signature>", "plan": [["head", "backbone-frozen", 5], ...],
     "phases": {"head": {"status": "done", "weights": "phases/head.weights.h5",
                         "seed_states": [...], "epochs": {"0": {"loss": ...}, ...}},
                "finetune": {"status": "running", "epochs": {...},
                             "backup": {"epoch": 7, "weights": "epoch_7_batch_0.weights.h5", ...}}},
     "metrics": {...}}
"""

import hashlib
import json
import logging
import os
import shutil

import keras
import numpy as np

from tfft import io, reporting
from tfft import order as order_lib
from tfft.callbacks import loss_is_finite, lower_is_better
from tfft.info import model_info

logger = logging.getLogger("tfft")

STATE_FILE = "run_state.json"
LEGACY_STATE_FILE = "fine_tune_state.json"  # tfft before 2026-12
PHASES_DIR = "phases"
BACKUP_DIR = "backup"
HISTORY_FILE = "history.csv"
# What a worker that is not the chief copies from the shared workdir to resume like it.
RESUME_FROM = (STATE_FILE, PHASES_DIR, BACKUP_DIR)
VERSION = 1


def model_signature(model):
    """A short digest of the model's task, classes and weight shapes (not names, which Keras
    numbers per process), to recognize a workdir of another model."""
    info = model_info(model)
    parts = [str(info.get("task")), str(info.get("num_classes"))] + [str(tuple(w.shape)) for w in model.weights]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class _BackupStore:
    """The backup entry of one phase, read and committed through the run state."""

    def __init__(self, state, phase):
        self.state, self.phase = state, phase

    def read(self):
        return self.state.phase(self.phase).get("backup")

    def write(self, metadata):
        self.state.phase(self.phase)["backup"] = metadata
        self.state.save()


class RunState:
    """The run state of `workdir` (in memory only when `workdir` is None).

    Raises:
        ValueError: the state file is unreadable, or the workdir holds a run of tfft from
            before the run state (`fine_tune_state.json`).
    """

    def __init__(self, workdir=None):
        self.workdir = os.fspath(workdir) if workdir else None
        self.path = os.path.join(self.workdir, STATE_FILE) if self.workdir else None
        self.data = self._read()
        self.data.setdefault("version", VERSION)
        self.data.setdefault("phases", {})

    def _read(self):
        if not self.path:
            return {}
        if not os.path.exists(self.path) and os.path.exists(os.path.join(self.workdir, LEGACY_STATE_FILE)):
            raise ValueError(
                f"{self.workdir} holds a run of an older tfft ({LEGACY_STATE_FILE}); this version keeps its state "
                f"in {STATE_FILE} and cannot resume it. Its finished phases' weights are in "
                f"{os.path.join(self.workdir, PHASES_DIR)} and the best model in model.keras. Use a new workdir "
                "(or delete this one) to train with this version.")
        try:
            return io.read_json(self.path, {})
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.path} cannot be read ({e}). Delete it to start the run over.") from e

    def save(self):
        if self.path:
            io.write_json(self.path, self.data)

    # ------------------------------------------------------------------ identity

    def bind(self, model, phases):
        """Checks that the workdir holds a run of this model and plan (or none), and records them."""
        signature = model_signature(model)
        if self.data.get("model", signature) != signature:
            raise ValueError(
                f"{self.workdir} holds a run of another model (other task, number of classes or architecture): its "
                f"checkpoints cannot be resumed with this one. Use a new workdir, or delete {self.workdir} to start "
                "over.")
        planned = [phase.as_record() for phase in phases]
        if self.data.get("plan", planned) != planned:
            def describe(plan):
                return " + ".join(f"{name} {epochs} epochs ({spec})" for name, spec, epochs in plan)

            raise ValueError(
                f"{self.workdir} holds a run planned as {describe(self.data['plan'])}, but this call plans "
                f"{describe(planned)}; a workdir resumes the run it holds. Use a new workdir for the new plan, or "
                "delete this one to start over.")
        self.data.update(model=signature, plan=planned)

    # ------------------------------------------------------------------ phases

    def phase(self, name):
        return self.data["phases"].setdefault(name, {"status": "running", "epochs": {}})

    def done(self, name):
        return self.data["phases"].get(name, {}).get("status") == "done"

    def backup_store(self, name):
        return _BackupStore(self, name)

    def backup_dir(self, name):
        return os.path.join(self.workdir, BACKUP_DIR, name) if self.workdir else None

    def record_epoch(self, name, epoch, logs):
        """Appends an epoch's logs (before the backup of that epoch commits) and rewrites history.csv."""
        self.phase(name)["epochs"][str(int(epoch))] = {k: float(v) for k, v in (logs or {}).items()}
        if self.path:
            self.save()
            reporting.write_history_csv(self.rows(), os.path.join(self.workdir, HISTORY_FILE))

    def finish(self, name, model):
        """Records a finished phase: its end weights first, then the state, then drops its backup."""
        if not self.workdir:
            return
        relative = os.path.join(PHASES_DIR, f"{name}.weights.h5")
        io.save_weights(model, os.path.join(self.workdir, relative))
        entry = self.phase(name)
        entry.update(status="done", weights=relative, seed_states=order_lib.seed_states(model))
        entry.pop("backup", None)
        self.save()
        shutil.rmtree(self.backup_dir(name), ignore_errors=True)

    def restore(self, name, model):
        """Loads a finished phase's end weights (and the random layers' states) into `model`."""
        entry = self.phase(name)
        path = os.path.join(self.workdir, entry.get("weights", ""))
        if not entry.get("weights") or not os.path.exists(path):
            raise RuntimeError(f"{self.path} says phase {name!r} finished, but its weights file {path} is missing.")
        model.load_weights(path)
        order_lib.set_seed_states(model, entry.get("seed_states"))

    # ------------------------------------------------------------------ history and metrics

    def history(self, name):
        """`{metric: [value per epoch]}` of one phase."""
        rows = self.data["phases"].get(name, {}).get("epochs", {})
        history = {}
        for epoch in sorted(rows, key=int):
            for k, v in rows[epoch].items():
                history.setdefault(k, []).append(v)
        return history

    def rows(self):
        """Every epoch of every phase as `{"epoch", "phase", <metrics>}`, in epoch order."""
        rows = [{"epoch": int(epoch), "phase": name, **logs}
                for name, entry in self.data["phases"].items() for epoch, logs in entry.get("epochs", {}).items()]
        return sorted(rows, key=lambda row: row["epoch"])

    def best(self, monitor):
        """The best `monitor` value logged so far (lower for losses and errors), or None."""
        values = [row[monitor] for row in self.rows() if monitor in row and np.isfinite(row[monitor])]
        if not values:
            return None
        return min(values) if lower_is_better(monitor) else max(values)

    def set_metrics(self, metrics):
        self.data["metrics"] = metrics
        self.save()


class EpochLog(keras.callbacks.Callback):
    """Records each finished epoch in the run state (it must run before the backup commits).

    A NaN epoch is not recorded (TerminateOnNaN stops training; the last good epoch stays).
    """

    def __init__(self, state, phase):
        super().__init__()
        self.state, self.phase = state, phase

    def on_epoch_end(self, epoch, logs=None):
        if loss_is_finite(logs):
            self.state.record_epoch(self.phase, epoch, logs)
