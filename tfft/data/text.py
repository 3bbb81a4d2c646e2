"""Text classification data: delimited tables (CSV, TSV, ...) and folders of `.txt` files.

Tables are read by `tfft.data.tables`: the delimiter sniffed, a header row or none, columns
by name or by index. What an example's text is:

* `text_column="sentence"` (or an index): one column;
* `text_column=["title", "description"], text_separator=" "`: columns joined into one text;
* `text_pair=("premise", "hypothesis")`: sentence pairs, two texts per example.

Two names in `text_column` without `text_separator` are the older spelling of a pair; they
still read pairs, and one log line says so. Label values are class names: strings
(`"ham"`, `"spam"`, sorted) or integers (sorted numerically), so labels 1..4 become classes
0..3 named `"1"`..`"4"`, which one log line says.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np

from tfft.data.bundle import (
    BAD_FILE_POLICIES,
    DEFAULT_SEED,
    SPLITS,
    DataBundle,
    Examples,
    check_choice,
    label_mapping_note,
    make_bundle,
    report_bad,
)
from tfft.data.folders import list_class_folder, resolve_folder_classes
from tfft.data.pipeline import Pipeline
from tfft.data.splits import make_splits, split_sources
from tfft.data.tables import Column, Table, header_policy, read_table

logger = logging.getLogger("tfft.data")

TEXT_EXTENSIONS = (".txt",)


@dataclasses.dataclass(frozen=True)
class TextColumns:
    """Which table columns make an example's text.

    Attributes:
        columns: column names or indices; `None`: the only column that is not the label.
        pair: two texts per example (sentence pairs).
        separator: what joins the columns into one text; `None` when they are not joined.
        legacy_pair: the pair was spelled as two names in `text_column`.

    Example:

    >>> TextColumns.from_arguments(["title", "description"], None, " ").describe()
    "text_column=['title', 'description']: columns joined with ' ' into one text"
    """

    columns: tuple[Column, ...] | None = None
    pair: bool = False
    separator: str | None = None
    legacy_pair: bool = False

    @classmethod
    def from_arguments(
        cls, text_column: Column | Sequence[Column] | None, text_pair: Sequence[Column] | None,
        text_separator: str | None,
    ) -> TextColumns:
        """Checks `from_text_files`'s `text_column`, `text_pair` and `text_separator`."""
        if text_pair is not None:
            pair = (text_pair,) if isinstance(text_pair, (str, int)) else tuple(text_pair)
            if text_column is not None or text_separator is not None:
                raise ValueError("text_pair= reads sentence pairs; pass text_column= (with text_separator= to join "
                                 "columns into one text) or text_pair=, not both.")
            if len(pair) != 2:
                raise ValueError(f"text_pair takes two columns (first and second text), got {pair!r}.")
            return cls(pair, pair=True)
        if text_column is None:
            if text_separator is not None:
                raise ValueError("text_separator= joins the columns of text_column=[...]; name them.")
            return cls()
        columns = (text_column,) if isinstance(text_column, (str, int)) else tuple(text_column)
        if not columns:
            raise ValueError("text_column= names no column; pass a name or an index, or a list to join.")
        if len(columns) == 1:
            return cls(columns)
        if len(columns) == 2 and text_separator is None:
            return cls(columns, pair=True, legacy_pair=True)
        return cls(columns, separator=" " if text_separator is None else text_separator)

    def describe(self) -> str:
        """What is read, in one line (`""` for one text column)."""
        if self.legacy_pair:
            return (f"text_column={self.columns!r} names two columns and no text_separator: read as sentence pairs "
                    f"(the older spelling of text_pair={self.columns!r}); pass text_separator=' ' to join them "
                    "into one text instead")
        if self.pair:
            return f"text_pair={self.columns!r}: sentence pairs, two texts per example"
        if self.separator is not None:
            return f"text_column={list(self.columns)!r}: columns joined with {self.separator!r} into one text"
        return ""

    def read(self, table: Table, label: int) -> tuple[list[int], TextColumns]:
        """The positions of the text columns in `table`, and `self` with a default column resolved."""
        if self.columns is not None:
            argument = "text_pair" if self.pair and not self.legacy_pair else "text_column"
            return [table.index(column, argument) for column in self.columns], self
        others = [i for i in range(len(table.columns)) if i != label]
        if len(others) != 1:
            raise ValueError(
                f"{table.path}: cannot tell the text column among {table.columns}; pass text_column=<name or "
                "index> (a list with text_separator=' ' joins columns; text_pair=(a, b) reads sentence pairs).")
        return others, dataclasses.replace(self, columns=(table.columns[others[0]],))

    def text(self, cells: Sequence[str]) -> tuple[str, ...]:
        """The text(s) of one row from its text cells."""
        if self.separator is None:
            return tuple(cells)
        return (self.separator.join(cell for cell in cells if cell),)


def read_text_table(
    path: str | os.PathLike,
    *,
    text_column: Column | Sequence[Column] | None = None,
    text_pair: Sequence[Column] | None = None,
    text_separator: str | None = None,
    label_column: Column = "label",
    delimiter: str | None = None,
    header: bool | str | None = "auto",
) -> Table:
    """Reads a table as `from_text_files` does (same arguments), e.g. to subsample it first.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "SMSSpamCollection")
    >>> with open(path, "w") as f:
    ...     _ = f.write("ham\\tHi\\nspam\\tWIN\\nham\\tOk\\nham\\tYes\\n")
    >>> table = read_text_table(path, label_column=0, text_column=1).sample_per_value(0, 1, seed=0)
    >>> from_text_files(table, label_column=0, text_column=1).counts
    {'train': (1, 1)}
    """
    spec = TextColumns.from_arguments(text_column, text_pair, text_separator)
    return read_table(path, delimiter=delimiter, header=header, columns=(label_column, *(spec.columns or ())))


def _class_order(values: Sequence[str]) -> tuple[str, ...]:
    """Sorted unique label values; numerically when all are integers."""
    unique = set(values)
    try:
        return tuple(str(v) for v in sorted(int(v) for v in unique))
    except ValueError:
        return tuple(sorted(unique))


def _label_index(value: str, index: Mapping[str, int], positional: bool) -> int | None:
    """Class index of a label value: by name, else (`positional`) as an in-range class index."""
    if value in index:
        return index[value]
    if positional and value.isdigit() and str(int(value)) == value and int(value) < len(index):
        return int(value)
    return None


def _table_rows(
    table: Table, spec: TextColumns, label_column: Column
) -> tuple[list[tuple[tuple[str, ...], str, str]], list[tuple[str, str]], TextColumns]:
    """Reads `(texts, label, where)` rows and `(where, reason)` problems."""
    label = table.index(label_column, "label_column")
    positions, spec = spec.read(table, label)
    rows, bad = [], []
    for row in range(len(table)):
        value = (table.cell(row, label) or "").strip()
        cells = [table.cell(row, i) for i in positions]
        if not value or any(cell is None for cell in cells):
            bad.append((table.where(row), "empty label or missing field"))
            continue
        rows.append((spec.text(cells), value, table.where(row)))
    return rows, bad, spec


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
    source: str | Table,
    spec: TextColumns,
    label_column: Column,
    read: Mapping[str, object],
    class_names: Sequence[str] | None,
) -> tuple[Examples, tuple[str, ...], list, TextColumns]:
    """Reads one text source into examples (labels by name, never position)."""
    is_folder = not isinstance(source, Table) and os.path.isdir(source)
    if is_folder:
        rows, bad, listing = _text_folder_rows(source)
        if class_names is None:
            class_names = resolve_folder_classes(listing, None, source, ".txt files")
    else:
        if not isinstance(source, Table) and not os.path.isfile(source):
            raise ValueError(f"{source!r} is neither a table file (CSV, TSV, ...) nor a folder of class subfolders.")
        table = source if isinstance(source, Table) else read_table(
            source, **read, columns=(label_column, *(spec.columns or ())))
        rows, bad, spec = _table_rows(table, spec, label_column)
        if class_names is None:
            class_names = _class_order([label for _, label, _ in rows])
            if all(name.lstrip("-").isdigit() for name in class_names):
                note = label_mapping_note([int(name) for name in class_names], class_names)
                if note:
                    logger.info("%s: %s.", table.path, note)
    index = {name: i for i, name in enumerate(class_names)}
    positional = not all(name.lstrip("-").isdigit() for name in class_names)
    keep, labels = [], []
    for i, (_, label, where) in enumerate(rows):
        value = _label_index(label, index, positional)
        if value is None:
            bad.append((where, f"label {label!r} not in class_names {tuple(class_names)}"))
        else:
            keep.append(i)
            labels.append(value)
    width = 2 if spec.pair else 1
    columns = list(zip(*[rows[i][0] for i in keep])) or [()] * width
    inputs = tuple(np.asarray(c, dtype=object) for c in columns)
    examples = Examples(
        inputs if spec.pair else inputs[0],
        np.asarray(labels, dtype=np.int64),
        np.asarray([rows[i][2] for i in keep], dtype=object) if is_folder else None,
    )
    return examples, tuple(class_names), bad, spec


def from_text_files(
    path: str | os.PathLike | Table | Mapping[str, str | os.PathLike | Table],
    *,
    text_column: Column | Sequence[Column] | None = None,
    text_pair: Sequence[Column] | None = None,
    text_separator: str | None = None,
    label_column: Column = "label",
    delimiter: str | None = None,
    header: bool | str | None = "auto",
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
    validation_split: float = 0.0,
    test_split: float = 0.0,
    seed: int | None = DEFAULT_SEED,
    on_bad_file: str = "skip",
    group_by_length: bool = True,
) -> DataBundle:
    """Loads text classification data from delimited tables or .txt folders.

    A table (CSV, TSV, semicolon- or pipe-separated; see `tfft.data.tables`) has
    one example per row: `label_column` holds its label (a class name, or an
    integer), `text_column` its text, or `text_pair` its two texts. Columns are
    named by the header row, or by index (`0`, `1`, ...) in a file without one.
    A folder holds one subfolder of `.txt` files per class. Datasets yield
    `(strings, labels)`, or `((strings_a, strings_b), labels)` for pairs.

    Args:
        path: a table file, a folder of class subfolders, a `tfft.data.tables.Table`
            (e.g. a subsample from `read_text_table`), or
            `{"train": ..., "validation": ..., "test": ...}` of those for
            data that comes pre-split.
        text_column: the text column (a name or an index); a list of columns
            joined into one text with `text_separator`. Two columns without
            `text_separator` are read as sentence pairs (the older spelling of
            `text_pair`; one log line says so). Default: the only column that is
            not `label_column`.
        text_pair: two columns read as sentence pairs, e.g.
            `("premise", "hypothesis")`.
        text_separator: what joins the `text_column` columns (default `" "` for
            three or more columns).
        label_column: the label column, a name or an index.
        delimiter: the field delimiter; default: the extension's (`.csv` comma,
            `.tsv` tab) when the first lines split evenly on it, else sniffed
            (tab, comma, semicolon, pipe). Tab-separated files are read without
            quoting.
        header: `"auto"` (a header row, unless the columns are given as indices
            and the first row looks like data), `True` (or `0`, as in pandas), or
            `False` / `None` (no header: columns by index).
        class_names: the classes in label order; defaults to the sorted label
            values of the training source (numerically when all integers:
            labels 1..K become classes 0..K-1 named "1".."K").
        batch_size: examples per batch.
        validation_split: fraction of each class held out for validation.
        test_split: fraction of each class held out for test.
        seed: seed of the splits and shuffling.
        on_bad_file: `"skip"` or `"raise"` for rows with an empty or unknown
            label and unreadable files.
        group_by_length: batch the training split by text length (similar lengths
            together, batches in an epoch-keyed random order), so that models that pad
            each batch to its longest text pad little; False: plain shuffled batches.

    Returns:
        A `DataBundle` of text datasets.

    Raises:
        ValueError: a column that is not in the table (the message lists the
            columns, and says when the first row looks like data rather than a
            header), an empty split, or bad rows with `on_bad_file="raise"`.

    Example:

    >>> import os, tempfile
    >>> news = os.path.join(tempfile.mkdtemp(), "news.csv")
    >>> with open(news, "w") as f:
    ...     _ = f.write('"3","Wall St. Bears","Short-sellers are back."\\n' * 3
    ...                 + '"1","Vote","Chavez wins."\\n' * 3)
    >>> bundle = from_text_files(news, header=None, label_column=0,
    ...                          text_column=[1, 2], text_separator=" ")
    >>> bundle.class_names, bundle.counts["train"]
    (('1', '3'), (3, 3))
    """
    check_choice("on_bad_file", on_bad_file, BAD_FILE_POLICIES)
    header = header_policy(header)
    spec = TextColumns.from_arguments(text_column, text_pair, text_separator)
    read = dict(delimiter=delimiter, header=header)
    sources = {k: v if isinstance(v, Table) else os.fspath(v) for k, v in split_sources(path).items()}
    examples, bad = {}, []
    names = class_names
    for split in SPLITS:
        if split in sources:
            examples[split], names, more, spec = _text_examples(sources[split], spec, label_column, read, names)
            bad += more
    if spec.describe():
        logger.info("%s.", spec.describe())
    report_bad(bad, on_bad_file, "text file(s) / row(s)")
    modality = "text_pair" if spec.pair else "text"
    splits = make_splits(examples, validation_split, test_split, seed, True)
    pipeline = Pipeline(modality=modality, batch_size=batch_size, seed=seed, group_by_length=group_by_length)
    return make_bundle(
        splits, pipeline, class_names=names, task="multiclass", modality=modality,
        image_size=None, skipped=[where for where, _ in bad],
    )
