"""KerasTuner for transfer learning: `TransferHyperModel`, `make_tuner`, `export_results`.

`TransferHyperModel` is a `keras_tuner.HyperModel`: `build(hp)` builds a model with
`tfft.build_model` (backbone frozen) and compiles it with `tfft.compile_model`;
`fit(hp, model, ...)` trains it in two phases (the head on the frozen backbone, then the
unfrozen part of the backbone at a lower rate) and tunes batch size and epochs too. The
tuner's callbacks reach every `fit`, and its per-trial checkpoint always holds the full
model's weights, so Hyperband's `initial_epoch` and checkpoint reloading work.

While the backbone is frozen (the head phase) and nothing random runs before it, the
backbone's features are computed once per input pipeline and shared by every trial and
epoch (`tfft.features.FeatureStore`, keyed by the extractor's weights fingerprint and the
dataset's identity: a changed backbone, weights, input size or dataset is never served
stale features). Head-only trials also put their new head on one shared, built, frozen
backbone instead of building it again. A head-only search then costs one backbone pass
over the data in all (benchmarks/bench_tuner.py measures it against plain KerasTuner).

Example:
    import tfft

    data = tfft.data.from_image_directory("flowers/", backbone="efficientnet_lite0",
                                          image_size=96, validation_split=0.2)
    hypermodel = tfft.TransferHyperModel(
        "efficientnet_lite0", num_classes=data.num_classes, input_shape=(96, 96, 3),
        search_space={"unfreeze": "none", "learning_rate": (1e-4, 1e-2)})
    tuner = tfft.make_tuner(hypermodel, algorithm="random", max_trials=20,
                            directory="runs/tune", project_name="flowers")
    tuner.search(data.train, validation_data=data.validation)
    # runs/tune/flowers/{trials.csv, best_config.json, trials.png}

The search space (`DEFAULT_SEARCH_SPACE`), one hyperparameter per flat config key; a
`search_space` entry overrides one: a scalar fixes it, a list makes it a choice, a
`(low, high)` tuple a range (log-sampled for `learning_rate` and a positive
`weight_decay`; integers if both ends are), `None` drops it (the library default below is
used):

| key | default search | when dropped | meaning |
|---|---|---|---|
| learning_rate | 1e-4..1e-2, log | 1e-3 | peak rate of the head phase |
| optimizer | adam, adamw, sgd | adam | both phases |
| weight_decay | 0, 1e-4, 1e-3, 1e-2 | 0 (text: 0.01) | decoupled, both phases |
| dropout | 0, 0.1, 0.2, 0.3, 0.5 | 0.2 (text: 0.1) | head dropout |
| head_units | 0, 128, 256, 512 | 0 | width of one hidden head layer; 0: none |
| unfreeze | none, 0.25, 0.5, backbone | backbone | what phase 2 trains (a `tfft.unfreeze` spec, from the top); "none": head only |
| warmup_fraction | 0, 0.05, 0.1 | 0 (text: 0.1) | linear warmup over this fraction of each phase's steps |
| label_smoothing | 0, 0.1 | 0 | classification losses (not for regression) |
| batch_size | 16, 32, 64 | the data's own | global batch size (split over replicas) |
| head_epochs | fixed: 5 (text: 1) | same | epochs of phase 1 |
| finetune_epochs | fixed: 5 (text: 3) | same | epochs of phase 2 (0 when unfreeze is "none") |

Phase 2 runs at `finetune_learning_rate = learning_rate * finetune_lr_factor` (0.1 for
images, 0.03 for text, as `tfft.fine_tune`'s recipes) with cosine (images) or linear
(text) decay after the warmup. A tuner's `epochs` (Hyperband's budget, or `epochs=` given
to `search`) is the total over both phases: the first `head_epochs` train the head, the
rest fine-tune (all of them train the head when unfreeze is "none").

Files (`export_results`, written atomically with `tfft.io` after every trial and at the
end of `search`, in `<directory>/<project_name>/`):

- `trials.csv`: one row per trial: trial_id, status, score, every hyperparameter, the
  best value of every metric (with `cv_folds`, `<metric>_std` holds the spread over the
  folds).
- `best_config.json`: the best trial as a flat config that `experiments.train` retrains:
  `backbone`, `num_classes`, `task`, `learning_rate`, `optimizer`, `weight_decay`,
  `dropout`, `head_units` (a list of widths, `[]` for none), `unfreeze`,
  `warmup_fraction`, `label_smoothing`, `batch_size` (`null`: the data's own),
  `head_epochs`, `finetune_epochs`, `finetune_learning_rate`, plus `objective` (the
  metric's name) and `score` (its best value), and a `tuning` dict (trial_id, direction,
  all metrics, the raw hyperparameters) that training ignores.
- `trials.png`: the objective per trial and the best so far (at the end of `search`).

Resuming: `make_tuner(..., overwrite=False)` (the default) reloads the project: after a
crash or `kill -9`, running the same script again keeps the finished trials and reruns
only the one that was running.

Distribution on one host: `make_tuner(..., strategy="mirrored")` runs every trial under a
`tf.distribute` strategy (KerasTuner's `distribution_strategy`); `batch_size` is global.

Distributed tuning on many processes or machines (KerasTuner's chief / worker protocol):
run the same tuning script once per process, with the same `directory` (a shared file
system) and these environment variables:

    # the chief: serves the oracle, runs no trial, writes the results at the end
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python tune.py
    # each worker (tuner0, tuner1, ...): asks the chief for trials until none is left
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python tune.py

Every process exits on its own when `max_trials` are done. `launch_local(command,
num_workers)` does exactly this on one machine (a free port, one worker per GPU with
`gpus_per_worker=1`, a timeout that stops every process so a lost worker never hangs the
run). On a worker `tuner.oracle` is a gRPC client without `trials`; `export_results`
does nothing there.

Memory: KerasTuner calls `keras.backend.clear_session()` and `gc.collect()` before each
build; for backbones too big for that, `TransferHyperModel(..., trial_isolation="process")`
builds and trains each trial in a fresh process (the search's data must then be NumPy
arrays or a zero-argument function that returns it, and cached features are not shared
between trials).
"""

import concurrent.futures
import copy
import csv
import gc
import hashlib
import io as _io
import json
import logging
import math
import multiprocessing
import os
import socket
import subprocess
import sys
import time

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras_tuner.src.engine import tuner_utils

from tfft import features as features_lib
from tfft import io
from tfft.errors import did_you_mean
from tfft.finetune import RECIPES, _as_dataset
from tfft.freezing import freeze, resolve_spec, unfreeze
from tfft.optim import OPTIMIZERS, compile_model

logger = logging.getLogger("tfft")

# The default search. Tuples are ranges, lists choices, scalars fixed values.
DEFAULT_SEARCH_SPACE = {
    "learning_rate": (1e-4, 1e-2),
    "optimizer": ["adam", "adamw", "sgd"],
    "weight_decay": [0.0, 1e-4, 1e-3, 1e-2],
    "dropout": [0.0, 0.1, 0.2, 0.3, 0.5],
    "head_units": [0, 128, 256, 512],
    "unfreeze": ["none", "0.25", "0.5", "backbone"],
    "warmup_fraction": [0.0, 0.05, 0.1],
    "label_smoothing": [0.0, 0.1],
    "batch_size": [16, 32, 64],
    "head_epochs": None,  # fixed to the recipe's value unless searched
    "finetune_epochs": None,
}
LOG_SCALE = ("learning_rate", "weight_decay")
ALGORITHMS = ("random", "bayesian", "hyperband", "grid")
TRIAL_ISOLATION = (None, "process")
CONFIG_KEYS = (
    "backbone", "num_classes", "task", "learning_rate", "optimizer", "weight_decay", "dropout", "head_units",
    "unfreeze", "warmup_fraction", "label_smoothing", "batch_size", "head_epochs", "finetune_epochs",
    "finetune_learning_rate",
)
TRIALS_CSV = "trials.csv"
BEST_CONFIG = "best_config.json"
TRIALS_PLOT = "trials.png"


def _modality(backbone):
    """'image' or 'text' for the `backbone` argument, without building it."""
    from tfft import backbones as backbones_lib
    from tfft.models import _is_keras_hub_text_backbone

    if isinstance(backbone, keras.Model):
        return "text" if _is_keras_hub_text_backbone(backbone) else "image"
    name = os.fspath(backbone)
    if backbones_lib.is_preset_dir(name):
        return backbones_lib.preset_modality(name)
    if name.endswith(".keras") or os.path.sep in name:
        return "image"
    return backbones_lib.get_backbone_spec(name).modality


def _defaults(modality):
    """The value each key takes when `search_space` drops it (the `fine_tune` recipe)."""
    recipe = RECIPES["text" if modality == "text" else "image"]
    return {
        "learning_rate": recipe["head_learning_rate"],
        "optimizer": "adam",
        "weight_decay": recipe["weight_decay"],
        "dropout": 0.1 if modality == "text" else 0.2,
        "head_units": 0,
        "unfreeze": recipe["unfreeze"],
        "warmup_fraction": recipe["warmup_fraction"],
        "label_smoothing": 0.0,
        "batch_size": None,
        "head_epochs": recipe["head_epochs"],
        "finetune_epochs": recipe["finetune_epochs"],
    }


def _check_entry(name, value):
    if isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"search_space[{name!r}] = {value!r}: a range is a (low, high) tuple of numbers.")
        if value[0] > value[1]:
            raise ValueError(f"search_space[{name!r}] = {value!r}: low must not exceed high.")
    elif isinstance(value, list):
        if not value:
            raise ValueError(f"search_space[{name!r}] is an empty list; give at least one choice, or None to drop it.")
        kinds = {type(v) for v in value}
        if len(kinds) > 1 and kinds != {int, float}:
            raise ValueError(f"search_space[{name!r}] = {value!r}: choices must all have one type.")
    return value


class TransferHyperModel(kt.HyperModel):
    """A KerasTuner `HyperModel` for transfer learning with tfft.

    `build(hp)` builds through `tfft.build_model`, `tfft.freeze` and `tfft.compile_model`;
    `fit(hp, model, *args, **kwargs)` runs the two-phase schedule with the trial's batch
    size and epochs, passing `**kwargs` (the tuner's callbacks among them) on to Keras's
    `fit`. See the module docstring for the search space and what each key means.

    Args:
        backbone: what `tfft.build_model` takes: a registry name, a preset directory, a
            `.keras` file, or a `keras.Model` (copied afresh, with its weights, for every
            trial that trains it).
        num_classes: number of classes (targets for regression).
        task: `"multiclass"`, `"binary"`, `"multilabel"` or `"regression"`.
        search_space: `{key: value}` overriding `DEFAULT_SEARCH_SPACE`: a scalar fixes
            the key, a list is a choice, a `(low, high)` tuple a range, `None` drops it.
        weights: backbone weights, as for `build_model` (`"pretrained"`, None, a path).
        input_shape: image input shape; the backbone's default when None.
        finetune_lr_factor: phase 2 rate over phase 1 rate (default: 0.1 images, 0.03 text).
        cache_features: `"auto"` (train the head on cached backbone features whenever the
            backbone is frozen and nothing random runs before it), `True` or `False`.
        feature_store: a `tfft.features.FeatureStore` (default: the process-wide one).
        cv_folds: score each trial as the mean over this many stratified folds of the
            training data (the search's data must then be a `DataBundle` or arrays);
            `<metric>_std` records the spread.
        trial_isolation: `None`, or `"process"` to build and train each trial in a
            fresh process (see the module docstring).
        train_batchnorm: let unfrozen BatchNormalization layers train in phase 2.
        seed: seed of the shuffling of cached features and of the CV folds.
        build_kwargs: more `tfft.build_model` arguments (`pooling`, `sequence_length`,
            `preprocessor`, `class_names`, `l2`, ...).
        share_frozen_backbone: head-only trials (unfreeze "none") put their new head on
            one shared, built, frozen backbone instead of building the backbone again
            (its weights cannot change in such a trial); two-phase trials always build
            their own.
        name, tunable: as for `keras_tuner.HyperModel`.

    Example:
    >>> hypermodel = TransferHyperModel("resnet50", num_classes=3, weights=None, input_shape=(32, 32, 3),
    ...                                 search_space={"unfreeze": "none", "batch_size": [8, 16]})
    >>> hp = kt.HyperParameters()
    >>> model = hypermodel.build(hp)
    >>> sorted(hypermodel.trial_config(hp))[:3]
    ['backbone', 'batch_size', 'dropout']
    """

    def __init__(self, backbone, *, num_classes=None, task="multiclass", search_space=None, weights="pretrained",
                 input_shape=None, finetune_lr_factor=None, cache_features="auto", feature_store=None,
                 cv_folds=None, trial_isolation=None, train_batchnorm=False, seed=None, build_kwargs=None,
                 share_frozen_backbone=True, name=None, tunable=True):
        super().__init__(name=name, tunable=tunable)
        if trial_isolation not in TRIAL_ISOLATION:
            raise ValueError(f"trial_isolation must be one of {TRIAL_ISOLATION}, got {trial_isolation!r}.")
        if cache_features not in ("auto", True, False):
            raise ValueError(f"cache_features must be 'auto', True or False, got {cache_features!r}.")
        if cv_folds is not None and int(cv_folds) < 2:
            raise ValueError(f"cv_folds must be at least 2 (or None), got {cv_folds!r}.")
        self.backbone = backbone
        self.num_classes = num_classes
        self.task = task
        self.weights = weights
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.cache_features = cache_features
        self.feature_store = feature_store
        self.cv_folds = int(cv_folds) if cv_folds else None
        self.trial_isolation = trial_isolation
        self.train_batchnorm = train_batchnorm
        self.seed = seed
        self.build_kwargs = dict(build_kwargs or {})
        self.modality = _modality(backbone)
        recipe = RECIPES["text" if self.modality == "text" else "image"]
        self.finetune_lr_factor = float(
            finetune_lr_factor or recipe["finetune_learning_rate"] / recipe["head_learning_rate"])
        self.defaults = _defaults(self.modality)
        self.search_space = self._resolve_space(search_space or {})
        self.share_frozen_backbone = share_frozen_backbone
        self._backbone_weights = backbone.get_weights() if isinstance(backbone, keras.Model) else None
        self._memo = {}
        self._shared = None

    # ------------------------------------------------------------------ search space

    def _resolve_space(self, overrides):
        unknown = [k for k in overrides if k not in DEFAULT_SEARCH_SPACE]
        if unknown:
            raise ValueError(
                f"Unknown search_space key {unknown[0]!r}.{did_you_mean(unknown[0], DEFAULT_SEARCH_SPACE)} "
                f"Keys: {sorted(DEFAULT_SEARCH_SPACE)}."
            )
        space = dict(DEFAULT_SEARCH_SPACE)
        if self.task == "regression":
            if overrides.get("label_smoothing"):
                raise ValueError("label_smoothing applies to classification; drop it for task='regression'.")
            space["label_smoothing"] = None
        space.update(overrides)
        for key in ("head_epochs", "finetune_epochs"):
            if space[key] is None:
                space[key] = self.defaults[key]
        optimizers = space["optimizer"] if isinstance(space["optimizer"], list) else [space["optimizer"]]
        bad = [o for o in optimizers if o is not None and o not in OPTIMIZERS]
        if bad:
            raise ValueError(f"search_space optimizer {bad[0]!r} is unknown.{did_you_mean(bad[0], OPTIMIZERS)}")
        return {k: _check_entry(k, v) for k, v in space.items()}

    def _hp_value(self, hp, name):
        spec = self.search_space[name]
        if spec is None:
            return self.defaults[name]
        if isinstance(spec, list):
            return hp.Choice(name, spec) if len(spec) > 1 else hp.Fixed(name, spec[0])
        if isinstance(spec, tuple):
            low, high = spec
            if isinstance(low, int) and isinstance(high, int):
                return hp.Int(name, low, high)
            log = name in LOG_SCALE and low > 0
            return hp.Float(name, float(low), float(high), sampling="log" if log else "linear")
        return hp.Fixed(name, spec)

    def trial_config(self, hp):
        """The trial's flat config (the `best_config.json` keys), registering `hp`s."""
        values = {name: self._hp_value(hp, name) for name in DEFAULT_SEARCH_SPACE}
        unfreeze_spec = values["unfreeze"]
        head_only = unfreeze_spec in (None, "none", 0, "0")
        head_units = int(values["head_units"] or 0)
        config = {
            "backbone": self.backbone if isinstance(self.backbone, str) else (
                os.fspath(self.backbone) if isinstance(self.backbone, os.PathLike) else "custom"),
            "num_classes": self.num_classes,
            "task": self.task,
            "learning_rate": float(values["learning_rate"]),
            "optimizer": values["optimizer"],
            "weight_decay": float(values["weight_decay"]),
            "dropout": float(values["dropout"]),
            "head_units": [head_units] if head_units else [],
            "unfreeze": "none" if head_only else str(unfreeze_spec),
            "warmup_fraction": float(values["warmup_fraction"]),
            "label_smoothing": float(values["label_smoothing"]),
            "batch_size": int(values["batch_size"]) if values["batch_size"] else None,
            "head_epochs": int(values["head_epochs"]),
            "finetune_epochs": 0 if head_only else int(values["finetune_epochs"]),
        }
        config["finetune_learning_rate"] = config["learning_rate"] * self.finetune_lr_factor
        return config

    def declare_hyperparameters(self, hp):
        """Registers every hyperparameter, also those only `fit` reads (batch size, epochs)."""
        self.trial_config(hp)

    # ------------------------------------------------------------------ build

    def _fresh_backbone(self):
        if not isinstance(self.backbone, keras.Model):
            return self.backbone
        clone = self.backbone.__class__.from_config(self.backbone.get_config())
        clone.set_weights(self._backbone_weights)
        return clone

    def build_from_config(self, config):
        """A compiled model for a trial config (as `trial_config` returns)."""
        if config["head_epochs"] <= 0 and config["finetune_epochs"] <= 0:
            raise kt.errors.FailedTrialError("Nothing to train: head_epochs is 0 and unfreeze is 'none'.")
        model = None
        if self.share_frozen_backbone and config["finetune_epochs"] == 0:
            model = self._head_on_shared_backbone(config)
        if model is None:
            model = self._build_full(config)
        compile_model(model, optimizer=config["optimizer"], learning_rate=config["learning_rate"],
                      weight_decay=config["weight_decay"], label_smoothing=config["label_smoothing"])
        return model

    def _head_on_shared_backbone(self, config):
        """A new head on the preprocessing + backbone that head-only trials share.

        In a head-only trial the backbone stays frozen (BatchNorm in inference mode), so
        its weights never change and one built copy serves every such trial (per
        distribution strategy); building a large backbone anew takes seconds per trial.
        """
        from tfft.models import TransferModel, _head, _output_units

        strategy = tf.distribute.get_strategy()
        if self._shared is None or self._shared["strategy"] is not strategy:
            self._shared = None
            template = self._build_full(dict(config, dropout=0.0, head_units=[]))
            extractor, head = features_lib.split_at_features(template)
            if head is None:
                return None
            producer = extractor.output._keras_history.operation
            self._shared = {"strategy": strategy, "extractor": extractor, "info": dict(template.tfft_info),
                            "producer": producer, "outbound": list(producer._outbound_nodes)}
        shared = self._shared
        # Forget the heads of earlier trials, which would otherwise stay referenced from the
        # shared graph (a Keras node per call) and grow memory trial after trial.
        shared["producer"]._outbound_nodes = list(shared["outbound"])
        extractor = shared["extractor"]
        outputs = _head(extractor.output, task=self.task, units=_output_units(self.task, self.num_classes),
                        dropout=config["dropout"], head_units=tuple(config["head_units"]),
                        l2=self.build_kwargs.get("l2", 0.0))
        model = TransferModel(extractor.inputs, outputs, name=self.build_kwargs.get("name"),
                              tfft_info=dict(shared["info"]))
        freeze(model, "backbone", train_batchnorm=self.train_batchnorm)
        return model

    def _build_full(self, config):
        from tfft.models import build_model

        kwargs = dict(self.build_kwargs)
        if self.input_shape is not None:
            kwargs["input_shape"] = self.input_shape
        model = build_model(self._fresh_backbone(), num_classes=self.num_classes, task=self.task,
                            weights=self.weights, freeze="none", dropout=config["dropout"],
                            head_units=tuple(config["head_units"]), **kwargs)
        freeze(model, "backbone", train_batchnorm=self.train_batchnorm)
        if config["unfreeze"] != "none":
            try:
                resolve_spec(model, _spec(config["unfreeze"]), from_top=True)
            except ValueError as e:
                raise kt.errors.FailedTrialError(f"unfreeze={config['unfreeze']!r} does not fit this backbone: {e}")
        return model

    def build(self, hp):
        """Builds and compiles the trial's model, backbone frozen."""
        return self.build_from_config(self.trial_config(hp))

    # ------------------------------------------------------------------ fit

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` in the trial's phases; returns a `History` (or, with
        `cv_folds`, a dict of fold means and `<metric>_std` spreads).

        Positional `args` and `x`, `y`, `validation_data` name the data: a batched
        `tf.data.Dataset` of `(x, y[, sample_weight])`, a `tfft.data.DataBundle` (its
        train and validation splits), NumPy arrays `x, y`, or a zero-argument function
        returning one of these. `epochs` / `initial_epoch` (Hyperband's) count over both
        phases; every other keyword argument goes to Keras's `fit`.
        """
        config = self.trial_config(hp)
        kwargs = dict(kwargs)
        x = args[0] if args else kwargs.pop("x", None)
        y = args[1] if len(args) > 1 else kwargs.pop("y", None)
        validation_data = kwargs.pop("validation_data", None)
        if len(args) > 2:
            raise TypeError("TransferHyperModel.fit takes the data as (x[, y]) positionally; pass the rest by name.")
        kwargs.pop("batch_size", None)  # the trial's batch_size decides
        if self.cv_folds:
            return self._fit_folds(config, model, x, y, validation_data, kwargs)
        train, val, n_examples = self._data(x, y, validation_data)
        return self._fit_phases(model, config, train, val, n_examples, **kwargs)

    def _fit_phases(self, model, config, train, val, n_examples, *, epochs=None, initial_epoch=0, callbacks=None,
                    **fit_kwargs):
        head_epochs, finetune_epochs = config["head_epochs"], config["finetune_epochs"]
        total = int(epochs) if epochs is not None else head_epochs + finetune_epochs
        head_end = total if finetune_epochs == 0 else min(head_epochs, total)
        plan = [("head", initial_epoch, head_end), ("finetune", max(initial_epoch, head_end), total)]
        histories = []
        for phase, start, end in plan:
            if end > start:
                histories.append(self._run_phase(model, config, phase, start, end, train, val, n_examples,
                                                 list(callbacks or []), fit_kwargs))
        if not histories:
            raise kt.errors.FailedTrialError(f"No epoch to run: initial_epoch={initial_epoch}, epochs={total}.")
        return _merge_histories(histories, model)

    def _run_phase(self, model, config, phase, start, end, train, val, n_examples, callbacks, fit_kwargs):
        if phase == "head":
            summary = freeze(model, "backbone", train_batchnorm=self.train_batchnorm)
            learning_rate, schedule = config["learning_rate"], "constant"
        else:
            summary = unfreeze(model, _spec(config["unfreeze"]), train_batchnorm=self.train_batchnorm)
            learning_rate = config["finetune_learning_rate"]
            schedule = "linear" if self.modality == "text" else "cosine"
        batch_size = config["batch_size"]
        if callable(n_examples):
            n_examples = n_examples() if batch_size else None
        fit_model, fit_train, fit_val = model, _rebatch(train, batch_size, n_examples), val
        strategy = model.distribute_strategy
        if phase == "head" and self._can_cache(model, train):
            with strategy.scope():
                extractor, head = features_lib.split_at_features(model)
            if head is not None:
                store = self.feature_store if self.feature_store is not None else features_lib.default_store
                key = features_lib.fingerprint(extractor)
                fit_train = _rebatch(store.dataset(extractor, train, shuffle=True, seed=self.seed, key=key),
                                     batch_size, n_examples)
                fit_val = store.dataset(extractor, val, key=key) if val is not None else None
                fit_model = head
            elif self.cache_features is True:
                raise ValueError("cache_features=True but the model's head is not a simple chain of head_* layers.")
        steps = math.ceil(n_examples / batch_size) if batch_size else _steps(train)
        phase_steps = max(1, steps * (end - start))
        warmup = int(round(config["warmup_fraction"] * phase_steps))
        with strategy.scope():
            compile_model(fit_model, task=self.task, optimizer=config["optimizer"], learning_rate=learning_rate,
                          schedule=schedule, warmup_steps=warmup, decay_steps=max(1, phase_steps - warmup),
                          weight_decay=config["weight_decay"], label_smoothing=config["label_smoothing"])
        if fit_model is not model:
            callbacks = [_pin_full_model(cb, model) for cb in callbacks]
        print(f"[tfft] phase {phase}: epochs {start + 1}..{end}"
              f"{' on cached backbone features' if fit_model is not model else ''}; {summary}", flush=True)
        return fit_model.fit(fit_train, validation_data=fit_val, epochs=end, initial_epoch=start,
                             callbacks=callbacks, **fit_kwargs)

    def _can_cache(self, model, train):
        if self.cache_features is False:
            return False
        reasons = []
        if features_lib.has_random_preprocessing(model):
            reasons.append("random layers run before the backbone")
        if _is_augmented(train):
            reasons.append("the training data is augmented")
        if int(train.cardinality()) == tf.data.INFINITE_CARDINALITY:
            reasons.append("the dataset repeats forever")
        if not features_lib.backbone_is_frozen(model):
            reasons.append("the backbone is not frozen")
        if reasons and self.cache_features is True:
            raise ValueError(f"cache_features=True but {', and '.join(reasons)}.")
        return not reasons

    # ------------------------------------------------------------------ data

    def _remember(self, key, anchor, make):
        """`make()`, memoized under `key` for as long as the same `anchor` object(s) come back.

        Trials must get the very same dataset objects: the feature store recognizes a
        pipeline by identity. The memo holds the user's objects, so their ids stay unique.
        """
        anchors = anchor if isinstance(anchor, tuple) else (anchor,)
        hit = self._memo.get(key)
        if hit is None or len(hit[0]) != len(anchors) or any(a is not b for a, b in zip(hit[0], anchors)):
            hit = (anchors, make())
            self._memo[key] = hit
        return hit[1]

    def _call_data(self, x):
        if callable(x) and not isinstance(x, tf.data.Dataset):
            return self._remember(("call", id(x)), x, x)
        return x

    def _data(self, x, y, validation_data):
        """`(train, validation, n_train_examples)`: batched datasets, stable across trials."""
        from tfft.data import DataBundle

        x = self._call_data(x)
        validation_data = self._call_data(validation_data)
        if isinstance(x, tuple) and len(x) == 2 and y is None and isinstance(x[0], tf.data.Dataset):
            x, validation_data = x[0], validation_data or x[1]
        if isinstance(x, DataBundle):
            if x.train is None:
                raise ValueError("The DataBundle has no train split.")
            train, val = x.train, validation_data if validation_data is not None else x.validation
            n = len(x.labels["train"]) if "train" in x.labels else None
        elif isinstance(x, tf.data.Dataset):
            if y is not None:
                raise ValueError("Pass y only with array inputs; a dataset yields (x, y) batches.")
            train, val, n = x, validation_data, None
        elif x is not None and y is not None:
            train = self._remember(("train", id(x), id(y)), (x, y),
                                   lambda: _as_dataset((x, y), 32, True, self.seed))
            val, n = validation_data, len(y)
        else:
            raise ValueError(
                "No training data: call tuner.search(train_dataset, validation_data=...), "
                "tuner.search(x, y, validation_data=(x_val, y_val)) or tuner.search(data_bundle)."
            )
        if val is not None and not isinstance(val, tf.data.Dataset):
            val = self._remember(("val", id(val)), val, lambda: _as_dataset(tuple(val), 32, False, self.seed))
        if n is None:  # counted (one pass over the data) only if a trial rebatches it
            return train, val, lambda: self._remember(("count", id(train)), train, lambda: _count_examples(train))
        return train, val, n

    def _folds(self, x, y):
        """The k (train, validation, n_train) folds, built once per data object."""
        from tfft import data as data_lib

        x = self._call_data(x)
        k = self.cv_folds
        if isinstance(x, data_lib.DataBundle):
            def make():
                folds = list(data_lib.kfold(x, k=k, seed=self.seed))
                labels = np.concatenate([x.labels[s] for s in ("train", "validation") if s in x.labels])
                sizes = [len(tr) for tr, _ in data_lib.kfold_indices(labels, k, x.seed if self.seed is None
                                                                     else self.seed, x.task == "multiclass")]
                return [(tr, va, n) for (tr, va), n in zip(folds, sizes)]

            return self._remember(("folds", id(x)), x, make)
        if x is None or y is None or isinstance(x, tf.data.Dataset):
            raise ValueError(
                "cv_folds needs all the examples: pass a tfft.data.DataBundle (its train and validation "
                "examples are folded) or arrays x, y to tuner.search, not a tf.data.Dataset."
            )

        def make():
            labels = np.asarray(y)
            stratify = self.task == "multiclass"
            out = []
            for tr, va in data_lib.kfold_indices(labels, k, self.seed if self.seed is not None else 42, stratify):
                out.append((_as_dataset((_take(x, tr), labels[tr]), 32, True, self.seed),
                            _as_dataset((_take(x, va), labels[va]), 32, False, self.seed), len(tr)))
            return out

        return self._remember(("folds", id(x), id(y)), (x, y), make)

    def _fit_folds(self, config, model, x, y, validation_data, kwargs):
        if validation_data is not None:
            raise ValueError("With cv_folds the folds of the training data validate; do not pass validation_data.")
        if kwargs.get("initial_epoch"):
            raise ValueError("cv_folds trains every fold from scratch; it does not work with Hyperband.")
        finals = []
        for i, (train, val, n) in enumerate(self._folds(x, y)):
            fold_model = model if i == 0 else self._build_like(model, config)
            print(f"[tfft] fold {i + 1}/{self.cv_folds}", flush=True)
            history = self._fit_phases(fold_model, config, train, val, n, **kwargs)
            finals.append({k: float(v[-1]) for k, v in history.history.items() if v})
            if fold_model is not model:
                del fold_model
                gc.collect()
        keys = set.intersection(*(set(f) for f in finals))
        results = {k: float(np.mean([f[k] for f in finals])) for k in keys}
        results.update({f"{k}_std": float(np.std([f[k] for f in finals])) for k in keys if k.startswith("val_")})
        return results

    def _build_like(self, model, config):
        with model.distribute_strategy.scope():
            return self.build_from_config(config)

    # ------------------------------------------------------------------ pickling (trial_isolation)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_memo"] = {}
        state["_shared"] = None
        state["feature_store"] = None
        return state


def _spec(unfreeze_value):
    """Hyperparameter strings such as "0.25" or "3" become the numbers `tfft.unfreeze` takes."""
    if isinstance(unfreeze_value, str):
        for cast in (int, float):
            try:
                return cast(unfreeze_value)
            except ValueError:
                pass
    return unfreeze_value


def _take(x, idx):
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], (list, np.ndarray)) and len(x) == 2:
        return tuple(np.asarray(part)[idx] for part in x)  # sentence pairs
    return np.asarray(x)[idx]


def _is_augmented(dataset):
    from tfft import data as data_lib

    return data_lib.is_augmented(dataset)


def _rebatch(dataset, batch_size, n_examples):
    """The same examples in batches of `batch_size` (the trial's global batch size)."""
    if not batch_size:
        return dataset
    steps = math.ceil(n_examples / int(batch_size))
    rebatched = dataset.unbatch().batch(int(batch_size)).apply(tf.data.experimental.assert_cardinality(steps))
    return rebatched.prefetch(tf.data.AUTOTUNE)


def _steps(dataset):
    n = int(dataset.cardinality())
    if n < 0:
        n = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    return n


def _count_examples(dataset):
    def batch_len(*batch):
        return tf.cast(tf.shape(tf.nest.flatten(batch)[-1])[0], tf.int64)

    return int(dataset.map(batch_len).reduce(np.int64(0), lambda a, b: a + b))


def _merge_histories(histories, model):
    """One `History` over the phases, epochs concatenated (metrics the phases share)."""
    keys = set.intersection(*(set(h.history) for h in histories))
    merged = keras.callbacks.History()
    merged.set_model(model)
    merged.history = {k: [float(v) for h in histories for v in h.history[k]] for k in sorted(keys)}
    merged.epoch = [e for h in histories for e in h.epoch]
    return merged


class _PinnedModel(keras.callbacks.Callback):
    """Runs `callback` on `model` (the full model) while another model (the head on cached
    features) is being fit, so checkpoints hold the full model's weights."""

    def __init__(self, callback, model):
        super().__init__()
        self.callback = callback
        self.pinned = model

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(self.pinned)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _forward(name):
    def hook(self, *args, **kwargs):
        return getattr(self.callback, name)(*args, **kwargs)

    hook.__name__ = name
    return hook


for _hook in ("on_epoch_begin", "on_epoch_end", "on_train_begin", "on_train_end", "on_train_batch_begin",
              "on_train_batch_end", "on_test_begin", "on_test_end", "on_test_batch_begin", "on_test_batch_end",
              "on_predict_begin", "on_predict_end", "on_predict_batch_begin", "on_predict_batch_end"):
    setattr(_PinnedModel, _hook, _forward(_hook))


class _DeferredBestEpoch(_PinnedModel):
    """KerasTuner's `SaveBestEpoch` on the full model, written once at the end of the phase.

    While the head trains on cached features the backbone cannot change, so the best
    epoch's weights are kept in memory and the full checkpoint is written once, instead of
    a full-model file at every improving epoch (a third of a head-only trial's time). A
    trial killed midway is rerun from scratch on resume, so no intermediate file is lost.
    """

    def on_train_begin(self, logs=None):
        self._best = None
        self.callback.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        own = self.callback.__dict__.get("_save_model")
        self.callback._save_model = self._remember  # what the callback's best-epoch logic calls
        try:
            self.callback.on_epoch_end(epoch, logs)
        finally:
            if own is None:
                del self.callback._save_model
            else:
                self.callback._save_model = own

    def _remember(self):
        self._best = self.pinned.get_weights()

    def on_train_end(self, logs=None):
        if self._best is not None:
            current = self.pinned.get_weights()
            self.pinned.set_weights(self._best)
            self.callback._save_model()
            self.pinned.set_weights(current)
            self._best = None
        self.callback.on_train_end(logs)


def _pin_full_model(callback, model):
    """Checkpoint-like callbacks (KerasTuner's, Keras's `ModelCheckpoint`) see the full model."""
    if isinstance(callback, tuner_utils.SaveBestEpoch) and hasattr(callback, "_save_model"):
        return _DeferredBestEpoch(callback, model)
    if isinstance(callback, (tuner_utils.SaveBestEpoch, tuner_utils.TunerCallback, keras.callbacks.ModelCheckpoint)):
        return _PinnedModel(callback, model)
    return callback


# ---------------------------------------------------------------------------------------------
# Trials in a fresh process
# ---------------------------------------------------------------------------------------------


def _isolated_trial(payload):
    """Child side of `trial_isolation="process"`: build, fit, save the checkpoint, return metrics."""
    from keras_tuner.src import utils as kt_utils

    from tfft.distribute import get_strategy

    keras.backend.clear_session()
    if payload.get("seed") is not None:
        keras.utils.set_random_seed(payload["seed"])
    hypermodel = payload["hypermodel"]
    hp = kt.HyperParameters.from_config(payload["hp"])
    strategy = get_strategy(payload["strategy"]) if payload["strategy"] else None
    with strategy.scope() if strategy else _null():
        model = hypermodel.build(hp)
        if payload["reload"]:
            model.load_weights(payload["reload"])
    kwargs = dict(payload["kwargs"])
    kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + [
        tuner_utils.SaveBestEpoch(objective=payload["objective"], filepath=payload["checkpoint"])]
    results = hypermodel.fit(hp, model, *payload["args"], **kwargs)
    kt_utils.save_json(payload["build_config"], model.get_build_config())
    if isinstance(results, keras.callbacks.History):
        return {"history": results.history, "epoch": list(results.epoch)}
    return {"results": results}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _check_picklable(args, kwargs):
    """`trial_isolation="process"` sends the search's data to each trial's process."""
    import pickle

    try:
        pickle.dumps((args, kwargs))
    except Exception as e:
        raise ValueError(
            "trial_isolation='process' sends the search's data to a fresh process for each trial, and it cannot "
            f"be pickled ({type(e).__name__}: {e}). A tf.data.Dataset or DataBundle cannot be sent: pass NumPy "
            "arrays, or a top-level zero-argument function that returns the data (a DataBundle, a dataset, or a "
            "(train, validation) pair) in the trial's process."
        ) from None


# ---------------------------------------------------------------------------------------------
# Tuners
# ---------------------------------------------------------------------------------------------


class _TfftTuner:
    """What tfft adds to every KerasTuner tuner: a line per trial, the results files after
    each trial and at the end of `search`, and trials in a fresh process on request."""

    export = True
    strategy_name = None

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        self._trial_started = time.time()
        values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
        print(f"[tfft] trial {trial.trial_id} started: {values}", flush=True)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        seconds = time.time() - getattr(self, "_trial_started", time.time())
        score = trial.score
        if score is None and self._is_worker():  # the chief's oracle holds the result
            score = self.oracle.get_trial(trial.trial_id).score
        print(f"[tfft] trial {trial.trial_id} {trial.status.lower()} in {seconds:.1f} s: "
              f"{self.oracle.objective.name}={score}", flush=True)
        if self.export and not self._is_worker():
            export_results(self, plot=False)

    def search(self, *args, **kwargs):
        """KerasTuner's `search`, then `export_results` (the chief writes them in distributed mode)."""
        if getattr(self.hypermodel, "trial_isolation", None) == "process":
            _check_picklable(args, kwargs)
        super().search(*args, **kwargs)
        if self.export and not self._is_worker():
            export_results(self)

    def _trial_seed(self, trial):
        """The seed of this execution of `trial`: from the search's seed and the trial id, so
        a trial rerun after a restart (or in another process) starts from the same weights and
        draws the same dropout masks. None when neither the hypermodel nor the oracle has a seed."""
        base = getattr(self.hypermodel, "seed", None)
        base = self.oracle.seed if base is None else base
        if base is None:
            return None
        if not hasattr(self, "_executions"):
            self._executions = {}  # executions of each trial in this process
        execution = self._executions[trial.trial_id] = self._executions.get(trial.trial_id, -1) + 1
        digest = hashlib.sha256(f"{base}|{trial.trial_id}|{execution}".encode()).digest()
        return int.from_bytes(digest[:4], "little") % (2**31 - 1)

    def _build_and_fit_model(self, trial, *args, **kwargs):
        seed = self._trial_seed(trial)
        if getattr(self.hypermodel, "trial_isolation", None) != "process":
            if seed is not None:
                keras.utils.set_random_seed(seed)
            return super()._build_and_fit_model(trial, *args, **kwargs)
        hp = trial.hyperparameters
        callbacks = [cb for cb in kwargs.pop("callbacks", [])
                     if not isinstance(cb, (tuner_utils.TunerCallback, tuner_utils.SaveBestEpoch))]
        if self.distribution_strategy is not None and not self.strategy_name:
            raise ValueError("trial_isolation='process' needs the strategy by name (make_tuner(strategy='mirrored')).")
        reload = None
        if isinstance(self, kt.Hyperband) and "tuner/trial_id" in hp.values:
            reload = self._get_checkpoint_fname(hp.values["tuner/trial_id"])
        payload = {
            "hypermodel": self.hypermodel, "hp": hp.get_config(), "args": args,
            "kwargs": dict(kwargs, callbacks=callbacks), "objective": self.oracle.objective,
            "checkpoint": self._get_checkpoint_fname(trial.trial_id),
            "build_config": self._get_build_config_fname(trial.trial_id),
            "reload": reload, "strategy": self.strategy_name, "seed": seed,
        }
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                out = pool.submit(_isolated_trial, payload).result()
            except concurrent.futures.process.BrokenProcessPool as e:
                raise kt.errors.FailedTrialError(f"The trial's process died (out of memory?): {e}") from e
        if "results" in out:
            results = out["results"]
        else:
            results = keras.callbacks.History()
            results.history, results.epoch = out["history"], out["epoch"]
        tuner_utils.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results


class RandomSearch(_TfftTuner, kt.RandomSearch):
    """`keras_tuner.RandomSearch` with tfft's results files and trial isolation."""


class BayesianOptimization(_TfftTuner, kt.BayesianOptimization):
    """`keras_tuner.BayesianOptimization` with tfft's results files and trial isolation."""


class Hyperband(_TfftTuner, kt.Hyperband):
    """`keras_tuner.Hyperband` with tfft's results files and trial isolation."""


class GridSearch(_TfftTuner, kt.GridSearch):
    """`keras_tuner.GridSearch` with tfft's results files and trial isolation."""


_TUNERS = {"random": RandomSearch, "bayesian": BayesianOptimization, "hyperband": Hyperband, "grid": GridSearch}


def make_tuner(hypermodel, *, algorithm="bayesian", objective="val_accuracy", max_trials=20, directory="tuning",
               project_name="tfft", strategy=None, overwrite=False, seed=None, max_epochs=None, factor=3,
               executions_per_trial=1, max_consecutive_failed_trials=3, export=True, **kwargs):
    """A KerasTuner tuner for `hypermodel`, resumable, with results files.

    Args:
        hypermodel: a `TransferHyperModel` (or any `keras_tuner.HyperModel`).
        algorithm: `"random"`, `"bayesian"`, `"hyperband"` or `"grid"`.
        objective: the metric to optimize (`"val_accuracy"`, `"val_loss"`, ...), or a
            `keras_tuner.Objective`.
        max_trials: trials to run (not for Hyperband, whose budget is `max_epochs`).
        directory, project_name: the tuner's files go to `directory/project_name/`.
        strategy: a `tf.distribute.Strategy` or a name for `tfft.get_strategy`
            (`"mirrored"`, ...): every trial runs under it; batch sizes are global.
        overwrite: `False` resumes the project found there (finished trials are kept);
            `True` starts over.
        seed: the oracle's random seed.
        max_epochs, factor: Hyperband's budget (default `max_epochs`: the hypermodel's
            head + fine-tune epochs, or 10).
        executions_per_trial, max_consecutive_failed_trials: as in KerasTuner.
        export: write `trials.csv`, `best_config.json` and `trials.png`.
        **kwargs: more arguments for the KerasTuner tuner class.

    Returns:
        The tuner: call `tuner.search(train, validation_data=val)`.

    Example:
        hypermodel = TransferHyperModel("resnet50", num_classes=5, search_space={"unfreeze": "none"})
        tuner = make_tuner(hypermodel, algorithm="random", max_trials=20, directory="runs/tune",
                           project_name="flowers")
        tuner.search(data.train, validation_data=data.validation)
    """
    if algorithm not in _TUNERS:
        raise ValueError(f"Unknown algorithm {algorithm!r}.{did_you_mean(algorithm, ALGORITHMS)} Use one of {ALGORITHMS}.")
    if algorithm == "hyperband" and getattr(hypermodel, "cv_folds", None):
        raise ValueError("cv_folds trains every fold from scratch and cannot continue Hyperband's trials; "
                         "use algorithm='random' or 'bayesian'.")
    strategy_name = strategy if isinstance(strategy, str) else None
    if strategy is not None:
        from tfft.distribute import get_strategy

        strategy = get_strategy(strategy)
    common = dict(objective=objective, seed=seed, max_consecutive_failed_trials=max_consecutive_failed_trials,
                  directory=directory, project_name=project_name, overwrite=overwrite,
                  distribution_strategy=strategy, executions_per_trial=executions_per_trial, **kwargs)
    identity = search_identity(hypermodel, algorithm, objective)
    _check_same_search(directory, project_name, identity, overwrite)
    if algorithm == "hyperband":
        if max_epochs is None:
            space = getattr(hypermodel, "search_space", {})
            epochs = [space.get("head_epochs"), 0 if space.get("unfreeze") == "none" else space.get("finetune_epochs")]
            max_epochs = sum(epochs) if all(isinstance(v, int) for v in epochs) else 10
        tuner = Hyperband(hypermodel, max_epochs=int(max_epochs), factor=factor, **common)
    else:
        tuner = _TUNERS[algorithm](hypermodel, max_trials=max_trials, **common)
    tuner.export = export
    tuner.strategy_name = strategy_name
    if identity is not None and not tuner._is_worker():
        io.write_json(os.path.join(directory, project_name, SEARCH_FILE), identity)
    return tuner


SEARCH_FILE = "tfft_search.json"


def search_identity(hypermodel, algorithm, objective):
    """What makes two searches the same (algorithm, objective, backbone, task, classes,
    search space), as JSON data; None for hypermodels other than `TransferHyperModel`."""
    if not isinstance(hypermodel, TransferHyperModel):
        return None
    backbone = hypermodel.backbone
    if not isinstance(backbone, str):  # a keras.Model: its architecture, by weight shapes
        backbone = f"{type(backbone).__name__}{[tuple(w.shape) for w in getattr(backbone, 'weights', [])]}"
    identity = {"algorithm": algorithm, "objective": getattr(objective, "name", objective), "backbone": backbone,
                "task": hypermodel.task, "num_classes": hypermodel.num_classes, "search_space": hypermodel.search_space}
    return json.loads(json.dumps(identity, default=str, sort_keys=True))


def _check_same_search(directory, project_name, identity, overwrite):
    """A project folder of another search is not resumed (KerasTuner would mix the two)."""
    path = os.path.join(directory, project_name, SEARCH_FILE)
    if overwrite or identity is None or not os.path.exists(path):
        return
    try:
        previous = io.read_json(path)
    except ValueError:
        previous = {}
    changed = []
    for key in sorted(set(identity) | set(previous)):
        old, new = previous.get(key), identity.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += [(f"{key}.{k}", old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                        if old.get(k) != new.get(k)]
        elif old != new:
            changed.append((key, old, new))
    if changed:
        details = "; ".join(f"{k}: {old!r} there, {new!r} now" for k, old, new in changed)
        raise ValueError(
            f"{os.path.join(directory, project_name)} holds another search ({details}); resuming it would mix "
            "the two searches' trials. Use another project_name or directory, or overwrite=True to start over.")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


def _trials(tuner):
    """The oracle's trials in creation order, or None on a worker (its oracle is a client)."""
    oracle = tuner.oracle if hasattr(tuner, "oracle") else tuner
    try:
        trials = oracle.trials
    except AttributeError:
        return None
    return [trials[k] for k in sorted(trials, key=lambda t: (len(str(t)), str(t)))]


def _best_values(trial):
    return {name: trial.metrics.get_best_value(name) for name in sorted(trial.metrics.metrics)}


def trials_table(tuner):
    """`(columns, rows)` of the trials table: id, status, score, hyperparameters, metrics."""
    trials = _trials(tuner) or []
    hp_names, metric_names = [], []
    for trial in trials:
        hp_names += [k for k in trial.hyperparameters.values if k not in hp_names]
        metric_names += [k for k in trial.metrics.metrics if k not in metric_names]
    columns = ["trial_id", "status", "score"] + sorted(hp_names) + sorted(metric_names)
    rows = []
    for trial in trials:
        row = {"trial_id": trial.trial_id, "status": trial.status, "score": trial.score}
        row.update(trial.hyperparameters.values)
        row.update(_best_values(trial))
        rows.append([row.get(c, "") if row.get(c) is not None else "" for c in columns])
    return columns, rows


def best_config(tuner):
    """The best trial as a flat training config (see the module docstring), or None."""
    oracle = tuner.oracle
    best = oracle.get_best_trials(1)
    if not best:
        return None
    trial = best[0]
    hypermodel = getattr(tuner, "hypermodel", None)
    if isinstance(hypermodel, TransferHyperModel):
        config = hypermodel.trial_config(copy.deepcopy(trial.hyperparameters))
    else:
        config = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    objective = oracle.objective
    config["objective"] = objective.name
    config["score"] = trial.score
    config["tuning"] = {
        "trial_id": trial.trial_id,
        "direction": getattr(objective, "direction", None),
        "metrics": _best_values(trial),
        "hyperparameters": dict(trial.hyperparameters.values),
        "cv_folds": getattr(hypermodel, "cv_folds", None),
    }
    return config


def plot_trials(tuner, path):
    """Saves the objective of each completed trial and the best so far to `path` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    trials = [t for t in (_trials(tuner) or []) if t.score is not None]
    objective = tuner.oracle.objective
    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if trials:
        xs = np.arange(1, len(trials) + 1)
        scores = np.array([t.score for t in trials], dtype=float)
        best = np.minimum.accumulate(scores) if getattr(objective, "direction", "max") == "min" \
            else np.maximum.accumulate(scores)
        ax.plot(xs, scores, "o", label="trial")
        ax.step(xs, best, where="post", label="best so far")
        ax.legend(loc="best")
    ax.set_xlabel("completed trial")
    ax.set_ylabel(objective.name)
    ax.set_title(f"{tuner.project_name}: {objective.name} per trial")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def export_results(tuner, path_or_dir=None, *, plot=True):
    """Writes `trials.csv`, `best_config.json` and `trials.png` for `tuner`, atomically.

    Args:
        tuner: a KerasTuner tuner (on a distributed worker nothing is written: the
            chief holds the trials).
        path_or_dir: a directory (default: the tuner's project directory), or the path of
            the CSV file (the other files go beside it).
        plot: also draw `trials.png`.

    Returns:
        `{"trials": path, "best_config": path or None, "plot": path or None}`, or None on
        a worker.

    Example:
        paths = export_results(tuner, "reports/")  # reports/trials.csv, best_config.json, trials.png
    """
    if _trials(tuner) is None:
        return None
    path = os.fspath(path_or_dir) if path_or_dir is not None else tuner.project_dir
    if path.endswith(".csv"):
        csv_path, directory = path, os.path.dirname(path) or "."
    else:
        directory, csv_path = path, os.path.join(path, TRIALS_CSV)
    columns, rows = trials_table(tuner)
    buffer = _io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    io.write_text(csv_path, buffer.getvalue())
    paths = {"trials": csv_path, "best_config": None, "plot": None}
    config = best_config(tuner)
    if config is not None:
        paths["best_config"] = os.path.join(directory, BEST_CONFIG)
        io.write_json(paths["best_config"], config)
    if plot:
        paths["plot"] = plot_trials(tuner, os.path.join(directory, TRIALS_PLOT))
    return paths


# ---------------------------------------------------------------------------------------------
# Distributed tuning on one machine: a chief and workers
# ---------------------------------------------------------------------------------------------


def free_port(host="127.0.0.1"):
    """A TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def worker_env(tuner_id, ip, port, base=None):
    """The environment of one process of a distributed search (`tuner_id`: "chief", "tuner0", ...)."""
    env = dict(os.environ if base is None else base)
    env.update(KERASTUNER_TUNER_ID=str(tuner_id), KERASTUNER_ORACLE_IP=str(ip), KERASTUNER_ORACLE_PORT=str(port))
    return env


def launch_local(command, num_workers=2, *, ip="127.0.0.1", port=None, gpus_per_worker=None, timeout=None,
                 env=None, log_dir=None):
    """Runs a tuning script as a chief and `num_workers` workers on this machine.

    Each process runs `command` (a list, e.g. `[sys.executable, "tune.py"]`) with
    KerasTuner's `KERASTUNER_*` variables; with `gpus_per_worker`, worker i sees only its
    own GPUs (`CUDA_VISIBLE_DEVICES`) and the chief none. If any process is still running
    after `timeout` seconds, every process is stopped and `TimeoutError` raised: a lost
    worker never leaves the search hanging.

    Returns:
        `{tuner_id: return code}`.

    Example:
        codes = launch_local([sys.executable, "tune.py"], num_workers=4, gpus_per_worker=1, timeout=6 * 3600)
        assert set(codes.values()) == {0}
    """
    port = port or free_port(ip)
    roles = ["chief"] + [f"tuner{i}" for i in range(num_workers)]
    procs = {}
    try:
        for i, role in enumerate(roles):
            role_env = worker_env(role, ip, port, env)
            if gpus_per_worker is not None:
                first = (i - 1) * gpus_per_worker
                role_env["CUDA_VISIBLE_DEVICES"] = "" if role == "chief" else ",".join(
                    str(g) for g in range(first, first + gpus_per_worker))
            out = open(os.path.join(log_dir, f"{role}.log"), "w") if log_dir else None
            procs[role] = (subprocess.Popen(command, env=role_env, stdout=out, stderr=subprocess.STDOUT if out
                                            else None), out)
        deadline = None if timeout is None else time.time() + timeout
        codes = {}
        for role, (proc, _) in procs.items():
            remaining = None if deadline is None else max(0.1, deadline - time.time())
            codes[role] = proc.wait(timeout=remaining)
        return codes
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"The distributed search did not finish within {timeout} s; all processes were stopped.")
    finally:
        for proc, out in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if out:
                out.close()


__all__ = [
    "TransferHyperModel", "make_tuner", "export_results", "best_config", "trials_table", "plot_trials",
    "launch_local", "worker_env", "free_port", "DEFAULT_SEARCH_SPACE", "CONFIG_KEYS", "RandomSearch",
    "BayesianOptimization", "Hyperband", "GridSearch",
]

if __name__ == "__main__":  # pragma: no cover
    sys.exit("tfft.tuning is a library module; see its docstring for the distributed recipe.")
