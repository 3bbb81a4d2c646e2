r"""A tiny resumable `tfft.fine_tune` run that can SIGKILL itself at a chosen point.

`tests/test_faults.py` starts this script in a fresh process, lets it kill itself (or kills
it from outside), then starts the same command again without the kill and compares the
result with a run that was never interrupted.

    python tests/fault_runner.py WORKDIR [--kill=SPEC] [--dropout=RATE] [--seed=N] [--patience=N] [--deterministic]

The run: a small CNN backbone (conv, BatchNorm, conv) at 32x32, 64 training and 16
validation examples in batches of 8 (8 steps per epoch), 3 head epochs on cached backbone
features, then 3 fine-tune epochs with the top two backbone layers unfrozen under a cosine
schedule with warmup. `--kill` (or the environment variable `TFFT_KILL_AT`) names where the
process SIGKILLs itself, once:

* `batch:<epoch>:<batch>`: at the end of that training batch (epochs count across phases:
  0-2 head, 3-5 fine-tune).
* `epoch_begin:<epoch>` / `epoch_end:<epoch>`: at the start / end of an epoch (`epoch_end`
  runs after every other callback, so after that epoch's checkpoint and backup writes).
* `before_replace:<glob>:<n>`: inside `tfft.io.atomic_path`, on the n-th atomic write in
  this process of a file whose name matches `<glob>`, after the temporary file is written,
  before it replaces the file. `torn_write:<glob>:<n>`: the same, with the temporary file
  cut to half its size first (a write that never finished). `after_replace:<glob>:<n>`:
  right after the replace.
* `phase_done:<phase>`: after `fine_tune` recorded the phase as finished (weights saved,
  state written, backup removed), before the next phase starts.

With `--tune=random|hyperband` the run is a KerasTuner search instead (`tfft.make_tuner` on
a `tfft.TransferHyperModel` of the same backbone and data, head and fine-tune epochs in
the search space) with its files in WORKDIR/search, and these kill specs besides the
`*_replace` / `torn_write` ones (e.g. on `best_config.json` or `trials.csv`):

* `trial_end:<n>`: after the n-th trial of this process ended and its results were exported;
* `trial_batch:<n>:<batch>`: at that training batch of the n-th trial of this process.

Each trial start is appended to WORKDIR/trials_started.jsonl (process id, trial id); at the
end WORKDIR/result.json holds every trial's status, score and hyperparameters.

Outputs in WORKDIR besides fine_tune's own files: `probes.jsonl` (appended, one line per
epoch start: process id, epoch, optimizer iterations, learning rate, trainable variables,
checksums of the model's and the optimizer's variables) and, when the run ends,
`result.json` (final metrics, history, final weights checksum).
"""

import argparse
import contextlib
import fnmatch
import json
import os
import signal
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfft  # noqa: E402
from tfft import run_state  # noqa: E402
from tfft import io as io_lib  # noqa: E402

HEAD_EPOCHS, FINETUNE_EPOCHS, BATCH_SIZE, N_TRAIN, N_VAL = 3, 3, 8, 64, 16
SHAPE = (32, 32, 3)
STEPS_PER_EPOCH = N_TRAIN // BATCH_SIZE


def die(reason):
    """SIGKILL this process: no cleanup, no `finally`, no flush beyond what is on disk."""
    print(f"[fault_runner] SIGKILL at {reason}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_VAL
    y = (np.arange(n) % 3).astype("int64")
    x = (rng.random((n,) + SHAPE) * 120 + y[:, None, None, None] * 60).astype("float32")
    train = (x[:N_TRAIN], y[:N_TRAIN])
    val = tf.data.Dataset.from_tensor_slices((x[N_TRAIN:], y[N_TRAIN:])).batch(BATCH_SIZE)
    return train, val


def make_model(dropout, seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv_1")(x)
    x = keras.layers.BatchNormalization(name="bn_1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv_2")(x)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv_3")(x)
    backbone = keras.Model(inputs, x, name="tiny_cnn")
    return tfft.build_model(backbone, num_classes=3, dropout=dropout, head_units=(16,))


def checksum(variables):
    return float(sum(np.abs(np.asarray(v, dtype=np.float64)).sum() for v in variables))


class Probe(keras.callbacks.Callback):
    """Logs, at each epoch start, where the run is: the numbers a resume must restore."""

    def __init__(self, full_model, path):
        super().__init__()
        self.full_model, self.path = full_model, path

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        row = {
            "pid": os.getpid(),
            "epoch": int(epoch),
            "iterations": int(optimizer.iterations),
            "learning_rate": float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
            "trainable": sorted(v.path for v in self.full_model.trainable_variables),
            "weights": checksum(self.full_model.weights),
            "optimizer": checksum(optimizer.variables[1:]),  # slots and rate, without the step count
            "time": time.time(),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class KillAt(keras.callbacks.Callback):
    """Kills the process at a batch or epoch boundary named by the kill spec."""

    def __init__(self, spec):
        super().__init__()
        self.kind, _, self.arg = (spec or "").partition(":")

    def on_train_batch_end(self, batch, logs=None):
        if self.kind == "batch" and self.arg == f"{self.epoch}:{batch}":
            die(f"batch {self.arg}")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if self.kind == "epoch_begin" and int(self.arg) == epoch:
            die(f"epoch_begin {epoch}")

    def on_epoch_end(self, epoch, logs=None):
        if self.kind == "epoch_end" and int(self.arg) == epoch:
            die(f"epoch_end {epoch}")


def install_save_kills(spec):
    """Wraps `tfft.io.atomic_path` and `fine_tune`'s phase bookkeeping with the kill spec."""
    kind, _, arg = (spec or "").partition(":")
    if kind in ("before_replace", "torn_write", "after_replace"):
        pattern, _, nth = arg.rpartition(":")
        original, seen = io_lib.atomic_path, [0]

        @contextlib.contextmanager
        def atomic_path(path):
            hit = False
            with original(path) as tmp:
                yield tmp
                if fnmatch.fnmatch(os.path.basename(os.fspath(path)), pattern):
                    seen[0] += 1
                    hit = seen[0] == int(nth)
                if hit and kind == "torn_write":
                    with open(tmp, "r+b") as f:
                        f.truncate(max(1, os.path.getsize(tmp) // 2))
                if hit and kind != "after_replace":
                    die(f"{kind} {path}")
            if hit:
                die(f"{kind} {path}")

        io_lib.atomic_path = atomic_path
    if kind == "phase_done":
        original_finish = run_state.RunState.finish

        def finish(self, name, model):
            original_finish(self, name, model)
            if name == arg:
                die(f"phase_done {name}")

        run_state.RunState.finish = finish


def search(args):
    """A small resumable KerasTuner search, killed where `args.kill` says."""
    from tfft import tuning

    kind, _, arg = (args.kill or "").partition(":")
    trials_log = os.path.join(args.workdir, "trials_started.jsonl")
    count = [0]

    class TrialKill(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if kind == "trial_batch" and arg == f"{count[0]}:{batch}":
                die(f"trial_batch {arg}")

    original_begin, original_end = tuning.tuners._TfftTuner.on_trial_begin, tuning.tuners._TfftTuner.on_trial_end

    def on_trial_begin(self, trial):
        count[0] += 1
        with open(trials_log, "a") as f:
            f.write(json.dumps({"pid": os.getpid(), "trial_id": trial.trial_id}) + "\n")
        original_begin(self, trial)

    def on_trial_end(self, trial):
        original_end(self, trial)
        if kind == "trial_end" and int(arg) == count[0]:
            die(f"trial_end {arg}")

    tuning.tuners._TfftTuner.on_trial_begin, tuning.tuners._TfftTuner.on_trial_end = on_trial_begin, on_trial_end
    (x, y), val = make_data()
    keras.utils.set_random_seed(args.seed)
    backbone = make_model(0.0, args.seed).get_layer("backbone")
    space = {"unfreeze": [0, 2], "head_epochs": 1, "finetune_epochs": 1, "batch_size": 8,
             "learning_rate": [1e-3, 3e-3], "optimizer": "adam", "head_units": [0, 16], "dropout": [0.0, 0.2],
             "weight_decay": 0.0, "warmup_fraction": 0.0, "label_smoothing": 0.0}
    hypermodel = tuning.TransferHyperModel(backbone, num_classes=3, weights=None, seed=args.seed, search_space=space)
    tuner = tuning.make_tuner(hypermodel, algorithm=args.tune, max_trials=4, max_epochs=3, factor=3, seed=args.seed,
                              objective="val_loss", directory=args.workdir, project_name="search")
    tuner.search(x, y, validation_data=val, callbacks=[TrialKill()], verbose=0)
    trials = {t.trial_id: {"status": t.status, "score": t.score,
                           "values": {k: v for k, v in t.hyperparameters.values.items()}}
              for t in tuning.list_trials(tuner)}
    io_lib.write_json(os.path.join(args.workdir, "result.json"), {"trials": trials})
    print("[fault_runner] done", len(trials), "trials", flush=True)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir")
    parser.add_argument("--kill", default=os.environ.get("TFFT_KILL_AT", ""))
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--patience", type=int, default=100,
                        help="early stopping patience (ReduceLROnPlateau: half of it) of fine_tune")
    parser.add_argument("--deterministic", action="store_true", help="tf.config.experimental.enable_op_determinism()")
    parser.add_argument("--tune", default=None, help="random or hyperband: run a tuning search instead")
    args = parser.parse_args(argv)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    install_save_kills(args.kill)
    os.makedirs(args.workdir, exist_ok=True)
    if args.tune:
        return search(args)
    train, val = make_data()
    model = make_model(args.dropout, args.seed)
    callbacks = [Probe(model, os.path.join(args.workdir, "probes.jsonl")), KillAt(args.kill)]
    result = tfft.fine_tune(
        model, train, val, head_epochs=HEAD_EPOCHS, finetune_epochs=FINETUNE_EPOCHS, unfreeze=2,
        batch_size=BATCH_SIZE, head_learning_rate=args.head_lr, finetune_learning_rate=1e-3, warmup_fraction=0.25,
        label_smoothing=0.0,  # the scenarios (e.g. when early stopping ends the head phase) were set up without
        patience=args.patience, seed=args.seed, workdir=args.workdir, callbacks=callbacks, verbose=0,
    )
    io_lib.write_json(os.path.join(args.workdir, "result.json"), {
        "metrics": result.metrics,
        "history": result.history,
        "resumed": [p.name for p in result.phases if p.resumed],
        "weights": checksum(model.weights),
    })
    print("[fault_runner] done", json.dumps(result.metrics), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
