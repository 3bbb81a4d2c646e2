"""What the entry points share: the config schema, the `--config` flag, workdirs, data, models.

A run is described by one flat, explicit, locked `ml_collections.ConfigDict` (big_vision
style): `base_config()` holds every key with its default, config files in
`experiments/configs/` change what their experiment needs, and `--config.<key>=<value>`
overrides the rest. `train.run(config, workdir)` and friends call the helpers here.
"""

import contextlib
import csv
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import traceback

from absl import app, flags
from ml_collections import ConfigDict
from ml_collections.config_flags import config_flags

logger = logging.getLogger("tfft")

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

# What a run writes into its workdir (removed by --config.overwrite=True; nothing else is).
ARTEFACTS = (
    "config.json", "model.keras", "metrics.json", "history.csv", "curves.png", "confusion_matrix.png",
    "per_class.csv", "per_class.txt", "fine_tune_state.json", "logs", "backup", "phases", "export",
    "evaluation", "tuner", "trials.csv", "trials.png", "best_config.json", "folds",
)


class UsageError(ValueError):
    """A problem the user caused and can fix (the entry points print it as one paragraph)."""


# --------------------------------------------------------------------------------------------
# The config schema
# --------------------------------------------------------------------------------------------


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
    c.dropout = 0.2
    c.head_units = ()  # widths of hidden Dense layers in the head
    c.l2 = 0.0

    c.data = ConfigDict()
    c.data.source = "folder"  # folder | text | tfds | arrays | digits
    c.data.path = ""  # folder of class subfolders / CSV or TSV file / .npz with x, y
    c.data.validation_path = ""  # optional pre-split validation data (same form as path)
    c.data.test_path = ""  # optional pre-split test data
    c.data.name = ""  # tfds: dataset name, e.g. tf_flowers
    c.data.split = "train"  # tfds: the split to train on
    c.data.data_dir = ""  # tfds: data directory (default ~/tensorflow_datasets)
    c.data.mock_examples = 0  # tfds: >0 uses tfds.testing.mock_data (offline smoke runs)
    c.data.text_column = ""  # text: "" = the only non-label column; "a,b" for sentence pairs
    c.data.label_column = "label"
    c.data.validation_split = 0.1  # fraction of each class held out (when no validation_path)
    c.data.test_split = 0.1  # fraction of each class held out (when no test_path)
    c.data.seed = 42  # seed of the splits and of the shuffling
    c.data.limit = 0  # >0: at most this many examples per class (smoke runs)
    c.data.augment = ""  # "", "default", or names: "flip,rotation,zoom,contrast,..."
    c.data.resize = "stretch"  # stretch | crop | pad
    c.data.cache = "auto"  # auto | true | false | a directory

    # How to train.
    c.batch_size = 32
    c.head_epochs = 5
    c.finetune_epochs = 5
    c.unfreeze = "backbone"  # freeze-spec forms: backbone, top:2, re:conv5_.*, an int, a fraction
    c.head_learning_rate = 1e-3
    c.finetune_learning_rate = 1e-4
    c.head_optimizer = "adam"
    c.optimizer = "adam"  # the fine-tune phase's optimizer: adam | adamw | sgd | rmsprop
    c.schedule = "cosine"  # constant | cosine | linear | exponential | step
    c.warmup_fraction = 0.0
    c.weight_decay = 0.0
    c.label_smoothing = 0.0
    c.train_batchnorm = False
    c.class_weights = False  # balanced class weights from the training labels
    c.cache_features = "auto"  # auto | true | false
    c.patience = 5
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


# --------------------------------------------------------------------------------------------
# The --config flag: Python config files (with a variant argument) and JSON configs
# --------------------------------------------------------------------------------------------


def _load_python_config(path, arg):
    spec = importlib.util.spec_from_file_location(f"tfft_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UsageError(f"Config file {path} has no get_config() function.")
    return module.get_config(arg) if arg is not None else module.get_config()


def _assign(config, key, value, source):
    """Sets `config[key] = value` with the field's type (tuples from lists, strings from ints)."""
    if key not in config:
        raise UsageError(f"{source} sets {key!r}, which is not a config key.{_close(key, config)}")
    current = config[key]
    if isinstance(current, ConfigDict):
        if not isinstance(value, dict):
            raise UsageError(f"{source}: {key!r} must be a mapping, got {value!r}.")
        for k, v in value.items():
            _assign(current, k, v, source)
        return
    if isinstance(current, tuple) and isinstance(value, (list, tuple)):
        value = tuple(value)
    elif isinstance(current, str) and not isinstance(value, str):
        value = "" if value is None else str(value)
    elif isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        config[key] = value
    except TypeError as e:
        raise UsageError(f"{source}: {key!r} cannot take {value!r} ({e}).") from None


def _close(key, config):
    from tfft.errors import did_you_mean

    return did_you_mean(key, list(config.keys()))


# Flat keys of a tuning run's best_config.json that map onto config keys.
_TUNED_KEYS = {  # learning_rate is the head phase's peak rate in tfft.tuning
    "backbone": "backbone", "num_classes": "num_classes", "task": "task", "learning_rate": "head_learning_rate",
    "finetune_learning_rate": "finetune_learning_rate", "optimizer": "optimizer", "weight_decay": "weight_decay",
    "dropout": "dropout", "head_units": "head_units", "unfreeze": "unfreeze", "warmup_fraction": "warmup_fraction",
    "label_smoothing": "label_smoothing", "batch_size": "batch_size", "head_epochs": "head_epochs",
    "finetune_epochs": "finetune_epochs", "schedule": "schedule",
}


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
    for key, value in values.items():
        if value is None:  # e.g. batch_size null: the data's own; keep the run's value
            continue
        if key in _TUNED_KEYS:
            if key == "head_units" and isinstance(value, int):
                value = (value,) if value else ()
            _assign(config, _TUNED_KEYS[key], value, path)
            if key == "optimizer":  # tfft.tuning uses one optimizer for both phases
                _assign(config, "head_optimizer", value, path)
        elif key in config and not isinstance(config[key], ConfigDict):
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


class ConfigParser(config_flags.ConfigFileFlagParser):
    """`config_flags`' file parser, plus JSON configs and one-line errors."""

    def parse(self, path):
        try:
            config = load_config(path)
        except UsageError as e:
            raise flags.IllegalFlagValueError(str(e)) from None
        if self._lock_config:
            config.lock()
        return config


def module_key(module_name):
    """absl files the flags of the program's main module under `sys.argv[0]` (what --help shows)."""
    return sys.argv[0] if module_name == "__main__" else module_name


def define_string_flag(name, default, help_text, *, module_name, required=False):
    """`flags.DEFINE_string` filed under the calling entry point (so that `--help` lists it)."""
    holder = flags.DEFINE_string(name, default, help_text, module_name=module_key(module_name))
    if required:
        flags.mark_flag_as_required(name)
    return holder


def define_config_flag(name="config", *, module_name, required=True, default=None):
    """Defines `--config` (locked, with `--config.<key>=` overrides), as the caller's flag."""
    help_text = (
        "The experiment: a config file in experiments/configs/ (its docstring is its command line), "
        "optionally with a variant, e.g. experiments/configs/flowers_resnet50.py:smoke; or a run's "
        "config.json / a tuning run's best_config.json. Any key can be overridden with "
        "--config.<key>=<value> (e.g. --config.batch_size=16 --config.data.path=DIR "
        "--config.overwrite=True); a misspelled key is refused."
    )
    help_text += "\nConfigs:\n" + describe_configs() + "\nKeys (see experiments/common.py, base_config): " + \
        ", ".join(_flatten(to_dict(base_config())))
    flag = config_flags._ConfigFlag(  # the class config_flags.DEFINE_config_file builds
        parser=ConfigParser(name=name, lock_config=True), serializer=flags.ArgumentSerializer(), name=name,
        default=default, help_string=help_text, flag_values=flags.FLAGS,
    )
    holder = flags.DEFINE_flag(flag, flags.FLAGS, module_name=module_key(module_name))
    if required:
        flags.mark_flag_as_required(name)
    return holder


def to_dict(config):
    """The config as plain JSON types (tuples become lists)."""
    return json.loads(config.to_json())


def _flatten(values, prefix=""):
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def config_differences(old, new):
    """`[(key, old value, new value)]` of the keys that differ, run-control keys aside."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [(k, a.get(k), b.get(k)) for k in keys if k not in RUN_CONTROL_KEYS and a.get(k) != b.get(k)]


# --------------------------------------------------------------------------------------------
# Workdirs
# --------------------------------------------------------------------------------------------


def prepare_workdir(config, workdir, *, write=True):
    """Checks that `workdir` is new, empty, or holds this same experiment; writes `config.json`.

    With `config.overwrite`, the artefacts of an earlier run are removed first (only those:
    other files in the folder are left alone).

    Returns:
        True when an earlier run of this experiment is being resumed.

    Raises:
        UsageError: the workdir holds a different experiment, or unrelated files.
    """
    from tfft import io

    if not workdir:
        raise UsageError("--workdir is empty; pass the folder the run writes to, e.g. --workdir=runs/flowers.")
    workdir = os.fspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise UsageError(f"--workdir={workdir} is a file, not a folder.")
    config_path = os.path.join(workdir, "config.json")
    new = to_dict(config)
    resumed = False
    if config.overwrite:
        remove_artefacts(workdir)
    elif os.path.exists(config_path):
        old = io.read_json(config_path, {})
        diff = config_differences(old, new)
        if diff:
            shown = "; ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in diff[:6])
            more = f" and {len(diff) - 6} more" if len(diff) > 6 else ""
            raise UsageError(
                f"The workdir {workdir} holds a different experiment ({shown}{more}). A workdir belongs to one "
                "experiment so that a rerun can resume it; use a new --workdir, or add --config.overwrite=True "
                "to delete that run's results and start over."
            )
        resumed = True
    elif os.path.isdir(workdir) and [f for f in os.listdir(workdir) if not f.startswith(".")]:
        raise UsageError(
            f"The workdir {workdir} is not empty and holds no config.json, so it is not a tfft run. Use a new "
            "or empty --workdir (or --config.overwrite=True to write tfft's files beside what is there)."
        )
    if write:
        os.makedirs(workdir, exist_ok=True)
        io.write_json(config_path, new)
    return resumed


def remove_artefacts(workdir):
    """Removes what an earlier run wrote into `workdir` (the `ARTEFACTS` names, `fold_*`)."""
    if not os.path.isdir(workdir):
        return
    for name in os.listdir(workdir):
        path = os.path.join(workdir, name)
        if name in ARTEFACTS or name.startswith("fold_"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


def read_workdir_config(workdir):
    """The `config.json` of a finished or running workdir, as a locked ConfigDict."""
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{workdir} holds no config.json: it is not the workdir of a tfft run (or the run "
                         "has not started). Pass the --workdir that experiments.train wrote to.")
    config = config_from_json(path)
    config.lock()
    return config


# --------------------------------------------------------------------------------------------
# Runtime: seed, precision, strategy
# --------------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def runtime(config):
    """Seeds everything, sets the mixed-precision policy, and yields the tf.distribute strategy.

    The global dtype policy is restored on exit, so one process can run several configs.
    """
    import keras

    import tfft

    policies = ("", "float32", "mixed_float16", "mixed_bfloat16")
    if config.mixed_precision not in policies:
        raise UsageError(f"config.mixed_precision={config.mixed_precision!r}; use one of {policies}.")
    previous = keras.mixed_precision.global_policy().name
    keras.utils.set_random_seed(int(config.seed))
    try:
        strategy = tfft.get_strategy(config.strategy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    keras.mixed_precision.set_global_policy(config.mixed_precision or "float32")
    try:
        yield strategy
    finally:
        keras.mixed_precision.set_global_policy(previous)


def quiet_logs():
    """Entry points show tfft's own progress lines; its INFO logs only with --debug."""
    if not _debug():
        from absl import logging as absl_logging

        logging.getLogger("tfft").setLevel(logging.WARNING)
        absl_logging.set_verbosity(absl_logging.WARNING)


def is_chief():
    from tfft.distribute import is_chief as chief

    return chief()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _check_exists(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist. Pass the right path with --config.data.path=... "
                         "(and data.validation_path / data.test_path for pre-split data).")
    return path


def _augment(value):
    text = str(value).strip()
    if text.lower() in ("", "none", "false", "0"):
        return False
    if text.lower() in ("default", "true", "1"):
        return True
    return [part.strip() for part in text.split(",") if part.strip()]


def _cache(value):
    parsed = str(value).strip()
    if parsed.lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[parsed.lower()]
    return parsed


def _limited_folder(root, limit, seed, scratch):
    """A folder of symlinks to at most `limit` images of each class of `root` (same classes)."""
    import numpy as np

    from tfft.data import IMAGE_EXTENSIONS

    out = tempfile.mkdtemp(prefix="limit-", dir=scratch)
    rng = np.random.default_rng(seed)
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        chosen = sorted(rng.permutation(len(files))[:limit]) if files else []
        os.makedirs(os.path.join(out, name))
        for i in chosen:
            os.symlink(os.path.abspath(os.path.join(folder, files[i])), os.path.join(out, name, files[i]))
    return out


def _limited_table(path, limit, label_column, seed, scratch):
    """A copy of a CSV / TSV file with at most `limit` rows of each label."""
    import numpy as np

    delimiter = "\t" if path.endswith(".tsv") else ","
    with open(path, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL)
        header = next(reader)
        rows = list(reader)
    if label_column not in header:
        raise UsageError(f"{path} has no column {label_column!r} (it has {header}); set --config.data.label_column.")
    index = header.index(label_column)
    rng = np.random.default_rng(seed)
    by_label = {}
    for i in rng.permutation(len(rows)):
        row = rows[i]
        if len(row) > index and len(by_label.setdefault(row[index], [])) < limit:
            by_label[row[index]].append(i)
    keep = sorted(i for ids in by_label.values() for i in ids)
    out = os.path.join(tempfile.mkdtemp(prefix="limit-", dir=scratch), os.path.basename(path))
    with open(out, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter, quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
                            escapechar="\\" if delimiter == "\t" else None)
        writer.writerow(header)
        writer.writerows(rows[i] for i in keep)
    return out


def _limit_arrays(x, y, limit, seed):
    import numpy as np

    if not limit:
        return x, y
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:limit] for c in np.unique(y)]))
    return x[keep], y[keep]


def digits_arrays():
    """scikit-learn's bundled handwritten digits as RGB 0-255 images: `(x (1797, 8, 8, 3), y)`.

    The data ships inside scikit-learn (no download): 1,797 grayscale 8x8 images of the digits
    0-9, pixel values 0-16, scaled here to 0-255 and repeated over three channels.
    """
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")
    return np.repeat(images[..., None], 3, axis=-1), digits.target.astype("int64")


def _load_npz(path):
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        if "x" not in data or "y" not in data:
            raise UsageError(f"{path} must hold arrays named x and y (it has {list(data.keys())}).")
        return data["x"], data["y"]


def resolve_image_size(config):
    """The square input size of an image run: `config.image_size`, else the backbone's default."""
    if config.image_size:
        return int(config.image_size)
    import tfft

    try:
        return int(tfft.get_backbone_spec(config.backbone).input_shape[0])
    except ValueError:
        return 224


@contextlib.contextmanager
def data_context(config):
    """Keeps what the datasets need alive while they are read: TFDS mock data, scratch copies."""
    scratch = tempfile.mkdtemp(prefix="tfft-data-")
    with contextlib.ExitStack() as stack:
        if config.data.source == "tfds" and config.data.mock_examples:
            import tensorflow_datasets as tfds

            stack.enter_context(tfds.testing.mock_data(num_examples=int(config.data.mock_examples)))
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def load_data(config, scratch=None, *, image_size=None, class_names=None):
    """The run's `tfft.data.DataBundle`, from `config.data`.

    Args:
        config: the run config.
        scratch: a folder for subsampled copies (`data.limit`), from `data_context`.
        image_size: overrides `resolve_image_size(config)`: an int or `(height, width)`.
        class_names: the classes in label order (default: from the data), e.g. a trained
            model's when new data is scored.

    Raises:
        UsageError: an unknown source, a path that does not exist, bad split fractions.
    """
    from tfft import data as data_lib

    d = config.data
    if d.source not in DATA_SOURCES:
        raise UsageError(f"config.data.source={d.source!r}; use one of {DATA_SOURCES}.")
    scratch = scratch or tempfile.mkdtemp(prefix="tfft-data-")
    size = image_size or resolve_image_size(config)
    common = dict(batch_size=int(config.batch_size), seed=int(d.seed))
    names = list(class_names) if class_names else None
    splits = dict(validation_split=0.0 if d.validation_path else float(d.validation_split),
                  test_split=0.0 if d.test_path else float(d.test_split))
    if d.source == "folder":
        paths = _split_paths(d)
        if d.limit:
            paths = {k: _limited_folder(v, int(d.limit), d.seed, scratch) for k, v in paths.items()}
        return data_lib.from_image_directory(
            paths if len(paths) > 1 else paths["train"], image_size=size, resize=d.resize,
            augment=_augment(d.augment), cache=_cache(d.cache), class_names=names, **splits, **common)
    if d.source == "text":
        paths = _split_paths(d)
        if d.limit:
            paths = {k: _limited_table(v, int(d.limit), d.label_column, d.seed, scratch) if os.path.isfile(v) else v
                     for k, v in paths.items()}
        columns = [c.strip() for c in d.text_column.split(",") if c.strip()] or None
        return data_lib.from_text_files(
            paths if len(paths) > 1 else paths["train"], text_column=columns, label_column=d.label_column,
            class_names=names, **splits, **common)
    if d.source == "tfds":
        if not d.name:
            raise UsageError("config.data.source='tfds' needs the dataset's name: --config.data.name=tf_flowers.")
        try:
            return data_lib.from_tfds(
                d.name, split=d.split, data_dir=d.data_dir or None, image_size=size, resize=d.resize,
                augment=_augment(d.augment), cache=_cache(d.cache), download=not d.mock_examples,
                **splits, **common)
        except data_lib.DatasetNotPreparedError as e:
            raise UsageError(str(e)) from None
        except Exception as e:
            if type(e).__name__ == "DatasetNotFoundError":
                raise UsageError(f"TFDS has no dataset {d.name!r} ({str(e).splitlines()[0]}).") from None
            raise
    if d.source == "digits":
        x, y = digits_arrays()
        names = names or [str(i) for i in range(10)]
    else:
        x, y = _load_npz(_check_exists(d.path, "Array file"))
    x, y = _limit_arrays(x, y, int(d.limit), d.seed)
    image = getattr(x, "ndim", 0) == 4
    return data_lib.from_arrays(
        x, y, class_names=names, image_size=size if image else None, resize=d.resize,
        augment=_augment(d.augment) if image else False, **splits, **common)


def check_data(config):
    """Fails fast (before the workdir is touched) on data settings that cannot work."""
    d = config.data
    if d.source not in DATA_SOURCES:
        raise UsageError(f"config.data.source={d.source!r}; use one of {DATA_SOURCES}.")
    if d.source in ("folder", "text"):
        _split_paths(d)
    elif d.source == "arrays":
        _check_exists(d.path, "Array file")
    elif d.source == "tfds" and not d.name:
        raise UsageError("config.data.source='tfds' needs the dataset's name: --config.data.name=tf_flowers.")
    for name in ("validation_split", "test_split"):
        if not 0.0 <= float(d[name]) < 1.0:
            raise UsageError(f"config.data.{name}={d[name]} must be a fraction in [0, 1).")


def _split_paths(d):
    if not d.path:
        raise UsageError(f"config.data.source={d.source!r} needs --config.data.path=... (the data to train on).")
    paths = {"train": _check_exists(d.path, "Data path")}
    if d.validation_path:
        paths["validation"] = _check_exists(d.validation_path, "Validation data path")
    if d.test_path:
        paths["test"] = _check_exists(d.test_path, "Test data path")
    return paths


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _weights(value):
    text = str(value).strip()
    if text.lower() in ("", "none", "random", "null"):
        return None
    if text == "pretrained":
        return "pretrained"
    if not os.path.exists(text):
        raise UsageError(f"config.weights={text!r} is neither 'pretrained', 'none' nor an existing weights file.")
    return text


def _spec_value(value):
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
    import keras
    import keras_hub
    import tensorflow as tf

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
    import numpy as np

    examples = bundle._examples.get("train")
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
    import keras

    import tfft

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
                  dropout=float(config.dropout), head_units=tuple(config.head_units), l2=float(config.l2),
                  pooling=config.pooling or None, class_names=bundle.class_names or None)
    keras.utils.set_random_seed(int(config.seed))
    with (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        if text:
            kwargs.update(sequence_length=int(config.sequence_length), sentence_pairs=bundle.modality == "text_pair")
            if config.backbone == TINY_BERT:
                backbone, preprocessor = tiny_bert(bundle_texts(bundle), int(config.sequence_length),
                                                   seed=int(config.seed))
                keras.utils.set_random_seed(int(config.seed))
                return tfft.build_model(backbone, preprocessor=preprocessor, weights=None, **kwargs)
            return tfft.build_model(config.backbone, weights=_weights(config.weights), **kwargs)
        size = int(bundle.image_size[0]) if bundle.image_size else resolve_image_size(config)
        width = int(bundle.image_size[1]) if bundle.image_size else size
        return tfft.build_model(config.backbone, weights=_weights(config.weights), input_shape=(size, width, 3),
                                **kwargs)


def check_backbone(config):
    """Fails fast (before any data is read) on a backbone name that cannot resolve."""
    import tfft

    name = config.backbone
    if name == TINY_BERT or name.endswith(".keras") or os.path.sep in name or os.path.isdir(name):
        if (name.endswith(".keras") or os.path.sep in name) and not os.path.exists(name):
            raise UsageError(f"config.backbone={name!r} is a path that does not exist.")
        return
    try:
        tfft.get_backbone_spec(name)
    except ValueError as e:
        raise UsageError(f"config.backbone: {e}") from None


def fine_tune_kwargs(config):
    """The `tfft.fine_tune` arguments of a config."""
    verbose = config.verbose
    verbose = int(verbose) if str(verbose).isdigit() else "auto"
    return dict(
        head_epochs=int(config.head_epochs), finetune_epochs=int(config.finetune_epochs),
        unfreeze=_spec_value(config.unfreeze), head_learning_rate=float(config.head_learning_rate),
        finetune_learning_rate=float(config.finetune_learning_rate), head_optimizer=config.head_optimizer,
        finetune_optimizer=config.optimizer, finetune_schedule=config.schedule,
        warmup_fraction=float(config.warmup_fraction), weight_decay=float(config.weight_decay),
        label_smoothing=float(config.label_smoothing), train_batchnorm=bool(config.train_batchnorm),
        cache_features=parse_bool_or_auto(config.cache_features, "cache_features"),
        patience=int(config.patience), seed=int(config.seed),
        jit_compile=parse_bool_or_auto(config.jit_compile, "jit_compile"), verbose=verbose,
    )


# --------------------------------------------------------------------------------------------
# Command-line plumbing: one-paragraph errors
# --------------------------------------------------------------------------------------------

def define_debug_flag(module_name):
    """Defines `--debug` (full tracebacks) as a flag of the calling entry point."""
    flag = flags.BooleanFlag("debug", False, "Show full tracebacks on errors (also with TFFT_DEBUG=1).")
    flags.DEFINE_flag(flag, flags.FLAGS, module_name=module_key(module_name))


def _debug():
    try:
        return bool(flags.FLAGS.debug) or os.environ.get("TFFT_DEBUG") == "1"
    except (flags.UnparsedFlagAccessError, AttributeError):
        return os.environ.get("TFFT_DEBUG") == "1" or "--debug" in sys.argv


def _paragraph(text):
    return " ".join(str(text).split())


def fail(message, hint=None):
    """Prints `message` as one paragraph on stderr and exits with status 2."""
    text = _paragraph(message)
    if hint:
        text += " " + hint
    print(f"error: {text}", file=sys.stderr, flush=True)
    sys.exit(2)


def parse_flags(argv):
    """`app.run`'s flags parser with one-paragraph errors (exit status 2) instead of absl's."""
    program = os.path.basename(argv[0]) if argv else "experiments"
    command = program if program.startswith("tfft ") else f"python -m {_module_name(program)}"
    hint = f"Run `{command} --help` for the flags and config keys."
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e), hint)
    except (AttributeError, KeyError) as e:  # ml_collections: an override of a key the config lacks
        overrides = [a.split("=", 1)[0].lstrip("-") for a in argv[1:] if a.startswith("--config.")]
        key = str(e).strip("'\"")
        named = [o for o in overrides if o.split(".")[-1] == key] or overrides
        fail(f"{', '.join('--' + o for o in named) or 'An override'} names a config key that does not exist "
             f"({key!r}); config files are locked so that a misspelled override fails.", hint)


def _module_name(program):
    name = os.path.splitext(program)[0]
    return f"experiments.{name}" if not name.startswith("experiments") else name


def start(argv, usage, fn, *args, **kwargs):
    """The body of every entry point's `main`: no stray arguments, quiet logs, one-paragraph errors."""
    if len(argv) > 1:
        fail(f"Unexpected arguments {argv[1:]}; flags look like {usage}.")
    quiet_logs()
    return guarded(fn, *args, **kwargs)


def launch(define_flags, main, argv=None):
    """Defines an entry point's flags and runs its `main` under absl with tfft's flag errors."""
    define_flags()
    app.run(main, argv=argv, flags_parser=parse_flags)


USER_ERRORS = (UsageError, ValueError, OSError)


def guarded(fn, *args, **kwargs):
    """Calls `fn`; errors a user can cause end the process with one paragraph (no traceback).

    Tracebacks are shown with `--debug` or `TFFT_DEBUG=1`.
    """
    from tfft.errors import OfflineError

    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        fail("Interrupted. A rerun with the same --workdir resumes where this run stopped.")
    except (OfflineError, *USER_ERRORS) as e:
        if _debug():
            raise
        logger.debug("%s", traceback.format_exc())
        if isinstance(e, UsageError):
            fail(str(e))
        fail(f"({type(e).__name__}) {e}", "Run with --debug (or TFFT_DEBUG=1) for the full traceback.")


def describe_configs():
    """One line per config file in experiments/configs/: its name and the first docstring line."""
    import ast

    lines = []
    for name in sorted(os.listdir(CONFIG_DIR)):
        if name.endswith(".py") and not name.startswith("_"):
            with open(os.path.join(CONFIG_DIR, name)) as f:
                doc = ast.get_docstring(ast.parse(f.read())) or ""
            lines.append(f"  {name}: {doc.splitlines()[0] if doc else ''}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Scoring and reports
# --------------------------------------------------------------------------------------------


def score(model, dataset, *, class_names=(), task=None):
    """Loss, the task's metrics and (classification) a per-class report of `model` on `dataset`.

    Returns:
        `(metrics, report)`: `metrics` maps Keras metric names to floats (plus `examples`);
        `report` is `tfft.reporting.classification_report`'s dict, or None for regression.
    """
    import tfft
    from tfft import reporting

    info = dict(getattr(model, "tfft_info", {}) or {})
    task = task or info.get("task", "multiclass")
    with model.distribute_strategy.scope():
        tfft.compile_model(model, task=task)  # the task's loss and metrics; no step is taken
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
