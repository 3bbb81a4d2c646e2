"""`compile_model`: optimizer, learning-rate schedule, task loss and metrics.

Everything here is Keras's own (optimizers, schedules, losses, metrics); tfft adds a warmup
wrapper for any schedule, a sparse-label front for `F1Score` and label smoothing, layer-wise
learning-rate decay as a per-variable multiplier inside `update_step`, a loss and metrics that
take soft labels (MixUp / CutMix batches) as well as hard ones, and the callbacks that make
validation, checkpoints and the final weights those of the optimizer's moving average (EMA).
"""

import logging

import keras
from keras import ops

from tfft.errors import did_you_mean
from tfft.freezing import backbone_layers, block_index, block_pattern, get_backbone
from tfft.info import model_info

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
    backbone = get_backbone(model)
    pattern = block_pattern(model, backbone)
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
    ema=None,
):
    """A Keras optimizer by name; weight decay (decoupled) skips biases and norm scales.

    Args:
        optimizer: `"adam"`, `"adamw"`, `"sgd"`, `"rmsprop"`, or an optimizer instance
            (returned as it is).
        learning_rate: a float or a `LearningRateSchedule`.
        weight_decay: decoupled weight decay, not on biases and normalization.
        momentum, nesterov: for SGD.
        clipnorm: gradient clipping by norm.
        lr_multipliers: per-variable rate multipliers (`layerwise_multipliers`).
        ema: `True` (momentum `DEFAULT_EMA_MOMENTUM`) or a momentum in (0, 1): the optimizer
            keeps an exponential moving average of the weights (Keras's `use_ema`).

    Example:
    >>> opt = make_optimizer("sgd", 0.1, ema=0.999)
    >>> opt.use_ema, opt.ema_momentum
    (True, 0.999)
    """
    if isinstance(optimizer, keras.optimizers.Optimizer):
        _check_instance_ema(optimizer, ema)
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
    ema_momentum = _ema_momentum(ema)
    if ema_momentum is not None:
        kwargs.update(use_ema=True, ema_momentum=ema_momentum)
    opt = cls(**kwargs)
    if weight_decay:
        opt.exclude_from_weight_decay(var_names=NO_DECAY)
    return opt


# --------------------------------------------------------------------------------------------
# Losses and metrics that fit the task
# --------------------------------------------------------------------------------------------


def is_soft_labels(y_true, y_pred):
    """Whether `y_true` holds one vector per example (one-hot, smoothed, mixed) rather than class
    indices: it has `y_pred`'s rank and a last axis other than 1 (static shapes).

    Example:
    >>> is_soft_labels(ops.zeros((4, 3)), ops.zeros((4, 3))), is_soft_labels(ops.zeros((4,)), ops.zeros((4, 3)))
    (True, False)
    """
    return len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] != 1


@keras.saving.register_keras_serializable(package="tfft")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy on integer labels or on soft label vectors, with label smoothing.

    Integer labels (`(batch,)` or `(batch, 1)`) get Keras's sparse categorical cross-entropy
    (one-hot encoded first when smoothing, since `keras.losses.SparseCategoricalCrossentropy`
    has no `label_smoothing`); label vectors of the prediction's shape (one-hot, or mixed by
    MixUp / CutMix: `tfft.data.augment.mix_batches`) get `categorical_crossentropy`, smoothed
    alike. The model outputs probabilities.

    Example:
    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    >>> p = np.array([[0.7, 0.2, 0.1]], "float32")
    >>> bool(np.isclose(loss(np.array([0]), p), loss(np.array([[1.0, 0.0, 0.0]]), p)))
    True
    """

    def __init__(self, label_smoothing=0.0, name="sparse_categorical_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        if is_soft_labels(y_true, y_pred):
            target = ops.cast(y_true, y_pred.dtype)
        elif not self.label_smoothing:
            return keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        else:
            labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
            target = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(target, y_pred, label_smoothing=self.label_smoothing)

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


def hard_labels(y_true, y_pred, task):
    """The hard labels behind `y_true`: the argmax of soft label vectors (multiclass), float
    targets thresholded at 0.5 (binary / multilabel); hard labels come back as they are.

    Example:
    >>> hard_labels(ops.convert_to_tensor([[0.3, 0.7]]), ops.zeros((1, 2)), "multiclass").numpy().tolist()
    [1]
    """
    y_true = ops.convert_to_tensor(y_true)
    if task == "multiclass":
        return ops.argmax(y_true, axis=-1) if is_soft_labels(y_true, y_pred) else y_true
    if task in ("binary", "multilabel") and "float" in str(y_true.dtype):
        return ops.cast(ops.greater_equal(y_true, 0.5), y_true.dtype)  # 0/1 labels stay as they are
    return y_true


@keras.saving.register_keras_serializable(package="tfft")
class HardLabelMetric(keras.metrics.Metric):
    """Scores `metric` against hard labels, also when the batches carry soft ones.

    MixUp / CutMix training batches carry mixed label vectors; accuracy, top-5 and F1 are
    computed against their argmax, precision / recall / AUC / accuracy of binary and
    multilabel heads against the targets thresholded at 0.5 (`hard_labels`). Hard labels
    (validation data, unmixed training) reach `metric` unchanged, so its values are the same
    as without the wrapper. Name, result and state are `metric`'s.

    Args:
        metric: a `keras.metrics.Metric` (or its config / name).
        task: `"multiclass"`, `"binary"` or `"multilabel"`.

    Example:
    >>> import numpy as np
    >>> acc = HardLabelMetric(keras.metrics.SparseCategoricalAccuracy(name="accuracy"), "multiclass")
    >>> _ = acc.update_state(np.array([[0.8, 0.2], [0.4, 0.6]]), np.array([[0.9, 0.1], [0.8, 0.2]]))
    >>> acc.name, float(acc.result())
    ('accuracy', 0.5)
    """

    def __init__(self, metric, task="multiclass", name=None, dtype=None):
        metric = metric if isinstance(metric, keras.metrics.Metric) else keras.metrics.get(metric)
        super().__init__(name=name or metric.name, dtype=dtype or metric.dtype)
        self.metric = metric
        self.task = task

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        return self.metric.update_state(hard_labels(y_true, y_pred, self.task), y_pred, sample_weight=sample_weight)

    def result(self):
        return self.metric.result()

    def reset_state(self):
        self.metric.reset_state()

    def get_config(self):
        return {"metric": keras.metrics.serialize(self.metric), "task": self.task, "name": self.name,
                "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["metric"] = keras.metrics.deserialize(config["metric"])
        return cls(**config)


def default_loss(task, label_smoothing=0.0):
    """The loss for `task` (models output probabilities, not logits).

    Every classification loss takes hard and soft labels alike: multiclass integer labels or
    label vectors (`SparseCategoricalCrossentropy`), binary / multilabel 0/1 or mixed targets
    (Keras's `BinaryCrossentropy`). `label_smoothing` applies to both.

    Example:
    >>> import numpy as np
    >>> loss = default_loss("multiclass", label_smoothing=0.1)
    >>> p = np.array([[0.6, 0.4]], "float32")
    >>> bool(np.isclose(loss(np.array([1]), p), loss(np.array([[0.0, 1.0]]), p)))
    True
    """
    if task == "multiclass":
        return SparseCategoricalCrossentropy(label_smoothing=label_smoothing)
    if task in ("binary", "multilabel"):
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
    if task == "regression":
        return keras.losses.MeanSquaredError()
    raise ValueError(f"Unknown task {task!r}.")


def default_metrics(task, num_classes=None):
    """Keras metrics that fit `task`: accuracy (and top-5 past 5 classes), F1, precision,
    recall and AUC for binary / multilabel; MAE and RMSE for regression.

    The classification metrics are wrapped in `HardLabelMetric`: they take the soft labels of
    MixUp / CutMix batches as well as hard labels (then their values are the plain metrics').

    Example:
    >>> [m.name for m in default_metrics("multiclass", num_classes=10)]
    ['accuracy', 'top5_accuracy', 'f1']
    """
    if task == "multiclass":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if num_classes and num_classes > 5:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"))
        metrics.append(F1Score(average="macro", name="f1"))
    elif task in ("binary", "multilabel"):
        metrics = [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.AUC(name="auc", multi_label=task == "multilabel"),
            # "macro" also for binary: over its one output it is that output's F1, as a scalar
            # (average=None gives shape (1,), which TensorBoard and the CSV log reject).
            F1Score(average="macro", threshold=0.5, name="f1", sparse=False),
        ]
    elif task == "regression":
        return [keras.metrics.MeanAbsoluteError(name="mae"), keras.metrics.RootMeanSquaredError(name="rmse")]
    else:
        raise ValueError(f"Unknown task {task!r}.")
    return [HardLabelMetric(metric, task) for metric in metrics]


# --------------------------------------------------------------------------------------------
# Weight averaging (EMA)
# --------------------------------------------------------------------------------------------

DEFAULT_EMA_MOMENTUM = 0.99  # Keras's default; runs of a few hundred steps need no more


def _ema_momentum(ema):
    """`ema=` as a momentum, or None when off."""
    if ema is None or ema is False:
        return None
    if ema is True:
        return DEFAULT_EMA_MOMENTUM
    if isinstance(ema, (int, float)) and 0.0 < float(ema) < 1.0:
        return float(ema)
    raise ValueError(f"ema= takes True (momentum {DEFAULT_EMA_MOMENTUM}) or a momentum in (0, 1) such as 0.999; "
                     f"got {ema!r}.")


def _check_instance_ema(optimizer, ema):
    """An optimizer instance keeps its own EMA settings: `ema=` may only agree with them."""
    momentum = _ema_momentum(ema)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if momentum is None or (inner.use_ema and (ema is True or inner.ema_momentum == momentum)):
        return
    raise ValueError(
        f"ema={ema!r} cannot change the optimizer instance you passed ({type(inner).__name__}, "
        f"use_ema={inner.use_ema}): create it with use_ema=True, ema_momentum=... yourself, or pass its name "
        f"(e.g. optimizer={type(inner).__name__.lower()!r}) with ema=."
    )


def uses_ema(optimizer):
    """Whether `optimizer` (a loss-scale wrapper's inner one included) keeps a weight average.

    Example:
    >>> uses_ema(make_optimizer("adam", ema=True)), uses_ema(make_optimizer("adam"))
    (True, False)
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return bool(getattr(inner, "use_ema", False))


class EMAWeights(keras.callbacks.SwapEMAWeights):
    """Puts the optimizer's EMA weights in the model for validation and at each epoch's end.

    Keras's `SwapEMAWeights(swap_on_epoch=True)` swaps the weights in at an epoch's end for the
    callbacks after it, and back at the next epoch's start; but a run that early stopping
    (or TerminateOnNaN) ends before the last epoch then ends with the raw weights, and a
    backup taken while they are swapped resumes with the two sets exchanged. Here
    `self.swap_back`, a second callback, swaps them back at the end of the same epoch: put
    this one before the checkpoint and early-stopping callbacks and `swap_back` before
    `BackupAndRestore` (`ema_callbacks` does). Validation swaps as in Keras's.
    """

    def __init__(self):
        super().__init__(swap_on_epoch=False)
        self.swap_back = _SwapBackEMA(self)

    def on_train_begin(self, logs=None):
        self._ema_weights_in_model = False

    def on_epoch_end(self, epoch, logs=None):
        if not self._ema_weights_in_model:
            self._swap_variables()
            self._ema_weights_in_model = True


class _SwapBackEMA(keras.callbacks.Callback):
    """The raw weights back in the model at an epoch's end (see `EMAWeights`)."""

    def __init__(self, owner):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        if self.owner._ema_weights_in_model:
            self.owner._swap_variables()
            self.owner._ema_weights_in_model = False


def ema_callbacks(model, callbacks=()):
    """`callbacks` with what makes a `fit` with an EMA optimizer validate, checkpoint and end
    on the average's weights; `callbacks` as they are when the model's optimizer has no EMA.

    `EMAWeights` goes first (so checkpoints, early stopping and logs after it see the average),
    its `swap_back` just before the first `BackupAndRestore` (so backups hold the raw weights and
    the average in the optimizer, and a resumed run goes on as the uninterrupted one). At the
    end of `fit`, Keras's `finalize_variable_values` puts the average in the model.

    Args:
        model: a model compiled with `compile_model(..., ema=...)`.
        callbacks: the `fit` callbacks (a list, e.g. `tfft.default_callbacks(...)`).

    Returns:
        A new list.

    Example:
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer=make_optimizer("sgd", 0.1, ema=0.9), loss="mse")
    >>> [type(c).__name__ for c in ema_callbacks(model, [keras.callbacks.TerminateOnNaN()])]
    ['EMAWeights', 'TerminateOnNaN', '_SwapBackEMA']
    """
    callbacks = list(callbacks)
    if not uses_ema(getattr(model, "optimizer", None)):
        return callbacks
    ema = EMAWeights()
    at = next((i for i, cb in enumerate(callbacks) if isinstance(cb, keras.callbacks.BackupAndRestore)),
              len(callbacks))
    return [ema, *callbacks[:at], ema.swap_back, *callbacks[at:]]


# --------------------------------------------------------------------------------------------
# compile_model
# --------------------------------------------------------------------------------------------


def default_learning_rate(model):
    """1e-3 for image heads, 3e-5 for text (the BERT recipe)."""
    info = model_info(model)
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
    ema=None,
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
        loss: `"auto"` (from the task: `default_loss`, which takes integer and soft labels
            alike, so MixUp / CutMix batches need no other setting) or any Keras loss.
        metrics: `"auto"` (from the task: `default_metrics`, scored against hard labels also
            on soft-label batches) or a list of Keras metrics.
        jit_compile: passed to `Model.compile` (`"auto"`: Keras decides; off on CPU).
        layerwise_decay: a factor in (0, 1]: each backbone block below the top trains at
            the rate times this factor once more (the BERT / BEiT layer-wise decay recipe).
        task: overrides the task recorded on the model.
        ema: `True` (momentum `DEFAULT_EMA_MOMENTUM`, 0.99) or a momentum in (0, 1): the
            optimizer keeps an exponential moving average of the trainable weights (Keras's
            `use_ema`), and `fit` ends with the average in the model. Fit with
            `ema_callbacks(model, callbacks)` so that validation and checkpoints use it too.
            With an optimizer instance, set `use_ema` on it instead (`ema=` is refused unless
            it agrees).
        **schedule_kwargs: `alpha`, `decay_rate`, `step_boundaries`, `step_gamma` for
            `make_schedule`.

    Returns:
        The model, compiled.

    Example:
    >>> import tfft
    >>> model = tfft.build_model("vgg16", num_classes=4, weights=None, input_shape=(32, 32, 3))
    >>> _ = tfft.compile_model(model, optimizer="sgd", learning_rate=0.01, schedule="cosine",
    ...                        warmup_steps=10, decay_steps=100)
    """
    info = model_info(model)
    task = task or info.get("task")
    if task is None and (loss == "auto" or metrics == "auto"):
        raise ValueError("compile_model needs task= for a model that tfft.build_model did not build.")
    if isinstance(optimizer, keras.optimizers.Optimizer):
        opt = make_optimizer(optimizer, ema=ema)  # the instance as it is (ema= only if it agrees)
    else:
        lr = default_learning_rate(model) if learning_rate is None else float(learning_rate)
        rate = make_schedule(lr, schedule, warmup_steps=warmup_steps, decay_steps=decay_steps, **schedule_kwargs)
        multipliers = layerwise_multipliers(model, layerwise_decay) if layerwise_decay else None
        opt = make_optimizer(optimizer, rate, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                             clipnorm=clipnorm, lr_multipliers=multipliers, ema=ema)
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
    "HardLabelMetric", "hard_labels", "is_soft_labels", "uses_ema", "EMAWeights", "ema_callbacks",
    "DEFAULT_EMA_MOMENTUM",
]
