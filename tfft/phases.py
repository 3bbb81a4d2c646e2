"""Running one phase of a `fine_tune` plan: freeze, pick the data, compile, call `fit`.

The head phase trains the head with the backbone frozen, on cached backbone features when
`tfft.recipe.cache_decision` allows it (the head model then shares the real head layers,
so training it trains the model); the fine-tune phases unfreeze what the recipe names and
train on the recipe's augmentation. Every phase compiles with a fresh optimizer from
`tfft.recipe.compile_arguments`, counts epochs across phases (`initial_epoch`), records
each epoch in the run state and backs up through it (`tfft.run_state`).
"""

import dataclasses
import os
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfft import batches as batches_lib
from tfft import callbacks as callbacks_lib
from tfft import distribute as distribute_lib
from tfft import features as features_lib
from tfft import io, lora
from tfft import order as order_lib
from tfft import recipe as recipe_lib
from tfft.data import is_augmented
from tfft.data.augment import augment_batches, mix_batches
from tfft.freezing import FreezeSummary, freeze, unfreeze
from tfft.info import model_info
from tfft.optim import compile_model, ema_callbacks
from tfft.run_state import EpochLog


@dataclasses.dataclass
class PhaseResult:
    """One phase: its name, epochs `[initial_epoch, final_epoch)`, history and freeze summary."""

    name: str
    initial_epoch: int
    final_epoch: int
    history: Dict[str, List[float]]
    summary: Optional[FreezeSummary] = None
    cached_features: bool = False
    resumed: bool = False


class PhaseRunner:
    """Runs the phases of one `fine_tune` call on `model` (see `fine_tune` for the arguments)."""

    def __init__(self, model, recipe, train, val, *, state, workdir, cache, store, seed, callbacks,
                 default_callbacks, monitor, class_weight, verbose, jit_compile):
        self.model, self.recipe, self.train, self.val = model, recipe, train, val
        self.state, self.workdir, self.cache, self.store, self.seed = state, workdir, cache, store, seed
        self.extra_callbacks = list(callbacks or [])
        self.default_callbacks, self.monitor, self.class_weight = default_callbacks, monitor, class_weight
        self.verbose, self.jit_compile = verbose, jit_compile
        self._examples = None
        self._batches = None
        self.cached_evaluation = None  # (head model, validation features) of the last phase run on features

    # ------------------------------------------------------------------ data

    @property
    def examples(self):
        if self._examples is None:
            self._examples = batches_lib.count_examples(self.train)
        return self._examples

    def steps_per_epoch(self):
        if self.recipe.batch_size:
            return recipe_lib.steps_per_epoch(self.examples, self.recipe.batch_size)
        return self._batches_in_train()

    def _batches_in_train(self):
        if self._batches is None:
            self._batches = batches_lib.steps_in(self.train)
        return self._batches

    def _training_data(self, phase):
        train = self.train
        if int(train.cardinality()) == tf.data.UNKNOWN_CARDINALITY:
            # Keras runs one step past the end of a dataset of unknown length each epoch, and that
            # step still advances the model's random state (Dropout's seed generator): epochs 2+
            # would then draw other masks than the same data with a known length, or than the
            # cached head phase. Counted once (`steps_in`), the length is asserted.
            train = train.apply(tf.data.experimental.assert_cardinality(self._batches_in_train()))
        if self.recipe.batch_size and distribute_lib.dataset_batch_size(train) != self.recipe.batch_size:
            train = batches_lib.rebatch(train, self.recipe.batch_size, self.examples)
        if phase.is_head or not (self.recipe.augment or self.recipe.mixup or self.recipe.cutmix):
            return train
        # Seeded always (0 by default): epoch e augments the same in a resumed run (tfft.order.key_by_epoch).
        seed = 0 if self.seed is None else self.seed
        train = augment_batches(train, self.recipe.augment, seed=seed) if self.recipe.augment else train
        if self.recipe.mixup or self.recipe.cutmix:
            info = model_info(self.model)
            train = mix_batches(train, task=info.get("task"), num_classes=info.get("num_classes"),
                                mixup_alpha=self.recipe.mixup or 0.0, cutmix_alpha=self.recipe.cutmix or 0.0,
                                seed=seed + 1)
        return train

    def _on_cached_features(self, phase):
        """`(head_model, train, validation)` on cached features, or None when the phase may not."""
        if not phase.is_head:
            return None
        use, _ = recipe_lib.cache_decision(self.model, self.train, self.cache)
        if not use:
            return None
        with self.model.distribute_strategy.scope():  # the head model then fits under the model's strategy
            extractor, head = features_lib.split_at_features(self.model)
        if head is None:
            if self.cache is True:
                raise ValueError("cache_features=True but the model's head is not a simple chain of head_* layers.")
            return None
        key = features_lib.fingerprint(extractor)
        train = self.store.dataset(extractor, self.train, seed=self.seed, key=key, batch_size=self.recipe.batch_size)
        # Validation order does not change its metrics: served as the features were computed.
        val = self.store.dataset(extractor, self.val, key=key, shuffle=False) if self.val is not None else None
        return head, train, val

    # ------------------------------------------------------------------ one phase

    def run(self, phase, start, stop):
        """Trains epochs `[start, stop)` of `phase`; returns its `PhaseResult`."""
        model, recipe = self.model, self.recipe
        if phase.is_head:
            summary = freeze(model, "backbone", train_batchnorm=recipe.train_batchnorm)
        elif recipe.lora_rank:  # adapters on the backbone's projections train, with the head (tfft.lora)
            summary = lora.apply_lora_for_phase(model, recipe.lora_rank)
        else:
            summary = unfreeze(model, phase.trains, train_batchnorm=recipe.train_batchnorm)
        cached = self._on_cached_features(phase)
        fit_model, fit_train, fit_val = cached or (model, self._training_data(phase), self.val)
        self.cached_evaluation = (fit_model, fit_val) if cached and fit_val is not None else None
        steps = int(fit_train.cardinality())  # known for cached features: no counting pass over the images
        steps = steps if steps >= 0 else self.steps_per_epoch()
        arguments = recipe_lib.compile_arguments(recipe, phase, steps, jit_compile=self.jit_compile)
        with model.distribute_strategy.scope():
            compile_model(fit_model, task=model_info(model).get("task"), **arguments)
        where = " on cached backbone features" if cached else ""
        backup = self.state.phase(phase.name).get("backup") if self.workdir else None
        if backup and start < int(backup["epoch"]) < stop:
            where += f", resuming at epoch {int(backup['epoch']) + 1} from its backup"
        print(f"[tfft] phase {phase.name}: epochs {start + 1}..{stop}{where}; {summary}", flush=True)
        print(f"[tfft] phase {phase.name}: " + distribute_lib.describe(model.distribute_strategy, fit_train,
                                                                       arguments["learning_rate"]), flush=True)
        history = fit_model.fit(fit_train, validation_data=fit_val, epochs=stop, initial_epoch=start,
                                callbacks=ema_callbacks(fit_model, self._callbacks(phase, cached is not None)),
                                class_weight=self.class_weight,
                                verbose=self.verbose, shuffle=False)
        resumed = bool(fit_model._initial_epoch)  # set by BackupAndRestore (Keras private; see BUILD_NOTES)
        fit_model._initial_epoch = None
        self._raise_on_nan(phase, start, history)
        return PhaseResult(phase.name, start, stop, self.state.history(phase.name) or history.history, summary,
                           cached_features=cached is not None, resumed=resumed)

    def _callbacks(self, phase, cached):
        cbs = [EpochLog(self.state, phase.name)]
        if not self.default_callbacks:
            cbs.append(order_lib.EpochSeed())
        else:
            cbs += callbacks_lib.default_callbacks(
                self.workdir, monitor=self.monitor, patience=self.recipe.patience,
                backup_dir=self.state.backup_dir(phase.name), reduce_lr_on_plateau=phase.is_head,
                initial_value_threshold=self.state.best(self.monitor), csv_log=False,  # history.csv: the run state
                backup_store=self.state.backup_store(phase.name) if self.workdir else None)
            for cb in cbs:
                if isinstance(cb, callbacks_lib.ModelCheckpoint):
                    cb.target_model = self.model  # the full model, also while the head trains on features
                if isinstance(cb, keras.callbacks.BackupAndRestore):
                    cb.delete_checkpoint = False  # dropped by RunState.finish once the phase is recorded
        extra = callbacks_lib.pin_to(self.extra_callbacks, self.model) if cached else list(self.extra_callbacks)
        backup = next((cb for cb in cbs if isinstance(cb, callbacks_lib.BackupAndRestore)), None)
        if backup is not None:  # it also keeps the counters of the user's EarlyStopping etc., which go before it
            stateful = [cb for cb in extra if isinstance(cb, callbacks_lib.STATEFUL)]
            backup.callbacks += stateful
            at = cbs.index(backup)
            cbs[at:at] = stateful
            extra = [cb for cb in extra if cb not in stateful]
        return cbs + extra

    def _raise_on_nan(self, phase, start, history):
        losses = history.history.get("loss") or []
        if losses and not np.isfinite(losses[-1]):
            kept = (f" The last good state is kept in {self.workdir} (the best model.keras and the backup of the "
                    "last finished epoch): rerunning resumes from there." if self.workdir else "")
            raise FloatingPointError(
                f"The loss became NaN or infinite in phase {phase.name!r}, epoch {start + len(losses)}; training "
                f"stopped (TerminateOnNaN).{kept} Lower the learning rate ({phase.name.split('_')[0]}_learning_rate"
                "=...), check the data for NaN or extreme values, or clip gradients (an optimizer instance with "
                "clipnorm=...).")


def final_metrics(model, val, phases, verbose, recipe, cached_evaluation=None):
    """The validation metrics of the model as it ends (the last training metrics without validation data).

    The model is compiled again with the run's loss (label smoothing included) when its last
    phase fit the head model on cached features, so `val_loss` means what it meant in training.
    Then the scores come from the head on the cached validation features
    (`cached_evaluation`: `(head model, features)`, `PhaseRunner.cached_evaluation`): the same
    numbers as the whole model on the images (the backbone is frozen and in inference mode),
    without running the backbone again.
    """
    if val is not None:
        on_features = bool(phases and phases[-1].cached_features)
        if not model.compiled or on_features:
            with model.distribute_strategy.scope():  # a model built under a strategy compiles under it
                compile_model(model, label_smoothing=recipe.label_smoothing)  # the task's loss and metrics
        scorer, data = cached_evaluation if on_features and cached_evaluation else (model, val)
        scores = scorer.evaluate(data, return_dict=True, verbose=0 if verbose == "auto" else verbose)
        return {f"val_{k}": float(v) for k, v in scores.items()}
    last = {}
    for phase in phases:
        for k, values in phase.history.items():
            if values:
                last[k] = float(values[-1])
    return last


def augments_in_recipe(recipe, set_by, train, modality):
    """Whether the fine-tune phases augment the training batches (`recipe.augment`).

    The rule's augmentation steps aside for data that a tfft loader already augments and
    for text; augmentation the user asked for applies as asked.
    """
    if not recipe.augment or not recipe.finetune_epochs:
        return False
    if "augment" in set_by:
        if modality == "text":
            raise ValueError("augment is for images; this is a text model (set augment=False).")
        return True
    return modality != "text" and not is_augmented(train)


def reset_temporaries(workdir):
    """Removes half-written files of a process killed while saving (`tfft.io`)."""
    if workdir and os.path.isdir(workdir):
        return io.remove_stale_temporaries(workdir)
    return []
