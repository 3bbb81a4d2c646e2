"""Freeze specs: which backbone layers train, written as data.

A spec names a set of the backbone's own layers (`model.get_layer("backbone").layers`,
counted in that order, the input layer included):

* `"backbone"` / `"all"` / `True`: every layer; `"none"` / `None` / `False`: no layer.
* an int `n`: the first `n` layers (`unfreeze`: the last `n`).
* a float in (0, 1): that fraction of the layers, from the bottom (`unfreeze`: the top).
* `"until:<layer>"`: from the bottom up to and including `<layer>`.
* `"from:<layer>"`: `<layer>` and every layer above it.
* `"re:<regex>"`: layers whose names fully match the regex.
* `"stem"` / `"embeddings"`: the layers below the first block (ResNet's conv1, BERT's
  embeddings).
* `"bottom:<n>"`: the stem and the lowest `n` blocks; `"top:<n>"`: the highest `n` blocks
  and what follows them. Blocks are a backbone's repeated units: ResNet stages `conv2`..
  `conv5`, VGG `block1`..`block5`, BERT `transformer_layer_<i>`, EfficientNet `block<i>`.
* several of these joined with `+` (or a list): their union, e.g. `"embeddings+bottom:4"`.
* `"lora:<rank>"` (a spec of its own, see `tfft.lora`): the whole backbone frozen, with
  trainable rank-`<rank>` LoRA adapters on its Dense / EinsumDense projections (BERT: query
  and value); the same for `freeze` and `unfreeze`, e.g. `fine_tune(..., unfreeze="lora:8")`.

Layers the model does not use (`model.tfft_info["unused_layers"]`: BERT's [CLS] pooler
`pooled_dense` under `pooling="mean"`) stay frozen whatever the spec.

BatchNormalization layers stay in inference mode with their moving statistics unchanged
(their `trainable` is set to False) unless `train_batchnorm=True`: in Keras 3,
`training=False` on the nested backbone is not enough once it is unfrozen, since `fit`
passes `training=True` through (keras-team/keras#20285).
"""

import dataclasses
import re
from typing import List

import keras
import numpy as np

from tfft import backbones as backbones_lib
from tfft.errors import did_you_mean
from tfft.info import model_info


@dataclasses.dataclass
class FreezeSummary:
    """What `freeze` / `unfreeze` left trainable."""

    trainable_params: int
    frozen_params: int
    frozen_layers: List[str]
    trainable_layers: List[str]
    frozen_batchnorm: int

    def __getitem__(self, key):
        return getattr(self, key)

    def as_dict(self):
        return dataclasses.asdict(self)

    def __str__(self):
        total = self.trainable_params + self.frozen_params
        return (
            f"trainable params: {self.trainable_params:,} / {total:,}; frozen backbone layers: "
            f"{len(self.frozen_layers)}, trainable backbone layers: {len(self.trainable_layers)}; "
            f"BatchNorm layers in inference mode: {self.frozen_batchnorm}"
        )


def get_backbone(model):
    """The layer named `"backbone"`, or the model itself when it has none."""
    try:
        return model.get_layer("backbone")
    except ValueError:
        return model



def backbone_layers(backbone):
    """The backbone's own layers (a lone layer used as a backbone is its own only layer)."""
    return list(backbone.layers) if hasattr(backbone, "layers") else [backbone]


def _count(variables):
    return int(sum(np.prod(v.shape) for v in variables))


def block_index(backbone, pattern):
    """Maps each layer name to its block number (0 = stem), using the registry's regex."""
    blocks, current, seen = {}, 0, {}
    for layer in backbone_layers(backbone):
        match = re.match(pattern, layer.name) if pattern else None
        if match:
            key = match.group(1)
            if key not in seen:
                seen[key] = len(seen) + 1
            current = seen[key]
        blocks[layer.name] = current
    return blocks, len(seen)


def block_pattern(model, backbone):
    """The registry's block regex of the model's backbone (or one recognized from its layer names), or None."""
    info = model_info(model)
    name = info.get("backbone")
    if name in backbones_lib.list_backbones():
        return backbones_lib.get_backbone_spec(name).block_pattern
    names = [layer.name for layer in backbone_layers(backbone)]
    for pattern in (backbones_lib.BERT_BLOCKS, backbones_lib.RESNET_BLOCKS, backbones_lib.VGG_BLOCKS,
                    backbones_lib.EFFICIENTNET_BLOCKS):
        if any(re.match(pattern, n) for n in names):
            return pattern
    return None


def resolve_spec(model, spec, *, from_top=False):
    """Returns the backbone layers that `spec` names, in backbone order.

    Args:
        model: a model with a `"backbone"` layer, or a backbone itself.
        spec: a freeze spec (see the module docstring).
        from_top: count ints and fractions from the top (as `unfreeze` does).

    Raises:
        ValueError: a spec that names no layer, a layer that does not exist, or a form that
            is not understood; the message lists close layer names.
    """
    backbone = get_backbone(model)
    layers = backbone_layers(backbone)
    names = [layer.name for layer in layers]
    chosen = set()
    for term in _split_terms(spec):
        chosen |= _resolve_term(model, backbone, layers, names, term, from_top)
    return [layer for layer in layers if layer.name in chosen]


_TERM_START = re.compile(r"\+(?=\s*(?:re:|until:|from:|bottom:|top:|embeddings|stem|backbone|all\b|none|\d))")


def _split_terms(spec):
    if isinstance(spec, (list, tuple)):
        terms = []
        for part in spec:
            terms.extend(_split_terms(part))
        return terms
    if isinstance(spec, str) and "+" in spec:
        # Split only where a new term starts, so that '+' inside a regex stays part of it.
        return [t.strip() for t in _TERM_START.split(spec) if t.strip()]
    return [spec]


def _as_number(term):
    if isinstance(term, bool) or term is None:
        return None
    if isinstance(term, (int, np.integer)):
        return int(term)
    if isinstance(term, (float, np.floating)):
        return float(term)
    if isinstance(term, str):
        for cast in (int, float):
            try:
                return cast(term)
            except ValueError:
                pass
    return None


SPEC_KINDS = ("backbone", "none", "until", "from", "re", "bottom", "top", "embeddings", "stem")


def _resolve_term(model, backbone, layers, names, term, from_top):
    n_layers = len(layers)
    if term is None or term is False or term == "none":
        return set()
    if term is True or term in ("backbone", "all"):
        return set(names)
    number = _as_number(term)
    if isinstance(number, int):
        if not 0 <= number <= n_layers:
            raise ValueError(f"Freeze spec {term!r}: the backbone has {n_layers} layers; use 0..{n_layers}.")
        picked = names[n_layers - number:] if from_top else names[:number]
        return set(picked)
    if isinstance(number, float):
        if not 0.0 < number < 1.0:
            raise ValueError(f"A fractional freeze spec must be in (0, 1), got {term!r}.")
        count = int(round(number * n_layers))
        return set(names[n_layers - count:] if from_top else names[:count])
    if not isinstance(term, str):
        raise ValueError(f"Freeze spec {term!r} is not understood; see tfft.freezing for the forms.")
    kind, _, arg = term.partition(":")
    if kind == "lora":  # tfft.lora
        raise ValueError(f"Freeze spec {term!r}: 'lora:<rank>' is a spec of its own; pass it alone to freeze / "
                         "unfreeze (not joined with '+', nor with gradual unfreezing).")
    if kind in ("until", "from"):
        if arg not in names:
            raise ValueError(
                f"Freeze spec {term!r}: the backbone has no layer {arg!r}.{did_you_mean(arg, names)}"
            )
        index = names.index(arg)
        return set(names[: index + 1] if kind == "until" else names[index:])
    if kind == "re":
        try:
            regex = re.compile(arg)
        except re.error as e:
            raise ValueError(f"Freeze spec {term!r}: invalid regex ({e}).") from None
        picked = {n for n in names if regex.fullmatch(n)}
        if not picked:
            raise ValueError(
                f"Freeze spec {term!r} matches no backbone layer (regexes must match the whole name)."
                f"{did_you_mean(arg.strip('.*^$'), names)} Layers start with: {names[:8]}"
            )
        return picked
    if kind in ("stem", "embeddings", "bottom", "top"):
        return _resolve_blocks(model, backbone, names, kind, arg, term)
    raise ValueError(
        f"Freeze spec {term!r} is not understood.{did_you_mean(kind, SPEC_KINDS)} "
        "Use 'backbone', 'none', an int, a float in (0, 1), 'until:<layer>', 'from:<layer>', 're:<regex>', "
        "'embeddings', 'bottom:<n>', 'top:<n>', or several joined with '+'."
    )


def _resolve_blocks(model, backbone, names, kind, arg, term):
    pattern = block_pattern(model, backbone)
    if pattern is None:
        raise ValueError(f"Freeze spec {term!r}: this backbone has no known block structure; use 're:' or 'until:'.")
    blocks, n_blocks = block_index(backbone, pattern)
    if kind in ("stem", "embeddings"):
        return {n for n in names if blocks[n] == 0}
    try:
        count = int(arg)
    except ValueError:
        raise ValueError(f"Freeze spec {term!r}: expected an integer after '{kind}:'.") from None
    if not 0 <= count <= n_blocks:
        raise ValueError(f"Freeze spec {term!r}: the backbone has {n_blocks} blocks; use 0..{n_blocks}.")
    if kind == "bottom":
        return {n for n in names if blocks[n] <= count}
    return {n for n in names if blocks[n] > n_blocks - count} if count else set()


def _apply(model, frozen_names, train_batchnorm):
    backbone = get_backbone(model)
    # Layer.trainable recurses into sublayers, but not through a Functional model's layer
    # list: reset every layer of the model and of the backbone explicitly.
    for layer in [model, backbone] + list(model.layers) + backbone_layers(backbone):
        layer.trainable = True
    unused = set(model_info(model).get("unused_layers", ()))
    for layer in backbone_layers(backbone):
        if layer.name in frozen_names or layer.name in unused:
            layer.trainable = False
    n_bn = 0
    if not train_batchnorm:
        for layer in backbone._flatten_layers(include_self=True, recursive=True):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
                n_bn += 1
    if backbone is not model and not any(layer.trainable for layer in backbone_layers(backbone)):
        backbone.trainable = False
    return summarize(model, n_bn)


def summarize(model, frozen_batchnorm=None):
    """A `FreezeSummary` of the model as it stands."""
    backbone = get_backbone(model)
    if frozen_batchnorm is None:
        frozen_batchnorm = sum(
            1 for layer in backbone._flatten_layers(include_self=True, recursive=True)
            if isinstance(layer, keras.layers.BatchNormalization) and not layer.trainable
        )
    trainable = _count(model.trainable_weights)
    total = _count(model.weights)
    return FreezeSummary(
        trainable_params=trainable,
        frozen_params=total - trainable,
        frozen_layers=[layer.name for layer in backbone_layers(backbone) if not layer.trainable],
        trainable_layers=[layer.name for layer in backbone_layers(backbone) if layer.trainable],
        frozen_batchnorm=frozen_batchnorm,
    )


def _lora(model, spec):  # tfft.lora
    """`tfft.lora.enable_lora(model, rank)` for a `"lora:<rank>"` spec; None for any other spec."""
    if not (isinstance(spec, str) and spec.strip().startswith("lora:")):
        return None
    from tfft import lora

    return lora.enable_lora(model, lora.parse_spec(spec))


def freeze(model, spec="backbone", *, train_batchnorm=False):
    """Freezes the backbone layers that `spec` names; everything else trains.

    The head is never frozen. BatchNormalization layers of the backbone stay in inference
    mode (moving statistics unchanged, gamma/beta frozen) unless `train_batchnorm=True`.
    Recompile the model after changing what is frozen (`tfft.compile_model`).

    Args:
        model: a model from `tfft.build_model` (or any model; without a `"backbone"` layer
            the model itself is the backbone).
        spec: what is frozen; see the module docstring for the forms.
        train_batchnorm: let BatchNormalization layers of unfrozen parts train.

    Returns:
        A `FreezeSummary`.

    Example:
    >>> model = tfft.build_model("resnet50", num_classes=2, weights=None, input_shape=(32, 32, 3))
    >>> print(tfft.freeze(model, "re:conv[1-4]_.*"))  # doctest: +ELLIPSIS
    trainable params: ...
    """
    if (lora_summary := _lora(model, spec)) is not None:  # tfft.lora: "lora:<rank>"
        return lora_summary
    frozen = {layer.name for layer in resolve_spec(model, spec)}
    return _apply(model, frozen, train_batchnorm)


def unfreeze(model, spec, *, train_batchnorm=False):
    """The opposite of `freeze`: `spec` names what becomes trainable; the rest is frozen.

    Ints and fractions count from the top (`unfreeze(model, 10)`: the last 10 layers).
    """
    if (lora_summary := _lora(model, spec)) is not None:  # tfft.lora: "lora:<rank>"
        return lora_summary
    backbone = get_backbone(model)
    trainable = {layer.name for layer in resolve_spec(model, spec, from_top=True)}
    frozen = {layer.name for layer in backbone_layers(backbone) if layer.name not in trainable}
    return _apply(model, frozen, train_batchnorm)

