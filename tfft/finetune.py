"""`fine_tune`: the two-phase transfer recipe, resumable.

Phase 1 trains the head on the frozen backbone (on cached backbone features when nothing
random runs before the head); phase 2 unfreezes what `unfreeze` names, recompiles with a
fresh optimizer at the lower rate and trains on, on augmented batches. Epochs are counted
across phases (phase 2 starts at `initial_epoch=head_epochs`), so logs, TensorBoard and
`BackupAndRestore` agree. What each phase does comes from a `tfft.recipe.Recipe`: the
keywords given, and tfft's rule (`tfft.recipe.default_recipe`: the best measured recipe for
the modality and data size) for the rest; the run prints it at the start.

With a `workdir`, a run that is killed resumes where it stopped when `fine_tune` is called
again with the same arguments on a freshly built model: finished phases are not rerun (their
end weights are kept in `workdir/phases/`), the phase that was running resumes at its last
finished epoch with its optimizer state and schedule position (`BackupAndRestore`), and
`workdir/run_state.json` says where the run stands (`tfft.run_state`).
"""

import dataclasses
import logging
from typing import Dict, List, Optional

from tfft import batches as batches_lib
from tfft import checks, run_state
from tfft import distribute as distribute_lib
from tfft import features as features_lib
from tfft import lora
from tfft import phases as phases_lib
from tfft import recipe as recipe_lib
from tfft.info import model_info
from tfft.phases import PhaseResult  # noqa: F401  (part of FineTuneResult's public shape)
from tfft.recipe import Recipe

logger = logging.getLogger("tfft")

ARRAY_BATCH_SIZE = 32  # batch size of array inputs when the recipe names none


@dataclasses.dataclass
class FineTuneResult:
    """What `fine_tune` returns: each phase, the final metrics and the recipe that ran."""

    phases: List[PhaseResult]
    metrics: Dict[str, float]
    recipe: Optional[Recipe] = None

    @property
    def head_history(self):
        return next((phase.history for phase in self.phases if phase.name == "head"), {})

    @property
    def finetune_history(self):
        return _merge(phase.history for phase in self.phases if phase.name != "head")

    @property
    def history(self):
        """Every phase's per-epoch logs, concatenated."""
        return _merge(phase.history for phase in self.phases)

    @property
    def histories(self):
        return {phase.name: phase.history for phase in self.phases}


def _merge(histories):
    merged = {}
    for history in histories:
        for k, values in history.items():
            merged.setdefault(k, []).extend(values)
    return merged


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
    head_schedule=None,
    finetune_schedule=None,
    warmup_fraction=None,
    weight_decay=None,
    label_smoothing=None,
    layerwise_decay=None,
    gradual=None,
    train_batchnorm=None,
    augment=None,
    mixup=None,
    cutmix=None,
    ema=None,
    lora_rank=None,
    class_weight=None,
    monitor=None,
    patience=None,
    recipe=None,
    epochs=None,
    initial_epoch=0,
    default_callbacks=True,
    seed=None,
    verbose="auto",
    feature_store=None,
    jit_compile="auto",
):
    """Two-phase fine-tuning: the head on the frozen backbone, then unfreeze and train on.

    Every recipe keyword left at None takes tfft's rule (`tfft.recipe.default_recipe`, by
    modality and data size; printed at the start): `fine_tune(model, train, val)` alone
    runs the best recipe measured here.

    Args:
        model: a model from `tfft.build_model`.
        train_data: a `tf.data.Dataset` of `(x, y[, sample_weight])` batches (e.g. from
            `tfft.data`), an `(x, y[, sample_weight])` tuple of arrays, or a
            `tfft.data.DataBundle` (its train and validation splits).
        validation_data: the same forms; used for monitoring and the final metrics.
        head_epochs: epochs of phase 1; 0 skips it.
        finetune_epochs: epochs of phase 2; 0 skips it.
        unfreeze: what becomes trainable in phase 2, in the forms of a freeze spec, counted
            from the top (`"backbone"`: all of it; `"top:2"`: the top two blocks;
            `"re:conv5_.*"`; an int for the top n layers; a fraction).
        head_learning_rate, finetune_learning_rate: the phases' peak rates, used as given
            whatever the number of replicas (scale them with
            `tfft.distribute.scaled_learning_rate`); each phase prints one line with the
            replica count, the global batch and the rate.
        workdir: where checkpoints, backups, logs and the run state go; enables resume.
            Under MultiWorkerMirroredStrategy only the chief writes there; the other
            workers write to a private temporary directory (`tfft.distribute.worker_workdir`).
        callbacks: extra Keras callbacks, given to every phase (those that save the model
            see the full model also while the head trains on cached features).
        cache_features: `"auto"` (cache when the backbone is frozen, nothing random runs
            before the head, and the dataset is not augmented), `True` (require it) or
            `False`. Cached features come in the order of the data (see
            `tfft.features.FeatureStore.dataset`), so a cached head phase trains the model
            that recomputing the backbone would, only faster.
        batch_size: the global batch size: array inputs are batched, datasets rebatched to it.
        head_optimizer, finetune_optimizer, head_schedule, finetune_schedule,
            warmup_fraction, weight_decay, label_smoothing, layerwise_decay: compile settings
            of the phases (see `tfft.compile_model` and `tfft.recipe.Recipe`).
        gradual: unfreeze block by block from the top over phase 2 (True: every block; an
            int: that many stages), each stage with a fresh optimizer.
        train_batchnorm: let unfrozen BatchNormalization layers train.
        augment: augmentation of the training batches of phase 2 (names as for
            `tfft.data.augmentation_layer`; False: none). The head phase is never augmented.
        mixup, cutmix, ema: see `tfft.recipe.Recipe`.
        lora_rank: train LoRA adapters of this rank on the backbone's projections (keras-hub
            BERT: query and value; Keras's `enable_lora`) and the head in phase 2, instead of
            unfreezing; the model ends with the adapters merged into its kernels.
        class_weight: passed to `fit`.
        monitor: the metric callbacks watch (default `val_loss`, or `loss` without
            validation data).
        patience: early-stopping patience.
        recipe: a `tfft.recipe.Recipe` or a dict of its fields (e.g. a tuning run's best
            config); the keywords above override it.
        epochs, initial_epoch: a training budget: run only epochs `[initial_epoch, epochs)`
            of the plan (counted over all phases). Each phase keeps its full length for its
            learning-rate schedule, so a budgeted run is the start of the full run
            (KerasTuner's Hyperband uses this).
        default_callbacks: add `tfft.default_callbacks(workdir, ...)` to each phase.
        seed: the seed of array shuffling, of the recipe's augmentation and of the order
            of cached features of a dataset that reshuffles on its own.
        verbose: Keras's progress bars.
        feature_store: a `tfft.features.FeatureStore` (default: the process-wide one).
        jit_compile: passed to `compile`.

    Returns:
        A `FineTuneResult`: `phases` (each with its history), `head_history`,
        `finetune_history`, `history`, `metrics` (final validation metrics, or the last
        training metrics without validation data) and `recipe` (the one that ran).

    Raises:
        ValueError: before anything is trained or written, when the data does not fit the
            model (image size or channels, labels outside `num_classes` or of the wrong
            form, NaN inputs: see `tfft.checks`), a spec cannot work (unfreeze, optimizer,
            schedule, augmentation), or `workdir` holds a run of another model or plan.
        FloatingPointError: when the loss turns NaN (TerminateOnNaN stops the phase); the
            NaN epoch is neither logged nor backed up, so a rerun resumes from the last
            good epoch.

    Example:
    >>> model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> x, y = np.random.rand(8, 32, 32, 3) * 255, np.arange(8) % 2
    >>> result = tfft.fine_tune(model, (x, y), (x, y), head_epochs=1, finetune_epochs=1, verbose=0)
    [tfft] recipe for image data (8 training examples): head 1 epoch (adam 0.001, constant) on cached features, ...
    >>> sorted(result.histories)
    ['finetune', 'head']
    """
    given = dict(head_epochs=head_epochs, finetune_epochs=finetune_epochs, unfreeze=unfreeze,
                 head_learning_rate=head_learning_rate, finetune_learning_rate=finetune_learning_rate,
                 head_optimizer=head_optimizer, finetune_optimizer=finetune_optimizer, head_schedule=head_schedule,
                 finetune_schedule=finetune_schedule, warmup_fraction=warmup_fraction, weight_decay=weight_decay,
                 label_smoothing=label_smoothing, layerwise_decay=layerwise_decay, gradual=gradual,
                 train_batchnorm=train_batchnorm, batch_size=batch_size, patience=patience, monitor=monitor,
                 augment=augment, mixup=mixup, cutmix=cutmix, ema=ema, lora_rank=lora_rank)
    chosen = _as_recipe(recipe).updated(**given)
    train, val, bundle = _data(train_data, validation_data, chosen, seed)
    checks.check_before_training(model, train_data, validation_data, train, val, bundle)  # before any write
    resolved, cached = _resolve(model, train, chosen, cache_features)
    info = model_info(model)
    print("[tfft] " + recipe_lib.describe(resolved, modality=info.get("modality", "image"),
                                          examples=batches_lib.estimate_examples(train),
                                          set_by=chosen.set_by(resolved), cached=cached), flush=True)
    distribute_lib.get_strategy(model.distribute_strategy)  # Keras fixes a multi-worker strategy needs
    # Multi-worker: every worker trains, only the chief's files persist (the others write to
    # a private temporary copy that starts from the chief's run state, for a consistent resume).
    workdir = distribute_lib.worker_workdir(workdir, resume_from=run_state.RESUME_FROM,
                                            strategy=model.distribute_strategy)
    for path in phases_lib.reset_temporaries(workdir):
        logger.info("removed %s, a half-written file of an interrupted run", path)
    state = run_state.RunState(workdir)
    plan = recipe_lib.plan_phases(resolved, model)
    state.bind(model, plan)
    state.data["recipe"] = resolved.to_dict()  # what ran, e.g. its label smoothing for scoring later

    runner = phases_lib.PhaseRunner(
        model, resolved, train, val, state=state, workdir=workdir, cache=cache_features,
        store=feature_store if feature_store is not None else features_lib.default_store, seed=seed,
        callbacks=callbacks, default_callbacks=default_callbacks,
        monitor=resolved.monitor or ("val_loss" if val is not None else "loss"), class_weight=class_weight,
        verbose=verbose, jit_compile=jit_compile)
    results = []
    for phase, start, stop in recipe_lib.within(plan, epochs=epochs, initial_epoch=initial_epoch):
        if state.done(phase.name):
            if not phase.is_head and resolved.lora_rank:
                lora.apply_lora_for_phase(model, resolved.lora_rank)  # its weights include the adapters
            state.restore(phase.name, model)
            results.append(PhaseResult(phase.name, start, stop, state.history(phase.name), resumed=True))
            logger.info("Phase %s already finished in %s; its weights were restored.", phase.name, workdir)
            continue
        results.append(runner.run(phase, start, stop))
        if stop == phase.end:
            state.finish(phase.name, model)
    if resolved.lora_rank:
        lora.merge_lora(model)  # a plain model: the adapters folded into the kernels, saved and loaded as usual
    metrics = phases_lib.final_metrics(model, val, results, verbose, resolved, runner.cached_evaluation)
    if workdir:
        state.set_metrics(metrics)
    return FineTuneResult(phases=results, metrics=metrics, recipe=resolved)


def _as_recipe(recipe):
    if recipe is None:
        return Recipe()
    if isinstance(recipe, Recipe):
        return recipe
    return Recipe.from_dict({k: v for k, v in dict(recipe).items() if k in Recipe.keys()})


def _data(train_data, validation_data, recipe, seed):
    """`(train, validation, bundle)` as batched datasets."""
    bundle = None
    if hasattr(train_data, "train") and hasattr(train_data, "validation"):  # a tfft.data.DataBundle
        bundle = train_data
        validation_data = train_data.validation if validation_data is None else validation_data
        train_data = train_data.train
    size = recipe.batch_size or ARRAY_BATCH_SIZE
    train = batches_lib.as_batches(train_data, size, shuffle=True, seed=seed)
    val = batches_lib.as_batches(validation_data, size, shuffle=False, seed=seed)
    return train, val, bundle


def _resolve(model, train, chosen, cache_features):
    """`(recipe, cached)`: the recipe with tfft's rule filling what `chosen` leaves open,
    checked against the model, and whether its head phase will train on cached features."""
    info = model_info(model)
    modality = info.get("modality", "image")
    cacheable, _ = recipe_lib.cache_decision(model, train, cache_features, assume_frozen=True)
    cacheable = cacheable and not chosen.train_batchnorm  # BatchNorm that trains in the head phase changes features
    resolved = chosen.resolve(modality=modality, examples=batches_lib.estimate_examples(train),
                              task=info.get("task", "multiclass"), cacheable=cacheable)
    if not phases_lib.augments_in_recipe(resolved, chosen.set_by(resolved), train, modality):
        resolved = dataclasses.replace(resolved, augment=False)
    recipe_lib.check_specs(resolved, model)
    return resolved, cacheable and resolved.head_epochs > 0


__all__ = ["fine_tune", "FineTuneResult", "PhaseResult", "Recipe"]
