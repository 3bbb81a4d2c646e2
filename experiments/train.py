r"""Fine-tunes a backbone on a dataset, as a config file describes.

    python -m experiments.train --config=experiments/configs/flowers_resnet50.py --workdir=runs/flowers \
        [--config.<key>=<value> ...]

The workdir gets `config.json` (written before training starts), `model.keras` (the best
model), `metrics.json` (every split evaluated), `history.csv`, TensorBoard logs in `logs/`,
`curves.png`, and for classification `confusion_matrix.png` and `per_class.csv`. Rerunning
the same command resumes an interrupted run; `--config.overwrite=True` starts over.
`--config.cv_folds=K` trains K models on stratified folds instead (in `fold_<k>/`) and
writes each fold's metrics with their mean and standard deviation.
"""

import os

import keras
import numpy as np
from absl import flags

import tfft
from experiments import config as config_lib
from experiments import entry, inputs, modeling
from experiments import workdir as workdir_lib
from tfft import io, reporting
from tfft.run_state import RunState


def define_flags(module_name=__name__):
    """`--config`, `--workdir`, `--debug` (defined only when this module is the program)."""
    entry.define_config_flag(module_name=module_name)
    entry.define_string_flag("workdir", None, "Folder the run writes to (created if missing). Rerunning with the "
                              "same workdir resumes the run.", module_name=module_name, required=True)
    entry.define_debug_flag(module_name)


def _say(message):
    print(f"[tfft] {message}", flush=True)


def run(config, workdir, *, callbacks=None):
    """Trains (or resumes) the experiment `config` in `workdir`; returns what `metrics.json` holds.

    Args:
        config: a config from `experiments/configs/` (see `experiments.config_lib.base_config`).
        workdir: the run's folder. A second call with the same config resumes the run
            (finished phases are restored, an interrupted one continues from its last epoch).
        callbacks: extra Keras callbacks for every phase.

    Returns:
        The metrics dict written to `workdir/metrics.json`.

    Example:
    ```python
    from experiments import train
    from experiments.configs import flowers_resnet50

    metrics = train.run(flowers_resnet50.get_config("smoke"), "/tmp/flowers_smoke")
    print(metrics["test"]["accuracy"])
    ```
    """
    modeling.check_backbone(config)
    inputs.check_data(config)
    chief = entry.is_chief()
    resumed = workdir_lib.prepare_workdir(config, workdir, write=chief)
    _say(f"{'resuming' if resumed else 'starting'} {config.backbone} in {os.path.abspath(workdir)}")
    with entry.runtime(config) as strategy, inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch)
        print(bundle.summary(task=config.task), flush=True)
        if int(config.cv_folds) > 1:
            metrics = _cross_validate(config, workdir, bundle, strategy, callbacks, chief)
        else:
            metrics = _train(config, workdir, bundle, strategy, callbacks, chief)
    if chief:
        io.write_json(os.path.join(workdir, "metrics.json"), metrics)
        _print_outputs(workdir, metrics)
    return metrics


def _train(config, workdir, bundle, strategy, callbacks, chief, *, train=None, validation=None):
    """One model: fine-tune, then score the best checkpoint on every split; writes the reports.

    Every worker of a multi-worker run passes the same `workdir`: `fine_tune` decides where
    each one writes (`tfft.distribute.worker_workdir`: the chief there, the others a private
    copy of its run state, so that all resume alike).
    """
    train = train if train is not None else bundle.train
    validation = validation if validation is not None else bundle.validation
    model = modeling.build_model(config, bundle, strategy=strategy)
    class_weight = tfft.data.class_weights(bundle) if config.class_weights else None
    if class_weight:
        _say("class weights (balanced, from the training labels): "
             + ", ".join(f"{bundle.class_names[c]} {w:.3g}" for c, w in sorted(class_weight.items())))
    result = tfft.fine_tune(model, train, validation, workdir=workdir, callbacks=callbacks,
                            class_weight=class_weight, **modeling.fine_tune_kwargs(config))
    if not chief:
        return {"validation": result.metrics}
    best = _best_model(model, workdir)
    splits = {"validation": validation, "test": bundle.test}
    metrics = {"backbone": config.backbone, "task": config.task, "class_names": list(bundle.class_names),
               "phases": [{"name": p.name, "epochs": [p.initial_epoch, p.final_epoch], "resumed": p.resumed,
                           "cached_features": p.cached_features} for p in result.phases],
               "recipe": result.recipe.to_dict()}
    reports = {}
    for name, dataset in splits.items():
        if dataset is not None:
            metrics[name], reports[name] = modeling.score(
                best, dataset, class_names=bundle.class_names, task=config.task,
                label_smoothing=result.recipe.label_smoothing)
            if reports[name]:
                metrics[name]["per_class"] = reports[name]["per_class"]
                metrics[name]["confusion_matrix"] = reports[name].get("confusion_matrix")
            _say(f"{name}: {modeling.summarize_metrics(metrics[name])}")
    metrics["artefacts"] = _write_reports(workdir, config, bundle, reports)
    return metrics


def _best_model(model, workdir):
    """The checkpoint the run kept (`model.keras`); the final model when there is none yet."""
    path = os.path.join(workdir, "model.keras")
    if os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    io.save_model(model, path)
    return model


def _write_reports(workdir, config, bundle, reports):
    """curves.png, and for classification confusion_matrix.png and per_class.csv (history.csv is
    the run state's, written by `fine_tune` after every epoch)."""
    written = {"model": "model.keras", "config": "config.json", "logs": "logs"}
    rows = RunState(workdir).rows()
    if rows:
        keys = [k for k in rows[0] if k not in ("epoch", "phase")]
        history = {k: [r.get(k) for r in rows] for k in keys}
        boundaries, previous = [], rows[0]["phase"]
        for row in rows[1:]:
            if row["phase"] != previous:
                boundaries.append((row["phase"], row["epoch"]))
                previous = row["phase"]
        reporting.plot_curves(history, os.path.join(workdir, "curves.png"), epochs=[r["epoch"] for r in rows],
                              phase_boundaries=boundaries, title=f"{config.backbone} ({config.task})")
        written.update(history="history.csv", curves="curves.png")
    split = "test" if reports.get("test") else "validation"
    if reports.get(split):
        files = reporting.write_classification_artefacts(reports[split], bundle.class_names or
                                                         [r["class"] for r in reports[split]["per_class"]],
                                                         workdir, split=split)
        written.update({k: os.path.basename(v) for k, v in files.items()})
        print(reporting.format_per_class(reports[split]["per_class"]), flush=True)
    return written


def _cross_validate(config, workdir, bundle, strategy, callbacks, chief):
    """K models on stratified folds of train + validation; the test split stays out."""
    k = int(config.cv_folds)
    try:
        folds = list(tfft.data.kfold(bundle, k=k))
    except ValueError as e:
        raise config_lib.UsageError(f"cv_folds={k}: {e}") from None
    results = []
    for i, (train, validation) in enumerate(folds):
        _say(f"fold {i + 1}/{k}")
        fold_dir = os.path.join(workdir, f"fold_{i}")
        fold = _train(config, fold_dir, bundle, strategy, callbacks, chief, train=train, validation=validation)
        results.append({"fold": i, **{s: _numbers(fold[s]) for s in ("validation", "test") if s in fold}})
    metrics = {"backbone": config.backbone, "task": config.task, "cv_folds": k, "folds": results,
               "class_names": list(bundle.class_names), "mean": {}, "std": {}}
    for split in ("validation", "test"):
        rows = [r[split] for r in results if split in r]
        if rows:
            keys = [key for key in rows[0] if all(key in r for r in rows)]
            metrics["mean"][split] = {key: float(np.mean([r[key] for r in rows])) for key in keys}
            metrics["std"][split] = {key: float(np.std([r[key] for r in rows])) for key in keys}
            _say(f"{k}-fold {split}: " + ", ".join(
                f"{key} {metrics['mean'][split][key]:.4f} +/- {metrics['std'][split][key]:.4f}"
                for key in keys if key != "examples"))
    return metrics


def _numbers(values):
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _print_outputs(workdir, metrics):
    _say(f"workdir: {os.path.abspath(workdir)}")
    for name in ("model.keras", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png", "per_class.csv"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            _say(f"  {name}: {os.path.abspath(path)}")


def main(argv):
    entry.start(argv, "--workdir=DIR --config.<key>=<value>", run, flags.FLAGS.config, flags.FLAGS.workdir)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.train`, `tfft train`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
