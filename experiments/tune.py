r"""Searches fine-tuning hyperparameters with KerasTuner, as a config describes.

    python -m experiments.tune --config=experiments/configs/flowers_efficientnet_lite0.py \
        --workdir=runs/tune_flowers --config.tune.max_trials=20 [--config.tune.algorithm=random] \
        [--config.tune.search_space='{"unfreeze": "none", "learning_rate": {"low": 1e-4, "high": 1e-2}}']
    python -m experiments.train --config=runs/tune_flowers/best_config.json --workdir=runs/flowers_best

The workdir gets `config.json`, the tuner's project in `tuner/` (a rerun resumes the search:
finished trials are kept), `trials.csv` (one row per trial), `best_config.json` (the winner
as a config that `experiments.train` retrains, with the data settings of this run) and
`trials.png` (the objective per trial).

`config.tune.search_space` is JSON over the keys of `tfft.tuning.DEFAULT_SEARCH_SPACE` (and
any recipe key): a list is a choice, `{"low": a, "high": b}` a range, a scalar fixes the
value, `null` drops the key (tfft's rule decides). Every trial starts from the config's
recipe keys (`head_epochs`, `finetune_learning_rate`, ...; unset ones follow the rule) and is
a `tfft.fine_tune` run, so `best_config.json` retrains to the trial's model.

Many processes (one host, N GPUs, one worker per GPU, plus the chief), with one command:

    python -m experiments.tune --config=... --workdir=runs/tune --workers=4

(`tfft.tuning.launch_local`: each worker sees one GPU through `CUDA_VISIBLE_DEVICES`; logs in
`<workdir>/logs/tuning/`). Across machines, start the same command without `--workers` on
each with `KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` (README).
"""

import json
import os
import sys

import tensorflow as tf
from absl import flags

import tfft
from experiments import config as config_lib
from experiments import entry, inputs, modeling
from experiments import workdir as workdir_lib
from tfft import io, tuning
from tfft.tuning import launch as launch_lib


def define_flags(module_name=__name__):
    """`--config`, `--workdir`, `--workers`, `--gpus_per_worker`, `--debug` (defined only when
    this module is the program)."""
    entry.define_config_flag(module_name=module_name)
    entry.define_string_flag("workdir", None, "Folder the search writes to. Rerunning with the same workdir "
                              "resumes the search.", module_name=module_name, required=True)
    flags.DEFINE_integer("workers", 0, "Run the search as a KerasTuner chief and this many workers on this "
                         "machine (tfft.tuning.launch_local); 0: one process.",
                         module_name=entry.module_key(module_name))
    flags.DEFINE_integer("gpus_per_worker", -1, "With --workers: GPUs each worker sees (CUDA_VISIBLE_DEVICES); "
                         "-1: one each when this machine has at least --workers GPUs, else all.",
                         module_name=entry.module_key(module_name))
    entry.define_debug_flag(module_name)


def search_space(config):
    """`TransferHyperModel`'s `search_space` from `config.tune.search_space` (JSON)."""
    try:
        values = json.loads(config.tune.search_space or "{}")
    except json.JSONDecodeError as e:
        raise config_lib.UsageError(f"config.tune.search_space is not valid JSON ({e}): "
                                    f"{config.tune.search_space!r}.") from None
    if not isinstance(values, dict):
        raise config_lib.UsageError("config.tune.search_space must be a JSON object, e.g. "
                                    '\'{"learning_rate": {"low": 1e-4, "high": 1e-2}, "optimizer": ["adam"]}\'.')
    space = {}
    for key, value in values.items():
        if isinstance(value, dict):
            if set(value) != {"low", "high"}:
                raise config_lib.UsageError(
                    f"search_space[{key!r}] = {value}: a range is {{\"low\": a, \"high\": b}}.")
            value = (value["low"], value["high"])
        space[key] = value
    return space


def build_hypermodel(config, bundle):
    """The `tfft.TransferHyperModel` of a config and its data (the config's dropout is fixed unless searched)."""
    text = bundle.modality in ("text", "text_pair")
    build_kwargs = {}
    backbone = config.backbone
    if text:
        build_kwargs.update(sequence_length=int(config.sequence_length),
                            sentence_pairs=bundle.modality == "text_pair")
        if backbone == config_lib.TINY_BERT:
            backbone, preprocessor = modeling.tiny_bert(modeling.bundle_texts(bundle), int(config.sequence_length),
                                                        seed=int(config.data.seed))
            build_kwargs["preprocessor"] = preprocessor
    num_classes = int(config.num_classes) or bundle.num_classes
    size = None if text else (int(bundle.image_size[0]), int(bundle.image_size[1]), 3)
    space = search_space(config)
    if config.dropout is not None:
        space.setdefault("dropout", float(config.dropout))
    try:
        return tfft.TransferHyperModel(
            backbone, num_classes=num_classes if config.task != "binary" else None, task=config.task,
            weights=modeling.weights_arg(config.weights) if backbone != config_lib.TINY_BERT else None,
            input_shape=size,
            search_space=space, seed=int(config.seed), build_kwargs=build_kwargs,
            recipe=modeling.recipe_from_config(config),
            cache_features=config_lib.parse_bool_or_auto(config.cache_features, "cache_features"))
    except ValueError as e:
        raise config_lib.UsageError(f"Cannot set up the search: {e}") from None


def run(config, workdir):
    """Runs (or resumes) the search of `config` in `workdir`; returns the result paths and best trial.

    Returns:
        `{"trials": path, "best_config": path, "plot": path, "best": best_config dict}`.

    Example:
    ```python
    from experiments import tune
    from experiments.configs import digits_efficientnet_lite0

    config = digits_efficientnet_lite0.get_config("smoke")
    config.tune.max_trials = 2
    result = tune.run(config, "/tmp/tune_digits")
    ```
    """
    modeling.check_backbone(config)
    inputs.check_data(config)
    try:  # before the data are read: a worker without its chief ends at once (make_tuner checks again)
        launch_lib.check_distributed_env()
    except ValueError as e:
        raise config_lib.UsageError(str(e)) from None
    owner = launch_lib.role() != "worker"  # the chief (or the only process) writes the workdir's files
    resumed = workdir_lib.prepare_workdir(config, workdir, write=owner and entry.is_chief())
    print(f"[tfft] {'resuming' if resumed else 'starting'} a {config.tune.algorithm} search "
          f"({config.tune.max_trials} trials, objective {config.tune.objective}) in {os.path.abspath(workdir)}"
          f"{'' if launch_lib.role() == 'single' else ' as ' + os.environ.get('KERASTUNER_TUNER_ID', '')}", flush=True)
    with entry.runtime(config) as strategy, inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch)
        print(bundle.summary(task=config.task), flush=True)
        hypermodel = build_hypermodel(config, bundle)
        try:
            tuner = tfft.make_tuner(
                hypermodel, algorithm=config.tune.algorithm, objective=config.tune.objective,
                max_trials=int(config.tune.max_trials), executions_per_trial=int(config.tune.executions_per_trial),
                directory=os.path.abspath(workdir), project_name="tuner", strategy=strategy, overwrite=False,
                seed=int(config.seed), results_dir=os.path.abspath(workdir))
        except ValueError as e:
            raise config_lib.UsageError(f"Cannot set up the tuner: {e}") from None
        verbose = int(config.verbose) if str(config.verbose).isdigit() else 1
        tuner.search(bundle.train, validation_data=bundle.validation, verbose=verbose)
    if not owner:
        return {}  # a distributed worker: the chief writes the results
    paths = {name: os.path.join(workdir, file) for name, file in (
        ("trials", tuning.TRIALS_CSV), ("best_config", tuning.BEST_CONFIG), ("plot", tuning.TRIALS_PLOT))}
    best = io.read_json(paths["best_config"]) if os.path.exists(paths["best_config"]) else None
    if best is None:
        raise RuntimeError(f"No trial of the search in {workdir} finished; see the errors above and "
                           f"{paths['trials']}.")
    print(f"[tfft] best trial: {config.tune.objective} = {best.get('score')}", flush=True)
    for name in ("trials", "best_config", "plot"):
        if os.path.exists(paths[name]):
            print(f"[tfft]   {os.path.basename(paths[name])}: {os.path.abspath(paths[name])}", flush=True)
    print(f"[tfft] retrain the winner: python -m experiments.train --config={paths['best_config']} "
          f"--workdir=<new workdir>", flush=True)
    return {**paths, "best": best}


def run_distributed(argv, workdir, workers, gpus_per_worker=-1):
    """Runs this same command as a chief and `workers` workers on this machine; returns the chief's status.

    Each process's output goes to `<workdir>/logs/tuning/<role>.log`; one line per process says
    how it ended. With GPUs, each worker sees `gpus_per_worker` of them (-1: one each when there
    are at least `workers`, else every worker sees all).
    """
    if launch_lib.role() != "single":
        raise config_lib.UsageError("--workers starts the chief and the workers itself; do not set "
                                    "KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP with it.")
    gpus = len(tf.config.list_physical_devices("GPU"))
    if gpus_per_worker < 0:
        gpus_per_worker = 1 if gpus >= workers else None
    command = [sys.executable, "-m", "experiments.tune"] + [a for a in argv[1:] if not a.startswith(
        ("--workers", "--gpus_per_worker"))]
    logs = os.path.join(workdir, "logs", "tuning")
    print(f"[tfft] starting a chief and {workers} workers on this machine"
          f"{f', {gpus_per_worker} GPU(s) each' if gpus_per_worker else ''}; logs in {logs}", flush=True)
    codes = tuning.launch_local(command, num_workers=workers, gpus_per_worker=gpus_per_worker or None, log_dir=logs)
    for name, code in codes.items():
        print(f"[tfft]   {name}: {'done' if code == 0 else f'exit status {code}'} ({os.path.join(logs, name)}.log)",
              flush=True)
    return max(codes.values())


def main(argv):
    if flags.FLAGS.workers > 0:
        entry.quiet_logs()
        sys.exit(entry.guarded(run_distributed, sys.argv, flags.FLAGS.workdir, flags.FLAGS.workers,
                               flags.FLAGS.gpus_per_worker))
    entry.start(argv, "--workdir=DIR --config.<key>=<value>", run, flags.FLAGS.config, flags.FLAGS.workdir)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.tune`, `tfft tune`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
