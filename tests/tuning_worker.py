"""A tiny tuning script that tests run in subprocesses (kill / resume, chief and workers,
MirroredStrategy over logical CPU devices, which must be set before TensorFlow starts).

    python tests/tuning_worker.py --directory=DIR --max_trials=4 [--logical_cpus=2 --strategy=mirrored]

Prints one JSON line `RESULT {...}` at the end: the tuner's role, the completed trials it
can see (chief / single process) and what the strategy checks found.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def parse():
    parser = argparse.ArgumentParser()
    parser.add_argument("--directory", required=True)
    parser.add_argument("--project_name", default="worker_test")
    parser.add_argument("--algorithm", default="random")
    parser.add_argument("--max_trials", type=int, default=3)
    parser.add_argument("--head_epochs", type=int, default=1)
    parser.add_argument("--epoch_sleep", type=float, default=0.0)
    parser.add_argument("--logical_cpus", type=int, default=0)
    parser.add_argument("--strategy", default=None)
    parser.add_argument("--examples", type=int, default=24)
    parser.add_argument("--unfreeze", default="none")
    parser.add_argument("--finetune_epochs", type=int, default=1)
    return parser.parse_args()


def main():
    args = parse()
    import tensorflow as tf

    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)
    import keras
    import numpy as np

    import tfft
    from tfft import tuning

    class Sleep(keras.callbacks.Callback):
        """Makes epochs slow enough for a test to kill the search mid-way."""

        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds

        def on_epoch_end(self, epoch, logs=None):
            time.sleep(self.seconds)

    class CountBatches(keras.callbacks.Callback):
        """Records the steps of the first epoch and the model's replica count."""

        seen = []

        def on_epoch_begin(self, epoch, logs=None):
            self.steps = 0

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            CountBatches.seen.append({"steps": self.steps,
                                      "replicas": self.model.distribute_strategy.num_replicas_in_sync})

    rng = np.random.default_rng(0)
    n = args.examples
    y = np.arange(n) % 2
    x = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    x[y == 1, :16] += 60.0
    data = tfft.data.from_arrays(np.clip(x, 0, 255), y, validation_split=0.25, batch_size=8, seed=0)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(h)
    backbone = keras.Model(inputs, h, name="tiny")

    hypermodel = tuning.TransferHyperModel(
        backbone, num_classes=2, weights=None, seed=0,
        search_space={"unfreeze": args.unfreeze, "head_epochs": args.head_epochs,
                      "finetune_epochs": args.finetune_epochs, "batch_size": [4, 8],
                      "learning_rate": [1e-3, 1e-2], "optimizer": "adam", "head_units": [0, 8],
                      "dropout": [0.0, 0.2], "weight_decay": 0.0, "warmup_fraction": 0.0, "label_smoothing": 0.0},
    )
    exports = []
    original_export = tuning.tuners.export_results

    def counting_export(*a, **k):  # who writes the results files
        exports.append(1)
        return original_export(*a, **k)

    tuning.tuners.export_results = counting_export
    tuner = tuning.make_tuner(hypermodel, algorithm=args.algorithm, max_trials=args.max_trials, seed=1,
                              directory=args.directory, project_name=args.project_name, strategy=args.strategy)
    callbacks = [CountBatches()]
    if args.epoch_sleep:
        callbacks.append(Sleep(args.epoch_sleep))
    tuner.search(data.train, validation_data=data.validation, callbacks=callbacks, verbose=0)

    role = os.environ.get("KERASTUNER_TUNER_ID", "single")
    trials = tuning.list_trials(tuner)
    result = {
        "role": role,
        "completed": None if trials is None else sorted(t.trial_id for t in trials if t.status == "COMPLETED"),
        "batches": CountBatches.seen,
        "train_examples": int(len(data.labels["train"])),
        "is_mirrored": isinstance(tuner.distribution_strategy, tf.distribute.MirroredStrategy),
        "exports": len(exports),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    sys.exit(main())
