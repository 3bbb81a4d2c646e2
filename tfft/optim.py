"""`compile_model`: optimizer, learning-rate schedule, task loss and metrics.

Everything here is Keras's own (optimizers, schedules, losses, metrics); tfft adds a warmup
wrapper for any schedule, a sparse-label front for `F1Score` and label smoothing, and
layer-wise learning-rate decay as a per-variable multiplier inside `update_step`.
"""

import logging

import keras
from keras import ops

from tfft.errors import did_you_mean

logger = logging.getLogger("tfft")

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "linear", "exponential", "step")
# Variables that get no weight decay (the BERT recipe: not on biases and normalization).
NO_DECAY = ["bias", "gamma", "beta"]


# --------------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfft")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to the peak rate, then `schedule` (counted from the end of warmup).

    `lr(step) = peak * step / warmup_steps` for `step < warmup_steps`, then
    `schedule(step - warmup_steps)` (or the constant `peak`).

    Args:
        schedule: a `LearningRateSchedule`, or a float (constant after warmup).
        warmup_steps: number of warmup steps.
        peak: the rate reached at the end of warmup (default: `schedule(0)`).
    """

    def __init__(self, schedule, warmup_steps, peak=None):
        if isinstance(schedule, dict):
            schedule = keras.optimizers.schedules.deserialize(schedule)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        if peak is None:
            peak = float(schedule(0)) if callable(schedule) else float(schedule)
        self.peak = float(peak)

    def _after(self, step):
        return self.schedule(step) if callable(self.schedule) else ops.convert_to_tensor(self.peak, "float32")

    def __call__(self, step):
        step = ops.cast(step, "float32")
        if self.warmup_steps <= 0:
            return ops.cast(self._after(step), "float32")
        warm = self.peak * step / float(self.warmup_steps)
        after = ops.cast(self._after(ops.maximum(step - self.warmup_steps, 0.0)), "float32")
        return ops.where(step < self.warmup_steps, warm, after)

    def get_config(self):
        schedule = self.schedule
        if callable(schedule):
            schedule = keras.optimizers.schedules.serialize(schedule)
        return {"schedule": schedule, "warmup_steps": self.warmup_steps, "peak": self.peak}


def make_schedule(
    learning_rate,
    schedule="constant",
    *,
    warmup_steps=0,
    decay_steps=None,
    alpha=0.0,
    decay_rate=0.1,
    step_boundaries=(1 / 3, 2 / 3),
    step_gamma=0.1,
):
    """Returns a float (constant, no warmup) or a `LearningRateSchedule`.

    Args:
        learning_rate: the peak rate.
        schedule: `"constant"`, `"cosine"` (to `alpha * lr`), `"linear"` (to `alpha * lr`),
            `"exponential"` (multiplied by `decay_rate` over `decay_steps`), or `"step"`
            (multiplied by `step_gamma` at each of `step_boundaries`: fractions of
            `decay_steps` or absolute steps).
        warmup_steps: linear warmup from 0 before the schedule starts.
        decay_steps: steps over which the schedule decays, after warmup (required for
            every schedule but `"constant"`).

    Example:
    >>> s = make_schedule(1.0, "linear", warmup_steps=10, decay_steps=90)
    >>> [round(float(s(t)), 3) for t in (0, 5, 10, 55, 100)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    schedules = keras.optimizers.schedules
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}.{did_you_mean(schedule, SCHEDULES)} Use one of {SCHEDULES}.")
    lr = float(learning_rate)
    if schedule == "constant":
        base = lr
    else:
        if not decay_steps or int(decay_steps) <= 0:
            raise ValueError(
                f"schedule={schedule!r} needs decay_steps > 0 (the number of optimizer steps after warmup; "
                "tfft.fine_tune computes it from the data)."
            )
        decay_steps = int(decay_steps)
        if schedule == "cosine":
            base = schedules.CosineDecay(lr, decay_steps, alpha=alpha)
        elif schedule == "linear":
            base = schedules.PolynomialDecay(lr, decay_steps, end_learning_rate=lr * alpha, power=1.0)
        elif schedule == "exponential":
            base = schedules.ExponentialDecay(lr, decay_steps, decay_rate=decay_rate)
        else:
            bounds = [int(b * decay_steps) if isinstance(b, float) and b < 1 else int(b) for b in step_boundaries]
            values = [lr * step_gamma**i for i in range(len(bounds) + 1)]
            base = schedules.PiecewiseConstantDecay(bounds, values)
    if warmup_steps and int(warmup_steps) > 0:
        return WarmupSchedule(base, int(warmup_steps), peak=lr)
    return base


# --------------------------------------------------------------------------------------------
# Optimizers, with optional layer-wise learning-rate multipliers
# --------------------------------------------------------------------------------------------


class _LayerwiseMixin:
    """Scales the learning rate of each variable by `lr_multipliers[variable.path]`.

    Keras 3 optimizers apply one rate to all variables; the multiplier is applied inside
    `update_step`, so momentum/Adam statistics stay per variable as usual.
    """

    def __init__(self, *args, lr_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = dict(lr_multipliers or {})
        self._multiplier_by_key = {}

    def build(self, variables):
        super().build(variables)
        self._multiplier_by_key = {
            self._var_key(v): float(self.lr_multipliers.get(v.path, 1.0)) for v in variables
        }

    def update_step(self, gradient, variable, learning_rate):
        multiplier = self._multiplier_by_key.get(self._var_key(variable), 1.0)
        if multiplier != 1.0:
            learning_rate = ops.cast(learning_rate, variable.dtype) * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["lr_multipliers"] = dict(self.lr_multipliers)
        return config


def _layerwise_class(base):
    cls = type(f"Layerwise{base.__name__}", (_LayerwiseMixin, base), {"__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfft")(cls)


LayerwiseAdam = _layerwise_class(keras.optimizers.Adam)
LayerwiseAdamW = _layerwise_class(keras.optimizers.AdamW)
LayerwiseSGD = _layerwise_class(keras.optimizers.SGD)
LayerwiseRMSprop = _layerwise_class(keras.optimizers.RMSprop)
_CLASSES = {
    "adam": (keras.optimizers.Adam, LayerwiseAdam),
    "adamw": (keras.optimizers.AdamW, LayerwiseAdamW),
    "sgd": (keras.optimizers.SGD, LayerwiseSGD),
    "rmsprop": (keras.optimizers.RMSprop, LayerwiseRMSprop),
}


def layerwise_multipliers(model, decay):
    """Learning-rate multipliers for layer-wise decay: the head gets 1, the top backbone block
    `decay`, the next `decay**2`, ..., the stem / embeddings `decay**(n_blocks + 1)`."""
    from tfft.freezing import _backbone, _block_pattern, backbone_layers, block_index

    backbone = _backbone(model)
    pattern = _block_pattern(model, backbone)
    if pattern is None:
        raise ValueError("layerwise_decay needs a backbone with a known block structure.")
    blocks, n_blocks = block_index(backbone, pattern)
    multipliers = {}
    for layer in backbone_layers(backbone):
        depth = n_blocks + 1 - blocks[layer.name]  # stem: n_blocks + 1, top block: 1
        for v in layer.trainable_weights:
            multipliers[v.path] = float(decay) ** depth
    return multipliers


def make_optimizer(
    optimizer="adam",
    learning_rate=1e-3,
    *,
    weight_decay=0.0,
    momentum=0.9,
    nesterov=False,
    clipnorm=None,
    lr_multipliers=None,
):
    """A Keras optimizer by name; weight decay (decoupled) skips biases and norm scales."""
    if isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer
    name = str(optimizer).lower()
    if name not in _CLASSES:
        raise ValueError(
            f"Unknown optimizer {optimizer!r}.{did_you_mean(name, OPTIMIZERS)} Use one of {OPTIMIZERS} "
            "or pass a keras.optimizers.Optimizer instance."
        )
    plain, layerwise = _CLASSES[name]
    cls = layerwise if lr_multipliers else plain
    kwargs = {"learning_rate": learning_rate, "clipnorm": clipnorm}
    if lr_multipliers:
        kwargs["lr_multipliers"] = lr_multipliers
    if name == "adamw":
        kwargs["weight_decay"] = float(weight_decay or 0.0)
    elif weight_decay:
        kwargs["weight_decay"] = float(weight_decay)
    if name == "sgd":
        kwargs.update(momentum=momentum, nesterov=nesterov)
    opt = cls(**kwargs)
    if weight_decay:
        opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


# --------------------------------------------------------------------------------------------
# Losses and metrics that fit the task
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="tfft")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse (integer-label) categorical cross-entropy with label smoothing.

    `keras.losses.SparseCategoricalCrossentropy` has no `label_smoothing`; this one
    one-hot encodes the labels and calls Keras's `categorical_crossentropy`.
    """

    def __init__(self, label_smoothing=0.0, name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        config = super().get_config()
        config["label_smoothing"] = self.label_smoothing
        return config


@keras.saving.register_keras_serializable(package="tfft")
class F1Score(keras.metrics.F1Score):
    """`keras.metrics.F1Score` that also takes integer labels (multiclass) and `(batch,)` 0/1
    labels (binary), as tfft's datasets yield them."""

    def __init__(self, average="macro", threshold=None, name="f1", dtype=None, sparse=True):
        super().__init__(average=average, threshold=threshold, name=name, dtype=dtype)
        self.sparse = sparse

    def update_state(self, y_true, y_pred, sample_weight=None):
        n = y_pred.shape[-1]
        if self.sparse and n and n > 1 and len(y_true.shape) < len(y_pred.shape) or (
            self.sparse and n and n > 1 and len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1
        ):
            y_true = ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), n, dtype=y_pred.dtype)
        else:
            y_true = ops.reshape(ops.cast(y_true, y_pred.dtype), ops.shape(y_pred))
        return super().update_state(y_true, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config["sparse"] = self.sparse
        return config


def default_loss(task, label_smoothing=0.0):
    """The loss for `task` (models output probabilities, not logits)."""
    if task == "multiclass":
        if label_smoothing:
            return SparseCategoricalCrossentropy(label_smoothing=label_smoothing)
        return keras.losses.SparseCategoricalCrossentropy()
    if task in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if task == "regression":
        return keras.losses.MeanSquaredError()
    raise ValueError(f"Unknown task {task!r}.")


def default_metrics(task, num_classes=None):
    """Keras metrics that fit `task`: accuracy (and top-5 past 5 classes), F1, precision,
    recall and AUC for binary / multilabel; MAE and RMSE for regression."""
    if task == "multiclass":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if num_classes and num_classes > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        metrics.append(F1Score(average="macro", name="f1"))
        return metrics
    if task in ("binary", "multilabel"):
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.AUC(name="auc", multi_label=task == "multilabel"),
            # "macro" also for binary: over its one output it is that output's F1, as a scalar
            # (average=None gives shape (1,), which TensorBoard and the CSV log reject).
            F1Score(average="macro", threshold=0.5, name="f1", sparse=False),
        ]
    if task == "regression":
        return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]
    raise ValueError(f"Unknown task {task!r}.")


# --------------------------------------------------------------------------------------------
# compile_model
# --------------------------------------------------------------------------------------------


def default_learning_rate(model):
    """1e-3 for image heads, 3e-5 for text (the BERT recipe)."""
    info = getattr(model, "tfft_info", {}) or {}
    return 3e-5 if info.get("modality") == "text" else 1e-3


def compile_model(
    model,
    *,
    optimizer="adam",
    learning_rate=None,
    schedule="constant",
    warmup_steps=0,
    decay_steps=None,
    weight_decay=0.0,
    label_smoothing=0.0,
    loss="auto",
    metrics="auto",
    jit_compile="auto",
    momentum=0.9,
    nesterov=False,
    clipnorm=None,
    layerwise_decay=None,
    task=None,
    steps_per_execution=1,
    **schedule_kwargs,
):
    """Compiles `model` with a named optimizer, a schedule, and the task's loss and metrics.

    Args:
        model: a model from `tfft.build_model` (its task is known), or any model with `task=`.
        optimizer: `"adam"`, `"adamw"`, `"sgd"` (with `momentum`, `nesterov`), `"rmsprop"`,
            or a `keras.optimizers.Optimizer` instance (then `learning_rate`, `schedule` and
            `weight_decay` are the instance's own).
        learning_rate: peak rate; default 1e-3 for images, 3e-5 for text.
        schedule: `"constant"`, `"cosine"`, `"linear"`, `"exponential"`, `"step"`.
        warmup_steps: linear warmup steps before the schedule.
        decay_steps: steps of decay after warmup (needed by every schedule but constant).
        weight_decay: decoupled weight decay (not applied to biases and normalization
            scales/offsets).
        label_smoothing: for classification losses.
        loss: `"auto"` (from the task) or any Keras loss.
        metrics: `"auto"` (from the task) or a list of Keras metrics.
        jit_compile: passed to `Model.compile` (`"auto"`: Keras decides; off on CPU).
        layerwise_decay: a factor in (0, 1]: each backbone block below the top trains at
            the rate times this factor once more (the BERT / BEiT layer-wise decay recipe).
        task: overrides the task recorded on the model.
        **schedule_kwargs: `alpha`, `decay_rate`, `step_boundaries`, `step_gamma` for
            `make_schedule`.

    Returns:
        The model, compiled.

    Example:
    >>> model = tfft.build_model("vgg16", num_classes=4, weights=None, input_shape=(32, 32, 3))
    >>> _ = tfft.compile_model(model, optimizer="sgd", learning_rate=0.01, schedule="cosine",
    ...                        warmup_steps=10, decay_steps=100)
    """
    info = getattr(model, "tfft_info", {}) or {}
    task = task or info.get("task")
    if task is None and (loss == "auto" or metrics == "auto"):
        raise ValueError("compile_model needs task= for a model that tfft.build_model did not build.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = optimizer
    else:
        lr = default_learning_rate(model) if learning_rate is None else float(learning_rate)
        rate = make_schedule(lr, schedule, warmup_steps=warmup_steps, decay_steps=decay_steps, **schedule_kwargs)
        multipliers = layerwise_multipliers(model, layerwise_decay) if layerwise_decay else None
        opt = make_optimizer(optimizer, rate, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                             clipnorm=clipnorm, lr_multipliers=multipliers)
    loss = default_loss(task, label_smoothing) if loss == "auto" else loss
    metrics = default_metrics(task, info.get("num_classes")) if metrics == "auto" else metrics
    model.compile(optimizer=opt, loss=loss, metrics=metrics, jit_compile=jit_compile,
                  steps_per_execution=steps_per_execution)
    return model


def current_learning_rate(optimizer):
    """The rate the optimizer uses at its current iteration, as a float."""
    lr = optimizer._learning_rate
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return float(lr(optimizer.iterations))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def uses_schedule(optimizer):
    """True when the optimizer's rate comes from a `LearningRateSchedule`."""
    return isinstance(getattr(optimizer, "_learning_rate", None), keras.optimizers.schedules.LearningRateSchedule)


__all__ = [
    "compile_model", "make_schedule", "make_optimizer", "default_loss", "default_metrics", "WarmupSchedule",
    "F1Score", "SparseCategoricalCrossentropy", "layerwise_multipliers", "current_learning_rate",
]
