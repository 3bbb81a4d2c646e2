"""The run's model from a config, the `tfft.fine_tune` arguments of a config, and scoring."""

import contextlib
import os

import keras
import keras_hub
import numpy as np
import tensorflow as tf

import tfft
from experiments.config import TINY_BERT, UsageError, parse_bool_or_auto
from experiments.inputs import resolve_image_size
from tfft import reporting
from tfft import tta as tta_lib
from tfft.info import model_info
from tfft.recipe import Recipe
from tfft.run_state import RunState


def weights_arg(value):
    text = str(value).strip()
    if text.lower() in ("", "none", "random", "null"):
        return None
    if text == "pretrained":
        return "pretrained"
    if not os.path.exists(text):
        raise UsageError(f"config.weights={text!r} is neither 'pretrained', 'none' nor an existing weights file.")
    return text


def spec_value(value):
    """A freeze / unfreeze spec from a config string: ints and fractions become numbers."""
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def tiny_bert(texts, sequence_length, *, vocabulary_size=400, seed=0):
    """A tiny, randomly initialized BERT (2 layers, hidden 16) with a vocabulary computed from `texts`.

    For offline smoke runs of the text path: it needs no download and trains in seconds.

    Returns:
        `(backbone, preprocessor)` for `tfft.build_model(backbone, preprocessor=...)`.
    """
    reserved = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    texts = [str(t) for t in texts]
    vocabulary = keras_hub.tokenizers.compute_word_piece_vocabulary(
        tf.data.Dataset.from_tensor_slices(texts), vocabulary_size=vocabulary_size, lowercase=True,
        reserved_tokens=reserved)
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=sequence_length)
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocabulary), num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=sequence_length)
    return backbone, preprocessor


def bundle_texts(bundle):
    """The training texts of a text bundle (both columns of sentence pairs)."""
    examples = bundle.examples.get("train")
    if examples is None:
        texts = []
        for x, _ in bundle.train.unbatch().take(10000):
            parts = x if isinstance(x, tuple) else (x,)
            texts += [p.numpy().decode() for p in parts]
        return texts
    inputs = examples.inputs if isinstance(examples.inputs, tuple) else (examples.inputs,)
    return [str(t) for part in inputs for t in np.asarray(part).tolist()]


def build_model(config, bundle, *, strategy=None):
    """Builds the run's model (under `strategy.scope()`), seeded by `config.seed`.

    Raises:
        UsageError: an unknown backbone, a bad task / num_classes, weights that cannot be found.
    """
    num_classes = int(config.num_classes) or bundle.num_classes
    if config.num_classes and bundle.num_classes and int(config.num_classes) != bundle.num_classes and \
            config.task != "regression":
        raise UsageError(f"config.num_classes={config.num_classes} but the data has {bundle.num_classes} classes "
                         f"({', '.join(bundle.class_names[:10])}); set --config.num_classes=0 to take it from the "
                         "data.")
    if config.task == "binary" and num_classes not in (None, 1, 2):
        raise UsageError(f"config.task='binary' needs two classes; the data has {num_classes}. "
                         "Use --config.task=multiclass.")
    text = bundle.modality in ("text", "text_pair")
    kwargs = dict(num_classes=num_classes if config.task != "binary" else None, task=config.task,
                  dropout=config.dropout, head_units=tuple(config.head_units), l2=float(config.l2),
                  pooling=config.pooling or None, class_names=bundle.class_names or None)
    keras.utils.set_random_seed(int(config.seed))
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        if text:
            kwargs.update(sequence_length=int(config.sequence_length), sentence_pairs=bundle.modality == "text_pair")
            if config.backbone == TINY_BERT:
                # Seeded by the data's seed: the same tiny BERT in a search and in retraining its winner.
                backbone, preprocessor = tiny_bert(bundle_texts(bundle), int(config.sequence_length),
                                                   seed=int(config.data.seed))
                keras.utils.set_random_seed(int(config.seed))
                return tfft.build_model(backbone, preprocessor=preprocessor, weights=None, **kwargs)
            return tfft.build_model(config.backbone, weights=weights_arg(config.weights), **kwargs)
        size = int(bundle.image_size[0]) if bundle.image_size else resolve_image_size(config)
        width = int(bundle.image_size[1]) if bundle.image_size else size
        return tfft.build_model(config.backbone, weights=weights_arg(config.weights), input_shape=(size, width, 3),
                                **kwargs)


def check_backbone(config):
    """Fails fast (before any data is read) on a backbone name that cannot resolve."""
    name = config.backbone
    if name == TINY_BERT or name.endswith(".keras") or os.path.sep in name or os.path.isdir(name):
        if (name.endswith(".keras") or os.path.sep in name) and not os.path.exists(name):
            raise UsageError(f"config.backbone={name!r} is a path that does not exist.")
        return
    try:
        tfft.get_backbone_spec(name)
    except ValueError as e:
        raise UsageError(f"config.backbone: {e}") from None


def recipe_from_config(config):
    """The `tfft.recipe.Recipe` of a config: its recipe keys, None where tfft's rule decides.

    Example:
    >>> from experiments.config import base_config
    >>> c = base_config(); c.finetune_epochs = 3; c.unfreeze = "top:2"; c.augment = "flip,zoom"
    >>> r = recipe_from_config(c)
    >>> r.finetune_epochs, r.unfreeze, r.augment, r.head_epochs
    (3, 'top:2', ['flip', 'zoom'], None)
    """
    values = {key: config[key] for key in Recipe.keys() if key in config and key != "batch_size"}
    if values.get("unfreeze") is not None:
        values["unfreeze"] = spec_value(values["unfreeze"])
    augment = values.get("augment")
    if augment is None and config.data.augment:  # configs written before augment was a recipe key
        augment = config.data.augment
    if augment is not None:
        values["augment"] = parse_augment(augment)
    if values.get("gradual") is not None:
        values["gradual"] = int(values["gradual"]) or False
    try:
        return Recipe.from_dict(values)
    except ValueError as e:
        raise UsageError(str(e)) from None


def parse_augment(value):
    """`augment` from a config string: False for none, "default", or a list of names."""
    text = str(value).strip()
    if text.lower() in ("", "none", "false", "0"):
        return False
    if text.lower() in ("default", "true", "1"):
        return "default"
    return [part.strip() for part in text.split(",") if part.strip()]


def fine_tune_kwargs(config):
    """The `tfft.fine_tune` arguments of a config (its recipe and how the run is carried out)."""
    verbose = config.verbose
    verbose = int(verbose) if str(verbose).isdigit() else "auto"
    return dict(
        recipe=recipe_from_config(config), seed=int(config.seed), verbose=verbose,
        cache_features=parse_bool_or_auto(config.cache_features, "cache_features"),
        jit_compile=parse_bool_or_auto(config.jit_compile, "jit_compile"),
    )


def score(model, dataset, *, class_names=(), task=None, tta=None, label_smoothing=0.0):
    """Loss, the task's metrics and (classification) a per-class report of `model` on `dataset`.

    `label_smoothing`: the run's (its loss then means what `val_loss` meant in training).
    `tta`: test-time augmentation views besides the original image (`tfft.tta.parse_views`, e.g.
    `"flip"` or `("flip", "crop")`): everything is scored on the outputs averaged over the original
    and them (`tfft.tta.with_original`). None: no test-time augmentation.

    Returns:
        `(metrics, report)`: `metrics` maps Keras metric names to floats (plus `examples`);
        `report` is `tfft.reporting.classification_report`'s dict, or None for regression.
    """
    if tta:
        model = tta_lib.tta_model(model, tta_lib.with_original(tta))
    info = model_info(model)
    task = task or info.get("task", "multiclass")
    with model.distribute_strategy.scope():
        tfft.compile_model(model, task=task, label_smoothing=label_smoothing)  # no step is taken
    metrics = {k: float(v) for k, v in model.evaluate(dataset, return_dict=True, verbose=0).items()}
    report = None
    if task in reporting.CLASSIFICATION_TASKS:
        y_true, y_prob = reporting.collect_predictions(model, dataset)
        names = list(class_names) or info.get("class_names") or []
        report = reporting.classification_report(y_true, y_prob, names, task=task)
        metrics["examples"] = report["examples"]
    return metrics, report


def summarize_metrics(metrics):
    """A one-line summary such as `loss 0.412, accuracy 0.873`."""
    keys = [k for k in ("loss", "accuracy", "binary_accuracy", "f1", "auc", "mae") if k in metrics]
    keys = keys or [k for k in metrics if k != "examples"][:4]
    return ", ".join(f"{k} {metrics[k]:.4f}" for k in keys)


def run_label_smoothing(workdir):
    """The label smoothing a run in `workdir` trained with (its run state's recipe), or 0."""
    recipe = RunState(workdir).data.get("recipe") or {}
    return float(recipe.get("label_smoothing") or 0.0)
