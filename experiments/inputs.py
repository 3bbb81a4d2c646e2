"""The run's data from `config.data`: a `tfft.data.DataBundle`, with `data.limit` subsampling."""

import contextlib
import os
import shutil
import tempfile

import numpy as np
from sklearn.datasets import load_digits

from experiments.config import DATA_SOURCES, UsageError
from tfft import data as data_lib
from tfft.data import IMAGE_EXTENSIONS
from tfft.data import text as text_lib

_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def _check_exists(path, what):
    if not os.path.exists(path):
        raise UsageError(f"{what} {path!r} does not exist. Pass the right path with --config.data.path=... "
                         "(and data.validation_path / data.test_path for pre-split data).")
    return path


def _cache(value):
    parsed = str(value).strip()
    if parsed.lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[parsed.lower()]
    return parsed


def _limited_folder(root, limit, seed, scratch):
    """A folder of symlinks to at most `limit` images of each class of `root` (same classes)."""
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


def _limited_table(path, limit, seed, options):
    """At most `limit` rows of each label of the table `path`, read as `from_text_files` reads it (the same
    delimiter, header and columns), in memory: its errors and bad rows name `path` itself."""
    table = text_lib.read_text_table(path, **options)
    return table.sample_per_value(options["label_column"], limit, seed)


def _column(value):
    """A column of `config.data`: an index when all digits (`"0"`), else a name."""
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def _text_columns(value):
    """`(text_column, text_pair)` from `config.data.text_column`: "", "a", "a+b" (joined) or "a,b" (a pair)."""
    text = str(value).strip()
    if "+" in text and "," in text:
        raise UsageError(f"config.data.text_column={text!r} mixes '+' (columns joined into one text) and ',' "
                         "(sentence pairs); use one.")
    if not text:
        return None, None
    if "," not in text and "+" not in text:
        return _column(text), None
    parts = [_column(part) for part in text.split("," if "," in text else "+")]
    if "," in text and (len(parts) != 2 or "" in parts):
        raise UsageError(f"config.data.text_column={text!r}: sentence pairs take two columns, 'premise,hypothesis'.")
    if "" in parts:
        raise UsageError(f"config.data.text_column={text!r}: joined columns are named with '+', 'title+description'.")
    return (None, tuple(parts)) if "," in text else (parts, None)


def text_options(d):
    """`from_text_files`'s column, delimiter and header arguments from `config.data` (see `base_config`).

    Example:
    >>> from experiments.config import base_config
    >>> d = base_config().data
    >>> d.text_column, d.label_column, d.header = "1+2", "0", "false"
    >>> options = text_options(d)
    >>> options["text_column"], options["text_separator"], options["label_column"], options["header"]
    ([1, 2], ' ', 0, False)
    """
    column, pair = _text_columns(d.text_column)
    header = str(d.header).strip().lower()
    headers = {"auto": "auto", "true": True, "false": False, "none": False}
    if header not in headers:
        raise UsageError(f"config.data.header={d.header!r}; use auto, true or false.")
    delimiter = _DELIMITER_NAMES.get(str(d.delimiter).lower(), str(d.delimiter))
    if len(delimiter) > 1:
        raise UsageError(f"config.data.delimiter={d.delimiter!r}; use one character, tab, or \"\" to sniff it.")
    separator = d.text_separator if isinstance(column, list) else None
    return dict(text_column=column, text_pair=pair, text_separator=separator, label_column=_column(d.label_column),
                delimiter=delimiter or None, header=headers[header])


def _limit_arrays(x, y, limit, seed):
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
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype("uint8")
    return np.repeat(images[..., None], 3, axis=-1), digits.target.astype("int64")


def _load_npz(path):
    with np.load(path, allow_pickle=False) as data:
        if "x" not in data or "y" not in data:
            raise UsageError(f"{path} must hold arrays named x and y (it has {list(data.keys())}).")
        return data["x"], data["y"]


def resolve_image_size(config):
    """The square input size of an image run: `config.image_size`, else the backbone's native one
    (`tfft.data.resolve_image_size`; 224 for a backbone file or directory)."""
    if config.image_size:
        return int(config.image_size)
    try:
        return int(data_lib.resolve_image_size(None, config.backbone)[0])
    except ValueError:  # a path, not a registry name
        return int(data_lib.DEFAULT_IMAGE_SIZE[0])


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
    d = config.data
    if d.source not in DATA_SOURCES:
        raise UsageError(f"config.data.source={d.source!r}; use one of {DATA_SOURCES}.")
    scratch = scratch or tempfile.mkdtemp(prefix="tfft-data-")
    size = image_size or (resolve_image_size(config) if d.source != "text" else None)  # text has no image size
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
            cache=_cache(d.cache), class_names=names, **splits, **common)
    if d.source == "text":
        paths, options = _split_paths(d), text_options(d)
        if d.limit:
            paths = {k: _limited_table(v, int(d.limit), d.seed, options) if os.path.isfile(v) else v
                     for k, v in paths.items()}
        return data_lib.from_text_files(
            paths if len(paths) > 1 else paths["train"], class_names=names, **options, **splits, **common)
    if d.source == "tfds":
        if not d.name:
            raise UsageError("config.data.source='tfds' needs the dataset's name: --config.data.name=tf_flowers.")
        try:
            return data_lib.from_tfds(
                d.name, split=d.split, data_dir=d.data_dir or None, image_size=size, resize=d.resize,
                cache=_cache(d.cache), download=not d.mock_examples,
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
        **splits, **common)


def check_data(config):
    """Fails fast (before the workdir is touched) on data settings that cannot work."""
    d = config.data
    if d.source not in DATA_SOURCES:
        raise UsageError(f"config.data.source={d.source!r}; use one of {DATA_SOURCES}.")
    if d.source in ("folder", "text"):
        _split_paths(d)
    if d.source == "text":
        text_options(d)
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
