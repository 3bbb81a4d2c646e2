"""Test-time augmentation (TTA): a model's outputs averaged over flipped and cropped views of each image.

Views (names, or `name:value`):

* `original`: the image as it is.
* `flip`: mirrored left-right; `flip_vertical`: upside down.
* `crop` / `crop:F`: the central fraction F (default 0.875) of the image, scaled back to its size.
* `five_crop` / `five_crop:F`: the four corner crops and the central one (five views).
* `scale:S`: zoomed by S about the centre (S > 1 zooms in like `crop:1/S`; S < 1 zooms out,
  the border filled by reflection). A fixed-size model sees the image at several scales.

Views are computed inside the model (`TTAModel`), on the raw 0-255 images tfft's models take,
so `predict` and `evaluate` run through Keras's own loops (batching, distribution strategies).
Image models only.

Example:
```python
from tfft import tta

probabilities = tta.predict(model, images, views=("original", "flip"))
metrics = tta.evaluate(model, bundle.test, views="original,flip,crop")
```
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from tfft import optim
from tfft.errors import did_you_mean
from tfft.info import model_info

DEFAULT_VIEWS = ("original", "flip")
DEFAULT_CROP = 0.875
VIEW_NAMES = ("original", "flip", "flip_vertical", "crop", "five_crop", "scale")
_CORNERS = {"center": (0.5, 0.5), "top_left": (0.0, 0.0), "top_right": (0.0, 1.0),
            "bottom_left": (1.0, 0.0), "bottom_right": (1.0, 1.0)}


def parse_views(views: str | Sequence[str]) -> tuple[str, ...]:
    """The single views that `views` names, each as `"name"` or `"name:value"`.

    `five_crop` expands into its five crops (`crop:F@top_left`, ...); a comma-separated string
    works like a list.

    Args:
        views: view names (see the module docstring), a list or a comma-separated string.

    Returns:
        A tuple of single views.

    Raises:
        ValueError: for an unknown view or an out-of-range value.

    Example:
    >>> parse_views("original,flip,crop:0.8")
    ('original', 'flip', 'crop:0.8@center')
    >>> len(parse_views(["five_crop"]))
    5
    """
    if isinstance(views, str):
        views = [part for part in views.split(",") if part.strip()]
    parsed = []
    for view in views:
        name, _, value = str(view).strip().lower().partition(":")
        if name not in VIEW_NAMES:
            raise ValueError(f"Unknown test-time augmentation view {view!r}.{did_you_mean(name, VIEW_NAMES)} "
                             f"Use any of {VIEW_NAMES} (crop, five_crop and scale take ':value').")
        if name in ("original", "flip", "flip_vertical"):
            parsed.append(name)
            continue
        number = _number(view, value, default=DEFAULT_CROP if name != "scale" else None)
        if name == "scale":
            parsed.append(f"crop:{1.0 / number:g}@center")
        elif not 0.0 < number <= 1.0:
            raise ValueError(f"{view!r}: a crop keeps a fraction in (0, 1] of the image, e.g. crop:0.875.")
        else:
            corners = _CORNERS if name == "five_crop" else ("center",)
            parsed.extend(f"crop:{number:g}@{corner}" for corner in corners)
    if not parsed:
        raise ValueError(f"Test-time augmentation needs at least one view, e.g. {','.join(DEFAULT_VIEWS)}.")
    return tuple(parsed)


def with_original(views: str | Sequence[str]) -> tuple[str, ...]:
    """`parse_views(views)` with the original image first (added when missing, duplicates dropped):
    what `--tta=flip` means.

    Example:
    >>> with_original("flip")
    ('original', 'flip')
    """
    return tuple(dict.fromkeys(("original",) + parse_views(views)))


def _number(view, value, default):
    if not value:
        if default is None:
            raise ValueError(f"{view!r} needs a value, e.g. scale:1.15.")
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{view!r}: {value!r} is not a number.") from None
    if number <= 0:
        raise ValueError(f"{view!r}: the value must be positive.")
    return number


def apply_view(images, view: str):
    """One single view (from `parse_views`) of a batch of `(batch, height, width, channels)` images.

    Example:
    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 1, 4, 1)
    >>> apply_view(x, "flip")[0, 0, :, 0].numpy().tolist()
    [3.0, 2.0, 1.0, 0.0]
    """
    images = ops.convert_to_tensor(images, "float32")
    if view == "original":
        return images
    if view in ("flip", "flip_vertical"):
        return ops.flip(images, axis=2 if view == "flip" else 1)
    fraction, corner = view[len("crop:"):].split("@")
    return _crop(images, float(fraction), *_CORNERS[corner])


def _crop(images, fraction, anchor_y, anchor_x):
    """The `fraction` of the image at an anchor (0: top / left, 0.5: centre, 1: bottom / right),
    resampled to the full size; a fraction over 1 zooms out (reflected border)."""
    height = ops.cast(ops.shape(images)[1] - 1, "float32")
    width = ops.cast(ops.shape(images)[2] - 1, "float32")
    # affine_transform maps each output pixel (x, y) to the input point (a0 x + a2, b1 y + b2).
    transform = ops.stack([fraction, 0.0, anchor_x * width * (1.0 - fraction),
                           0.0, fraction, anchor_y * height * (1.0 - fraction), 0.0, 0.0])
    return ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode="reflect")


def _require_images(model):
    info = model_info(model)
    inputs = getattr(model, "inputs", None) or []
    text = info.get("modality") == "text" or any("string" in str(getattr(t, "dtype", "")) for t in inputs)
    if text or (inputs and len(inputs[0].shape) != 4):
        kind = "text" if text else f"inputs of shape {tuple(inputs[0].shape)}"
        raise ValueError(f"Test-time augmentation flips and crops images, and {model.name!r} takes {kind}: score it "
                         "with model.predict / model.evaluate instead (experiments.evaluate without --tta).")


class TTAModel(keras.Model):
    """`model`'s outputs averaged over views of its input images (probabilities for tfft's
    classification heads, so the average is a probability too).

    Args:
        model: an image model (raw 0-255 images in, as tfft's are).
        views: the views to average over (see `parse_views`).

    Example:
    >>> import numpy as np
    >>> inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
    ...                           keras.layers.Dense(2, activation="softmax")])
    >>> x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(TTAModel(inner, ("original", "flip")).predict(x, verbose=0), inner.predict(x, verbose=0)))
    True
    """

    def __init__(self, model, views=DEFAULT_VIEWS, **kwargs):
        _require_images(model)
        kwargs.setdefault("name", f"{model.name}_tta")
        super().__init__(**kwargs)
        self.inner = model
        self.views = parse_views(views)
        self.tfft_info = model_info(model)

    def call(self, images, training=False):
        outputs = [self.inner(apply_view(images, view), training=False) for view in self.views]
        return ops.mean(ops.stack(outputs, axis=0), axis=0)


def tta_model(model, views=DEFAULT_VIEWS) -> TTAModel:
    """A `TTAModel` of `model`, built in `model`'s distribution strategy.

    Example:
    >>> inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    >>> tta_model(inner, "original,flip_vertical").views
    ('original', 'flip_vertical')
    """
    with model.distribute_strategy.scope():
        return TTAModel(model, views)


def predict(model, x, *, views=DEFAULT_VIEWS, batch_size=32, verbose=0):
    """`model.predict(x)` averaged over test-time views of each image.

    Args:
        model: an image model.
        x: images (an array of `(n, height, width, 3)` raw 0-255 pixels) or a batched
            `tf.data.Dataset` of images or `(images, labels)`.
        views: the views (see `parse_views`); default the image and its mirror image.
        batch_size: for array inputs.
        verbose: Keras's progress bar.

    Returns:
        The averaged outputs, a NumPy array.

    Example:
    >>> import numpy as np
    >>> inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
    ...                           keras.layers.Dense(2, activation="softmax")])
    >>> x = np.random.default_rng(0).random((3, 8, 8, 3)).astype("float32")
    >>> manual = (inner.predict(x, verbose=0) + inner.predict(x[:, :, ::-1], verbose=0)) / 2
    >>> bool(np.allclose(predict(inner, x), manual, atol=1e-6))
    True
    """
    return tta_model(model, views).predict(x, batch_size=batch_size, verbose=verbose)


def evaluate(model, dataset, *, views=DEFAULT_VIEWS, task=None, loss="auto", metrics="auto", verbose=0):
    """The loss and metrics of `model` on `dataset` with outputs averaged over test-time views.

    The loss and metrics are `tfft.compile_model`'s for the model's task (`model.tfft_info`),
    or `task=`, `loss=`, `metrics=`.

    Args:
        model: an image model.
        dataset: a batched `tf.data.Dataset` of `(images, labels)` (or what `Model.evaluate` takes).
        views: the views (see `parse_views`).
        task: the task, for a model that `tfft.build_model` did not build.
        loss, metrics: `"auto"` (the task's) or Keras losses / metrics.
        verbose: Keras's progress bar.

    Returns:
        A dict of Keras metric names to floats (`loss`, `accuracy`, ...).

    Example:
    ```python
    metrics = tta.evaluate(model, bundle.test, views="original,flip")
    print(metrics["accuracy"])
    ```
    """
    wrapped = tta_model(model, views)
    with wrapped.distribute_strategy.scope():
        optim.compile_model(wrapped, task=task, loss=loss, metrics=metrics)
    results = wrapped.evaluate(dataset, verbose=verbose, return_dict=True)
    return {name: float(value) for name, value in results.items()}


__all__ = ["predict", "evaluate", "TTAModel", "tta_model", "parse_views", "with_original", "apply_view",
           "DEFAULT_VIEWS", "VIEW_NAMES"]
