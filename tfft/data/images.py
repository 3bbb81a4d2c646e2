"""Image folders: `from_image_directory` and the up-front check of image files."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfft.data.augment import augmentation_layer
from tfft.data.bundle import (
    BAD_FILE_POLICIES,
    DEFAULT_SEED,
    DataBundle,
    Examples,
    check_choice,
    make_bundle,
    report_bad,
)
from tfft.data.folders import folder_examples, list_class_folder, resolve_folder_classes
from tfft.data.pipeline import AUTOTUNE, Pipeline, decode_image, resize_layer, resolve_image_size
from tfft.data.splits import make_splits, split_sources

logger = logging.getLogger("tfft.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
VALIDATE_POLICIES = ("decode", "header", "none")
# Images larger than this are not decoded: a 20,000 x 20,000 px photo alone would take 1.2 GB as
# pixels before it is resized (and every decoding thread may hold one).
MAX_PIXELS = 64_000_000


def oversized_images(paths: Sequence[str], max_pixels: int = MAX_PIXELS) -> dict[str, str]:
    """`{path: reason}` for images whose header says they have more than `max_pixels` pixels.

    Only the headers are read (PIL), in a thread pool.

    Example:

    >>> oversized_images([])
    {}
    """
    from PIL import Image  # optional at import time: only image folders need it

    def check(path):
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as e:  # PIL refuses to open it; its message has the pixel count
            count = re.search(r"\((\d+) pixels\)", str(e))
            return path, f"an image of {int(count.group(1)) / 1e6:.0f} megapixels" if count else "a huge image"
        except Exception:  # an unreadable header: the decode check reports it
            return path, None
        if width * height > max_pixels:
            return path, f"an image of {width}x{height} px ({width * height / 1e6:.0f} megapixels)"
        return path, None

    workers = min(16, (os.cpu_count() or 1) * 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        found = {p: why for p, why in pool.map(check, paths) if why}
    return {p: f"{why} is over the {max_pixels / 1e6:.0f}-megapixel limit for decoding: downscale it "
               "(e.g. to 2,000 px on the long side)" for p, why in found.items()}

def _undecodable_images(paths: Sequence[str]) -> set[str]:
    """Paths that `tf.io.decode_image` cannot decode (parallel pass)."""
    if not paths:
        return set()

    def decode(path):
        return path, tf.shape(decode_image(tf.io.read_file(path)))

    dataset = (
        tf.data.Dataset.from_tensor_slices(list(paths))
        .map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
        .ignore_errors()
    )
    good = {p.decode() for p, _ in dataset.as_numpy_iterator()}
    return set(paths) - good


def _unreadable_headers(paths: Sequence[str]) -> set[str]:
    """Paths whose image header PIL cannot read (thread pool)."""
    from PIL import Image

    def bad(path):
        try:
            with Image.open(path) as image:
                image.verify()
            return None
        except Exception:  # PIL raises many types for bad files.
            return path

    workers = min(16, (os.cpu_count() or 1) * 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return {p for p in pool.map(bad, paths) if p is not None}


def find_bad_images(paths: Sequence[str], validate: str = "decode") -> set[str]:
    """Returns the image files that would fail in training.

    Args:
        paths: image file paths.
        validate: `"decode"` decodes every file with `tf.io.decode_image` (the
            decoder training uses; catches truncated files), `"header"` only
            reads headers with PIL (faster, misses truncation), `"none"`.

    Returns:
        The set of bad paths.

    Example:

    >>> find_bad_images([], "decode")
    set()
    """
    check_choice("validate", validate, VALIDATE_POLICIES)
    if validate == "none":
        return set()
    if validate == "header":
        return _unreadable_headers(paths)
    return _undecodable_images(paths)


def _image_folder_examples(
    root: str,
    class_names: Sequence[str] | None,
    validate: str,
) -> tuple[Examples, tuple[str, ...], list[tuple[str, str]]]:
    listing = list_class_folder(root, IMAGE_EXTENSIONS)
    names = resolve_folder_classes(listing, class_names, root, "image files")
    paths, labels, bad = folder_examples(listing, names, root)
    huge = oversized_images(paths)
    broken = find_bad_images([p for p in paths if p not in huge], validate)
    bad += [(p, huge[p]) for p in paths if p in huge] + [(p, "not a decodable image") for p in paths if p in broken]
    keep = [i for i, p in enumerate(paths) if p not in broken and p not in huge]
    kept = np.asarray([paths[i] for i in keep], dtype=object)
    examples = Examples(
        kept, np.asarray([labels[i] for i in keep], dtype=np.int64), kept
    )
    return examples, names, bad


def from_image_directory(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    image_size: int | Sequence[int] | None = None,
    backbone: Any = None,
    resize: str = "stretch",
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    class_names: Sequence[str] | None = None,
    augment: Any = False,
    cache: bool | str | os.PathLike = "auto",
    on_bad_file: str = "skip",
    validate: str = "decode",
) -> DataBundle:
    """Loads images from one subfolder per class.

    `path/<class>/**/*.{jpg,jpeg,png,bmp,gif}`; other files are ignored.
    Images are streamed from disk, decoded in parallel, made RGB and resized
    to `image_size` as float32 0-255 pixels.

    Args:
        path: the root folder, or `{"train": dir, "validation": dir,
            "test": dir}` for data that comes pre-split (each with class
            subfolders).
        image_size: `(height, width)` or an int; defaults to the input size
            of `backbone`, else 224x224.
        backbone: a tfft backbone name or `keras.Model` to take the size from.
        resize: `"stretch"` (plain resize), `"crop"` (central crop to the
            target aspect ratio, then resize) or `"pad"` (pad to the aspect
            ratio with black, then resize).
        batch_size: examples per batch.
        validation_split: fraction of each class of the training source held
            out for validation.
        test_split: fraction of each class held out for test.
        seed: seed of the splits, shuffling and augmentation.
        class_names: the classes, in label order; defaults to the sorted
            folder names of the training source.
        augment: augmentation of the training split (see
            `augmentation_layer`).
        cache: `"auto"` (in memory when the split fits `AUTO_CACHE_BYTES`),
            `True`, `False`, or a directory to cache into.
        on_bad_file: `"skip"` or `"raise"` for undecodable images and class
            folders outside `class_names`.
        validate: how to check images up front (see `find_bad_images`). With `"header"` or
            `"none"` and `on_bad_file="skip"`, files that fail to decode are also skipped while
            training; with `"decode"` they are all decoded here, and a file that changes on disk
            after this check fails the run.

    Returns:
        A `DataBundle` of image datasets.

    Example:

    >>> import os, tempfile
    >>> from PIL import Image
    >>> root = tempfile.mkdtemp()
    >>> for cls in ("cat", "dog"):
    ...     os.makedirs(f"{root}/{cls}")
    ...     for i in range(5):
    ...         Image.new("RGB", (40, 30)).save(f"{root}/{cls}/{i}.png")
    >>> bundle = from_image_directory(root, image_size=32, batch_size=4,
    ...                               validation_split=0.2)
    >>> bundle.counts["validation"]
    (1, 1)
    >>> images, labels = next(iter(bundle.train))
    >>> tuple(images.shape), images.dtype.name
    ((4, 32, 32, 3), 'float32')
    """
    check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    size = resolve_image_size(image_size, backbone)
    resize_layer(size, resize)  # Validates `resize` before any file work.
    sources = split_sources(path)
    train, names, bad = _image_folder_examples(
        os.fspath(sources["train"]), class_names, validate
    )
    examples = {"train": train}
    for name in ("validation", "test"):
        if name in sources:
            examples[name], _, more = _image_folder_examples(
                os.fspath(sources[name]), names, validate
            )
            bad += more
    report_bad(bad, on_bad_file, "image file(s)")
    splits = make_splits(examples, validation_split, test_split, seed, True)
    pipeline = Pipeline(
        modality="image_files",
        batch_size=batch_size,
        seed=seed,
        image_size=size,
        resize=resize,
        augment=augmentation_layer(augment, seed),
        cache=os.fspath(cache) if isinstance(cache, os.PathLike) else cache,
        # With validate="decode" every file has been decoded already, so the datasets keep their
        # cardinality (no run-time `ignore_errors`, no counting pass before training: tfft.phases).
        skip_errors=on_bad_file == "skip" and validate != "decode",
    )
    bundle = make_bundle(
        splits, pipeline, class_names=names, task="multiclass", modality="image",
        image_size=size, skipped=[where for where, _ in bad],
    )
    logger.info("Loaded %s\n%s", os.fspath(sources["train"]), bundle.summary())
    return bundle

