"""The `tfft` console script: `tfft train|tune|evaluate|export|demo [flags]`.

Each subcommand is `python -m experiments.<subcommand>` with the same flags:

    tfft train --config=experiments/configs/flowers_resnet50.py:smoke --workdir=/tmp/smoke
    tfft evaluate --workdir=/tmp/smoke --split=validation
    tfft export --workdir=/tmp/smoke --format=tflite
"""

import importlib
import sys

COMMANDS = {
    "train": "fine-tune a backbone as a config describes",
    "tune": "search hyperparameters with KerasTuner; writes trials.csv and best_config.json",
    "evaluate": "re-score a run's saved model on a split or on new data",
    "export": "export a run's model as a SavedModel, TFLite or .keras file, checked against Keras",
    "demo": "fine-tune EfficientNet-Lite0 on scikit-learn's digits (offline, a few minutes)",
}


def usage():
    lines = ["usage: tfft <command> [flags]   (tfft <command> --help lists the flags)", "", "commands:"]
    lines += [f"  {name:<9} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    """Dispatches `tfft <command> ...` to `experiments.<command>`'s absl `main`."""
    from absl import app

    from experiments import entry

    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(usage())
        return 0
    command = argv[1]
    if command not in COMMANDS:
        print(f"error: unknown command {command!r}.\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"experiments.{command}")

    sys.argv = [f"tfft {command}"] + argv[2:]
    module.define_flags(module_name=sys.argv[0])
    app.run(module.main, argv=sys.argv, flags_parser=entry.parse_flags)
    return 0


if __name__ == "__main__":
    sys.exit(main())
