r"""Searches fine-tuning hyperparameters with KerasTuner, as a config describes.

    python -m experiments.tune --config=experiments/configs/flowers_efficientnet_lite0.py \
        --workdir=runs/tune_flowers --config.tune.max_trials=20 [--config.tune.algorithm=random] \
        [--config.tune.search_space='{"unfreeze": "none", "learning_rate": {"low": 1e-4, "high": 1e-2}}']
    python -m experiments.train --config=runs/tune_flowers/best_config.json --workdir=runs/flowers_best

The workdir gets `config.json`, the tuner's project in `tuner/` (a rerun resumes the search:
finished trials are kept), `trials.csv` (one row per trial), `best_config.json` (the winner
as a config that `experiments.train` retrains, with the data settings of this run) and
`trials.png` (the objective per trial).

`config.tune.search_space` is JSON over the keys of `tfft.tuning.DEFAULT_SEARCH_SPACE`: a
list is a choice, `{"low": a, "high": b}` a range, a scalar fixes the value, `null` drops
the key. Epochs come from the config (`head_epochs`, `finetune_epochs`) unless searched.
"""

import json
import os

from absl import flags

from experiments import config as config_lib
from experiments import entry, inputs, modeling
from experiments import workdir as workdir_lib


def define_flags(module_name=__name__):
    """`--config`, `--workdir`, `--debug` (defined only when this module is the program)."""
    entry.define_config_flag(module_name=module_name)
    entry.define_string_flag("workdir", None, "Folder the search writes to. Rerunning with the same workdir "
                              "resumes the search.", module_name=module_name, required=True)
    entry.define_debug_flag(module_name)


def search_space(config):
    """`TransferHyperModel`'s `search_space` from `config.tune.search_space` (JSON) and the config's epochs."""
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
                raise config_lib.UsageError(f"search_space[{key!r}] = {value}: a range is {{\"low\": a, \"high\": b}}.")
            value = (value["low"], value["high"])
        space[key] = value
    space.setdefault("head_epochs", int(config.head_epochs))
    space.setdefault("finetune_epochs", int(config.finetune_epochs))
    return space


def build_hypermodel(config, bundle):
    """The `tfft.TransferHyperModel` of a config and its data."""
    import tfft

    text = bundle.modality in ("text", "text_pair")
    build_kwargs = {}
    backbone = config.backbone
    if text:
        build_kwargs.update(sequence_length=int(config.sequence_length),
                            sentence_pairs=bundle.modality == "text_pair")
        if backbone == config_lib.TINY_BERT:
            backbone, preprocessor = modeling.tiny_bert(modeling.bundle_texts(bundle), int(config.sequence_length),
                                                      seed=int(config.seed))
            build_kwargs["preprocessor"] = preprocessor
    num_classes = int(config.num_classes) or bundle.num_classes
    size = None if text else (int(bundle.image_size[0]), int(bundle.image_size[1]), 3)
    try:
        return tfft.TransferHyperModel(
            backbone, num_classes=num_classes if config.task != "binary" else None, task=config.task,
            weights=modeling.weights_arg(config.weights) if backbone != config_lib.TINY_BERT else None, input_shape=size,
            search_space=search_space(config), seed=int(config.seed), build_kwargs=build_kwargs,
            cache_features=config_lib.parse_bool_or_auto(config.cache_features, "cache_features"),
            train_batchnorm=bool(config.train_batchnorm))
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
    import tfft
    from tfft import io

    modeling.check_backbone(config)
    inputs.check_data(config)
    resumed = workdir_lib.prepare_workdir(config, workdir, write=entry.is_chief())
    print(f"[tfft] {'resuming' if resumed else 'starting'} a {config.tune.algorithm} search "
          f"({config.tune.max_trials} trials, objective {config.tune.objective}) in {os.path.abspath(workdir)}",
          flush=True)
    with entry.runtime(config) as strategy, inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch)
        print(bundle.summary(), flush=True)
        hypermodel = build_hypermodel(config, bundle)
        try:
            tuner = tfft.make_tuner(
                hypermodel, algorithm=config.tune.algorithm, objective=config.tune.objective,
                max_trials=int(config.tune.max_trials), executions_per_trial=int(config.tune.executions_per_trial),
                directory=os.path.abspath(workdir), project_name="tuner", strategy=strategy, overwrite=False,
                seed=int(config.seed))
        except ValueError as e:
            raise config_lib.UsageError(f"Cannot set up the tuner: {e}") from None
        verbose = int(config.verbose) if str(config.verbose).isdigit() else 1
        tuner.search(bundle.train, validation_data=bundle.validation, verbose=verbose)
        paths = tfft.tuning.export_results(tuner, workdir)
    if paths is None:  # a distributed worker: the chief writes the results
        return {}
    best = io.read_json(paths["best_config"]) if paths.get("best_config") else None
    if best is None:
        raise RuntimeError(f"No trial of the search in {workdir} finished; see the errors above and "
                           f"{paths['trials']}.")
    print(f"[tfft] best trial: {config.tune.objective} = {best.get('score')}", flush=True)
    for name in ("trials", "best_config", "plot"):
        if paths.get(name):
            print(f"[tfft]   {os.path.basename(paths[name])}: {os.path.abspath(paths[name])}", flush=True)
    print(f"[tfft] retrain the winner: python -m experiments.train --config={paths['best_config']} "
          f"--workdir=<new workdir>", flush=True)
    return {**paths, "best": best}


def main(argv):
    entry.start(argv, "--workdir=DIR --config.<key>=<value>", run, flags.FLAGS.config, flags.FLAGS.workdir)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.tune`, `tfft tune`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
