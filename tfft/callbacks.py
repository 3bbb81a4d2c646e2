"""`default_callbacks`: the standard set for a fine-tuning run, each switchable.

The classes here are Keras's own with two fixes that long runs need: checkpoints and
backups are written atomically (a crash while saving never leaves a file that fails to
load), and ReduceLROnPlateau steps aside when the rate comes from a schedule (Keras's
raises then).
"""

import json
import logging
import os

import keras
import numpy as np

from tfft import io
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


def loss_is_finite(logs):
    """False when `logs` has a NaN or infinite `loss` (what TerminateOnNaN stops on)."""
    loss = (logs or {}).get("loss")
    return loss is None or bool(np.isfinite(np.asarray(loss, dtype="float64")).all())


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
    """

    def on_epoch_end(self, epoch, logs=None):
        if loss_is_finite(logs):
            super().on_epoch_end(epoch, logs)  # a NaN epoch is not backed up: the last good one stays

    def on_train_batch_end(self, batch, logs=None):
        if loss_is_finite(logs):
            super().on_train_batch_end(batch, logs)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch_{self._current_epoch}_batch_{self._last_batch_seen}.weights.h5"
        io.save_weights(self.model, os.path.join(self.backup_dir, name))
        io.write_json(self._training_metadata_path, {
            "epoch": self._current_epoch, "batch": self._last_batch_seen, "weights": name,
            "seed_states": seed_states(self.model),
        })
        for stale in os.listdir(self.backup_dir):
            if stale.endswith(".weights.h5") and stale != name:
                os.remove(os.path.join(self.backup_dir, stale))

    def _load_model(self):
        if not self.model.built:
            return super()._load_model()  # Keras's error for an unbuilt model
        if not os.path.exists(self._training_metadata_path):
            return None  # no finished backup: start from the beginning
        try:
            metadata = io.read_json(self._training_metadata_path)
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
        self.model._initial_epoch = int(metadata["epoch"])


class ReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """Keras's ReduceLROnPlateau, a no-op (with one warning) under a learning-rate schedule."""

    def on_epoch_end(self, epoch, logs=None):
        from tfft.optim import uses_schedule

        if uses_schedule(self.model.optimizer):
            if not getattr(self, "_warned", False):
                logger.info("ReduceLROnPlateau is inactive: the learning rate follows a schedule.")
                self._warned = True
            return
        super().on_epoch_end(epoch, logs)


def _writable_workdir(workdir):
    """`(where this process writes, workdir)`: a private temporary directory off the chief."""
    from tfft.distribute import worker_workdir

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
            best weights.
        monitor: the quantity to watch (`"val_loss"`, `"val_accuracy"`, ...). Without
            validation data use `"loss"`.
        patience: epochs without improvement before early stopping.
        checkpoint: keep the best model so far in `workdir/model.keras` (atomic writes).
        backup: `BackupAndRestore` in `workdir/backup`: a rerun after a crash resumes at the
            last finished epoch, optimizer state included.
        tensorboard: TensorBoard logs in `workdir/logs`.
        csv_log: per-epoch history appended to `workdir/history.csv`.
        terminate_on_nan: stop as soon as the loss is NaN.

    Returns:
        A list of `keras.callbacks.Callback`.

    Example:
    >>> cbs = default_callbacks(None, monitor="loss")
    >>> [type(c).__name__ for c in cbs]
    ['EpochSeed', 'TerminateOnNaN', 'ReduceLROnPlateau', 'EarlyStopping']
    """
    callbacks = [EpochSeed()]  # epoch-keyed shuffling of tfft datasets (tfft.order)
    if terminate_on_nan:
        callbacks.append(keras.callbacks.TerminateOnNaN())
    if reduce_lr_on_plateau:
        callbacks.append(ReduceLROnPlateau(monitor=monitor, factor=lr_factor, mode=mode, min_delta=min_delta,
                                           patience=lr_patience or max(1, patience // 2), min_lr=min_lr))
    if early_stopping:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=patience, mode=mode,
                                                       min_delta=min_delta, restore_best_weights=True))
    if workdir is None:
        return callbacks
    workdir, original = _writable_workdir(workdir)
    checkpoint_path, backup_dir = (_moved(p, original, workdir) for p in (checkpoint_path, backup_dir))
    os.makedirs(workdir, exist_ok=True)
    if checkpoint:
        callbacks.append(ModelCheckpoint(checkpoint_path or os.path.join(workdir, "model.keras"),
                                         monitor=monitor, mode=mode, save_best_only=True,
                                         initial_value_threshold=initial_value_threshold))
    if csv_log:
        callbacks.append(keras.callbacks.CSVLogger(os.path.join(workdir, "history.csv"), append=True))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(workdir, "logs")))
    if backup:
        callbacks.append(BackupAndRestore(backup_dir or os.path.join(workdir, "backup"), save_freq=save_freq))
    return callbacks
