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

from tfft import io
from tfft.order import EpochSeed

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


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` with atomic writes of the weights and the metadata.

    Keras's writes the weights in place and then the JSON; a kill between or during those
    writes leaves a backup that breaks the restart (`bad object header`, `JSONDecodeError`).
    Here the weights and the metadata are each replaced atomically, the weights first, so
    the metadata never points past the weights it describes.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        io.save_weights(self.model, self._weights_path)
        io.write_text(self._training_metadata_path,
                      json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))

    def _load_model(self):
        try:
            return super()._load_model()
        except (json.JSONDecodeError, ValueError, OSError) as e:
            raise RuntimeError(
                f"The backup in {self.backup_dir} cannot be read ({e}). Delete that folder to start the "
                "run over, or restore it from a copy."
            ) from e


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
            it only the in-memory callbacks are returned.
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
