"""Workdirs: one experiment per folder, its `config.json` written before training, resumable."""

import os
import shutil

from experiments.config import UsageError, config_differences, config_from_json, to_dict
from tfft import io

# What a run writes into its workdir (removed by --config.overwrite=True; nothing else is).
ARTEFACTS = (
    "config.json", "model.keras", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png",
    "per_class.csv", "per_class.txt", "run_state.json", "fine_tune_state.json", "logs", "backup", "phases", "export",
    "evaluation", "tuner", "trials.csv", "trials.png", "best_config.json", "folds",
)


def prepare_workdir(config, workdir, *, write=True):
    """Checks that `workdir` is new, empty, or holds this same experiment; writes `config.json`.

    With `config.overwrite`, the artefacts of an earlier run are removed first (only those:
    other files in the folder are left alone).

    Returns:
        True when an earlier run of this experiment is being resumed.

    Raises:
        UsageError: the workdir holds a different experiment, or unrelated files.
    """
    if not workdir:
        raise UsageError("--workdir is empty; pass the folder the run writes to, e.g. --workdir=runs/flowers.")
    workdir = os.fspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} is a file, not a folder.")
    config_path = os.path.join(workdir, "config.json")
    new = to_dict(config)
    resumed = False
    if config.overwrite:
        remove_artefacts(workdir)
    elif os.path.exists(config_path):
        old = io.read_json(config_path, {})
        diff = config_differences(old, new)
        if diff:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:6])
            more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
            raise UsageError(
                f"The workdir {workdir} holds a different experiment ({shown}{more}). A workdir belongs to one "
                "experiment so that a rerun can resume it; use a new --workdir, or add --config.overwrite=True "
                "to delete that run's results and start over."
            )
        resumed = True
    elif os.path.isdir(workdir) and [f for f in os.listdir(workdir) if not f.startswith(".") and f != "logs"]:
        raise UsageError(
            f"The workdir {workdir} is not empty and holds no config.json, so it is not a tfft run. Use a new "
            "or empty --workdir (or --config.overwrite=True to write tfft's files beside what is there)."
        )
    if write:
        os.makedirs(workdir, exist_ok=True)
        io.write_json(config_path, new)
    return resumed


def remove_artefacts(workdir):
    """Removes what an earlier run wrote into `workdir` (the `ARTEFACTS` names, `fold_*`)."""
    if not os.path.isdir(workdir):
        return
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name in ARTEFACTS or name.startswith("fold_"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def read_workdir_config(workdir):
    """The `config.json` of a finished or running workdir, as a locked ConfigDict."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{workdir} holds no config.json: it is not the workdir of a tfft run (or the run "
                         "has not started). Pass the --workdir that experiments.train wrote to.")
    config = config_from_json(path)
    config.lock()
    return config
