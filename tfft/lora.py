"""LoRA: low-rank adapters on a backbone's projections, through Keras's own `enable_lora`.

`enable_lora(model, rank)` freezes the whole backbone and gives its projection layers
(`keras.layers.Dense`, `keras.layers.EinsumDense`) trainable rank-`rank` adapters: the layer
computes with `W + (alpha / rank) * A @ B`, `W` frozen, `A` and `B` trained (Keras's
`Dense.enable_lora` / `EinsumDense.enable_lora`). The head stays trainable.

* keras-hub backbones (BERT, ...): keras-hub's `Backbone.enable_lora(rank)`, which adapts
  the attention's query and value projections (`backbone.default_lora_layer_names()`).
* other backbones: every Dense / EinsumDense layer, or those whose path within the
  backbone (`layer.path`, e.g. `"transformer_layer_0/self_attention_layer/query"`) fully
  matches the regex `targets`. A CNN (ResNet, VGG, EfficientNet) has no such layer and is
  refused: fine-tune it with a freeze spec instead.

Only `A` and `B` train in the backbone: the adapted layers' kernels and biases are frozen
too (keras-hub's `enable_lora` leaves the bias of the query / value layers trainable; tfft
freezes it, as LoRA does), and BatchNormalization layers stay in inference mode.

As a freeze spec, `"lora:<rank>"` means the same (`tfft.freeze(model, "lora:8")`,
`tfft.unfreeze(model, "lora:8")`, `tfft.build_model(..., freeze="lora:8")`,
`tfft.fine_tune(..., unfreeze="lora:8")`).

`merge_lora(model)` folds the adapters into the kernels and removes them, so that a saved
`.keras` file holds plain Dense / EinsumDense layers that `keras.models.load_model` reads
without LoRA and that predict as the adapted model did. (keras-hub's `save_lora_weights` /
`load_lora_weights` are not used: they address layers by index.)

Keras itself stores the merged kernel when it saves a LoRA-enabled layer, and on loading
rebuilds the adapters with `A = B = 0`: the function is kept, but with both factors zero no
gradient reaches them. `enable_lora` therefore re-initializes `A` (Keras's `he_uniform`) of
an adapter found with both factors zero; `B` stays zero, so the model's outputs do not change.
"""

import dataclasses
import re
from typing import List, Optional

import keras
import numpy as np
from keras import ops

from tfft.freezing import FreezeSummary, get_backbone, summarize
from tfft.info import model_info

PROJECTION_TYPES = (keras.layers.Dense, keras.layers.EinsumDense)
SPEC_PREFIX = "lora:"


@dataclasses.dataclass
class LoraSummary(FreezeSummary):
    """A `FreezeSummary` plus what LoRA adapted: rank, alpha and the adapted layers' paths."""

    rank: int = 0
    alpha: float = 0.0
    lora_layers: List[str] = dataclasses.field(default_factory=list)
    lora_params: int = 0

    @property
    def total_params(self):
        return self.trainable_params + self.frozen_params

    @property
    def trainable_fraction(self):
        return self.trainable_params / max(1, self.total_params)

    def __str__(self):
        return (f"LoRA rank {self.rank} (alpha {self.alpha:g}) on {len(self.lora_layers)} layers "
                f"({self.lora_params:,} adapter params); trainable params: {self.trainable_params:,} / "
                f"{self.total_params:,} ({100 * self.trainable_fraction:.2f}%); "
                f"BatchNorm layers in inference mode: {self.frozen_batchnorm}")


def parse_spec(spec):
    """The rank of a `"lora:<rank>"` freeze spec, or None for any other spec.

    Example:
    >>> parse_spec("lora:8"), parse_spec("backbone")
    (8, None)
    """
    if not isinstance(spec, str) or not spec.strip().startswith(SPEC_PREFIX):
        return None
    text = spec.strip()[len(SPEC_PREFIX):]
    try:
        return _check_rank(int(text))
    except ValueError:
        raise ValueError(f"Freeze spec {spec!r}: expected a positive integer rank after 'lora:', "
                         "e.g. 'lora:8'.") from None


def _check_rank(rank):
    if isinstance(rank, bool) or int(rank) != rank or int(rank) < 1:
        raise ValueError(f"LoRA rank must be a positive integer, got {rank!r}.")
    return int(rank)


def layer_paths(root):
    """`[(path, layer)]` of every layer nested in `root`, in depth-first order; a path joins the
    names from `root` down, e.g. `"transformer_layer_0/self_attention_layer/query"` in a BERT."""
    found, seen = [], set()
    stack = [(layer.name, layer) for layer in reversed(root._layers)]
    while stack:
        path, layer = stack.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        found.append((path, layer))
        stack.extend((f"{path}/{sub.name}", sub) for sub in reversed(layer._layers))
    return found


def _is_keras_hub_backbone(backbone):
    try:
        import keras_hub
    except ImportError:  # pragma: no cover
        return False
    return isinstance(backbone, keras_hub.models.Backbone)


def projection_layers(backbone):
    """`[(path, layer)]` of the backbone's Dense / EinsumDense layers (subclasses included)."""
    return [(path, layer) for path, layer in layer_paths(backbone) if isinstance(layer, PROJECTION_TYPES)]


def lora_layers(model):
    """`[(path, layer)]` of the layers of `model` with LoRA adapters; paths within the backbone."""
    prefix = get_backbone(model).name + "/" if get_backbone(model) is not model else ""
    return [(path.removeprefix(prefix), layer) for path, layer in layer_paths(model)
            if getattr(layer, "lora_enabled", False)]


def lora_targets(model, backbone, targets=None):
    """The projection layers that get adapters; raises `ValueError` naming the fix when there are none
    (`tfft.recipe.check_specs` calls it before anything trains)."""
    projections = projection_layers(backbone)
    name = model_info(model).get("backbone") or backbone.name
    if not projections:
        kinds = sorted({type(layer).__name__ for layer in backbone._flatten_layers(include_self=False)
                        if layer.weights})
        raise ValueError(
            f"lora_rank on a backbone without projections: LoRA adds adapters to Dense and EinsumDense layers "
            f"(Keras's enable_lora), and backbone {name!r} has none (its layers with weights are {kinds}); a CNN "
            "such as ResNet, VGG or EfficientNet has only convolutions. Fine-tune it with a freeze spec instead, "
            "e.g. unfreeze='top:2'.")
    unused = set(model_info(model).get("unused_layers", ()))
    if targets is None and _is_keras_hub_backbone(backbone):
        names = set(backbone.default_lora_layer_names())
        return [(path, layer) for path, layer in projections if layer.name in names]
    if targets is None:
        return [(path, layer) for path, layer in projections if layer.name not in unused]
    try:
        regex = re.compile(targets)
    except re.error as e:
        raise ValueError(f"LoRA targets {targets!r}: invalid regex ({e}).") from None
    chosen = [(path, layer) for path, layer in projections if regex.fullmatch(path) and layer.name not in unused]
    if not chosen:
        paths = [path for path, _ in projections]
        raise ValueError(f"LoRA targets {targets!r} match no Dense / EinsumDense layer of backbone {name!r} "
                         f"(the regex must match the whole path); its projection layers are: {paths[:12]}"
                         f"{' ...' if len(paths) > 12 else ''}")
    return chosen


def _restart_if_zero(layer):
    """Re-initializes `A` of an adapter whose two factors are zero (as Keras loads them), so it can train."""
    a, b = layer.lora_kernel_a, layer.lora_kernel_b
    if not np.any(ops.convert_to_numpy(a)) and not np.any(ops.convert_to_numpy(b)):
        a.assign(keras.initializers.HeUniform()(a.shape, dtype=a.dtype))


def enable_lora(model, rank, *, alpha=None, targets=None):
    """Freezes the backbone and adds trainable rank-`rank` LoRA adapters to its projections.

    Calling it again with the same rank (e.g. at the start of each fine-tune phase) only
    resets what trains; another rank on already adapted layers is refused. Recompile the
    model afterwards (`tfft.compile_model`), as after `tfft.freeze`.

    Args:
        model: a model from `tfft.build_model` (or any model; without a `"backbone"` layer
            the model itself is the backbone).
        rank: the adapters' rank (a positive int).
        alpha: the LoRA scale's numerator: adapters add `(alpha / rank) * A @ B` (default:
            `rank` for new adapters, Keras's default, a scale of 1; adapters that exist
            keep theirs).
        targets: a regex that the path of each adapted layer within the backbone must fully
            match (e.g. `".*(query|value)"`); default: keras-hub's query / value layers for
            keras-hub backbones, every Dense / EinsumDense layer otherwise.

    Returns:
        A `LoraSummary` (a `FreezeSummary` with `rank`, `alpha`, `lora_layers`,
        `lora_params`, `trainable_fraction`).

    Raises:
        ValueError: the backbone has no Dense / EinsumDense layer (a CNN), `targets` matches
            none, or the rank is not a positive integer.

    Example:
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="proj")], name="backbone")
    >>> head = keras.layers.Dense(2, name="head_logits")
    >>> model = keras.Model(inputs, head(hidden(inputs)))
    >>> summary = enable_lora(model, 2)
    >>> summary.lora_layers, summary.trainable_params  # A (4x2) + B (2x8) + the head (8x2 + 2)
    (['proj'], 42)
    """
    rank = _check_rank(rank)
    backbone = get_backbone(model)
    targeted = lora_targets(model, backbone, targets)
    layers = [layer for _, layer in targeted]
    for path, layer in targeted:
        if layer.lora_enabled and layer.lora_rank != rank:
            raise ValueError(f"Layer {path!r} already has LoRA adapters of rank {layer.lora_rank}; "
                             f"rank {rank} cannot be added. Build the model again for another rank.")
    model.trainable = True  # the head and the preprocessing train, as tfft.freeze leaves them
    fresh = not any(layer.lora_enabled for layer in layers)
    if fresh and targets is None and _is_keras_hub_backbone(backbone):
        backbone.enable_lora(rank)  # freezes the backbone's layers, adapts query / value
    else:
        backbone.trainable = True
        for layer in backbone._flatten_layers(include_self=False):
            layer.trainable = False  # BatchNormalization included: inference mode
        for layer in layers:
            layer.trainable = True
            if not layer.lora_enabled:
                layer.enable_lora(rank)
    for layer in layers:
        if alpha is not None:  # else Keras's default for new adapters (rank), and the same scale for others
            layer.lora_alpha = float(alpha)
        layer._kernel.trainable = False  # `layer.trainable = True` above sets every variable trainable
        if layer.bias is not None:
            layer.bias.trainable = False
        _restart_if_zero(layer)
    _reset_compiled_functions(model)
    return lora_summary(model)


def apply_lora_for_phase(model, rank, *, alpha=None, targets=None):
    """What `tfft.fine_tune` calls at the start of a LoRA fine-tune phase, instead of `unfreeze`.

    The same as `enable_lora` (idempotent for the same rank); the caller then compiles the
    model with the phase's optimizer, and calls `merge_lora` before saving the final model.

    Example:
    >>> model = tfft.build_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(8)]), num_classes=2)
    >>> print(apply_lora_for_phase(model, 2))  # doctest: +ELLIPSIS
    LoRA rank 2 (alpha 2) on 1 layers (24 adapter params); trainable params: 42 / 82 (51.22%); ...
    >>> _ = tfft.compile_model(model)  # then fit; before saving: merge_lora(model); model.save(path)
    """
    return enable_lora(model, rank, alpha=alpha, targets=targets)


def lora_summary(model):
    """A `LoraSummary` of the model as it stands."""
    adapted = lora_layers(model)
    layers = [layer for _, layer in adapted]
    adapter_params = sum(int(np.prod(v.shape)) for layer in layers for v in (layer.lora_kernel_a, layer.lora_kernel_b))
    return LoraSummary(**dataclasses.asdict(summarize(model)), rank=int(layers[0].lora_rank) if layers else 0,
                       alpha=float(layers[0].lora_alpha) if layers else 0.0,
                       lora_layers=[path for path, _ in adapted], lora_params=adapter_params)


def merge_lora(model) -> Optional[List[str]]:
    """Folds every LoRA adapter of `model` into its kernel and removes the adapters.

    Each adapted layer's kernel becomes `W + (lora_alpha / lora_rank) * A @ B` (computed in
    float32, as Keras's `Dense.kernel` does) and the layer is a plain Dense / EinsumDense
    again: `get_config()` has no `lora_rank`, the weights no `lora_kernel_*`. The merged
    layers stay frozen. The model predicts as before; call it before `model.save`, so the
    `.keras` file loads without LoRA. Recompile before training again: a compiled optimizer
    still holds the adapters' slots (saved with the model, `keras.models.load_model` then
    warns that it skips the optimizer's state; `compile=False` loads without it).

    Args:
        model: a model with LoRA adapters (e.g. after `enable_lora` and training).

    Returns:
        The paths of the merged layers (empty when the model had no adapters).

    Raises:
        NotImplementedError: an adapted layer is quantized (merge before quantizing).

    Example:
    >>> inputs = keras.Input((4,))
    >>> hidden = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, name="proj")], name="backbone")
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="head_logits")(hidden(inputs)))
    >>> _ = enable_lora(model, 2)
    >>> merge_lora(model), len(model.weights)
    (['proj'], 4)
    """
    merged = []
    for path, layer in lora_layers(model):
        if layer.quantization_mode is not None:
            raise NotImplementedError(f"merge_lora: layer {path!r} is quantized "
                                      f"({layer.quantization_mode}); merge the adapters before quantizing.")
        kernel = layer._kernel
        delta = (layer.lora_alpha / layer.lora_rank) * ops.matmul(layer.lora_kernel_a, layer.lora_kernel_b)
        kernel.assign(ops.cast(ops.add(ops.cast(kernel, "float32"), delta), kernel.dtype))
        del layer.lora_kernel_a, layer.lora_kernel_b  # Layer.__delattr__ untracks the variables
        layer.lora_enabled, layer.lora_rank, layer.lora_alpha = False, None, None
        layer.trainable = False
        merged.append(path)
    for owner in model._flatten_layers(include_self=True):
        if getattr(owner, "_lora_enabled_layers", None):  # keras-hub's record of enable_lora
            owner._lora_enabled_layers = []
    backbone = get_backbone(model)
    if merged and backbone is not model and not backbone.trainable_weights:
        backbone.trainable = False  # saved as frozen (keras-hub rebuilds sublayers from arguments)
    if merged:
        _reset_compiled_functions(model)
    return merged


def _reset_compiled_functions(model):
    """Variables changed: rebuild the train / test / predict functions (as `Model.quantize` does)."""
    for name in ("train_function", "test_function", "predict_function"):
        if hasattr(model, name):
            setattr(model, name, None)
