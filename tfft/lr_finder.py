"""`find_learning_rate`: the learning-rate range test (Smith 2015; the fastai and
PyTorch Lightning "LR finder").

The rate rises exponentially from `min_lr` to `max_lr` over `num_steps` training steps;
the loss of each step is recorded and smoothed (an exponential moving average with bias
correction); the test stops early once the smoothed loss exceeds `diverge_factor` times
its minimum. The suggested rate is where the smoothed loss falls fastest (the steepest
descent, against log rate), or a tenth of the rate at the minimum loss. Afterwards the
model's weights (BatchNorm statistics and dropout seeds included) are exactly as before,
and so is its optimizer: the test trains with a fresh copy of it.

With a frozen backbone and nothing random before it, the steps run on cached backbone
features (`tfft.features`), which makes the test about as cheap as training the head.
The steps run eagerly-dispatched on the default (single-device) strategy.

Example:
    result = tfft.find_learning_rate(model, data.train)
    result.plot("lr_finder.png")
    hypermodel = tfft.TransferHyperModel(
        "resnet50", num_classes=5, search_space={"learning_rate": result.search_range()})
"""

import dataclasses
import logging
import math
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from tfft import features as features_lib
from tfft import io
from tfft import recipe as recipe_lib
from tfft.batches import as_batches
from tfft.data import DataBundle
from tfft.info import model_info
from tfft.optim import default_loss, make_optimizer

logger = logging.getLogger("tfft")

METHODS = ("steepest", "minimum")


@dataclasses.dataclass
class LRFinderResult:
    """What `find_learning_rate` returns.

    Attributes:
        learning_rates: the rate of each step taken.
        losses: the raw training loss of each step.
        smoothed_losses: the bias-corrected moving average of the losses.
        suggestion: the suggested rate (`method`'s).
        steepest_lr: the rate where the smoothed loss falls fastest.
        minimum_lr: a tenth of the rate at the smoothed loss's minimum.
        diverged: whether the test stopped early because the loss blew up.
        method: `"steepest"` or `"minimum"`.
    """

    learning_rates: List[float]
    losses: List[float]
    smoothed_losses: List[float]
    suggestion: Optional[float]
    steepest_lr: Optional[float]
    minimum_lr: Optional[float]
    diverged: bool
    method: str = "steepest"

    def search_range(self, factor=3.0):
        """`(suggestion / factor, suggestion * factor)`: a learning-rate range for a search.

        Example:
        >>> LRFinderResult([], [], [], 1e-3, 1e-3, 1e-4, False).search_range(10)
        (0.0001, 0.01)
        """
        if self.suggestion is None:
            raise ValueError("The range test found no rate (too few steps); rerun it with more num_steps.")
        return (float(self.suggestion / factor), float(self.suggestion * factor))

    def plot(self, path=None, *, ax=None, skip_start=0, skip_end=0):
        """Draws loss against rate (log scale) with the suggestion marked.

        Args:
            path: where to save a PNG (atomically); None to only draw on `ax`.
            ax: a matplotlib Axes to draw on (a new figure when None).
            skip_start, skip_end: steps left out at either end.

        Returns:
            The matplotlib Figure.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        if ax is None:
            fig = Figure(figsize=(6, 4))
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        end = len(self.learning_rates) - skip_end
        lrs = self.learning_rates[skip_start:end]
        ax.plot(lrs, self.losses[skip_start:end], alpha=0.3, label="loss")
        ax.plot(lrs, self.smoothed_losses[skip_start:end], label="smoothed loss")
        if self.suggestion is not None:
            ax.axvline(self.suggestion, color="red", linestyle="--",
                       label=f"suggestion ({self.method}): {self.suggestion:.2e}")
        ax.set_xscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("training loss")
        ax.set_title("Learning-rate range test")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.tight_layout()
        if path is not None:
            with io.atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=100)
        return fig


def _smooth(losses, beta):
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)))
    return out


def suggest(learning_rates, smoothed_losses, *, skip_start=None, skip_end=None):
    """`(steepest_lr, minimum_lr)` for a recorded curve (None where too short).

    The steepest descent is searched before the minimum of the smoothed loss, past the
    first `skip_start` steps (default 10% of them) where the moving average settles.
    """
    n = len(smoothed_losses)
    if n < 5:
        return None, None
    losses = np.asarray(smoothed_losses, dtype=float)
    lrs = np.asarray(learning_rates, dtype=float)
    lowest = int(np.nanargmin(losses))
    minimum_lr = float(lrs[lowest] / 10.0)
    start = max(1, n // 10) if skip_start is None else skip_start
    stop = lowest + 1 if skip_end is None else n - skip_end
    if stop - start < 3:
        start, stop = 0, max(stop, 3)
    slope = np.gradient(losses[start:stop], np.log(lrs[start:stop]))
    steepest_lr = float(lrs[start + int(np.nanargmin(slope))])
    return steepest_lr, minimum_lr


def _as_batches(data, batch_size):
    if isinstance(data, DataBundle):
        data = data.train
    if isinstance(data, (tuple, list)) and len(data) in (2, 3) and not isinstance(data[0], tf.data.Dataset):
        data = as_batches(tuple(data), batch_size, shuffle=True)
    if not isinstance(data, tf.data.Dataset):
        raise TypeError("data must be a tf.data.Dataset of (x, y[, sample_weight]) batches, a DataBundle, "
                        f"or an (x, y) pair of arrays; got {type(data).__name__}.")
    return data


def _as_loss(loss):
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    if isinstance(loss, keras.losses.Loss):
        return loss
    fn = loss

    def mean_loss(y_true, y_pred, sample_weight=None):  # a plain per-example function: weight and average
        values = keras.ops.cast(fn(y_true, y_pred), "float32")
        if sample_weight is not None:
            values = values * keras.ops.reshape(keras.ops.cast(sample_weight, "float32"), keras.ops.shape(values))
        return keras.ops.mean(values)

    return mean_loss


def _loss_fn(model, loss):
    if loss is not None:
        return _as_loss(loss)
    if getattr(model, "loss", None) is not None:
        return _as_loss(model.loss)
    task = model_info(model).get("task")
    if task is None:
        raise ValueError("The model is not compiled and tfft does not know its task: pass loss=.")
    return default_loss(task)


def _fresh_optimizer(model, optimizer, learning_rate):
    """A new optimizer of the model's kind (or `optimizer`), at a plain settable rate."""
    if optimizer is None and getattr(model, "optimizer", None) is not None:
        config = model.optimizer.get_config()
        config["learning_rate"] = float(learning_rate)
        return model.optimizer.__class__.from_config(config)
    if isinstance(optimizer, keras.optimizers.Optimizer):
        config = optimizer.get_config()
        config["learning_rate"] = float(learning_rate)
        return optimizer.__class__.from_config(config)
    return make_optimizer(optimizer or "adam", float(learning_rate))


def _maybe_cached(model, data, cache_features):
    """`(model_to_step, batches)`: the head on cached features where that is exact
    (`tfft.recipe.cache_decision`, the rule `fine_tune`'s head phase follows)."""
    use, _ = recipe_lib.cache_decision(model, data, cache_features)
    if use:
        extractor, head = features_lib.split_at_features(model)
        if head is not None:
            return head, features_lib.default_store.dataset(extractor, data)
        if cache_features is True:
            raise ValueError("cache_features=True but the model's head is not a simple chain of head_* layers.")
    return model, data


def find_learning_rate(model, data, *, min_lr=1e-7, max_lr=10.0, num_steps=100, beta=0.98, diverge_factor=4.0,
                       method="steepest", optimizer=None, loss=None, batch_size=32, cache_features="auto",
                       verbose=1):
    """Runs a learning-rate range test on `model` and restores it afterwards.

    Args:
        model: a Keras model (e.g. from `tfft.build_model`, frozen as for the phase whose
            rate you want: the head, or the unfrozen backbone).
        data: a `tf.data.Dataset` of `(x, y[, sample_weight])` batches, a
            `tfft.data.DataBundle` (its train split), or an `(x, y)` pair of arrays. It
            is repeated as needed.
        min_lr, max_lr: the range of rates, spaced exponentially.
        num_steps: training steps (one batch each) from `min_lr` to `max_lr`.
        beta: smoothing of the loss (moving-average factor).
        diverge_factor: stop once the smoothed loss exceeds this many times its minimum
            (or is not finite).
        method: the suggestion: `"steepest"` (the steepest descent of the smoothed loss)
            or `"minimum"` (a tenth of the rate at its minimum).
        optimizer: the optimizer to test (a name or instance; copied); default a fresh
            copy of the model's compiled optimizer, else Adam.
        loss: the loss; default the model's compiled loss, else the task's loss.
        batch_size: for array inputs.
        cache_features: `"auto"`, `True` or `False`: step the head on cached backbone
            features when the backbone is frozen (same losses, much faster).
        verbose: print a line with the result.

    Returns:
        An `LRFinderResult` (rates, raw and smoothed losses, the suggestion, `plot`,
        `search_range`).

    Example:
    >>> model = tfft.build_model("vgg16", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> x, y = np.random.rand(64, 32, 32, 3) * 255, np.arange(64) % 2
    >>> result = tfft.find_learning_rate(model, (x, y), num_steps=20, verbose=0)
    >>> len(result.learning_rates) <= 20
    True
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if not 0 < min_lr < max_lr:
        raise ValueError(f"Need 0 < min_lr < max_lr, got {min_lr} and {max_lr}.")
    if num_steps < 5:
        raise ValueError(f"num_steps must be at least 5, got {num_steps}.")
    data = _as_batches(data, batch_size)
    loss_fn = _loss_fn(model, loss)
    snapshot = [np.array(w) for w in model.get_weights()]
    user_optimizer_state = _optimizer_state(getattr(model, "optimizer", None))
    try:
        step_model, batches = _maybe_cached(model, data, cache_features)
        opt = _fresh_optimizer(model, optimizer, min_lr)
        rates, losses = _run(step_model, batches, opt, loss_fn, min_lr, max_lr, num_steps, beta, diverge_factor)
    finally:
        model.set_weights(snapshot)
        _restore_optimizer_state(getattr(model, "optimizer", None), user_optimizer_state)
    smoothed = _smooth(losses, beta)
    steepest, minimum = suggest(rates, smoothed)
    diverged = len(rates) < num_steps
    result = LRFinderResult(rates, losses, smoothed, steepest if method == "steepest" else minimum, steepest,
                            minimum, diverged, method)
    if verbose:
        stop = f"stopped at {rates[-1]:.2e} (loss diverged)" if diverged else f"up to {rates[-1]:.2e}"
        suggestion = "none" if result.suggestion is None else f"{result.suggestion:.2e}"
        print(f"[tfft] LR range test: {len(rates)} steps from {min_lr:.0e}, {stop}; suggested rate "
              f"{suggestion} ({method}; steepest {steepest}, minimum/10 {minimum})", flush=True)
    return result


def _run(model, batches, opt, loss_fn, min_lr, max_lr, num_steps, beta, diverge_factor):
    variables = model.trainable_variables
    if not variables:
        raise ValueError("The model has no trainable weights: unfreeze something before the range test.")
    opt.build(variables)  # outside tf.function: variables are created once

    @tf.function
    def train_step(x, y, w):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            value = loss_fn(y, pred, sample_weight=w)
            if model.losses:
                value = value + tf.add_n(model.losses)
        grads = tape.gradient(value, variables)
        opt.apply_gradients(zip(grads, variables))
        return value

    ratio = max_lr / min_lr
    rates, losses = [], []
    best, avg = math.inf, 0.0
    iterator = iter(batches.repeat())
    for i in range(num_steps):
        lr = min_lr * ratio ** (i / (num_steps - 1))
        opt.learning_rate = lr
        x, y, w = keras.utils.unpack_x_y_sample_weight(next(iterator))
        value = float(train_step(x, y, w))
        rates.append(lr)
        losses.append(value)
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (i + 1))
        if not math.isfinite(smoothed) or (i > 0 and smoothed > diverge_factor * best):
            break
        best = min(best, smoothed)
    return rates, losses


def _optimizer_state(optimizer):
    if optimizer is None:
        return None
    return [np.array(v) for v in optimizer.variables]


def _restore_optimizer_state(optimizer, state):
    if optimizer is None or state is None:
        return
    if len(optimizer.variables) != len(state):  # built by someone else meanwhile: nothing of ours to undo
        return
    for v, value in zip(optimizer.variables, state):
        v.assign(value)


__all__ = ["find_learning_rate", "LRFinderResult", "suggest"]
