"""TensorFlow Datasets by name, with a fast offline failure before any download."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import tensorflow as tf

from tfft import net
from tfft import order as order_lib
from tfft.data.augment import augmentation_layer, mark_augmented
from tfft.data.bundle import BAD_FILE_POLICIES, DEFAULT_SEED, DataBundle, check_choice
from tfft.data.pipeline import (
    AUTO_CACHE_BYTES,
    AUTOTUNE,
    MAX_SHUFFLE_BUFFER,
    cache_dataset,
    fingerprint,
    resize_layer,
    resolve_image_size,
    to_rgb,
)
from tfft.data.splits import check_fraction, split_sources

# Host that TFDS downloads prepared datasets from; probed before a download.
TFDS_STORAGE_HOST = "storage.googleapis.com"


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared locally and cannot be downloaded."""


def network_available(host: str = TFDS_STORAGE_HOST, port: int = 443, timeout: float = net.PROBE_TIMEOUT) -> bool:
    """Whether a download from `host:port` (through the proxy, if one is set) can connect in time.

    Example:

    >>> isinstance(network_available(timeout=0.5), bool)
    True
    """
    return net.reachable(f"https://{host}:{port}/", timeout)

def _not_prepared_message(builder: Any, reason: str) -> str:
    name = builder.info.full_name
    short = builder.name + (
        f"/{builder.builder_config.name}" if builder.builder_config else ""
    )
    return (
        f"TFDS dataset {name!r} is not prepared in data_dir="
        f"{os.fspath(builder.data_dir_root)!r} (looked for {builder.data_dir}) and {reason}. "
        "On a machine with internet, prepare it with "
        f"`tfds build {short} --data_dir=DIR` or "
        f"`tfds.load({short!r}, data_dir='DIR')`, copy DIR here, and pass "
        "data_dir=DIR (or set TFDS_DATA_DIR=DIR)."
    )


def _ensure_prepared(builder: Any, download: bool) -> None:
    """Prepares a download builder, failing fast when that cannot work."""
    import tensorflow_datasets as tfds

    if not isinstance(builder, tfds.core.GeneratorBasedBuilder):
        return  # Folder and read-only builders read their files in place.
    prepare = getattr(type(builder).download_and_prepare, "__module__", "")
    if prepare.startswith("tensorflow_datasets.testing"):
        return  # Under tfds.testing.mock_data nothing is downloaded.
    if builder.is_prepared():
        return
    if not download:
        raise DatasetNotPreparedError(
            _not_prepared_message(builder, "download=False")
        )
    if not network_available():
        raise DatasetNotPreparedError(
            _not_prepared_message(
                builder, f"the network is unreachable ({TFDS_STORAGE_HOST}:443 did "
                "not answer), so it cannot be downloaded"
            )
        )
    builder.download_and_prepare()


_FIRST_OF_PAIR = ("premise", "question", "question1", "sentence1", "text_a")


def _feature_keys(
    info: Any, input_keys: str | Sequence[str] | None, label_key: str | None
) -> tuple[str, tuple[str, ...], str]:
    """Finds `(modality, input_keys, label_key)` from `info.features`."""
    import tensorflow_datasets as tfds

    features = info.features
    by_type = lambda kind: [k for k, f in features.items() if isinstance(f, kind)]
    supervised = info.supervised_keys
    simple = (
        isinstance(supervised, tuple) and len(supervised) == 2
        and all(isinstance(k, str) for k in supervised)
    )
    if label_key is None:
        labels = by_type(tfds.features.ClassLabel)
        if simple and supervised[1] in labels:
            label_key = supervised[1]
        elif len(labels) == 1 or "label" in labels:
            label_key = "label" if "label" in labels else labels[0]
        else:
            raise ValueError(
                f"Cannot pick the label among ClassLabel features {labels} of "
                f"{info.full_name}; pass label_key=."
            )
    if input_keys is None:
        images = by_type(tfds.features.Image)
        texts = [k for k in by_type(tfds.features.Text) if "/" not in k]
        if simple and supervised[0] in images + texts:
            input_keys = (supervised[0],)
        elif len(images) == 1:
            input_keys = tuple(images)
        elif len(texts) in (1, 2) and not images:
            input_keys = tuple(sorted(texts, key=lambda k: (k not in _FIRST_OF_PAIR, k)))
        else:
            raise ValueError(
                f"Cannot pick the inputs of {info.full_name} (images {images}, "
                f"texts {texts}); pass input_keys=."
            )
    input_keys = (input_keys,) if isinstance(input_keys, str) else tuple(input_keys)
    for key in input_keys + (label_key,):
        if key not in features:
            raise ValueError(
                f"{info.full_name} has no feature {key!r}; it has {list(features)}."
            )
    is_image = isinstance(features[input_keys[0]], tfds.features.Image)
    modality = "image" if is_image else ("text_pair" if len(input_keys) == 2 else "text")
    return modality, input_keys, label_key


def _tfds_split_specs(
    split: str | Mapping[str, str], validation_split: float, test_split: float,
    num_examples: int | None,
) -> dict[str, str]:
    """Bundle split -> TFDS split spec, slicing fractions off the train split."""
    specs = dict(split) if isinstance(split, Mapping) else {"train": split}
    split_sources(specs)  # Checks the keys.
    if not (validation_split or test_split):
        return specs
    base = specs["train"]
    if "[" in base or "+" in base:
        raise ValueError(
            f"validation_split / test_split slice a plain split name, got {base!r}; "
            "pass split={'train': ..., 'validation': ...} with TFDS slices instead."
        )
    check_fraction("validation_split", validation_split)
    check_fraction("test_split", test_split)
    cut_val = 1.0 - validation_split - test_split
    cut_test = 1.0 - test_split
    if num_examples:
        at = lambda f: str(int(round(num_examples * f)))
    else:
        at = lambda f: f"{int(round(100 * f))}%"
    specs["train"] = f"{base}[:{at(cut_val)}]"
    for name, lo, hi, frac in (
        ("validation", cut_val, cut_test, validation_split),
        ("test", cut_test, 1.0, test_split),
    ):
        if frac:
            if name in specs:
                raise ValueError(f"Both split[{name!r}] and {name}_split were given.")
            specs[name] = f"{base}[{at(lo)}:{at(hi)}]"
    return specs


def from_tfds(
    name: Any,
    *,
    split: str | Mapping[str, str] = "train",
    data_dir: str | os.PathLike | None = None,
    image_size: int | Sequence[int] | None = None,
    backbone: Any = None,
    resize: str = "stretch",
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    augment: Any = False,
    cache: bool | str | os.PathLike = "auto",
    download: bool = True,
    input_keys: str | Sequence[str] | None = None,
    label_key: str | None = None,
    on_bad_file: str = "skip",
) -> DataBundle:
    """Loads a TFDS image or text classification dataset.

    The inputs (an Image feature, or one or two Text features) and the
    ClassLabel feature are found from `info.supervised_keys` and
    `info.features`; `input_keys` / `label_key` override them. Class counts
    are not computed (the data is streamed), so `bundle.counts` is empty.

    When the dataset is not prepared in `data_dir`, it is downloaded only if
    `download=True` and the storage host answers within
    `tfft.net.PROBE_TIMEOUT` seconds; otherwise `DatasetNotPreparedError`
    explains how to prepare it elsewhere and point `data_dir` at it.

    Args:
        name: a TFDS name (`"tf_flowers"`, `"glue/sst2"`, ...) or a builder
            (e.g. `tfds.folder_dataset.ImageFolder(root)`).
        split: the TFDS split for training, or `{"train": spec,
            "validation": spec, "test": spec}` with TFDS split specs.
        data_dir: TFDS data directory (default `~/tensorflow_datasets` or
            `TFDS_DATA_DIR`).
        image_size: as in `from_image_directory`.
        backbone: as in `from_image_directory`.
        resize: as in `from_image_directory`.
        batch_size: examples per batch.
        validation_split: fraction sliced off the end of the training split
            (TFDS slicing: contiguous, not stratified).
        test_split: fraction sliced off after the validation part.
        seed: seed of the file shuffling and the shuffle buffer.
        augment: augmentation of the training images.
        cache: `"auto"` (in memory when the split's size is known and fits
            `AUTO_CACHE_BYTES`), `True`, `False`, or a directory.
        download: download and prepare the dataset when it is missing.
        input_keys: feature name(s) of the inputs.
        label_key: feature name of the label.
        on_bad_file: `"skip"` drops examples whose label is outside the
            class list (such as the -1 labels of unlabeled test splits);
            `"raise"` fails on them when the dataset is read.

    Returns:
        A `DataBundle`.

    Example:

    >>> import tensorflow_datasets as tfds
    >>> with tfds.testing.mock_data(num_examples=8):
    ...     bundle = from_tfds("imdb_reviews", batch_size=4, download=False)
    >>> bundle.modality, bundle.class_names
    ('text', ('neg', 'pos'))
    """
    import tensorflow_datasets as tfds

    check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    if isinstance(name, str):
        builder = tfds.builder(
            name, data_dir=os.fspath(data_dir) if data_dir is not None else None
        )
    else:
        builder = name
    info = builder.info
    modality, keys, label_key = _feature_keys(info, input_keys, label_key)
    class_names = tuple(info.features[label_key].names)
    size = resolve_image_size(image_size, backbone) if modality == "image" else None
    if augment and modality != "image":
        raise ValueError(f"augment is for images; {info.full_name} is {modality}.")
    base = split if isinstance(split, str) else split.get("train", "train")
    base_name = base.split("[")[0]
    num_examples = (
        info.splits[base_name].num_examples if base_name in info.splits else None
    )
    if (validation_split or test_split) and isinstance(
        builder, tfds.folder_dataset.ImageFolder
    ):
        raise ValueError(
            "ImageFolder builders cannot slice splits, so validation_split / "
            "test_split do not apply; use from_image_directory(<root>/train, "
            "validation_split=...) or split={'train': ..., 'validation': ...}."
        )
    specs = _tfds_split_specs(split, validation_split, test_split, num_examples)
    if info.splits:
        for spec in specs.values():
            for part in spec.split("+"):
                if part.split("[")[0] not in info.splits:
                    raise ValueError(
                        f"{info.full_name} has no split {part!r}; it has "
                        f"{list(info.splits)}."
                    )
    _ensure_prepared(builder, download)
    augment_layer = augmentation_layer(augment, seed)
    datasets = {
        bundle_split: _tfds_dataset(
            builder, spec, bundle_split == "train", modality=modality, keys=keys,
            label_key=label_key, num_classes=len(class_names), image_size=size,
            resize=resize, batch_size=batch_size, seed=seed,
            augment=augment_layer, cache=cache, on_bad_file=on_bad_file,
        )
        for bundle_split, spec in specs.items()
    }
    return DataBundle(
        train=datasets.get("train"),
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=class_names,
        counts={},
        files={},
        labels={},
        modality=modality,
        task="multiclass",
        image_size=size,
        batch_size=batch_size,
        augmented=augment_layer is not None,
        seed=seed,
    )


def _tfds_split_size(builder: Any, spec: str) -> tuple[int | None, int | None]:
    """`(num_examples, num_bytes)` of a split spec, when the info knows them."""
    try:
        split_info = builder.info.splits[spec]
        return split_info.num_examples, split_info.num_bytes
    except (KeyError, ValueError, TypeError, AttributeError):
        return None, None


def _tfds_dataset(
    builder: Any, spec: str, training: bool, *, modality: str, keys: tuple[str, ...],
    label_key: str, num_classes: int, image_size: tuple[int, int] | None,
    resize: str, batch_size: int, seed: int | None, augment: Any,
    cache: Any, on_bad_file: str,
) -> tf.data.Dataset:
    """One TFDS split as `(inputs, label)` batches."""
    import tensorflow_datasets as tfds

    dataset = builder.as_dataset(
        split=spec,
        shuffle_files=training,
        read_config=tfds.ReadConfig(shuffle_seed=seed),
    )
    resizer = resize_layer(image_size, resize) if image_size else None

    def to_pair(example):
        label = example[label_key]
        if modality == "image":
            image = to_rgb(tf.cast(example[keys[0]], tf.float32))
            return resizer(image), label
        inputs = tuple(example[k] for k in keys)
        return (inputs if len(inputs) == 2 else inputs[0]), label

    def label_ok(_, label):
        return (label >= 0) & (label < num_classes)

    def assert_label(inputs, label):
        check = tf.debugging.assert_equal(
            label_ok(inputs, label), True,
            message=f"label outside [0, {num_classes}) in {builder.info.full_name} "
            f"split {spec!r}; use on_bad_file='skip' to drop such examples",
        )
        with tf.control_dependencies([check]):
            return inputs, tf.identity(label)

    dataset = dataset.map(to_pair, num_parallel_calls=AUTOTUNE)
    if on_bad_file == "skip":
        dataset = dataset.filter(label_ok)
    else:
        dataset = dataset.map(assert_label, num_parallel_calls=AUTOTUNE)
    num_examples, num_bytes = _tfds_split_size(builder, spec)
    if cache == "auto":
        if num_examples is None:
            cache = False
        elif modality == "image":
            cache = num_examples * image_size[0] * image_size[1] * 12 <= AUTO_CACHE_BYTES
        else:
            cache = (num_bytes or 0) * 2 <= AUTO_CACHE_BYTES
    key = f"{builder.info.full_name.replace('/', '_')}-" + fingerprint(
        spec, image_size, resize
    )
    dataset, in_memory = cache_dataset(
        dataset, os.fspath(cache) if isinstance(cache, os.PathLike) else cache, key
    )
    if training:
        buffer = (num_examples if in_memory else None) or MAX_SHUFFLE_BUFFER
        dataset = order_lib.epoch_shuffle(dataset, buffer, seed)
    dataset = dataset.batch(batch_size)
    if training and augment is not None:
        # One batch at a time, as in tfft.data.pipeline: seeded augmentation repeats exactly.
        dataset = dataset.map(lambda x, y: (augment(x, training=True), y))
    dataset = dataset.prefetch(AUTOTUNE)
    if training and augment is not None:
        mark_augmented(dataset)
    return dataset
