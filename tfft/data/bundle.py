"""`DataBundle`: the batched datasets of a loader's splits, with what is known about them.

Also the plumbing every loader shares: the examples behind a split (`Examples`), policy
checks, the report of bad files, `make_bundle`, which builds each split's dataset with a
`Pipeline` and wraps them, and the registry that lets a bundle's datasets remember their
class names (`dataset_classes`, what `tfft.checks` compares with the model's classes).
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

logger = logging.getLogger("tfft.data")

SPLITS = ("train", "validation", "test")
DEFAULT_SEED = 42
BAD_FILE_POLICIES = ("skip", "raise")
TASKS = ("multiclass", "binary", "multilabel", "regression")
_MAX_LISTED = 5
# tf.data transformations that keep every element's label, so a dataset made from a bundle's
# with them still has the bundle's classes (`dataset_classes`); `map` and the like may relabel.
_LABEL_KEEPING = frozenset({
    "PrefetchDataset", "CacheDataset", "ShuffleDataset", "TakeDataset", "SkipDataset", "RepeatDataset",
    "OptionsDataset", "AssertCardinalityDataset", "IgnoreErrorsDataset",
})
_MAX_LINEAGE = 32
_bundle_classes: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

@dataclasses.dataclass(frozen=True)
class Examples:
    """The examples of one split, held as paths, strings or arrays.

    Attributes:
        inputs: a NumPy array (file paths, strings or array data), or a tuple
            of two string arrays for sentence pairs.
        labels: NumPy array of labels, aligned with `inputs`.
        files: the source file of each example, or `None`.
    """

    inputs: Any
    labels: np.ndarray
    files: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> Examples:
        """Returns the examples at `indices`."""
        if isinstance(self.inputs, tuple):
            inputs = tuple(part[indices] for part in self.inputs)
        else:
            inputs = self.inputs[indices]
        files = self.files[indices] if self.files is not None else None
        return Examples(inputs, self.labels[indices], files)

    @staticmethod
    def concat(parts: Sequence[Examples]) -> Examples:
        """Concatenates the examples of several splits."""
        if isinstance(parts[0].inputs, tuple):
            inputs = tuple(
                np.concatenate([p.inputs[i] for p in parts])
                for i in range(len(parts[0].inputs))
            )
        else:
            inputs = np.concatenate([p.inputs for p in parts])
        files = None
        if all(p.files is not None for p in parts):
            files = np.concatenate([p.files for p in parts])
        return Examples(inputs, np.concatenate([p.labels for p in parts]), files)


@dataclasses.dataclass(frozen=True)
class DataBundle:
    """Batched, prefetched datasets for the train / validation / test splits.

    Attributes:
        train: the training `tf.data.Dataset` (shuffled each epoch, augmented
            when asked), or `None`.
        validation: the validation dataset, or `None`.
        test: the test dataset, or `None`.
        class_names: class names; index `i` is label `i`. Empty for
            regression.
        counts: per split, the number of examples of each class (positives
            per class for multilabel); empty where not computed (TFDS).
        files: per split, the source file of each example, in the order of
            `labels` (image and text folders), else empty.
        labels: per split, the labels as a NumPy array (empty for TFDS).
        modality: `"image"`, `"text"`, `"text_pair"` or `"features"`.
        task: `"multiclass"`, `"multilabel"` or `"regression"`.
        image_size: `(height, width)` of the images, or `None`.
        batch_size: examples per batch.
        augmented: whether the training split is augmented.
        skipped: bad files / rows that were dropped.
        seed: the seed of the splits and shuffling.

    Example:

    >>> import numpy as np
    >>> from tfft.data import from_arrays
    >>> bundle = from_arrays(np.zeros((10, 4)), [0] * 6 + [1] * 4,
    ...                      validation_split=0.5, batch_size=5)
    >>> bundle.num_classes, bundle.counts["validation"], bundle.class_counts
    (2, (3, 2), (6, 4))
    >>> print(bundle.summary().splitlines()[1])
    class       train  validation
    """

    train: tf.data.Dataset | None
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    class_names: tuple[str, ...]
    counts: Mapping[str, tuple[int, ...]]
    files: Mapping[str, tuple[str, ...]]
    labels: Mapping[str, np.ndarray]
    modality: str
    task: str
    image_size: tuple[int, int] | None
    batch_size: int
    augmented: bool
    skipped: tuple[str, ...] = ()
    seed: int | None = DEFAULT_SEED
    examples: Mapping[str, Examples] = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )
    pipeline: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self):
        # Each split remembers the classes, so that `tfft.checks` can compare them with a
        # model's when the datasets are passed without the bundle.
        if self.task in ("multiclass", "multilabel") and self.class_names:
            for dataset in (self.train, self.validation, self.test):
                if dataset is not None:
                    _bundle_classes[dataset] = tuple(self.class_names)

    @property
    def num_classes(self) -> int | None:
        """Number of classes (outputs for multilabel), `None` for regression."""
        return len(self.class_names) or None

    @property
    def class_counts(self) -> tuple[int, ...]:
        """Per-class counts summed over all splits."""
        if not self.counts:
            return ()
        return tuple(int(sum(c)) for c in zip(*self.counts.values()))

    def split(self, name: str) -> tf.data.Dataset | None:
        """Returns the dataset of split `name` (`train`, `validation`, `test`)."""
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, name)

    def summary(self, task: str | None = None) -> str:
        """Returns a table of per-split class counts and the pipeline settings.

        Args:
            task: the task the data are used for, when it is not the bundle's own (a
                two-class bundle trains a `task="binary"` model too).
        """
        head = [f"{self.modality} data, task {task or self.task}"]
        if self.class_names:
            head.append(f"{len(self.class_names)} classes")
        if self.image_size:
            head.append(f"image size {self.image_size[0]}x{self.image_size[1]}")
        head.append(f"batch size {self.batch_size}")
        if self.augmented:
            head.append("training batches augmented by the loader")
        lines = [", ".join(head)]
        splits = [s for s in SPLITS if self.split(s) is not None]
        if self.counts and self.class_names:
            width = max(len(n) for n in self.class_names + ("class", "total"))
            lines.append(
                "class".ljust(width) + "".join(f"{s:>12}" for s in splits)
            )
            for i, name in enumerate(self.class_names):
                row = "".join(f"{self.counts[s][i]:>12}" for s in splits)
                lines.append(name.ljust(width) + row)
            totals = "".join(f"{len(self.labels[s]):>12}" for s in splits)
            lines.append("total".ljust(width) + totals)
        else:
            sizes = [
                f"{s}: {len(self.labels[s])}" if s in self.labels else s
                for s in splits
            ]
            lines.append("splits: " + ", ".join(sizes))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} bad file(s) / row(s)")
        return "\n".join(lines)




def dataset_classes(dataset: Any) -> tuple[str, ...] | None:
    """The class names of the `DataBundle` that `dataset` is a split of, or `None`.

    A bundle's `train`, `validation` and `test` datasets are known, and so is a dataset made
    from one of them by transformations that keep every element (`prefetch`, `cache`,
    `shuffle`, `take`, `skip`, `repeat`, `with_options`, `ignore_errors`). A `map`, `filter`,
    `unbatch` (a map inside) or any other transformation hides the classes, since it may
    change the labels: such a dataset is checked on its first batch only
    (`tfft.checks.check_values`). Regression bundles have no classes (`None`).

    Example:

    >>> import numpy as np
    >>> from tfft.data import from_arrays
    >>> bundle = from_arrays(np.zeros((4, 2)), [0, 1, 0, 1], batch_size=2)
    >>> dataset_classes(bundle.train), dataset_classes(bundle.train.prefetch(1))
    (('0', '1'), ('0', '1'))
    >>> dataset_classes(bundle.train.map(lambda x, y: (x, y))) is None
    True
    """
    for _ in range(_MAX_LINEAGE):
        try:
            found = _bundle_classes.get(dataset)
        except TypeError:  # not hashable: not a dataset
            return None
        if found is not None:
            return found
        inputs = getattr(dataset, "_inputs", None)  # tf.data's (private) lineage
        if type(dataset).__name__.lstrip("_") not in _LABEL_KEEPING or inputs is None:
            return None
        parents = inputs()
        if len(parents) != 1:
            return None
        dataset = parents[0]
    return None


def label_mapping_note(values: Sequence[int], class_names: Sequence[str]) -> str:
    """One line on integer labels that are not the class indices 0..K-1 themselves.

    Args:
        values: the distinct integer label values, in class order (class `i` is `values[i]`).
        class_names: the class names given to them.

    Returns:
        `""` when `values` are 0..K-1, else e.g. `labels 1..4 mapped to classes 0..3
        (class names '1'..'4')`.

    Example:

    >>> label_mapping_note([1, 2, 3, 4], ["1", "2", "3", "4"])
    "labels 1..4 mapped to classes 0..3 (class names '1'..'4')"
    >>> label_mapping_note([0, 1, 3], ["0", "1", "3"])
    "labels 0, 1, 3 mapped to classes 0..2 (class names '0', '1', '3')"
    """
    values = [int(v) for v in values]
    k = len(values)
    if not k or values == list(range(k)):
        return ""
    if values == list(range(values[0], values[0] + k)) and k > 2:
        shown, names = f"{values[0]}..{values[-1]}", f"{class_names[0]!r}..{class_names[-1]!r}"
    else:
        more = ", ..." if k > _MAX_LISTED else ""
        shown = ", ".join(str(v) for v in values[:_MAX_LISTED]) + more
        names = ", ".join(repr(n) for n in class_names[:_MAX_LISTED]) + more
    classes = "class 0" if k == 1 else f"classes 0..{k - 1}"
    return f"labels {shown} mapped to {classes} (class names {names})"


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r}; expected one of {tuple(choices)}.")


def report_bad(bad: Sequence[tuple[str, str]], on_bad_file: str, what: str) -> None:
    """Raises (`"raise"`) or logs (`"skip"`) the bad files / rows."""
    if not bad:
        return
    listed = "; ".join(f"{where} ({why})" for where, why in bad[:_MAX_LISTED])
    more = f" and {len(bad) - _MAX_LISTED} more" if len(bad) > _MAX_LISTED else ""
    if on_bad_file == "raise":
        raise ValueError(
            f"{len(bad)} bad {what}: {listed}{more}. Fix or remove them, or "
            "pass on_bad_file='skip' to drop them."
        )
    logger.warning("Skipped %d bad %s: %s%s.", len(bad), what, listed, more)


def make_bundle(
    splits: Mapping[str, Examples],
    pipeline: Any,
    *,
    class_names: Sequence[str],
    task: str,
    modality: str,
    image_size: tuple[int, int] | None,
    skipped: Sequence[str] = (),
) -> DataBundle:
    """Builds every split's dataset and the bundle around them."""
    datasets = {name: pipeline.build(ex, name) for name, ex in splits.items()}
    counts = {}
    if task == "multiclass":
        counts = {
            name: tuple(int(c) for c in np.bincount(ex.labels, minlength=len(class_names)))
            for name, ex in splits.items()
        }
    elif task == "multilabel":
        counts = {
            name: tuple(int(c) for c in ex.labels.sum(axis=0)) for name, ex in splits.items()
        }
    return DataBundle(
        train=datasets.get("train"),
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        class_names=tuple(class_names),
        counts=counts,
        files={
            n: tuple(ex.files.tolist())
            for n, ex in splits.items()
            if ex.files is not None
        },
        labels={n: ex.labels for n, ex in splits.items()},
        modality=modality,
        task=task,
        image_size=image_size,
        batch_size=pipeline.batch_size,
        augmented=pipeline.augment is not None,
        skipped=tuple(skipped),
        seed=pipeline.seed,
        examples=dict(splits),
        pipeline=pipeline,
    )

