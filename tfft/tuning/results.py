"""A search's results, written by the process that owns the oracle (the chief, or the only one).

`trials.csv` (one row per trial: id, status, score, every hyperparameter, the best value of
every metric), `best_config.json` (the best trial as a flat config that `tfft.fine_tune`
and `experiments.train` retrain: the model's keys, the recipe the trial ran, its `seed`,
plus `objective`, `score` and a `tuning` dict that training ignores) and `trials.png` (the
objective per trial and the best so far), each written atomically.
"""

import copy
import csv
import io as _io
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfft import io
from tfft.tuning.hypermodel import TransferHyperModel, trial_seed

TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.json"
TRIALS_PLOT = "trials.png"


def list_trials(tuner):
    """The oracle's trials in creation order, or None on a worker (its oracle is a client)."""
    oracle = tuner.oracle if hasattr(tuner, "oracle") else tuner
    try:
        trials = oracle.trials
    except AttributeError:
        return None
    return [trials[k] for k in sorted(trials, key=lambda t: (len(str(t)), str(t)))]


def _best_values(trial):
    return {name: trial.metrics.get_best_value(name) for name in sorted(trial.metrics.metrics)}


def trials_table(tuner):
    """`(columns, rows)` of the trials table: id, status, score, hyperparameters, metrics."""
    trials = list_trials(tuner) or []
    hp_names, metric_names = [], []
    for trial in trials:
        hp_names += [k for k in trial.hyperparameters.values if k not in hp_names]
        metric_names += [k for k in trial.metrics.metrics if k not in metric_names]
    columns = ["trial_id", "status", "score"] + sorted(hp_names) + sorted(metric_names)
    rows = []
    for trial in trials:
        row = {"trial_id": trial.trial_id, "status": trial.status, "score": trial.score}
        row.update(trial.hyperparameters.values)
        row.update(_best_values(trial))
        rows.append([row.get(c, "") if row.get(c) is not None else "" for c in columns])
    return columns, rows


def best_config(tuner):
    """The best trial as a flat training config (see the module docstring), or None.

    Its `seed` is the trial's: `keras.utils.set_random_seed(seed)` before building the model
    and `fine_tune(..., seed=seed)` retrain the trial (`experiments.train` does both).
    """
    oracle = tuner.oracle
    best = oracle.get_best_trials(1)
    if not best:
        return None
    trial = best[0]
    hypermodel = getattr(tuner, "hypermodel", None)
    if isinstance(hypermodel, TransferHyperModel):
        config = hypermodel.trial_config(copy.deepcopy(trial.hyperparameters))
    else:
        config = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    base = getattr(hypermodel, "seed", None)
    base = getattr(tuner, "search_seed", None) if base is None else base
    if base is not None:
        config["seed"] = trial_seed(base, trial.trial_id)
    objective = oracle.objective
    config["objective"] = objective.name
    config["score"] = trial.score
    config["tuning"] = {
        "trial_id": trial.trial_id,
        "direction": getattr(objective, "direction", None),
        "metrics": _best_values(trial),
        "hyperparameters": dict(trial.hyperparameters.values),
        "cv_folds": getattr(hypermodel, "cv_folds", None),
    }
    return config


def plot_trials(tuner, path):
    """Saves the objective of each completed trial and the best so far to `path` (PNG)."""
    trials = [t for t in (list_trials(tuner) or []) if t.score is not None]
    objective = tuner.oracle.objective
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if trials:
        xs = np.arange(1, len(trials) + 1)
        scores = np.array([t.score for t in trials], dtype=float)
        best = np.minimum.accumulate(scores) if getattr(objective, "direction", "max") == "min" \
            else np.maximum.accumulate(scores)
        ax.plot(xs, scores, "o", label="trial")
        ax.step(xs, best, where="post", label="best so far")
        ax.legend(loc="best")
    ax.set_xlabel("completed trial")
    ax.set_ylabel(objective.name)
    ax.set_title(f"{tuner.project_name}: {objective.name} per trial")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def export_results(tuner, path_or_dir=None, *, plot=True):
    """Writes `trials.csv`, `best_config.json` and `trials.png` for `tuner`, atomically.

    Args:
        tuner: a KerasTuner tuner (on a distributed worker nothing is written: the
            chief holds the trials).
        path_or_dir: a directory (default: `make_tuner`'s `results_dir`, else the tuner's project
            directory), or the path of the CSV file (the other files go beside it).
        plot: also draw `trials.png`.

    Returns:
        `{"trials": path, "best_config": path or None, "plot": path or None}`, or None on
        a worker.

    Example:
        paths = export_results(tuner, "reports/")  # reports/trials.csv, best_config.json, trials.png
    """
    if list_trials(tuner) is None:
        return None
    path = os.fspath(path_or_dir) if path_or_dir is not None else getattr(tuner, "results_dir", None) or \
        tuner.project_dir
    if path.endswith(".csv"):
        csv_path, directory = path, os.path.dirname(path) or "."
    else:
        directory, csv_path = path, os.path.join(path, TRIALS_CSV)
    columns, rows = trials_table(tuner)
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    io.write_text(csv_path, buffer.getvalue())
    paths = {"trials": csv_path, "best_config": None, "plot": None}
    config = best_config(tuner)
    if config is not None:
        paths["best_config"] = os.path.join(directory, BEST_CONFIG)
        io.write_json(paths["best_config"], config)
    if plot:
        paths["plot"] = plot_trials(tuner, os.path.join(directory, TRIALS_PLOT))
    return paths

