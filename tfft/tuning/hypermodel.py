"""`TransferHyperModel`: a KerasTuner `HyperModel` whose every trial is a `tfft.fine_tune` run.

`build(hp)` builds the trial's model with `tfft.build_model` (backbone frozen);
`fit(hp, model, ...)` calls `tfft.fine_tune` with the trial's recipe, passing the tuner's
callbacks on. So a trial trains exactly what `fine_tune` (and `experiments.train` with the
search's `best_config.json`) trains with the same settings, seed and data: same phases,
per-phase optimizers and schedules, early stopping and ReduceLROnPlateau, feature cache.
"""

import gc
import hashlib
import os

import keras
import keras_tuner as kt
import numpy as np
import tensorflow as tf
from keras_tuner.src.engine import tuner_utils  # private: see BUILD_NOTES, "Private APIs"

from tfft import backbones as backbones_lib
from tfft import callbacks as callbacks_lib
from tfft import features as features_lib
from tfft.errors import did_you_mean
from tfft.finetune import fine_tune
from tfft.freezing import freeze, resolve_spec
from tfft.models import (
    TransferModel,
    add_head,
    build_model,
    draw_head_seed,
    is_keras_hub_text_backbone,
    output_units,
    seed_head,
)
from tfft.optim import OPTIMIZERS, compile_model
from tfft.recipe import Recipe, default_recipe
from tfft.tuning.trial_data import TrialData

# The default search. Tuples are ranges, lists choices, scalars fixed values, None: the key
# is not searched and fine_tune's rule (tfft.recipe.default_recipe) decides.
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
    "head_epochs": None,
    "finetune_epochs": None,
}
# Besides these, every `tfft.recipe.Recipe` field can be searched or fixed by name.
SEARCH_KEYS = tuple(DEFAULT_SEARCH_SPACE) + tuple(k for k in Recipe.keys() if k not in DEFAULT_SEARCH_SPACE)
LOG_SCALE = ("learning_rate", "weight_decay", "head_learning_rate", "finetune_learning_rate")
MODEL_KEYS = ("backbone", "num_classes", "task", "dropout", "head_units")
# The keys of a trial's flat config (`best_config.json`): the model's, then the recipe's.
CONFIG_KEYS = MODEL_KEYS + Recipe.keys()
TRIAL_ISOLATION = (None, "process")


def trial_seed(base, trial_id, execution=0):
    """The seed of one execution of a trial: a function of the search's seed and the trial id.

    Example:
    >>> trial_seed(1, "0") == trial_seed(1, "0") != trial_seed(1, "1")
    True
    """
    digest = hashlib.sha256(f"{base}|{trial_id}|{execution}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def backbone_modality(backbone):
    """'image' or 'text' for the `backbone` argument, without building it."""
    if isinstance(backbone, keras.Model):
        return "text" if is_keras_hub_text_backbone(backbone) else "image"
    name = os.fspath(backbone)
    if backbones_lib.is_preset_dir(name):
        return backbones_lib.preset_modality(name)
    if name.endswith(".keras") or os.path.sep in name:
        return "image"
    return backbones_lib.get_backbone_spec(name).modality


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


def _spec(unfreeze_value):
    """Hyperparameter strings such as "0.25" or "3" become the numbers a freeze spec takes."""
    if isinstance(unfreeze_value, str):
        for cast in (int, float):
            try:
                return cast(unfreeze_value)
            except ValueError:
                pass
    return unfreeze_value


class TransferHyperModel(kt.HyperModel):
    """A KerasTuner `HyperModel` for transfer learning: every trial is a `tfft.fine_tune` run.

    `build(hp)` builds the trial's model (`tfft.build_model`, backbone frozen);
    `fit(hp, model, *args, **kwargs)` runs `tfft.fine_tune` with the trial's recipe, passing
    `callbacks` (the tuner's) on, and returns the per-epoch history over all phases.

    The search space (`DEFAULT_SEARCH_SPACE`, one hyperparameter per key): a `search_space`
    entry overrides one: a scalar fixes it, a list makes it a choice, a `(low, high)` tuple a
    range (log-sampled for rates and a positive weight decay; integers if both ends are),
    `None` drops it (fine_tune's rule decides). Keys: `learning_rate` (the head phase's peak
    rate; the fine-tune phase runs at `learning_rate * finetune_lr_factor`), `optimizer`
    (both phases), `weight_decay`, `dropout`, `head_units` (one hidden head layer's width, 0:
    none), `unfreeze` (what phase 2 trains, a freeze spec from the top; `"none"`: head only),
    `warmup_fraction`, `label_smoothing`, `batch_size` (global), `head_epochs`,
    `finetune_epochs`, and any other `tfft.recipe.Recipe` field by name (e.g.
    `finetune_schedule`, `lora_rank`, `augment`).

    Args:
        backbone: what `tfft.build_model` takes: a registry name, a preset directory, a
            `.keras` file, or a `keras.Model` (copied afresh, with its weights, for every
            trial that trains it).
        num_classes: number of classes (targets for regression).
        task: `"multiclass"`, `"binary"`, `"multilabel"` or `"regression"`.
        search_space: `{key: value}` overriding `DEFAULT_SEARCH_SPACE` (see above).
        weights: backbone weights, as for `build_model` (`"pretrained"`, None, a path).
        input_shape: image input shape; the backbone's default when None.
        recipe: a `tfft.recipe.Recipe` (or dict) every trial starts from; the searched
            keys override it.
        finetune_lr_factor: phase 2 rate over phase 1 rate when `learning_rate` is searched
            (default: the rule's ratio, 0.1).
        cache_features: `"auto"`, `True` or `False`, as for `fine_tune`.
        feature_store: a `tfft.features.FeatureStore` (default: the process-wide one), shared
            by every trial: a head phase on the same frozen backbone and data computes the
            backbone's features once for the whole search.
        cv_folds: score each trial as the mean over this many stratified folds of the
            training data (the search's data must then be a `DataBundle` or arrays);
            `<metric>_std` records the spread.
        trial_isolation: `None`, or `"process"` to build and train each trial in a fresh
            process (for backbones too big to rebuild in one process; the data must then be
            NumPy arrays or a zero-argument function that returns it).
        train_batchnorm: let unfrozen BatchNormalization layers train in phase 2.
        seed: the base seed of the trials (each trial's is drawn from it and the trial id).
        build_kwargs: more `tfft.build_model` arguments (`pooling`, `sequence_length`,
            `preprocessor`, `class_names`, `l2`, ...).
        share_frozen_backbone: head-only trials (unfreeze "none") put their new head on one
            shared, built, frozen backbone instead of building the backbone again.
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
                 input_shape=None, recipe=None, finetune_lr_factor=None, cache_features="auto", feature_store=None,
                 cv_folds=None, trial_isolation=None, train_batchnorm=None, seed=None, build_kwargs=None,
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
        self.seed = seed
        self.build_kwargs = dict(build_kwargs or {})
        self.modality = backbone_modality(backbone)
        base = recipe if isinstance(recipe, Recipe) else Recipe.from_dict(recipe or {})
        self.recipe = base.updated(train_batchnorm=train_batchnorm)
        rule = default_recipe(modality=self.modality)
        self.finetune_lr_factor = float(finetune_lr_factor or rule.finetune_learning_rate / rule.head_learning_rate)
        self.search_space = self._resolve_space(search_space or {})
        self.share_frozen_backbone = share_frozen_backbone
        self.monitor = None  # the tuner's objective, set by tfft's tuners (early stopping watches it)
        self.trial_seed = None  # the running trial's seed, set by tfft's tuners
        self._backbone_weights = backbone.get_weights() if isinstance(backbone, keras.Model) else None
        self._shared = None
        self._data = TrialData(self)

    # ------------------------------------------------------------------ search space

    def _resolve_space(self, overrides):
        unknown = [k for k in overrides if k not in SEARCH_KEYS]
        if unknown:
            raise ValueError(f"Unknown search_space key {unknown[0]!r}.{did_you_mean(unknown[0], SEARCH_KEYS)} "
                             f"Keys: {sorted(SEARCH_KEYS)}.")
        space = dict(DEFAULT_SEARCH_SPACE)
        if self.task == "regression":
            if overrides.get("label_smoothing"):
                raise ValueError("label_smoothing applies to classification; drop it for task='regression'.")
            space["label_smoothing"] = None
        for key in ("head_epochs", "finetune_epochs"):  # the base recipe's epochs when it sets them
            if getattr(self.recipe, key) is not None:
                space[key] = getattr(self.recipe, key)
        space.update(overrides)
        optimizers = space["optimizer"] if isinstance(space["optimizer"], list) else [space["optimizer"]]
        bad = [o for o in optimizers if o is not None and o not in OPTIMIZERS]
        if bad:
            raise ValueError(f"search_space optimizer {bad[0]!r} is unknown.{did_you_mean(bad[0], OPTIMIZERS)}")
        return {k: _check_entry(k, v) for k, v in space.items()}

    def _hp_value(self, hp, name):
        spec = self.search_space.get(name)
        if spec is None:
            return None
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
        """The trial's flat config (the `best_config.json` keys), registering `hp`s.

        Recipe keys the search leaves open are absent: fine_tune's rule decides them (the
        same way in the trial and in a retraining run on the same data).
        """
        values = {name: self._hp_value(hp, name) for name in self.search_space}
        config = {"backbone": self.backbone if isinstance(self.backbone, str) else (
                      os.fspath(self.backbone) if isinstance(self.backbone, os.PathLike) else "custom"),
                  "num_classes": self.num_classes, "task": self.task}
        if values.get("dropout") is not None:
            config["dropout"] = float(values["dropout"])
        if values.get("head_units") is not None:
            config["head_units"] = [int(values["head_units"])] if values["head_units"] else []
        recipe = {k: v for k, v in self.recipe.to_dict().items() if v is not None}
        recipe.update({k: v for k, v in values.items() if k in Recipe.keys() and v is not None})
        if values.get("learning_rate") is not None:
            recipe.setdefault("head_learning_rate", float(values["learning_rate"]))
            recipe.setdefault("finetune_learning_rate", float(values["learning_rate"]) * self.finetune_lr_factor)
        if values.get("optimizer") is not None:
            recipe.setdefault("head_optimizer", values["optimizer"])
            recipe.setdefault("finetune_optimizer", values["optimizer"])
        if recipe.get("unfreeze") in (None, "none", 0, "0") and "unfreeze" in recipe:
            recipe.update(unfreeze="none", finetune_epochs=0)
        if self.monitor and "monitor" not in recipe:
            recipe["monitor"] = self.monitor
        for key in ("weight_decay", "warmup_fraction", "label_smoothing", "head_learning_rate",
                    "finetune_learning_rate"):
            if key in recipe:
                recipe[key] = float(recipe[key])
        config.update(recipe)
        return config

    def trial_recipe(self, config):
        """The `tfft.recipe.Recipe` of a trial config."""
        values = {k: v for k, v in config.items() if k in Recipe.keys()}
        if values.get("unfreeze") is not None:
            values["unfreeze"] = _spec(values["unfreeze"])
        return Recipe.from_dict(values)

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

    def build(self, hp):
        """Builds and compiles the trial's model, backbone frozen (seeded by the trial's seed)."""
        if self.trial_seed is not None:
            keras.utils.set_random_seed(self.trial_seed)  # after KerasTuner's clear_session
        return self.build_from_config(self.trial_config(hp))

    def build_from_config(self, config):
        """A compiled model for a trial config (as `trial_config` returns)."""
        if config.get("head_epochs") == 0 and config.get("finetune_epochs") == 0:
            raise kt.errors.FailedTrialError("Nothing to train: head_epochs is 0 and unfreeze is 'none'.")
        model = None
        if self.share_frozen_backbone and config.get("finetune_epochs") == 0:
            model = self._head_on_shared_backbone(config)
        if model is None:
            model = self._build_full(config)
        compile_model(model)  # fine_tune compiles each phase; KerasTuner wants a compiled model back
        return model

    def _head_on_shared_backbone(self, config):
        """A new head on the preprocessing + backbone that head-only trials share.

        In a head-only trial the backbone stays frozen, so its weights never change and one
        built copy serves every such trial (per distribution strategy); building a large
        backbone anew takes seconds per trial. The head is seeded as `build_model` seeds it.
        """
        head_seed = draw_head_seed()  # first, as build_model draws it
        strategy = tf.distribute.get_strategy()
        if self._shared is None or self._shared["strategy"] is not strategy:
            self._shared = None
            template = self._build_full(dict(config, dropout=0.0, head_units=[]))
            extractor, head = features_lib.split_at_features(template)
            if head is None:
                return None
            producer = extractor.output._keras_history.operation  # Keras private: see BUILD_NOTES
            self._shared = {"strategy": strategy, "extractor": extractor, "info": dict(template.tfft_info),
                            "producer": producer, "outbound": list(producer._outbound_nodes)}
        shared = self._shared
        # Forget the heads of earlier trials, which would otherwise stay referenced from the
        # shared graph (a Keras node per call) and grow memory trial after trial.
        shared["producer"]._outbound_nodes = list(shared["outbound"])
        extractor = shared["extractor"]
        dropout = config.get("dropout", 0.1 if self.modality == "text" else 0.2)
        outputs = add_head(extractor.output, task=self.task, units=output_units(self.task, self.num_classes),
                           dropout=dropout, head_units=tuple(config.get("head_units", ())),
                           l2=self.build_kwargs.get("l2", 0.0))
        model = TransferModel(extractor.inputs, outputs, name=self.build_kwargs.get("name"),
                              tfft_info=dict(shared["info"]))
        seed_head(model, head_seed)
        freeze(model, "backbone")
        return model

    def _build_full(self, config):
        kwargs = dict(self.build_kwargs)
        if self.input_shape is not None:
            kwargs["input_shape"] = self.input_shape
        model = build_model(self._fresh_backbone(), num_classes=self.num_classes, task=self.task,
                            weights=self.weights, freeze="backbone", dropout=config.get("dropout"),
                            head_units=tuple(config.get("head_units", ())), **kwargs)
        if config.get("unfreeze") not in (None, "none"):
            try:
                resolve_spec(model, _spec(config["unfreeze"]), from_top=True)
            except ValueError as e:
                raise kt.errors.FailedTrialError(f"unfreeze={config['unfreeze']!r} does not fit this backbone: {e}")
        return model

    # ------------------------------------------------------------------ fit

    def fit(self, hp, model, *args, **kwargs):
        """Trains `model` with `tfft.fine_tune` and the trial's recipe; returns a `History`
        over all phases (or, with `cv_folds`, a dict of fold means and `<metric>_std`).

        Positional `args` and `x`, `y`, `validation_data` name the data: a batched
        `tf.data.Dataset` of `(x, y[, sample_weight])`, a `tfft.data.DataBundle` (its
        train and validation splits), NumPy arrays `x, y`, or a zero-argument function
        returning one of these. `epochs` / `initial_epoch` (Hyperband's) are a budget over
        both phases (`fine_tune(epochs=, initial_epoch=)`). `callbacks`, `verbose` and
        `class_weight` go to `fine_tune`.
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
        train, val = self._data.splits(x, y, validation_data)
        return self._fine_tune(model, config, train, val, **kwargs).history

    def _fine_tune(self, model, config, train, val, *, callbacks=None, epochs=None, initial_epoch=0,
                   verbose="auto", class_weight=None, **unknown):
        if unknown:
            raise TypeError(f"TransferHyperModel.fit does not take {sorted(unknown)}; a trial is a tfft.fine_tune "
                            "run (see its arguments).")
        recipe = self.trial_recipe(config)
        if epochs is not None and recipe.finetune_epochs == 0:
            recipe = recipe.updated(head_epochs=int(epochs))  # a head-only trial's budget is all head epochs
        result = fine_tune(
            model, train, val, recipe=recipe, callbacks=[_for_trial(cb, model) for cb in callbacks or []],
            epochs=epochs, initial_epoch=initial_epoch, cache_features=self.cache_features,
            feature_store=self.feature_store, seed=self.trial_seed if self.trial_seed is not None else self.seed,
            verbose=verbose, class_weight=class_weight)
        return _TrialResult(result, model)

    def _fit_folds(self, config, model, x, y, validation_data, kwargs):
        if validation_data is not None:
            raise ValueError("With cv_folds the folds of the training data validate; do not pass validation_data.")
        if kwargs.get("initial_epoch"):
            raise ValueError("cv_folds trains every fold from scratch; it does not work with Hyperband.")
        finals = []
        for i, (train, val) in enumerate(self._data.folds(x, y)):
            fold_model = model if i == 0 else self._build_like(model, config)
            print(f"[tfft] fold {i + 1}/{self.cv_folds}", flush=True)
            finals.append(self._fine_tune(fold_model, config, train, val, **kwargs).metrics)
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
        state["_data"] = None
        state["_shared"] = None
        state["feature_store"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._data = TrialData(self)


class _TrialResult:
    """A `fine_tune` result as KerasTuner wants it: a `History` over the phases, and the final metrics."""

    def __init__(self, result, model):
        self.metrics = result.metrics
        history = {k: [float(v) for v in values] for k, values in result.history.items()}
        lengths = {len(v) for v in history.values()}
        keys = [k for k, v in history.items() if len(v) == max(lengths or {0})]  # metrics every phase logs
        self.history = keras.callbacks.History()
        self.history.set_model(model)
        self.history.history = {k: history[k] for k in sorted(keys)}
        self.history.epoch = [e for phase in result.phases for e in range(phase.initial_epoch, phase.final_epoch)]


class DeferredBestEpoch(callbacks_lib.PinnedModel):
    """KerasTuner's `SaveBestEpoch` on the full model; while the head trains on cached
    features, the best epoch's weights are kept in memory and written once at the end.

    The backbone cannot change in such a phase, so one full-model file at the end replaces
    one at every improving epoch (a third of a head-only trial's time). A trial killed
    midway is rerun from scratch on resume, so no intermediate file is lost. While the
    full model itself is fit, it behaves as the plain callback.
    """

    def on_train_begin(self, logs=None):
        self._best = None
        self.callback.on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.model is self.pinned:
            return self.callback.on_epoch_end(epoch, logs)
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
        # The head model's weights only (it shares the full model's head layers): the frozen
        # backbone cannot change on cached features, so copying it would be wasted time.
        self._best = self.model.get_weights()

    def on_train_end(self, logs=None):
        if self._best is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best)
            self.callback._save_model()  # the full model, with the best epoch's head
            self.model.set_weights(current)
            self._best = None
        self.callback.on_train_end(logs)


def _for_trial(callback, model):
    """The tuner's callbacks see the full model while the head trains on cached features."""
    if isinstance(callback, tuner_utils.SaveBestEpoch) and hasattr(callback, "_save_model"):
        return DeferredBestEpoch(callback, model)
    if isinstance(callback, tuner_utils.TunerCallback):
        return callbacks_lib.PinnedModel(callback, model)
    return callback
