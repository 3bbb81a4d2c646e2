"""`default_callbacks`: the standard set for a fine-tuning run, each switchable.

The classes here are Keras's own with the fixes that long runs need: checkpoints and
backups are written atomically (a crash while saving never leaves a file that fails to
load); a backup also keeps the counters of EarlyStopping, ReduceLROnPlateau and
ModelCheckpoint (so a resumed run stops, lowers the rate and keeps the best model exactly
as one that never stopped); EarlyStopping can keep its best weights in a file instead of a
second copy in memory; and ReduceLROnPlateau steps aside when the rate comes from a
schedule (Keras's raises then).
"""

import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np

from tfft import io
from tfft.distribute import worker_workdir
from tfft.optim import uses_schedule
from tfft.order import EpochSeed, seed_states, set_seed_states

logger = logging.getLogger("tfft")


class ModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """`keras.callbacks.ModelCheckpoint` that writes each file atomically.

    `target_model`, when set, is saved instead of the model being fit (tfft sets it to the
    full model while the head trains on cached backbone features).
    """

    target_model = None

    def _save_model(self, epoch, batch, logs):
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs, filepath):
            model = getattr(self, "target_model", None) or self.model
            if self.save_weights_only:
                io.save_weights(model, filepath)
            else:
                io.save_model(model, filepath)
            if self.verbose > 0:
                print(f"\nEpoch {epoch + 1}: saved model to {filepath}")


def lower_is_better(monitor):
    """Whether smaller values of `monitor` are better (losses and errors; accuracy, AUC, F1: larger)."""
    return any(k in monitor for k in ("loss", "error", "mae", "mse"))


def loss_is_finite(logs):
    """False when `logs` has a NaN or infinite `loss` (what TerminateOnNaN stops on)."""
    loss = (logs or {}).get("loss")
    return loss is None or bool(np.isfinite(np.asarray(loss, dtype="float64")).all())


class EarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` that can keep the best weights in a file.

    Keras's keeps a copy of every weight in memory (`restore_best_weights=True`), which for
    a large backbone is hundreds of megabytes of host memory for the whole run. With
    `best_weights_dir` the best weights are written there one variable at a time (atomically,
    one `.npz` per best epoch, the previous one removed) and read back the same way at the
    end of training; and a `tfft.callbacks.BackupAndRestore` in the same `fit` records which
    file is the best, so a resumed run restores the same weights as one that never stopped.
    `best_weights_dir="temporary"`: a private temporary folder, removed at the end of
    training. Without it the behaviour is Keras's.
    """

    def __init__(self, *args, best_weights_dir=None, **kwargs):
        self.temporary = best_weights_dir == "temporary"
        self.best_weights_dir = os.fspath(best_weights_dir) if best_weights_dir else None
        self.best_weights_file = None  # the file holding the best weights so far
        self._kept_file = None  # a file a committed backup names: not removed when replaced
        super().__init__(*args, **kwargs)

    @property
    def _in_file(self):
        return self.best_weights_dir is not None and self.restore_best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.best_weights_file = None
        if self.temporary:
            self.best_weights_dir = tempfile.mkdtemp(prefix="tfft_best_weights_")

    def on_epoch_end(self, epoch, logs=None):
        if not self._in_file:
            return super().on_epoch_end(epoch, logs)
        # Keras's logic, with the copy of the weights going to a file instead of memory.
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        improved = self._is_improvement(current, self.best)
        if self.best_weights_file is None and not improved:
            self.best_epoch = epoch
            self._write_best()
        self.wait += 1
        if improved:
            self.best, self.best_epoch = current, epoch
            self._write_best()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def _write_best(self):
        path = os.path.join(self.best_weights_dir, f"best_epoch_{self.best_epoch}.npz")
        io.save_arrays(path, self.model.weights)  # converted one variable at a time
        previous, self.best_weights_file = self.best_weights_file, path
        if previous and previous not in (path, self._kept_file) and os.path.exists(previous):
            os.remove(previous)

    def on_train_end(self, logs=None):
        try:
            self._restore_best(logs)
        finally:
            if self.temporary and self.best_weights_dir is not None:
                shutil.rmtree(self.best_weights_dir, ignore_errors=True)
                self.best_weights_dir, self.best_weights_file = "temporary", None

    def _restore_best(self, logs):
        if not self._in_file or not self.best_weights_file:
            return super().on_train_end(logs)
        if self.stopped_epoch > 0 and self.verbose > 0:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if not os.path.exists(self.best_weights_file):
            logger.warning("EarlyStopping: the best weights file %s is gone; keeping the last weights.",
                           self.best_weights_file)
            return
        if self.verbose > 0:
            print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
        io.load_arrays_into(self.best_weights_file, self.model.weights)


_NO_MORE_EPOCHS = 2**31 - 1  # an initial epoch past any `epochs`: `fit` runs no epoch

STATEFUL = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau, keras.callbacks.ModelCheckpoint)


def callback_state(callback, directory=None):
    """The counters of a Keras EarlyStopping, ReduceLROnPlateau or ModelCheckpoint, as JSON data.

    `None` for other callbacks. The in-memory best weights of a plain Keras EarlyStopping
    are written to `directory` (one `.npz` per best epoch) and named in the state.
    """
    number = lambda v: None if v is None else float(v)  # noqa: E731
    if isinstance(callback, keras.callbacks.EarlyStopping):
        state = {"wait": int(callback.wait), "stopped_epoch": int(callback.stopped_epoch),
                 "best": number(getattr(callback, "best", None)), "best_epoch": int(getattr(callback, "best_epoch", 0))}
        if isinstance(callback, EarlyStopping) and callback.best_weights_dir is not None:
            state["best_weights_file"] = callback.best_weights_file
        elif callback.best_weights is not None and directory is not None:
            path = os.path.join(directory, f"early_stopping_best_epoch_{callback.best_epoch}.npz")
            if getattr(callback, "_tfft_written", None) != path:
                io.save_arrays(path, callback.best_weights)
                callback._tfft_written = path
            state["best_weights_file"] = path
        return state
    if isinstance(callback, keras.callbacks.ReduceLROnPlateau):
        return {"wait": int(callback.wait), "best": number(getattr(callback, "best", None)),
                "cooldown_counter": int(callback.cooldown_counter)}
    if isinstance(callback, keras.callbacks.ModelCheckpoint):
        return {"best": number(getattr(callback, "best", None))}
    return None


def set_callback_state(callback, state):
    """Puts back what `callback_state` returned (after the callback's own `on_train_begin`)."""
    if not state:
        return
    for key in ("wait", "stopped_epoch", "best_epoch", "cooldown_counter"):
        if key in state and hasattr(callback, key):
            setattr(callback, key, state[key])
    if "best" in state:
        callback.best = state["best"]
    path = state.get("best_weights_file")
    if isinstance(callback, keras.callbacks.EarlyStopping) and path and os.path.exists(path):
        if isinstance(callback, EarlyStopping) and callback.best_weights_dir is not None:
            callback.best_weights_file = callback._kept_file = path
        else:
            callback.best_weights = io.load_arrays(path)
            callback._tfft_written = path


def _remove_except(directory, *keep, prefix=""):
    """Removes the weights files (`.weights.h5`, `.npz`) in `directory` that are not in `keep`."""
    keep = {os.path.abspath(k) for k in keep if k}
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        path = os.path.abspath(os.path.join(directory, name))
        if name.startswith(prefix) and name.endswith((".weights.h5", ".npz")) and path not in keep:
            os.remove(path)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` that a kill at any moment cannot corrupt or tear.

    Keras's writes the weights in place and then the JSON metadata: a kill during either
    write leaves a backup that breaks the restart (`bad object header`, `JSONDecodeError`),
    and a kill between them pairs the new weights with the old epoch, so the restart trains
    an epoch twice. Here each backup is one weights file named by its epoch, written
    atomically, and then the metadata, written atomically, names that file: the metadata is
    the commit point, so it always describes a complete weights file of its own epoch.
    Older weights files are removed after the commit.

    The metadata also keeps the states of the model's random layers (dropout), which Keras
    does not save, so a resumed run draws the same masks as one that never stopped. An epoch
    whose loss is NaN (TerminateOnNaN stops there) is not backed up: the last good one stays.

    `callbacks`: the EarlyStopping, ReduceLROnPlateau and ModelCheckpoint callbacks of the
    same `fit` whose counters (epochs without improvement, best value, best weights) the
    backup keeps and a resumed run puts back (`default_callbacks` sets it). Keras resets
    those in each callback's `on_train_begin`, so they must come before this callback in
    the list given to `fit`.

    `store`: where the metadata is committed: by default Keras's `training_metadata.json`
    in `backup_dir`; `tfft.fine_tune` passes its run state (`tfft.run_state`), so that one
    file says where the whole run stands. A store has `read()` (the metadata or None) and
    `write(metadata)` (atomic).
    """

    def __init__(self, *args, callbacks=(), store=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.callbacks = list(callbacks)
        self.store = store

    def _read_metadata(self):
        if self.store is not None:
            return self.store.read()
        if not os.path.exists(self._training_metadata_path):
            return None
        return io.read_json(self._training_metadata_path)

    def _write_metadata(self, metadata):
        if self.store is not None:
            self.store.write(metadata)
        else:
            io.write_json(self._training_metadata_path, metadata)

    def _peer_states(self):
        return [callback_state(cb, self.backup_dir) for cb in self.callbacks]

    def on_train_begin(self, logs=None):
        self._restored_metadata = None
        super().on_train_begin(logs)
        states = (self._restored_metadata or {}).get("callbacks")
        if states and len(states) == len(self.callbacks):
            for cb, state in zip(self.callbacks, states):
                set_callback_state(cb, state)
            if any(isinstance(cb, keras.callbacks.EarlyStopping) and state and state.get("stopped_epoch", 0) > 0
                   for cb, state in zip(self.callbacks, states)):
                # Early stopping had ended this fit at the backed-up epoch: train no further
                # epoch (its on_train_end still restores the best weights).
                self.model._initial_epoch = _NO_MORE_EPOCHS

    def on_epoch_end(self, epoch, logs=None):
        if loss_is_finite(logs):
            super().on_epoch_end(epoch, logs)  # a NaN epoch is not backed up: the last good one stays

    def on_train_batch_end(self, batch, logs=None):
        if loss_is_finite(logs):
            super().on_train_batch_end(batch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch_{self._current_epoch}_batch_{self._last_batch_seen}.weights.h5"
        states = self._peer_states()
        io.save_weights(self.model, os.path.join(self.backup_dir, name))
        self._write_metadata({
            "epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name,
            "seed_states": seed_states(self.model),
            "callbacks": states,
        })
        # What the metadata now names stays; older weights and best-weights files go.
        keep = [os.path.join(self.backup_dir, name)] + [s.get("best_weights_file") for s in states if s]
        for cb in self.callbacks:
            if isinstance(cb, EarlyStopping) and cb.best_weights_dir is not None:
                cb._kept_file = cb.best_weights_file
                _remove_except(cb.best_weights_dir, *keep, prefix="best_epoch_")
        _remove_except(self.backup_dir, *keep)

    def _load_model(self):
        if not self.model.built:
            return super()._load_model()  # Keras's error for an unbuilt model
        try:
            metadata = self._read_metadata()
            if metadata is None:
                return None  # no finished backup: start from the beginning
            weights = os.path.join(self.backup_dir, metadata.get("weights", os.path.basename(self._weights_path)))
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)  # so its state loads too
            self.model.load_weights(weights)
        except (json.JSONDecodeError, ValueError, OSError, KeyError) as e:
            raise RuntimeError(
                f"The backup in {self.backup_dir} cannot be read ({e}). Delete that folder to start the "
                "run over, or restore it from a copy."
            ) from e
        set_seed_states(self.model, metadata.get("seed_states"))
        self._restored_metadata = metadata
        self.model._initial_epoch = int(metadata["epoch"])


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras's ReduceLROnPlateau, a no-op (with one warning) under a learning-rate schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if uses_schedule(self.model.optimizer):
            if not getattr(self, "_warned", False):
                logger.info("ReduceLROnPlateau is inactive: the learning rate follows a schedule.")
                self._warned = True
            return
        super().on_epoch_end(epoch, logs)


class PinnedModel(keras.callbacks.Callback):
    """Runs `callback` on `model` (the full model) while another model is being fit.

    While the head trains on cached backbone features (`tfft.features`), `fit` runs on a
    head-only model; checkpoint-like callbacks must still see (and save) the full model.
    """

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.pinned = model

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(self.pinned)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _forward(name):
    def hook(self, *args, **kwargs):
        return getattr(self.callback, name)(*args, **kwargs)

    hook.__name__ = name
    return hook


for _hook in ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_train_batch_begin",
              "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
              "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"):
    setattr(PinnedModel, _hook, _forward(_hook))

# Callbacks that save or restore the model: pinned to the full model while the head trains
# on cached features.
SAVES_THE_MODEL = (keras.callbacks.ModelCheckpoint, keras.callbacks.BackupAndRestore)


def pin_to(callbacks, model):
    """`callbacks` with those that save the model (`SAVES_THE_MODEL`) pinned to `model`;
    callbacks already pinned stay as they are."""
    return [PinnedModel(cb, model) if isinstance(cb, SAVES_THE_MODEL) else cb for cb in callbacks]


def _writable_workdir(workdir):
    """`(where this process writes, workdir)`: a private temporary directory off the chief."""
    workdir = os.fspath(workdir)
    return worker_workdir(workdir), workdir


def _moved(path, old_root, new_root):
    """`path` re-rooted from `old_root` to `new_root` (a path outside `old_root` keeps its name)."""
    if path is None or old_root == new_root:
        return path
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(old_root))
    return os.path.join(new_root, os.path.basename(path) if relative.startswith(os.pardir) else relative)


def default_callbacks(
    workdir=None,
    *,
    reduce_lr_on_plateau=True,
    early_stopping=True,
    monitor="val_loss",
    patience=5,
    checkpoint=True,
    backup=True,
    tensorboard=True,
    csv_log=True,
    terminate_on_nan=True,
    mode="auto",
    min_delta=0.0,
    lr_factor=0.2,
    lr_patience=None,
    min_lr=1e-7,
    checkpoint_path=None,
    backup_dir=None,
    save_freq="epoch",
    initial_value_threshold=None,
    backup_store=None,
):
    """The standard callbacks of a fine-tuning run.

    Args:
        workdir: where files go (`model.keras`, `backup/`, `logs/`, `history.csv`); without
            it only the in-memory callbacks are returned. Under MultiWorkerMirroredStrategy
            only the chief writes there; other workers write to a private temporary
            directory (`tfft.distribute.worker_workdir`).
        reduce_lr_on_plateau: divide the rate by 5 after `lr_patience` (default
            `max(1, patience // 2)`) epochs without improvement of `monitor`.
        early_stopping: stop after `patience` epochs without improvement, restoring the
            best weights (they wait in a file, in the backup folder with a workdir, else in a
            temporary folder, instead of a second copy in memory: `tfft.callbacks.EarlyStopping`).
        monitor: the quantity to watch (`"val_loss"`, `"val_accuracy"`, ...). Without
            validation data use `"loss"`.
        patience: epochs without improvement before early stopping.
        checkpoint: keep the best model so far in `workdir/model.keras` (atomic writes).
        backup: `BackupAndRestore` in `workdir/backup`: a rerun after a crash resumes at the
            last finished epoch, optimizer state and the counters of early stopping,
            ReduceLROnPlateau and the checkpoint included. It comes last in the list.
        tensorboard: TensorBoard logs in `workdir/logs`.
        csv_log: per-epoch history appended to `workdir/history.csv`.
        terminate_on_nan: stop as soon as the loss is NaN.
        backup_store: where the backup commits its metadata (see `BackupAndRestore`).

    Returns:
        A list of `keras.callbacks.Callback`.

    Example:
    >>> cbs = default_callbacks(None, monitor="loss")
    >>> [type(c).__name__ for c in cbs]
    ['EpochSeed', 'TerminateOnNaN', 'ReduceLROnPlateau', 'EarlyStopping']
    """
    if mode == "auto":  # said explicitly: Keras's ReduceLROnPlateau cannot tell it for e.g. val_accuracy
        mode = "min" if lower_is_better(monitor) else "max"
    callbacks = [EpochSeed()]  # epoch-keyed shuffling of tfft datasets (tfft.order)
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if reduce_lr_on_plateau:
        callbacks.append(ReduceLROnPlateau(monitor=monitor, factor=lr_factor, mode=mode, min_delta=min_delta,
                                           patience=lr_patience or max(1, patience // 2), min_lr=min_lr))
    if workdir is not None:
        workdir, original = _writable_workdir(workdir)
        checkpoint_path, backup_dir = (_moved(p, original, workdir) for p in (checkpoint_path, backup_dir))
        backup_dir = backup_dir or os.path.join(workdir, "backup")
    if early_stopping:  # the best weights wait in a file, not in a second copy in memory
        callbacks.append(EarlyStopping(monitor=monitor, patience=patience, mode=mode, min_delta=min_delta,
                                       restore_best_weights=True, best_weights_dir=backup_dir or "temporary"))
    if workdir is None:
        return callbacks
    os.makedirs(workdir, exist_ok=True)
    if checkpoint:
        callbacks.append(ModelCheckpoint(checkpoint_path or os.path.join(workdir, "model.keras"),
                                         monitor=monitor, mode=mode, save_best_only=True,
                                         initial_value_threshold=initial_value_threshold))
    if csv_log:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "logs")))
    if backup:  # last, so that it puts back the counters of those before it (see BackupAndRestore)
        stateful = [cb for cb in callbacks if isinstance(cb, STATEFUL)]
        callbacks.append(BackupAndRestore(backup_dir, save_freq=save_freq, callbacks=stateful, store=backup_store))
    return callbacks
