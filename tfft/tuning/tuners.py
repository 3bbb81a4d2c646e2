"""KerasTuner's tuners with what tfft adds: seeded trials, results files, distributed checks.

Every tuner here is KerasTuner's own class with `_TfftTuner` mixed in: a line per trial,
`trials.csv` / `best_config.json` / `trials.png` after each trial (written by the process
that owns the oracle: the chief, or the only process), trials seeded from the search's
seed and the trial id (a trial rerun after a restart, or on another worker, repeats the
interrupted one), the tuner's objective watched by the trials' early stopping, trials in a
fresh process on request, and the chief / worker protocol checked before anything starts.
"""

import concurrent.futures
import json
import multiprocessing
import os
import time

import keras
import keras_tuner as kt
from keras_tuner.src.engine import tuner_utils  # private: see BUILD_NOTES, "Private APIs"

from tfft import io
from tfft.distribute import get_strategy
from tfft.errors import did_you_mean
from tfft.tuning import launch
from tfft.tuning.hypermodel import TransferHyperModel, trial_seed
from tfft.tuning.results import export_results

ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
SEARCH_FILE = "tfft_search.json"


def _isolated_trial(payload):
    """Child side of `trial_isolation="process"`: build, fit, save the checkpoint, return metrics."""
    from keras_tuner.src import utils as kt_utils  # in the child process only

    keras.backend.clear_session()
    hypermodel = payload["hypermodel"]
    hypermodel.trial_seed = payload["seed"]
    hp = kt.HyperParameters.from_config(payload["hp"])
    strategy = get_strategy(payload["strategy"]) if payload["strategy"] else None
    with strategy.scope() if strategy else _null():
        model = hypermodel.build(hp)
        if payload["reload"]:
            model.load_weights(payload["reload"])
    kwargs = dict(payload["kwargs"])
    kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [
        tuner_utils.SaveBestEpoch(objective=payload["objective"], filepath=payload["checkpoint"])]
    results = hypermodel.fit(hp, model, *payload["args"], **kwargs)
    kt_utils.save_json(payload["build_config"], model.get_build_config())
    if isinstance(results, keras.callbacks.History):
        return {"history": results.history, "epoch": list(results.epoch)}
    return {"results": results}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _check_picklable(args, kwargs):
    """`trial_isolation="process"` sends the search's data to each trial's process."""
    import pickle

    try:
        pickle.dumps((args, kwargs))
    except Exception as e:
        raise ValueError(
            "trial_isolation='process' sends the search's data to a fresh process for each trial, and it cannot "
            f"be pickled ({type(e).__name__}: {e}). A tf.data.Dataset or DataBundle cannot be sent: pass NumPy "
            "arrays, or a top-level zero-argument function that returns the data (a DataBundle, a dataset, or a "
            "(train, validation) pair) in the trial's process.") from None


class _TfftTuner:
    """What tfft adds to every KerasTuner tuner (see the module docstring)."""

    export = True
    strategy_name = None
    results_dir = None

    def __init__(self, hypermodel=None, *args, seed=None, directory=None, project_name=None, **kwargs):
        role = launch.check_distributed_env()
        self.search_seed = seed
        if role != "worker":  # the process that owns the oracle; one per project folder
            self._lock = launch.ChiefLock(os.path.join(directory or ".", project_name or "untitled_project"), role)
        super().__init__(hypermodel, *args, seed=seed, directory=directory, project_name=project_name, **kwargs)
        if isinstance(self.hypermodel, TransferHyperModel) and self.hypermodel.monitor is None:
            self.hypermodel.monitor = self.oracle.objective.name  # trials early-stop on what the search optimizes

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = time.time()
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        print(f"[tfft] trial {trial.trial_id} started: {values}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.time() - getattr(self, "_trial_started", time.time())
        score = trial.score
        if score is None and self._is_worker():  # the chief's oracle holds the result
            score = self.oracle.get_trial(trial.trial_id).score
        print(f"[tfft] trial {trial.trial_id} {trial.status.lower()} in {seconds:.1f} s: "
              f"{self.oracle.objective.name}={score}", flush=True)
        if self.export and not self._is_worker():
            export_results(self, plot=False)

    def search(self, *args, **kwargs):
        """KerasTuner's `search`, then `export_results` (by the process that owns the oracle).

        On the chief of a distributed search this serves the oracle until every worker is
        done (`tfft.tuning.launch.serve`), exporting the results as trials end.
        """
        if getattr(self.hypermodel, "trial_isolation", None) == "process":
            _check_picklable(args, kwargs)
        if launch.role() == "chief":
            self.save()
            launch.serve(self, on_progress=(lambda: export_results(self, plot=False)) if self.export else None)
        else:
            super().search(*args, **kwargs)
        if self.export and not self._is_worker():
            export_results(self)

    def _trial_seed(self, trial):
        """The seed of this execution of `trial`: from the search's seed and the trial id, so a
        trial rerun after a restart (or in another process) starts from the same weights and
        draws the same dropout masks. None when neither the hypermodel nor the tuner has a seed."""
        base = getattr(self.hypermodel, "seed", None)
        base = self.search_seed if base is None else base
        if base is None:
            return None
        if not hasattr(self, "_executions"):
            self._executions = {}  # executions of each trial in this process
        execution = self._executions[trial.trial_id] = self._executions.get(trial.trial_id, -1) + 1
        return trial_seed(base, trial.trial_id, execution)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        seed = self._trial_seed(trial)
        if hasattr(self.hypermodel, "trial_seed"):
            self.hypermodel.trial_seed = seed
        if getattr(self.hypermodel, "trial_isolation", None) != "process":
            if seed is not None:
                keras.utils.set_random_seed(seed)
            return super()._build_and_fit_model(trial, *args, **kwargs)
        return self._fit_in_a_fresh_process(trial, seed, args, kwargs)

    def _fit_in_a_fresh_process(self, trial, seed, args, kwargs):
        hp = trial.hyperparameters
        callbacks = [cb for cb in kwargs.pop("callbacks", [])
                     if not isinstance(cb, (tuner_utils.TunerCallback, tuner_utils.SaveBestEpoch))]
        if self.distribution_strategy is not None and not self.strategy_name:
            raise ValueError("trial_isolation='process' needs the strategy by name (make_tuner(strategy='mirrored')).")
        reload = None
        if isinstance(self, kt.Hyperband) and "tuner/trial_id" in hp.values:
            reload = self._get_checkpoint_fname(hp.values["tuner/trial_id"])
        payload = {
            "hypermodel": self.hypermodel, "hp": hp.get_config(), "args": args,
            "kwargs": dict(kwargs, callbacks=callbacks), "objective": self.oracle.objective,
            "checkpoint": self._get_checkpoint_fname(trial.trial_id),
            "build_config": self._get_build_config_fname(trial.trial_id),
            "reload": reload, "strategy": self.strategy_name, "seed": seed,
        }
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                out = pool.submit(_isolated_trial, payload).result()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise kt.errors.FailedTrialError(f"The trial's process died (out of memory?): {e}") from e
        if "results" in out:
            results = out["results"]
        else:
            results = keras.callbacks.History()
            results.history, results.epoch = out["history"], out["epoch"]
        tuner_utils.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results


class RandomSearch(_TfftTuner, kt.RandomSearch):
    """`keras_tuner.RandomSearch` with tfft's additions (see `_TfftTuner`)."""


class BayesianOptimization(_TfftTuner, kt.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` with tfft's additions (see `_TfftTuner`)."""


class Hyperband(_TfftTuner, kt.Hyperband):
    """`keras_tuner.Hyperband` with tfft's additions (see `_TfftTuner`)."""


class GridSearch(_TfftTuner, kt.GridSearch):
    """`keras_tuner.GridSearch` with tfft's additions (see `_TfftTuner`)."""


_TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband, "grid": GridSearch}


def make_tuner(hypermodel, *, algorithm="bayesian", objective="val_accuracy", max_trials=20, directory="tuning",
               project_name="tfft", strategy=None, overwrite=False, seed=None, max_epochs=None, factor=3,
               executions_per_trial=1, max_consecutive_failed_trials=3, export=True, results_dir=None, **kwargs):
    """A KerasTuner tuner for `hypermodel`, resumable, with results files.

    Args:
        hypermodel: a `TransferHyperModel` (or any `keras_tuner.HyperModel`).
        algorithm: `"random"`, `"bayesian"`, `"hyperband"` or `"grid"`.
        objective: the metric to optimize (`"val_accuracy"`, `"val_loss"`, ...), or a
            `keras_tuner.Objective`; the trials' early stopping watches it too.
        max_trials: trials to run (not for Hyperband, whose budget is `max_epochs`).
        directory, project_name: the tuner's files go to `directory/project_name/`.
        strategy: a `tf.distribute.Strategy` or a name for `tfft.get_strategy`
            (`"mirrored"`, ...): every trial runs under it; batch sizes are global.
        overwrite: `False` resumes the project found there (finished trials are kept);
            `True` starts over.
        seed: the oracle's random seed and the base of the trials' seeds.
        max_epochs, factor: Hyperband's budget (default `max_epochs`: the hypermodel's
            head + fine-tune epochs, or 10).
        executions_per_trial, max_consecutive_failed_trials: as in KerasTuner.
        export: write `trials.csv`, `best_config.json` and `trials.png`.
        results_dir: where they go (default: the project folder).
        **kwargs: more arguments for the KerasTuner tuner class.

    Returns:
        The tuner: call `tuner.search(train, validation_data=val)`.

    Raises:
        ValueError: an unknown algorithm; a project folder of another search; on a
            distributed search, `KERASTUNER_*` variables that do not fit together, a chief
            port that is in use, another chief serving the same folder, or (on a worker) no
            chief answering within `TFFT_CHIEF_TIMEOUT` seconds (default 15).

    Example:
        hypermodel = TransferHyperModel("resnet50", num_classes=5, search_space={"unfreeze": "none"})
        tuner = make_tuner(hypermodel, algorithm="random", max_trials=20, directory="runs/tune",
                           project_name="flowers")
        tuner.search(data.train, validation_data=data.validation)
    """
    if algorithm not in _TUNERS:
        raise ValueError(f"Unknown algorithm {algorithm!r}.{did_you_mean(algorithm, ALGORITHMS)} "
                         f"Use one of {ALGORITHMS}.")
    if algorithm == "hyperband" and getattr(hypermodel, "cv_folds", None):
        raise ValueError("cv_folds trains every fold from scratch and cannot continue Hyperband's trials; "
                         "use algorithm='random' or 'bayesian'.")
    strategy_name = strategy if isinstance(strategy, str) else None
    if strategy is not None:
        strategy = get_strategy(strategy)
    common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=max_consecutive_failed_trials,
                  directory=directory, project_name=project_name, overwrite=overwrite,
                  distribution_strategy=strategy, executions_per_trial=executions_per_trial, **kwargs)
    identity = search_identity(hypermodel, algorithm, objective)
    if launch.role() != "worker":
        _check_same_search(directory, project_name, identity, overwrite)
    if algorithm == "hyperband":
        if max_epochs is None:
            space = getattr(hypermodel, "search_space", {})
            epochs = [space.get("head_epochs"), 0 if space.get("unfreeze") == "none" else space.get("finetune_epochs")]
            max_epochs = sum(epochs) if all(isinstance(v, int) for v in epochs) else 10
        tuner = Hyperband(hypermodel, max_epochs=int(max_epochs), factor=factor, **common)
    else:
        tuner = _TUNERS[algorithm](hypermodel, max_trials=max_trials, **common)
    tuner.export = export
    tuner.results_dir = results_dir
    tuner.strategy_name = strategy_name
    if identity is not None and not tuner._is_worker():
        io.write_json(os.path.join(directory, project_name, SEARCH_FILE), identity)
    return tuner


def search_identity(hypermodel, algorithm, objective):
    """What makes two searches the same (algorithm, objective, backbone, task, classes,
    search space, base recipe), as JSON data; None for hypermodels other than `TransferHyperModel`."""
    if not isinstance(hypermodel, TransferHyperModel):
        return None
    backbone = hypermodel.backbone
    if not isinstance(backbone, str):  # a keras.Model: its architecture, by weight shapes
        backbone = f"{type(backbone).__name__}{[tuple(w.shape) for w in getattr(backbone, 'weights', [])]}"
    identity = {"algorithm": algorithm, "objective": getattr(objective, "name", objective), "backbone": backbone,
                "task": hypermodel.task, "num_classes": hypermodel.num_classes, "search_space": hypermodel.search_space,
                "recipe": {k: v for k, v in hypermodel.recipe.to_dict().items() if v is not None}}
    return json.loads(json.dumps(identity, default=str, sort_keys=True))


def _check_same_search(directory, project_name, identity, overwrite):
    """A project folder of another search is not resumed (KerasTuner would mix the two)."""
    path = os.path.join(directory, project_name, SEARCH_FILE)
    if overwrite or identity is None or not os.path.exists(path):
        return
    try:
        previous = io.read_json(path)
    except ValueError:
        previous = {}
    changed = []
    for key in sorted(set(identity) | set(previous)):
        old, new = previous.get(key), identity.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [(f"{key}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        elif old != new:
            changed.append((key, old, new))
    if changed:
        details = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, old, new in changed)
        raise ValueError(
            f"{os.path.join(directory, project_name)} holds another search ({details}); resuming it would mix "
            "the two searches' trials. Use another project_name or directory, or overwrite=True to start over.")
