"""Text classification data: CSV / TSV tables and folders of `.txt` files."""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import numpy as np

from tfft.data.bundle import BAD_FILE_POLICIES, DEFAULT_SEED, SPLITS, DataBundle, Examples, check_choice, make_bundle
from tfft.data.bundle import report_bad
from tfft.data.folders import list_class_folder, resolve_folder_classes
from tfft.data.pipeline import Pipeline
from tfft.data.splits import make_splits, split_sources

TEXT_EXTENSIONS = (".txt",)

def _class_order(values: Sequence[str]) -> tuple[str, ...]:
    """Sorted unique label values; numerically when all are integers."""
    unique = set(values)
    try:
        return tuple(str(v) for v in sorted(int(v) for v in unique))
    except ValueError:
        return tuple(sorted(unique))


def _label_index(value: str, index: Mapping[str, int], n: int) -> int | None:
    """Class index of a label value: by name, else as an in-range integer."""
    if value in index:
        return index[value]
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 <= number < n and str(number) == value.strip() else None


def _read_table(
    path: str, text_columns: tuple[str, ...] | None, label_column: str,
    delimiter: str | None,
) -> tuple[list[tuple[str, ...]], list[tuple[str, str]], tuple[str, ...]]:
    """Reads `(texts, label, where)` rows and `(where, reason)` problems."""
    is_tsv = path.lower().endswith((".tsv", ".tab")) if delimiter is None else delimiter == "\t"
    delimiter = delimiter or ("\t" if is_tsv else ",")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(
            handle,
            delimiter=delimiter,
            # TSV fields hold no tabs, so quotes in a sentence are text.
            quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
        )
        columns = tuple(reader.fieldnames or ())
        if label_column not in columns:
            raise ValueError(
                f"{path}: missing column {label_column!r}; the header has {columns}. "
                "Pass label_column= to name the label column."
            )
        if text_columns is None:
            text_columns = tuple(c for c in columns if c != label_column)
            if len(text_columns) != 1:
                raise ValueError(
                    f"{path}: cannot tell the text column among {columns}; pass "
                    "text_column='<name>' (or a pair of names for sentence pairs)."
                )
        for column in text_columns:
            if column not in columns:
                raise ValueError(
                    f"{path}: missing column {column!r}; the header has {columns}. "
                    "Pass text_column= to name the text column(s)."
                )
        rows, bad = [], []
        for line, row in enumerate(reader, start=2):
            label = (row.get(label_column) or "").strip()
            if not label or any(row.get(c) is None for c in text_columns):
                bad.append((f"{path}:{line}", "empty label or missing field"))
                continue
            rows.append((tuple(row[c] for c in text_columns), label, f"{path}:{line}"))
    return rows, bad, text_columns


def _text_folder_rows(root: str) -> tuple[list, list, dict[str, list[str]]]:
    listing = list_class_folder(root, TEXT_EXTENSIONS)
    rows, bad = [], []
    for name, files in listing.items():
        for file in files:
            try:
                with open(file, encoding="utf-8") as handle:
                    rows.append(((handle.read(),), name, file))
            except (OSError, UnicodeDecodeError) as error:
                bad.append((file, f"unreadable: {error}"))
    return rows, bad, listing


def _text_examples(
    source: str,
    text_columns: tuple[str, ...] | None,
    label_column: str,
    delimiter: str | None,
    class_names: Sequence[str] | None,
) -> tuple[Examples, tuple[str, ...], list, tuple[str, ...]]:
    """Reads one text source into examples (labels by name, never position)."""
    is_folder = os.path.isdir(source)
    if is_folder:
        rows, bad, listing = _text_folder_rows(source)
        if class_names is None:
            class_names = resolve_folder_classes(listing, None, source, ".txt files")
        text_columns = text_columns or ("text",)
    else:
        if not os.path.isfile(source):
            raise ValueError(f"{source!r} is neither a CSV/TSV file nor a folder.")
        rows, bad, text_columns = _read_table(source, text_columns, label_column, delimiter)
        if class_names is None:
            class_names = _class_order([label for _, label, _ in rows])
    index = {name: i for i, name in enumerate(class_names)}
    keep, labels = [], []
    for i, (_, label, where) in enumerate(rows):
        value = _label_index(label, index, len(class_names))
        if value is None:
            bad.append((where, f"label {label!r} not in class_names {tuple(class_names)}"))
        else:
            keep.append(i)
            labels.append(value)
    columns = list(zip(*[rows[i][0] for i in keep])) or [()] * len(text_columns)
    inputs = tuple(np.asarray(c, dtype=object) for c in columns)
    examples = Examples(
        inputs if len(inputs) == 2 else inputs[0],
        np.asarray(labels, dtype=np.int64),
        np.asarray([rows[i][2] for i in keep], dtype=object) if is_folder else None,
    )
    return examples, tuple(class_names), bad, text_columns


def from_text_files(
    path: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    text_column: str | Sequence[str] | None = None,
    label_column: str = "label",
    delimiter: str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    on_bad_file: str = "skip",
) -> DataBundle:
    """Loads text classification data from CSV / TSV files or .txt folders.

    A table needs a header row; `text_column` names the text (two names for
    sentence pairs) and `label_column` the label, given as a class name or a
    class index. A folder holds one subfolder of `.txt` files per class.
    Datasets yield `(strings, labels)`, or `((strings_a, strings_b), labels)`.

    Args:
        path: a `.csv` / `.tsv` file, a folder of class subfolders, or
            `{"train": ..., "validation": ..., "test": ...}` of those.
        text_column: the text column, or two for pairs; defaults to the only
            column that is not `label_column`.
        label_column: the label column.
        delimiter: field delimiter; defaults to tab for `.tsv`, else comma.
            TSV files are read without quoting.
        class_names: the classes in label order; defaults to the sorted label
            values of the training source (numerically when all integers).
        batch_size: examples per batch.
        validation_split: fraction of each class held out for validation.
        test_split: fraction of each class held out for test.
        seed: seed of the splits and shuffling.
        on_bad_file: `"skip"` or `"raise"` for rows with an empty or unknown
            label and unreadable files.

    Returns:
        A `DataBundle` of text datasets.

    Example:

    >>> import tempfile
    >>> tsv = tempfile.mktemp(suffix=".tsv")
    >>> with open(tsv, "w") as f:
    ...     _ = f.write("sentence\\tlabel\\n" + "good\\t1\\nbad\\t0\\n" * 5)
    >>> bundle = from_text_files(tsv, batch_size=4, validation_split=0.2)
    >>> bundle.class_names, bundle.counts["validation"]
    (('0', '1'), (1, 1))
    """
    check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    if isinstance(text_column, str):
        text_column = (text_column,)
    columns = tuple(text_column) if text_column is not None else None
    if columns is not None and len(columns) not in (1, 2):
        raise ValueError(f"text_column takes one or two column names, got {columns}.")
    sources = {k: os.fspath(v) for k, v in split_sources(path).items()}
    examples, bad = {}, []
    names = class_names
    for split in SPLITS:
        if split in sources:
            examples[split], names, more, columns = _text_examples(
                sources[split], columns, label_column, delimiter, names
            )
            bad += more
    report_bad(bad, on_bad_file, "text file(s) / row(s)")
    modality = "text_pair" if isinstance(examples["train"].inputs, tuple) else "text"
    splits = make_splits(examples, validation_split, test_split, seed, True)
    pipeline = Pipeline(modality=modality, batch_size=batch_size, seed=seed)
    return make_bundle(
        splits, pipeline, class_names=names, task="multiclass", modality=modality,
        image_size=None, skipped=[where for where, _ in bad],
    )

