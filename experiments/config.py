"""The config schema of the entry points, and how configs are loaded.

A run is described by one flat, explicit, locked `ml_collections.ConfigDict` (big_vision
style): `base_config()` holds every key with its default, config files in
`experiments/configs/` change what their experiment needs, and `--config.<key>=<value>`
overrides the rest. A run's `config.json` and a tuning run's `best_config.json` load back
into the same schema.
"""

import ast
import importlib.util
import json
import os

from ml_collections import ConfigDict
from ml_collections.config_dict import placeholder

from tfft.errors import did_you_mean

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


CONFIG_DIR = os.path.join(REPO_ROOT, "experiments", "configs")


# Real data laid beside the checkout (see ../shared/data/README.md); $TFFT_SHARED_DATA overrides.
SHARED_DATA = os.environ.get("TFFT_SHARED_DATA") or os.path.join(os.path.dirname(REPO_ROOT), "shared", "data")


# Keys that change how a run is carried out, not what it computes: a workdir may be reused
# (resumed) with different values of these.
RUN_CONTROL_KEYS = ("overwrite", "verbose", "strategy", "jit_compile", "tune.max_trials")


# A tiny randomly initialized BERT built from the data's own WordPiece vocabulary: offline
# smoke runs of the text path.
TINY_BERT = "bert_tiny_random"


DATA_SOURCES = ("folder", "text", "tfds", "arrays", "digits")


class UsageError(ValueError):
    """A problem the user caused and can fix (the entry points print it as one paragraph)."""


def base_config():
    """Every config key with its default. Config files start from this.

    Returns:
        An unlocked `ConfigDict`; `config_flags` locks it after `get_config()`.

    Example:
    >>> config = base_config()
    >>> config.backbone, config.data.source
    ('resnet50', 'folder')
    """
    c = ConfigDict()
    # What to load and what to build.
    c.backbone = "resnet50"  # tfft.list_backbones(), a preset dir, a .keras file, or "bert_tiny_random"
    c.weights = "pretrained"  # "pretrained", "none" (random init) or a weights file
    c.task = "multiclass"  # multiclass | binary | multilabel | regression
    c.num_classes = 0  # 0: from the data
    c.image_size = 0  # pixels (square); 0: the backbone's default
    c.sequence_length = 128  # text: tokens per example
    c.pooling = ""  # "" (avg for images, cls for text), max, mean
    c.dropout = placeholder(float)  # head dropout; None: 0.2 for images, 0.1 for text (tfft.build_model)
    c.head_units = ()  # widths of hidden Dense layers in the head
    c.l2 = 0.0

    c.data = ConfigDict()
    c.data.source = "folder"  # folder | text | tfds | arrays | digits
    c.data.path = ""  # folder of class subfolders / table file (CSV, TSV, any delimiter) / .npz with x, y
    c.data.validation_path = ""  # optional pre-split validation data (same form as path)
    c.data.test_path = ""  # optional pre-split test data
    c.data.name = ""  # tfds: dataset name, e.g. tf_flowers
    c.data.split = "train"  # tfds: the split to train on
    c.data.data_dir = ""  # tfds: data directory (default ~/tensorflow_datasets)
    c.data.mock_examples = 0  # tfds: >0 uses tfds.testing.mock_data (offline smoke runs)
    # text: which columns, by name or by index (0, 1, ...; the only way in a file without a header):
    # "" = the only non-label column; "title+description" joins columns into one text (with text_separator);
    # "premise,hypothesis" reads sentence pairs. ("+" joins, "," pairs: never both.)
    c.data.text_column = ""
    c.data.text_separator = " "  # text: what joins the columns of text_column="a+b"
    c.data.label_column = "label"  # text: a name, or an index ("0") for a file without a header
    c.data.delimiter = ""  # text: "" = from the extension, else sniffed (tab, comma, semicolon, pipe); "tab" or ";"
    c.data.header = "auto"  # text: auto (a header unless columns are indices and row 1 looks like data) | true | false
    c.data.validation_split = 0.1  # fraction of each class held out (when no validation_path)
    c.data.test_split = 0.1  # fraction of each class held out (when no test_path)
    c.data.seed = 42  # seed of the splits and of the shuffling
    c.data.limit = 0  # >0: at most this many examples per class (smoke runs)
    c.data.augment = ""  # kept for older configs: read as the recipe's `augment` (below)
    c.data.resize = "stretch"  # stretch | crop | pad
    c.data.cache = "auto"  # auto | true | false | a directory

    # How to train: the fine_tune recipe (tfft.recipe.Recipe, the same names as fine_tune's keywords and a
    # tuning run's best_config.json). Unset (None): tfft's rule decides, by modality and data size, and the
    # run prints what it chose (tfft.recipe.default_recipe).
    c.batch_size = 32  # the loaders' (global) batch size
    c.head_epochs = placeholder(int)  # 0 skips the head phase
    c.finetune_epochs = placeholder(int)  # 0: head only
    c.unfreeze = placeholder(str)  # freeze-spec forms: backbone, top:2, re:conv5_.*, an int, a fraction
    c.head_learning_rate = placeholder(float)
    c.finetune_learning_rate = placeholder(float)
    c.head_optimizer = placeholder(str)  # adam | adamw | sgd | rmsprop
    c.finetune_optimizer = placeholder(str)
    c.head_schedule = placeholder(str)  # constant | cosine | linear | exponential | step
    c.finetune_schedule = placeholder(str)
    c.warmup_fraction = placeholder(float)  # linear warmup over this fraction of each phase's steps
    c.weight_decay = placeholder(float)
    c.label_smoothing = placeholder(float)
    c.layerwise_decay = placeholder(float)  # 0: off
    c.gradual = placeholder(int)  # unfreeze in this many stages from the top; 0: at once
    c.train_batchnorm = placeholder(bool)
    c.patience = placeholder(int)  # early stopping
    c.monitor = placeholder(str)  # what early stopping and the checkpoint watch; None: val_loss
    c.augment = placeholder(str)  # where the backbone trains: default | none | names "flip,zoom,randaugment,..."
    c.mixup = placeholder(float)  # alpha; 0: off
    c.cutmix = placeholder(float)
    c.ema = placeholder(float)  # EMA momentum of the weights; 0: off
    c.lora_rank = placeholder(int)  # LoRA adapters instead of the backbone; 0: off
    c.class_weights = False  # balanced class weights from the training labels
    c.cache_features = "auto"  # auto | true | false

    c.cv_folds = 0  # >1: stratified k-fold cross-validation instead of one run

    # Where and how it runs.
    c.strategy = "auto"  # auto | cpu | one_device | mirrored | multi_worker | tpu
    c.mixed_precision = ""  # "" | mixed_float16 | mixed_bfloat16
    c.jit_compile = "auto"  # auto | true | false
    c.seed = 0
    c.overwrite = False
    c.verbose = "auto"  # Keras progress: auto | 0 | 1 | 2

    # experiments.tune
    c.tune = ConfigDict()
    c.tune.algorithm = "bayesian"  # random | bayesian | hyperband | grid
    c.tune.objective = "val_accuracy"
    c.tune.max_trials = 10
    c.tune.executions_per_trial = 1
    c.tune.search_space = "{}"  # JSON: {"learning_rate": [1e-4, 1e-3], "optimizer": ["adam"], ...}
    return c


def parse_variant(arg, variants=("smoke",)):
    """The `file.py:<arg>` part of `--config`: None, or one of `variants`."""
    if arg in (None, ""):
        return None
    if arg not in variants:
        raise UsageError(f"Unknown config variant {arg!r}; this config file knows {list(variants)}.")
    return arg


def apply_smoke(config, *, image_size=32, limit=8, weights=None):
    """The `:smoke` variant: a run of well under a minute on a laptop CPU.

    Tiny inputs, a few examples per class, one epoch per phase, small batches.
    """
    config.image_size = image_size
    config.sequence_length = min(config.sequence_length, 32)
    config.data.limit = limit
    config.data.validation_split = 0.2
    config.data.test_split = 0.2
    config.data.cache = "true"
    config.batch_size = 8
    config.head_epochs = 1
    config.finetune_epochs = 1
    config.patience = 2
    if weights is not None:
        config.weights = weights
    return config


def shared_data_path(*parts):
    """A path under the shared data folder (`../shared/data` beside the checkout)."""
    return os.path.join(SHARED_DATA, *parts)


def _load_python_config(path, arg):
    spec = importlib.util.spec_from_file_location(f"tfft_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UsageError(f"Config file {path} has no get_config() function.")
    return module.get_config(arg) if arg is not None else module.get_config()


def _assign(config, key, value, source):
    """Sets `config[key] = value` with the field's type (tuples from lists, strings from numbers,
    comma-joined strings from lists); None unsets a recipe key (tfft's rule decides)."""
    key = LEGACY_KEYS.get(key, key)
    if key not in config:
        raise UsageError(f"{source} sets {key!r}, which is not a config key.{_close(key, config)}")
    current, kind = config[key], config.get_type(key)
    if isinstance(current, ConfigDict):
        if not isinstance(value, dict):
            raise UsageError(f"{source}: {key!r} must be a mapping, got {value!r}.")
        for k, v in value.items():
            _assign(current, k, v, source)
        return
    if value is None and current is not None:
        return  # a key the source leaves open keeps this config's value
    if kind is tuple and isinstance(value, (list, tuple)):
        value = tuple(value)
    elif kind is tuple and isinstance(value, int) and key == "head_units":
        value = (value,) if value else ()
    elif kind is str and isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    elif kind is str and value is not None and not isinstance(value, str):
        value = "none" if value is False else str(value)
    elif kind is float and isinstance(value, (int, bool)):
        value = float(value)
    elif kind is int and isinstance(value, bool):
        value = int(value)
    try:
        config[key] = value
    except TypeError as e:
        raise UsageError(f"{source}: {key!r} cannot take {value!r} ({e}).") from None


def _close(key, config):
    return did_you_mean(key, list(config.keys()))


# Keys of configs written by tfft before the recipe vocabulary (2026-12), read under their new names.
LEGACY_KEYS = {"optimizer": "finetune_optimizer", "schedule": "finetune_schedule"}
# What a tuning run's best_config.json holds besides config keys; training ignores them.
TUNING_ONLY_KEYS = ("objective", "score", "tuning")


def config_from_json(path):
    """A config from a run's `config.json`, or from a tuning run's flat `best_config.json`.

    A flat best config carries only the tuned keys; the rest (data, seed, ...) comes from the
    `config.json` that the tuning run wrote beside it.

    Example:
    ```
    python -m experiments.train --config=runs/tune/best_config.json --workdir=runs/best
    ```
    """
    with open(path) as f:
        try:
            values = json.load(f)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path} is not valid JSON ({e}).") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path} must hold a JSON object of config keys.")
    config = base_config()
    if "data" in values:  # a full config.json
        for key, value in values.items():
            _assign(config, key, value, path)
        return config
    sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "config.json")
    if os.path.exists(sibling) and os.path.abspath(sibling) != os.path.abspath(path):
        config = config_from_json(sibling)
    if "learning_rate" in values:  # best configs of tfft before the recipe vocabulary
        values.setdefault("head_learning_rate", values.pop("learning_rate"))
    if "optimizer" in values:
        values.setdefault("head_optimizer", values["optimizer"])
    for key, value in values.items():
        if key in TUNING_ONLY_KEYS or value is None:
            continue  # None: the tuning run left it to tfft's rule, and so does this run
        if key == "backbone" and value == "custom":
            continue  # a keras.Model was tuned: the run's own config.json names the backbone
        if key in config or key in LEGACY_KEYS:
            _assign(config, key, value, path)
    config.overwrite = False
    return config


def load_config(spec):
    """Loads `path.py`, `path.py:<variant>` or `path.json` into a `ConfigDict`.

    Raises:
        UsageError: a missing file, a config that fails to load, an unknown variant.
    """
    path, _, arg = spec.partition(":")
    if not path:
        raise UsageError("--config is empty; pass e.g. --config=experiments/configs/flowers_resnet50.py.")
    if not os.path.isfile(path):
        available = ", ".join(sorted(f for f in os.listdir(CONFIG_DIR) if f.endswith(".py") and f[0] != "_"))
        raise UsageError(f"Config file {path!r} does not exist. The configs in experiments/configs/ are: "
                         f"{available}; a run's config.json or a tuning run's best_config.json also work.")
    if path.endswith(".json"):
        if arg:
            raise UsageError(f"A JSON config takes no variant (got {spec!r}).")
        return config_from_json(path)
    try:
        return _load_python_config(path, arg or None)
    except UsageError:
        raise
    except Exception as e:  # a broken config file: say which and why, in one line
        raise UsageError(f"Config file {path} failed to load: {type(e).__name__}: {e}") from e


def to_dict(config):
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json())


def flatten(values, prefix=""):
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update(flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_differences(old, new):
    """`[(key, old value, new value)]` of the keys that differ, run-control keys aside."""
    a, b = flatten(old), flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if k not in RUN_CONTROL_KEYS and a.get(k) != b.get(k)]


def parse_bool_or_auto(value, name):
    """`"auto"`, True or False from a config string (or bool)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise UsageError(f"config.{name}={value!r}: use auto, true or false.")


def describe_configs():
    """One line per config file in experiments/configs/: its name and the first docstring line."""
    lines = []
    for name in sorted(os.listdir(CONFIG_DIR)):
        if name.endswith(".py") and not name.startswith("_"):
            with open(os.path.join(CONFIG_DIR, name)) as f:
                doc = ast.get_docstring(ast.parse(f.read())) or ""
            lines.append(f"  {name}: {doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)
