"""`fine_tune`: the two-phase transfer recipe, resumable.

Phase 1 trains the head on the frozen backbone (on cached backbone features when nothing
random runs before the head); phase 2 unfreezes what `unfreeze` names, recompiles with a
fresh optimizer at the lower rate and trains on. Epochs are counted across phases (phase 2
starts at `initial_epoch=head_epochs`), so logs, TensorBoard and `BackupAndRestore` agree.

With a `workdir`, a run that is killed resumes where it stopped when `fine_tune` is called
again with the same arguments on a freshly built model: finished phases are not rerun (the
weights at the end of each phase are kept in `workdir/phases/`), the phase that was
running resumes at its last finished epoch with its optimizer state and schedule position
(`BackupAndRestore`), and the per-epoch history survives in `workdir/fine_tune_state.json`.
"""

import dataclasses
import logging
import os
import re
import shutil
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfft import callbacks as callbacks_lib
from tfft import checks
from tfft import distribute as distribute_lib
from tfft import features as features_lib
from tfft import io
from tfft import order as order_lib
from tfft.freezing import FreezeSummary, freeze, resolve_spec
from tfft.freezing import unfreeze as unfreeze_layers
from tfft.optim import compile_model

logger = logging.getLogger("tfft")

STATE_FILE = "fine_tune_state.json"

# Defaults per modality: the Keras transfer-learning guide for images (head at 1e-3, then
# the backbone at a 10x lower rate, BatchNorm frozen), the BERT recipe for text (AdamW with
# weight decay, linear warmup over 10% of the steps then linear decay, 2e-5..5e-5).
RECIPES = {
    "image": dict(head_epochs=5, finetune_epochs=5, unfreeze="backbone", head_learning_rate=1e-3,
                  finetune_learning_rate=1e-4, head_optimizer="adam", finetune_optimizer="adam",
                  finetune_schedule="cosine", warmup_fraction=0.0, weight_decay=0.0, batch_size=32),
    "text": dict(head_epochs=1, finetune_epochs=3, unfreeze="backbone", head_learning_rate=1e-3,
                 finetune_learning_rate=3e-5, head_optimizer="adam", finetune_optimizer="adamw",
                 finetune_schedule="linear", warmup_fraction=0.1, weight_decay=0.01, batch_size=32),
}


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


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` returns."""

    phases: List[PhaseResult]
    metrics: Dict[str, float]

    @property
    def head_history(self):
        return next((phase.history for phase in self.phases if phase.name == "head"), {})

    @property
    def finetune_history(self):
        merged = {}
        for phase in self.phases:
            if phase.name == "head":  # with head_epochs=0 the first phase is a fine-tune phase
                continue
            for k, values in phase.history.items():
                merged.setdefault(k, []).extend(values)
        return merged

    @property
    def history(self):
        """Both phases' per-epoch logs, concatenated."""
        merged = {}
        for phase in self.phases:
            for k, values in phase.history.items():
                merged.setdefault(k, []).extend(values)
        return merged

    @property
    def histories(self):
        return {phase.name: phase.history for phase in self.phases}


class _EpochLog(keras.callbacks.Callback):
    """Appends each epoch's logs to the run state, atomically, before the backup is written.

    It also rewrites `history.csv` from the state (atomically): one row per epoch, with a
    `phase` column, even when a resumed run repeats an epoch or a phase logs other metrics
    (Keras's appending `CSVLogger` would repeat rows and misalign the columns then).
    """

    def __init__(self, state, path, phase):
        super().__init__()
        self.state, self.path, self.phase = state, path, phase

    def on_epoch_end(self, epoch, logs=None):
        if not callbacks_lib.loss_is_finite(logs):
            return  # training stops (TerminateOnNaN); fine_tune raises, the last good epoch stays the last
        rows = self.state.setdefault("epochs", {}).setdefault(self.phase, {})
        rows[str(epoch)] = {k: float(v) for k, v in (logs or {}).items()}
        if self.path:
            io.write_json(self.path, self.state)
            write_history_csv(self.state, os.path.join(os.path.dirname(self.path), "history.csv"))


def write_history_csv(state, path):
    """Writes the per-epoch logs of a run state as `path` (epoch, phase, metrics)."""
    from tfft import reporting

    rows = [{"epoch": int(epoch), "phase": phase, **logs}
            for phase, by_epoch in state.get("epochs", {}).items() for epoch, logs in by_epoch.items()]
    return reporting.write_history_csv(sorted(rows, key=lambda row: row["epoch"]), path)


def _as_dataset(data, batch_size, shuffle, seed):
    """tf.data datasets pass through; `(x, y[, w])` arrays become a batched dataset."""
    if data is None or isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        from tfft.models import _as_string_array

        parts = tuple(_as_string_array(p) if i == 0 else np.asarray(p) for i, p in enumerate(data))
        ds = tf.data.Dataset.from_tensor_slices(parts)
        if shuffle:
            ds = order_lib.epoch_shuffle(ds, len(parts[1]), 0 if seed is None else seed)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    raise TypeError("train_data / validation_data must be a tf.data.Dataset or an (x, y[, sample_weight]) tuple.")


def steps_in(dataset):
    """Batches per epoch of a finite dataset (counted once if tf.data cannot tell)."""
    n = int(dataset.cardinality())
    if n == tf.data.INFINITE_CARDINALITY:
        raise ValueError("The training dataset repeats forever; pass a finite dataset (no .repeat()).")
    if n == tf.data.UNKNOWN_CARDINALITY:
        n = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    return n


def _is_augmented(dataset):
    try:
        from tfft import data as data_lib
    except ImportError:  # pragma: no cover
        return False
    check = getattr(data_lib, "is_augmented", None)
    return bool(check and check(dataset))


def _phase_plan(unfreeze_spec, finetune_epochs, gradual, model):
    """[(name, spec, epochs)] for the fine-tune part: one phase, or gradual stages."""
    if finetune_epochs <= 0:
        return []
    if not gradual:
        return [("finetune", unfreeze_spec, finetune_epochs)]
    from tfft.freezing import _backbone, _block_pattern, block_index

    target = sorted(layer.name for layer in resolve_spec(model, unfreeze_spec, from_top=True))
    backbone = _backbone(model)
    pattern = _block_pattern(model, backbone)
    if pattern is None:
        raise ValueError("gradual unfreezing needs a backbone with a known block structure.")
    _, total_blocks = block_index(backbone, pattern)
    # Stage k trains the top k blocks (within `unfreeze`); the last stage trains all of `unfreeze`.
    n_stages = total_blocks + 1 if gradual is True else max(1, int(gradual))
    stages = []
    for k in range(1, min(n_stages, total_blocks + 1)):
        names = sorted({layer.name for layer in resolve_spec(model, f"top:{k}", from_top=True)} & set(target))
        if names and names not in stages and names != target:
            stages.append(names)
    stages = stages[: n_stages - 1] + [target]
    epochs = [finetune_epochs // len(stages)] * len(stages)
    for i in range(finetune_epochs - sum(epochs)):
        epochs[-1 - i] += 1
    return [(f"finetune_{i}", "re:" + "|".join(map(re.escape, names)), e)
            for i, (names, e) in enumerate(zip(stages, epochs)) if e > 0]


def fine_tune(
    model,
    train_data,
    validation_data=None,
    *,
    head_epochs=None,
    finetune_epochs=None,
    unfreeze=None,
    head_learning_rate=None,
    finetune_learning_rate=None,
    workdir=None,
    callbacks=None,
    cache_features="auto",
    batch_size=None,
    head_optimizer=None,
    finetune_optimizer=None,
    finetune_schedule=None,
    warmup_fraction=None,
    weight_decay=None,
    label_smoothing=0.0,
    layerwise_decay=None,
    gradual=False,
    train_batchnorm=False,
    class_weight=None,
    monitor=None,
    patience=5,
    default_callbacks=True,
    seed=None,
    verbose="auto",
    feature_store=None,
    jit_compile="auto",
):
    """Two-phase fine-tuning: the head on the frozen backbone, then unfreeze and train on.

    Args:
        model: a model from `tfft.build_model`.
        train_data: a `tf.data.Dataset` of `(x, y[, sample_weight])` batches (e.g. from
            `tfft.data`), an `(x, y[, sample_weight])` tuple of arrays, or a
            `tfft.data.DataBundle` (its train and validation splits).
        validation_data: the same forms; used for monitoring and the final metrics.
        head_epochs: epochs of phase 1 (default 5 for images, 1 for text); 0 skips it.
        finetune_epochs: epochs of phase 2 (default 5 for images, 3 for text); 0 skips it.
        unfreeze: what becomes trainable in phase 2, in the forms of a freeze spec, counted
            from the top (`"backbone"`: all of it, the default; `"top:2"`: the top two
            blocks; `"re:conv5_.*"`; an int for the top n layers; a fraction).
        head_learning_rate: phase 1 rate (default 1e-3).
        finetune_learning_rate: phase 2 peak rate (default 1e-4 images, 3e-5 text).
            Rates are used as given, whatever the number of replicas: scale them for a
            larger global batch with `tfft.distribute.scaled_learning_rate`. Each phase
            prints one line with the replica count, the global batch and the rate.
        workdir: where checkpoints, backups, logs and the run state go; enables resume.
            Under MultiWorkerMirroredStrategy only the chief writes there; the other
            workers write to a private temporary directory (`tfft.distribute.worker_workdir`).
        callbacks: extra Keras callbacks, given to every phase.
        cache_features: `"auto"` (cache when the backbone is frozen, nothing random runs
            before the head, and the dataset is not augmented), `True` (require it) or
            `False`. While cached, callbacks see the head model (features in).
        batch_size: for array inputs (datasets keep their own).
        head_optimizer, finetune_optimizer, finetune_schedule, warmup_fraction,
            weight_decay, label_smoothing, layerwise_decay: compile settings of the phases
            (see `tfft.compile_model`); defaults follow the modality's recipe.
        gradual: unfreeze block by block from the top over phase 2 (True: every block; an
            int: that many stages), each stage with a fresh optimizer.
        train_batchnorm: let unfrozen BatchNormalization layers train.
        class_weight: passed to `fit`.
        monitor: the metric callbacks watch (default `val_loss`, or `loss` without
            validation data).
        patience: early-stopping patience.
        default_callbacks: add `tfft.default_callbacks(workdir, ...)` to each phase.
        seed: shuffles cached features reproducibly.
        feature_store: a `tfft.features.FeatureStore` (default: the process-wide one).

    Returns:
        A `FineTuneResult`: `phases` (each with its history), `head_history`,
        `finetune_history`, `history`, and `metrics` (final validation metrics, or the last
        training metrics without validation data).

    Raises:
        ValueError: before anything is trained or written, when the data does not fit the
            model (image size or channels, labels outside `num_classes` or of the wrong
            form, NaN inputs: see `tfft.checks`), or `workdir` holds a run of another model
            or of another plan of phases and epochs.
        FloatingPointError: when the loss turns NaN (TerminateOnNaN stops the phase); the
            NaN epoch is neither logged nor backed up, so a rerun resumes from the last
            good epoch.

    Example:
    >>> model = tfft.build_model("resnet50", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> x, y = np.random.rand(8, 32, 32, 3) * 255, np.arange(8) % 2
    >>> result = tfft.fine_tune(model, (x, y), (x, y), head_epochs=1, finetune_epochs=1, verbose=0)
    >>> sorted(result.histories)
    ['finetune', 'head']
    """
    info = getattr(model, "tfft_info", {}) or {}
    recipe = dict(RECIPES["text" if info.get("modality") == "text" else "image"])
    settings = dict(head_epochs=head_epochs, finetune_epochs=finetune_epochs, unfreeze=unfreeze,
                    head_learning_rate=head_learning_rate, finetune_learning_rate=finetune_learning_rate,
                    head_optimizer=head_optimizer, finetune_optimizer=finetune_optimizer,
                    finetune_schedule=finetune_schedule, warmup_fraction=warmup_fraction,
                    weight_decay=weight_decay, batch_size=batch_size)
    recipe.update({k: v for k, v in settings.items() if v is not None})

    bundle = None
    if hasattr(train_data, "train") and hasattr(train_data, "validation"):  # a tfft.data.DataBundle
        bundle = train_data
        if validation_data is None:
            validation_data = train_data.validation
        train_data = train_data.train
    train = _as_dataset(train_data, recipe["batch_size"], True, seed)
    val = _as_dataset(validation_data, recipe["batch_size"], False, seed)
    checks.check_before_training(model, train_data, validation_data, train, val, bundle)  # before any write
    monitor = monitor or ("val_loss" if val is not None else "loss")
    distribute_lib.get_strategy(model.distribute_strategy)  # Keras fixes a multi-worker strategy needs
    # Multi-worker: every worker trains, only the chief's files persist (the others write to
    # a private temporary copy that starts from the chief's run state, for a consistent resume).
    workdir = distribute_lib.worker_workdir(workdir, resume_from=(STATE_FILE, "phases", "backup"),
                                            strategy=model.distribute_strategy)
    state_path = os.path.join(workdir, STATE_FILE) if workdir else None
    if workdir and os.path.isdir(workdir):
        for path in io.remove_stale_temporaries(workdir):  # left by a process killed while saving
            logger.info("removed %s, a half-written file of an interrupted run", path)
    state = io.read_json(state_path, {}) if state_path else {}
    state.setdefault("completed", [])
    _check_same_model(state, model, workdir)

    plan = []
    if recipe["head_epochs"] > 0:
        plan.append(("head", "backbone-frozen", recipe["head_epochs"]))
    plan += _phase_plan(recipe["unfreeze"], recipe["finetune_epochs"], gradual, model)
    if not plan:
        raise ValueError("Nothing to train: head_epochs and finetune_epochs are both 0.")
    _check_same_plan(state, plan, workdir)

    steps = None
    phases, epoch = [], 0
    for name, spec, epochs in plan:
        start, end = epoch, epoch + epochs
        epoch = end
        if name in state["completed"]:
            _load_phase_weights(model, workdir, name, state)
            phases.append(PhaseResult(name, start, end, _history_from_state(state, name), resumed=True))
            logger.info("Phase %s already finished in %s; its weights were restored.", name, workdir)
            continue
        if name == "head":
            summary = freeze(model, "backbone", train_batchnorm=train_batchnorm)
            compile_kwargs = dict(optimizer=recipe["head_optimizer"], learning_rate=recipe["head_learning_rate"],
                                  label_smoothing=label_smoothing, jit_compile=jit_compile)
        else:
            summary = unfreeze_layers(model, spec, train_batchnorm=train_batchnorm)
            steps = steps or steps_in(train)
            total = steps * epochs
            warmup = int(round(recipe["warmup_fraction"] * total))
            compile_kwargs = dict(optimizer=recipe["finetune_optimizer"],
                                  learning_rate=recipe["finetune_learning_rate"],
                                  schedule=recipe["finetune_schedule"], warmup_steps=warmup,
                                  decay_steps=max(1, total - warmup), weight_decay=recipe["weight_decay"],
                                  label_smoothing=label_smoothing, layerwise_decay=layerwise_decay,
                                  jit_compile=jit_compile)
        logger.info("Phase %s: epochs %d-%d; %s", name, start + 1, end, summary)
        print(f"[tfft] phase {name}: epochs {start + 1}..{end}; {summary}", flush=True)
        result = _run_phase(
            model, name, train, val, start, end, summary, compile_kwargs,
            cache=cache_features if name == "head" else False,
            workdir=workdir, state=state, state_path=state_path, extra_callbacks=callbacks,
            default_callbacks=default_callbacks, monitor=monitor, patience=patience,
            class_weight=class_weight, verbose=verbose, seed=seed,
            store=feature_store if feature_store is not None else features_lib.default_store,
        )
        phases.append(result)
        _finish_phase(model, workdir, state, state_path, name)

    metrics = _final_metrics(model, val, phases, verbose)
    if state_path:
        state["metrics"] = metrics
        io.write_json(state_path, state)
    return FineTuneResult(phases=phases, metrics=metrics)


def _want_cache(model, train, cache):
    if cache is False:
        return False
    reasons = []
    if not features_lib.backbone_is_frozen(model):
        reasons.append("the backbone is not frozen")
    if features_lib.has_random_preprocessing(model):
        reasons.append("random layers run before the backbone")
    if _is_augmented(train):
        reasons.append("the training data is augmented")
    if int(train.cardinality()) == tf.data.INFINITE_CARDINALITY:
        reasons.append("the dataset repeats forever")
    if reasons and cache is True:
        raise ValueError(f"cache_features=True but {', and '.join(reasons)}.")
    return not reasons


def _run_phase(model, name, train, val, start, end, summary, compile_kwargs, *, cache, workdir, state,
               state_path, extra_callbacks, default_callbacks, monitor, patience, class_weight, verbose, seed,
               store):
    fit_model, fit_train, fit_val, cached = model, train, val, False
    if _want_cache(model, train, cache):
        with model.distribute_strategy.scope():  # the head model then fits under the model's strategy
            extractor, head = features_lib.split_at_features(model)
        if head is not None:
            key = features_lib.fingerprint(extractor)
            fit_train = store.dataset(extractor, train, shuffle=True, seed=seed, key=key)
            fit_val = store.dataset(extractor, val, key=key) if val is not None else None
            fit_model, cached = head, True
            print(f"[tfft] phase {name}: training the head on cached backbone features", flush=True)
        elif cache is True:
            raise ValueError("cache_features=True but the model's head is not a simple chain of head_* layers.")

    with model.distribute_strategy.scope():
        compile_model(fit_model, task=(model.tfft_info or {}).get("task"), **compile_kwargs)
    print(f"[tfft] phase {name}: " + distribute_lib.describe(model.distribute_strategy, fit_train,
                                                            compile_kwargs.get("learning_rate")), flush=True)

    cbs = [_EpochLog(state, state_path, name)]
    if not default_callbacks:
        cbs.append(order_lib.EpochSeed())
    else:
        phase_dir = os.path.join(workdir, "backup", name) if workdir else None
        cbs += callbacks_lib.default_callbacks(
            workdir, monitor=monitor, patience=patience, backup_dir=phase_dir,
            reduce_lr_on_plateau=name == "head", initial_value_threshold=_best_so_far(state, monitor),
            csv_log=False,  # history.csv is written from the run state by _EpochLog
        )
        for cb in cbs:
            if isinstance(cb, callbacks_lib.ModelCheckpoint):
                cb.target_model = model  # the full model, also while the head trains on features
            if isinstance(cb, keras.callbacks.BackupAndRestore):
                cb.delete_checkpoint = False  # removed by _finish_phase once the phase is recorded
    extra = list(extra_callbacks or [])
    backup = next((cb for cb in cbs if isinstance(cb, callbacks_lib.BackupAndRestore)), None)
    if backup is not None:  # it also keeps the counters of the user's EarlyStopping etc., which go before it
        stateful = [cb for cb in extra if isinstance(cb, callbacks_lib.STATEFUL)]
        backup.callbacks += stateful
        at = cbs.index(backup)
        cbs[at:at] = stateful
        extra = [cb for cb in extra if cb not in stateful]
    cbs += extra
    history = fit_model.fit(fit_train, validation_data=fit_val, epochs=end, initial_epoch=start, callbacks=cbs,
                            class_weight=class_weight, verbose=verbose, shuffle=False)
    resumed = bool(fit_model._initial_epoch)
    fit_model._initial_epoch = None
    losses = history.history.get("loss") or []
    if losses and not np.isfinite(losses[-1]):
        kept = (f" The last good state is kept in {workdir} (the best model.keras and the backup of the last "
                "finished epoch): rerunning resumes from there." if workdir else "")
        raise FloatingPointError(
            f"The loss became NaN or infinite in phase {name!r}, epoch {start + len(losses)}; training stopped "
            f"(TerminateOnNaN).{kept} Lower the learning rate ({name}_learning_rate=...), check the data for "
            "NaN or extreme values, or clip gradients (an optimizer instance with clipnorm=...).")
    return PhaseResult(name, start, end, _history_from_state(state, name) or history.history, summary,
                       cached_features=cached, resumed=resumed)


def model_signature(model):
    """A short digest of the model's task, classes and weight shapes (not names, which Keras
    numbers per process), stored in the run state to recognize a workdir of another model."""
    import hashlib

    info = getattr(model, "tfft_info", {}) or {}
    parts = [str(info.get("task")), str(info.get("num_classes"))] + [str(tuple(w.shape)) for w in model.weights]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _check_same_model(state, model, workdir):
    signature = model_signature(model)
    if state.get("model", signature) != signature:
        raise ValueError(
            f"{workdir} holds a run of another model (other task, number of classes or architecture): "
            f"its checkpoints cannot be resumed with this one. Use a new workdir, or delete {workdir} to start over.")
    state["model"] = signature


def _check_same_plan(state, plan, workdir):
    """A workdir resumes the run it holds: the same phases, with the same epochs and specs."""
    planned = [[name, str(spec), int(epochs)] for name, spec, epochs in plan]
    if state.get("plan", planned) != planned:
        describe = lambda p: " + ".join(f"{name} {epochs} epochs ({spec})" for name, spec, epochs in p)  # noqa: E731
        raise ValueError(
            f"{workdir} holds a run planned as {describe(state['plan'])}, but this call plans {describe(planned)}; "
            "a workdir resumes the run it holds. Use a new workdir for the new plan, or delete this one to start over.")
    state["plan"] = planned


def _best_so_far(state, monitor):
    """The best `monitor` value logged by earlier epochs, so the checkpoint keeps the best overall."""
    values = [row[monitor] for rows in state.get("epochs", {}).values() for row in rows.values()
              if monitor in row and np.isfinite(row[monitor])]
    if not values:
        return None
    lower_is_better = any(k in monitor for k in ("loss", "error", "mae", "mse"))
    return min(values) if lower_is_better else max(values)


def _phase_weights_path(workdir, name):
    return os.path.join(workdir, "phases", f"{name}.weights.h5")


def _finish_phase(model, workdir, state, state_path, name):
    """Records a finished phase: its end weights first, then the state, then drop its backup."""
    if not workdir:
        return
    io.save_weights(model, _phase_weights_path(workdir, name))
    state["completed"].append(name)
    state.setdefault("seed_states", {})[name] = order_lib.seed_states(model)  # dropout's, see tfft.order
    io.write_json(state_path, state)
    shutil.rmtree(os.path.join(workdir, "backup", name), ignore_errors=True)


def _load_phase_weights(model, workdir, name, state):
    path = _phase_weights_path(workdir, name)
    if not os.path.exists(path):
        raise RuntimeError(f"{workdir}/{STATE_FILE} says phase {name!r} finished, but {path} is missing.")
    model.load_weights(path)
    order_lib.set_seed_states(model, state.get("seed_states", {}).get(name))


def _history_from_state(state, name):
    rows = state.get("epochs", {}).get(name, {})
    history = {}
    for epoch in sorted(rows, key=int):
        for k, v in rows[epoch].items():
            history.setdefault(k, []).append(v)
    return history


def _final_metrics(model, val, phases, verbose):
    if val is not None:
        if not model.compiled or (phases and phases[-1].cached_features):
            with model.distribute_strategy.scope():  # a model built under a strategy compiles under it
                compile_model(model)  # the loss and metrics of the task; no step is taken
        scores = model.evaluate(val, return_dict=True, verbose=0 if verbose == "auto" else verbose)
        return {f"val_{k}": float(v) for k, v in scores.items()}
    last = {}
    for phase in phases:
        for k, values in phase.history.items():
            if values:
                last[k] = float(values[-1])
    return last
