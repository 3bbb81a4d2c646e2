"""Memory across tuning trials: tfft against the floor of Keras itself (issue 6).

Command (appends a section to benchmarks/RESULTS.md; about two minutes on 2 cores):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_trial_memory.py

Three sides, each in its own fresh process, `--trials` trials of a small model on the same
arrays, RSS read after each trial (after `gc.collect()`):

* `keras`: no tuner at all, the loop Keras's own docs recommend: `clear_session()`, build,
  compile, `fit`, delete. Whatever this grows per model is the floor of Keras/TensorFlow.
* `tfft`: a `tfft.TransferHyperModel` random search (head-only trials, features cached).
* `tfft_process`: the same search with `trial_isolation="process"` (each trial in a fresh
  process; the search process only keeps the results).

Reported: RSS after the first and last trial and the median growth per trial (of trials 3
to last, after warm-up allocations).
"""

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SIDES = ("keras", "tfft", "tfft_process")
LABELS = {"keras": "plain Keras loop: clear_session, build, compile, fit (no tuner)",
          "tfft": "tfft.TransferHyperModel + make_tuner (random, head-only, cached features)",
          "tfft_process": "the same, trial_isolation=\"process\""}
SPACE = {"unfreeze": "none", "head_epochs": 1, "batch_size": [4, 8], "learning_rate": [1e-3, 3e-3, 1e-2],
         "optimizer": ["adam", "sgd"], "head_units": [0, 8, 16], "dropout": [0.0, 0.2], "weight_decay": 0.0,
         "warmup_fraction": 0.0, "label_smoothing": 0.0}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", default=str(common.RESULTS), help="results file ('' to only print)")
    return parser.parse_args(argv)


def tiny_backbone(keras):
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny")


def one_side(args):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.arange(64) % 2
    x = rng.uniform(0, 200, (64, 32, 32, 3)).astype("float32")
    rss = []
    if args.side == "keras":
        for _ in range(args.trials):
            keras.backend.clear_session()
            model = keras.Sequential([tiny_backbone(keras), keras.layers.GlobalAveragePooling2D(),
                                      keras.layers.Dropout(0.2), keras.layers.Dense(2, activation="softmax")])
            model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
            model.fit(x[:48], y[:48], validation_data=(x[48:], y[48:]), epochs=1, batch_size=8, verbose=0)
            del model
            gc.collect()
            rss.append(common.rss_mb())
    else:
        import tfft
        from tfft import tuning

        data = tfft.data.from_arrays(x, y, validation_split=0.25, batch_size=8, seed=0)
        hypermodel = tuning.TransferHyperModel(
            tiny_backbone(keras), num_classes=2, weights=None, seed=0, search_space=SPACE,
            trial_isolation="process" if args.side == "tfft_process" else None)

        class Measured(tuning.RandomSearch):
            def on_trial_end(self, trial):
                super().on_trial_end(trial)
                gc.collect()
                rss.append(common.rss_mb())

        with tempfile.TemporaryDirectory() as directory:
            tuner = Measured(hypermodel=hypermodel, objective="val_accuracy", max_trials=args.trials, seed=1,
                             directory=directory, project_name="p", overwrite=True)
            tuner.export = False
            if args.side == "tfft_process":  # arrays: what a fresh process receives by pickling
                tuner.search(x[:48], y[:48], validation_data=(x[48:], y[48:]), verbose=0)
            else:
                tuner.search(data.train, validation_data=data.validation, verbose=0)
    common.dump({"side": args.side, "rss": rss})


def main(argv=None):
    args = parse_args(argv)
    if args.side:
        one_side(args)
        return 0
    started, load = time.time(), common.load_average()
    rows = []
    for side in SIDES:
        proc = subprocess.run([sys.executable, __file__, "--side", side, "--trials", str(args.trials)],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
        rss = common.parse_result(proc.stdout)["rss"]
        steps = [b - a for a, b in zip(rss[2:], rss[3:])]
        rows.append([LABELS[side], len(rss), f"{rss[0]:.0f}", f"{rss[-1]:.0f}", f"{rss[-1] - rss[2]:.1f}",
                     f"{common.median(steps):.2f}"])
        print(rows[-1], flush=True)
    body = common.table(["side", "trials", "RSS after trial 1 (MB)", "RSS after last (MB)",
                         "growth trial 3 to last (MB)", "median growth per trial (MB)"], rows)
    notes = ["the tiny CNN of the tests (32x32x3 input, two convolutions) with a pooled head, 48 train / 16 "
             "validation examples, one epoch per trial; RSS of the search process after `gc.collect()`",
             "the `keras` side is the floor: TensorFlow keeps a few MB per traced train/eval function even after "
             "`keras.backend.clear_session()` and `gc.collect()` (the traced functions of earlier models); the "
             "`keras` side also rebuilds the backbone each time, which tfft's head-only trials share, and "
             "`trial_isolation=\"process\"` is the way around the growth for long searches"]
    common.report("Memory across tuning trials: tfft vs the floor of Keras", body, notes=notes,
                  out=args.out or None, started=started, load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
