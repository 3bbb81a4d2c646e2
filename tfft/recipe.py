"""The fine-tuning recipe as data: one core that `fine_tune`, the tuner and the LR finder share.

A `Recipe` holds every choice of a two-phase transfer run (phases, epochs, rates,
optimizers, schedules, regularization, augmentation); `None` in a field means "tfft's rule
decides". `default_recipe` is that rule, by modality, backbone family and data size (the
best recipe measured here: `benchmarks/RESULTS.md`; the rule is written out in
BUILD_NOTES.md). From a resolved recipe come the phase plan (`plan_phases`), each phase's
`compile_model` arguments (`compile_arguments`) and whether the head phase may train on
cached backbone features (`cache_decision`). Because `fine_tune` and every tuning trial
run through these same functions, a trial's best config retrains to the same model.

Example:
>>> recipe = Recipe(finetune_epochs=3).resolve(modality="image", examples=1200)
>>> recipe.finetune_epochs, recipe.finetune_learning_rate, recipe.augment
(3, 0.0001, 'default')
"""

import dataclasses
import math
import re
from typing import Any, Optional

import tensorflow as tf

from tfft import features as features_lib
from tfft import lora, optim
from tfft.data import augmentation_layer, is_augmented
from tfft.errors import did_you_mean
from tfft.freezing import block_index, block_pattern, get_backbone, resolve_spec
from tfft.info import model_info

# Data sizes where the rule changes (training examples).
SMALL_IMAGE_DATA = 3_000
LARGE_IMAGE_DATA = 30_000
SMALL_TEXT_DATA = 20_000
# Head epochs when the head phase trains on cached features (about as cheap as one epoch
# of the full model in all) and when it must recompute the backbone every epoch.
CACHED_HEAD_EPOCHS = 20
RECOMPUTED_HEAD_EPOCHS = 5


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every choice of a `fine_tune` run; `None` means "the rule's value" (`default_recipe`).

    The field names are the `fine_tune` keywords, the config keys of `experiments.train` and
    the keys of a tuning run's `best_config.json`: one vocabulary everywhere.

    Attributes:
        head_epochs: epochs of the head phase (backbone frozen); 0 skips it.
        finetune_epochs: epochs of the fine-tune phase(s); 0 skips them.
        unfreeze: what the fine-tune phase trains, as a freeze spec counted from the top.
        head_learning_rate, finetune_learning_rate: peak rates of the two phases.
        head_optimizer, finetune_optimizer: `"adam"`, `"adamw"`, `"sgd"`, `"rmsprop"` or
            a `keras.optimizers.Optimizer` (copied per phase).
        head_schedule, finetune_schedule: `tfft.make_schedule` names.
        warmup_fraction: linear warmup over this fraction of each phase's steps.
        weight_decay: decoupled weight decay of every phase (not on biases and norms).
        label_smoothing: for classification losses.
        layerwise_decay: per-block rate factor in the fine-tune phase (0: off).
        gradual: unfreeze block by block over the fine-tune part (True, or a stage count).
        train_batchnorm: let unfrozen BatchNormalization layers train.
        batch_size: global batch size (datasets are rebatched to it; None: their own).
        patience: early-stopping patience (ReduceLROnPlateau waits half of it).
        monitor: what early stopping and the checkpoint watch (None: `val_loss`, or
            `loss` without validation data).
        augment: augmentation of the training batches of the phases where the backbone
            trains (`tfft.data.augmentation_layer` forms; False: none). The head phase sees
            un-augmented data, so it can train on cached features.
        mixup, cutmix: MixUp / CutMix alphas for those phases (0: off).
        ema: keep an exponential moving average of the weights (a momentum, or True).
        lora_rank: train LoRA adapters of this rank instead of the backbone (0: off).
    """

    head_epochs: Optional[int] = None
    finetune_epochs: Optional[int] = None
    unfreeze: Any = None
    head_learning_rate: Optional[float] = None
    finetune_learning_rate: Optional[float] = None
    head_optimizer: Any = None
    finetune_optimizer: Any = None
    head_schedule: Optional[str] = None
    finetune_schedule: Optional[str] = None
    warmup_fraction: Optional[float] = None
    weight_decay: Optional[float] = None
    label_smoothing: Optional[float] = None
    layerwise_decay: Optional[float] = None
    gradual: Any = None
    train_batchnorm: Optional[bool] = None
    batch_size: Optional[int] = None
    patience: Optional[int] = None
    monitor: Optional[str] = None
    augment: Any = None
    mixup: Optional[float] = None
    cutmix: Optional[float] = None
    ema: Any = None
    lora_rank: Optional[int] = None

    @classmethod
    def keys(cls):
        """The field names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values):
        """A recipe from a mapping of field names; an unknown name is refused with a suggestion."""
        values = dict(values or {})
        unknown = [k for k in values if k not in cls.keys()]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a recipe setting.{did_you_mean(unknown[0], cls.keys())} "
                             f"Settings: {', '.join(cls.keys())}.")
        return cls(**values)

    def to_dict(self):
        """The fields as JSON-ready data (an optimizer instance becomes its class name)."""
        out = {}
        for key in self.keys():
            value = getattr(self, key)
            if hasattr(value, "get_config") and not isinstance(value, (str, int, float, bool)):
                value = type(value).__name__
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    def updated(self, **values):
        """A copy with the given fields set (None values are skipped: they keep this recipe's)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})

    def resolve(self, *, modality="image", examples=None, task="multiclass", cacheable=True):
        """A copy with every `None` field filled from `default_recipe`."""
        rule = default_recipe(modality=modality, examples=examples, task=task, cacheable=cacheable)
        return rule.updated(**{k: getattr(self, k) for k in self.keys()})

    def set_by(self, resolved):
        """The fields of `resolved` that this (unresolved) recipe set, as `{name: value}`."""
        return {k: getattr(resolved, k) for k in self.keys() if getattr(self, k) is not None}


def default_recipe(*, modality="image", examples=None, task="multiclass", cacheable=True):
    """tfft's rule: the best measured recipe for the modality and the data size.

    Images (measured on flowers with EfficientNet-Lite, `benchmarks/RESULTS.md`): the head
    on cached features for up to 20 epochs (5 when the backbone must be recomputed each
    epoch), then the whole backbone with BatchNorm frozen, Adam 1e-4 with cosine decay,
    10 epochs up to 3,000 examples, 5 up to 30,000, 3 beyond; flip / zoom / rotation /
    translation / contrast augmentation where the backbone trains; label smoothing 0.1;
    early stopping with patience 5.

    Text (SST-2 with MiniLM): the whole encoder with AdamW 1e-4 and weight decay 0.01, 10%
    linear warmup then linear decay, no augmentation; one head epoch first, then 4 epochs up to
    20,000 examples and 1 epoch beyond (the measured recipes; see BUILD_NOTES.md).

    Args:
        modality: `"image"` or `"text"`.
        examples: training examples (None: unknown, the small-data rule applies).
        task: label smoothing only applies to classification.
        cacheable: whether the head phase can train on cached features.

    Returns:
        A fully resolved `Recipe`.
    """
    smoothing = 0.0 if task == "regression" else 0.1
    n = examples if examples is not None else 0
    if modality == "text":
        small = n <= SMALL_TEXT_DATA
        return Recipe(  # large data: one epoch, the measured recipe (89.3% SST-2 dev from 61k phrases, 24 min)
            head_epochs=1, finetune_epochs=4 if small else 1, unfreeze="backbone",
            head_learning_rate=1e-3, finetune_learning_rate=1e-4, head_optimizer="adamw",
            finetune_optimizer="adamw", head_schedule="constant", finetune_schedule="linear", warmup_fraction=0.1,
            weight_decay=0.01, label_smoothing=0.0, layerwise_decay=0.0, gradual=False, train_batchnorm=False,
            batch_size=None, patience=5, monitor=None, augment=False, mixup=0.0, cutmix=0.0, ema=False,
            lora_rank=0)
    finetune_epochs = 10 if n <= SMALL_IMAGE_DATA else (5 if n <= LARGE_IMAGE_DATA else 3)
    return Recipe(
        head_epochs=CACHED_HEAD_EPOCHS if cacheable else RECOMPUTED_HEAD_EPOCHS, finetune_epochs=finetune_epochs,
        unfreeze="backbone", head_learning_rate=1e-3, finetune_learning_rate=1e-4, head_optimizer="adam",
        finetune_optimizer="adam", head_schedule="constant", finetune_schedule="cosine", warmup_fraction=0.0,
        weight_decay=0.0, label_smoothing=smoothing, layerwise_decay=0.0, gradual=False, train_batchnorm=False,
        batch_size=None, patience=5, monitor=None, augment="default", mixup=0.0, cutmix=0.0, ema=False, lora_rank=0)


def describe(recipe, *, modality, examples, set_by=(), cached=None):
    """One line saying what a run will do and which settings the user chose.

    Example:
    >>> r = default_recipe(modality="text", examples=500)
    >>> describe(r, modality="text", examples=500)[:60]
    'recipe for text data (500 training examples): head 1 epoch ('
    """
    def phase(epochs, optimizer, rate, schedule):
        name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
        return f"{epochs} epoch{'s' if epochs != 1 else ''} ({name} {rate:g}, {schedule})"

    size = f"{examples:,} training examples" if examples is not None else "data size unknown"
    parts = [f"recipe for {modality} data ({size}):"]
    if recipe.head_epochs:
        head = phase(recipe.head_epochs, recipe.head_optimizer, recipe.head_learning_rate, recipe.head_schedule)
        parts.append(f"head {head}{' on cached features' if cached else ''}")
    if recipe.finetune_epochs:
        what = "LoRA adapters" if recipe.lora_rank else f"unfreeze {recipe.unfreeze}"
        tail = phase(recipe.finetune_epochs, recipe.finetune_optimizer, recipe.finetune_learning_rate,
                     recipe.finetune_schedule)
        parts.append(("then " if recipe.head_epochs else "") + f"{what} {tail}")
    extras = []
    if recipe.warmup_fraction:
        extras.append(f"warmup {recipe.warmup_fraction:g}")
    if recipe.weight_decay:
        extras.append(f"weight decay {recipe.weight_decay:g}")
    if recipe.label_smoothing:
        extras.append(f"label smoothing {recipe.label_smoothing:g}")
    if recipe.augment and recipe.finetune_epochs:
        extras.append(f"augment {recipe.augment} (fine-tune phases)")
    for name in ("mixup", "cutmix", "ema", "layerwise_decay"):
        if getattr(recipe, name):
            extras.append(f"{name} {getattr(recipe, name)}")
    extras.append(f"early stopping on {recipe.monitor or 'val_loss'} (patience {recipe.patience})")
    line = " ".join(parts[:1]) + " " + ", ".join(parts[1:]) + "; " + ", ".join(extras)
    if set_by:
        line += "; set by you: " + ", ".join(f"{k}={v!r}" for k, v in dict(set_by).items())
    return line


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase of the plan: epochs `[start, end)` (counted across phases) and what trains.

    `trains` is `"head"` for the head phase, else the unfreeze spec of the fine-tune phase.
    """

    name: str
    trains: Any
    start: int
    end: int

    @property
    def epochs(self):
        return self.end - self.start

    @property
    def is_head(self):
        return self.name == "head"

    def as_record(self):
        """`[name, spec, epochs]`, as the run state stores the plan."""
        return [self.name, "backbone-frozen" if self.is_head else str(self.trains), int(self.epochs)]


def plan_phases(recipe, model):
    """The phases of a resolved recipe: the head phase, then one fine-tune phase (or the
    stages of gradual unfreezing, each with a fresh optimizer)."""
    stages = []
    if recipe.head_epochs > 0:
        stages.append(("head", "head", recipe.head_epochs))
    stages += _finetune_stages(recipe, model)
    if not stages:
        raise ValueError("Nothing to train: head_epochs and finetune_epochs are both 0.")
    phases, start = [], 0
    for name, trains, epochs in stages:
        phases.append(Phase(name, trains, start, start + epochs))
        start += epochs
    return phases


def _finetune_stages(recipe, model):
    epochs, spec = recipe.finetune_epochs, recipe.unfreeze
    if epochs <= 0:
        return []
    if not recipe.gradual:
        return [("finetune", spec, epochs)]
    target = sorted(layer.name for layer in resolve_spec(model, spec, from_top=True))
    backbone = get_backbone(model)
    pattern = block_pattern(model, backbone)
    if pattern is None:
        raise ValueError("gradual unfreezing needs a backbone with a known block structure.")
    _, total_blocks = block_index(backbone, pattern)
    # Stage k trains the top k blocks (within `unfreeze`); the last stage trains all of `unfreeze`.
    n_stages = total_blocks + 1 if recipe.gradual is True else max(1, int(recipe.gradual))
    stages = []
    for k in range(1, min(n_stages, total_blocks + 1)):
        names = sorted({layer.name for layer in resolve_spec(model, f"top:{k}", from_top=True)} & set(target))
        if names and names not in stages and names != target:
            stages.append(names)
    stages = stages[: n_stages - 1] + [target]
    counts = [epochs // len(stages)] * len(stages)
    for i in range(epochs - sum(counts)):
        counts[-1 - i] += 1
    return [(f"finetune_{i}", "re:" + "|".join(map(re.escape, names)), e)
            for i, (names, e) in enumerate(zip(stages, counts)) if e > 0]


def within(phases, *, epochs=None, initial_epoch=0):
    """The part of a plan inside epochs `[initial_epoch, epochs)`: a training budget.

    A budget (Hyperband's, or `fine_tune(epochs=...)`) runs the first epochs of the full
    plan: each phase keeps its full length for its schedule, so a budgeted run is the
    prefix of the run without a budget.
    """
    end = phases[-1].end if epochs is None else int(epochs)
    kept = []
    for phase in phases:
        start, stop = max(phase.start, int(initial_epoch)), min(phase.end, end)
        if stop > start:
            kept.append((phase, start, stop))
    return kept


def check_specs(recipe, model):
    """Raises `ValueError` naming the fix for a spec that cannot work, before any training:
    the unfreeze spec, the optimizers, the schedules and the augmentation names."""
    if recipe.finetune_epochs and recipe.lora_rank:
        lora.lora_targets(model, get_backbone(model))  # a backbone without projections fails here
    elif recipe.finetune_epochs:
        try:
            resolve_spec(model, recipe.unfreeze, from_top=True)
        except ValueError as e:
            raise ValueError(f"unfreeze={recipe.unfreeze!r} does not fit this backbone: {e}") from None
    for key in ("head_optimizer", "finetune_optimizer"):
        value = getattr(recipe, key)
        if isinstance(value, str) and value.lower() not in optim.OPTIMIZERS:
            raise ValueError(f"{key}={value!r} is not an optimizer.{did_you_mean(value, optim.OPTIMIZERS)} "
                             f"Use one of {optim.OPTIMIZERS} or a keras.optimizers.Optimizer.")
    for key in ("head_schedule", "finetune_schedule"):
        value = getattr(recipe, key)
        if value not in optim.SCHEDULES:
            raise ValueError(f"{key}={value!r} is not a schedule.{did_you_mean(value, optim.SCHEDULES)} "
                             f"Use one of {optim.SCHEDULES}.")
    for key in ("warmup_fraction", "label_smoothing"):
        value = getattr(recipe, key)
        if not 0.0 <= float(value) < 1.0:
            raise ValueError(f"{key}={value!r} must be a fraction in [0, 1).")
    if recipe.augment and recipe.finetune_epochs:
        augmentation_layer(recipe.augment)  # an unknown name fails here, not after the head phase
    task = model_info(model).get("task")
    if (recipe.mixup or recipe.cutmix) and task == "regression":
        raise ValueError("mixup / cutmix mix class labels; a regression model has none (set them to 0).")
    if recipe.cutmix and not 0.0 < float(recipe.cutmix) <= 1.0:
        raise ValueError(f"cutmix={recipe.cutmix!r}: the CutMix alpha must be in (0, 1] (Keras's CutMix bounds it).")
    if recipe.mixup and float(recipe.mixup) < 0:
        raise ValueError(f"mixup={recipe.mixup!r}: the MixUp alpha must be positive (0: off).")


def compile_arguments(recipe, phase, steps_per_epoch, *, jit_compile="auto"):
    """The `tfft.compile_model` arguments of `phase` (the full phase's steps set the schedule)."""
    head = phase.is_head
    total = max(1, int(steps_per_epoch) * phase.epochs)
    warmup = int(round(recipe.warmup_fraction * total))
    schedule = recipe.head_schedule if head else recipe.finetune_schedule
    args = dict(
        optimizer=_fresh(recipe.head_optimizer if head else recipe.finetune_optimizer),
        learning_rate=recipe.head_learning_rate if head else recipe.finetune_learning_rate,
        schedule=schedule, warmup_steps=warmup,
        decay_steps=max(1, total - warmup) if schedule != "constant" else None,
        weight_decay=recipe.weight_decay, label_smoothing=recipe.label_smoothing, jit_compile=jit_compile,
        layerwise_decay=(recipe.layerwise_decay or None) if not head else None,
    )
    if recipe.ema:
        args["ema"] = recipe.ema
    return args


def _fresh(optimizer):
    """A new optimizer of the same kind per phase (no state carried into other variables)."""
    if isinstance(optimizer, str):
        return optimizer
    return optimizer.__class__.from_config(optimizer.get_config())


# --------------------------------------------------------------------------------------------
# May the head phase train on cached features?
# --------------------------------------------------------------------------------------------


def cache_decision(model, train, cache="auto", *, assume_frozen=False):
    """`(use_cache, reasons)`: whether the head phase may train on cached backbone features.

    It may when the backbone is frozen, nothing random runs before it, the training data
    is not augmented (by a tfft loader) and finite. `cache=True` raises when it may not.
    `assume_frozen`: decide as if the backbone were frozen (planning, before the head
    phase freezes it).
    """
    if cache is False:
        return False, ["cache_features=False"]
    reasons = []
    if not assume_frozen and not features_lib.backbone_is_frozen(model):
        reasons.append("the backbone is not frozen")
    if features_lib.has_random_preprocessing(model):
        reasons.append("random layers run before the backbone")
    if train is not None:
        if is_augmented(train):
            reasons.append("the training data is augmented")
        if int(train.cardinality()) == tf.data.INFINITE_CARDINALITY:
            reasons.append("the dataset repeats forever")
    if reasons and cache is True:
        raise ValueError(f"cache_features=True but {', and '.join(reasons)}.")
    return not reasons, reasons


def steps_per_epoch(examples, batch_size):
    """Batches per epoch of `examples` in batches of `batch_size` (the last one partial)."""
    return math.ceil(int(examples) / int(batch_size))
