"""Delimited text tables (CSV, TSV, semicolon- or pipe-separated): the reader behind `from_text_files`.

What it settles, as a user of pandas' `read_csv` expects:

* The delimiter: `delimiter=` when given; else the extension's (`.csv` comma, `.tsv` / `.tab` tab) when the first
  lines split evenly on it; else `csv.Sniffer` over the first `SNIFF_LINES` lines, among comma, tab, semicolon and
  pipe. A file without a known extension (`SMSSpamCollection`) is sniffed, never assumed to be CSV. Tab-separated
  files are read without quoting (a quote in a sentence is text), the others with CSV quoting.
* The header: `header=True` or `0` (the first row names the columns), `False` / `None` (no header: the columns are
  named by their index, `"0"`, `"1"`, ...), or `"auto"` (default): a header, unless the columns are asked for by
  index (ints) and the first row looks like data: a number, a value that recurs in its column further down (a
  label), or a sentence rather than a name.
* Columns are asked for by name or by index (an int; in a file without a header the names are the indices). A
  wrong name raises a `ValueError` that lists the columns, and says so when the first row looks like data rather
  than a header.

Example:

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "SMSSpamCollection")
>>> with open(path, "w") as f:
...     _ = f.write("ham\\tGo until jurong point\\nspam\\tWIN a prize\\nham\\tOk lar...\\n")
>>> table = read_table(path, columns=(0, 1))
>>> table.delimiter, table.has_header, table.columns, len(table)
('\\t', False, ('0', '1'), 3)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import logging
import os
import re
from collections.abc import Sequence

import numpy as np

from tfft.errors import did_you_mean

logger = logging.getLogger("tfft.data")

# Lines read to sniff the delimiter and to judge the first row.
SNIFF_LINES = 64
# What `csv.Sniffer` chooses from, in the order tried when several split the first lines evenly.
SNIFF_DELIMITERS = "\t,;|"
EXTENSION_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
# A header cell longer than this, of more words, or with sentence punctuation reads as text, not a name.
_NAME_MAX_CHARS = 40
_NAME_MAX_WORDS = 5
_SENTENCE_MARKS = frozenset(',;!?"')
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_PREVIEW_CELLS = 4
_PREVIEW_CHARS = 18

Column = int | str


@dataclasses.dataclass(frozen=True)
class Table:
    """A delimited text file read into memory: its column names and data rows.

    Attributes:
        path: the file, as the user named it (what messages say).
        columns: the header's names, stripped; `("0", "1", ...)` without a header.
        rows: the data rows, as tuples of raw cells (a row may be shorter or longer than `columns`).
        lines: the file line of each row (the last line of a row with a quoted line break).
        delimiter: the field delimiter.
        has_header: whether the first row was taken as the header.
        first_row: the file's first row (header or data), for messages.
        data_like: why the first row looks like data rather than a header; `""` when it looks like a header.
    """

    path: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...] = dataclasses.field(repr=False)
    lines: tuple[int, ...] = dataclasses.field(repr=False)
    delimiter: str = ","
    has_header: bool = True
    first_row: tuple[str, ...] = dataclasses.field(default=(), repr=False)
    data_like: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        """`path:line` of data row `row`, for messages."""
        return f"{self.path}:{self.lines[row]}"

    def cell(self, row: int, column: int) -> str | None:
        """The cell of data row `row` in column `column`, or `None` where the row is too short."""
        cells = self.rows[row]
        return cells[column] if column < len(cells) else None

    def index(self, column: Column, argument: str = "column") -> int:
        """The position of `column` (a name, or an int index).

        Args:
            column: a column name, or its index.
            argument: the argument that named it (`"label_column"`), for the message.

        Raises:
            ValueError: `column` is not a column of the table; the message lists the columns and says when the
                first row looks like data rather than a header.
        """
        if isinstance(column, bool) or not isinstance(column, (int, str)):
            raise ValueError(f"{argument}={column!r}: name a column by its name (a str) or its index (an int).")
        if isinstance(column, int):
            if 0 <= column < len(self.columns):
                return column
            named = f", named {_listed(self.columns)}" if self.has_header else ""
            raise ValueError(f"{argument}={column} is not a column of {self.path}: it has {len(self.columns)} "
                             f"column(s), 0..{len(self.columns) - 1}{named}.")
        if column in self.columns:
            return self.columns.index(column)
        raise ValueError(self._not_a_column(column, argument))

    def _not_a_column(self, column: str, argument: str) -> str:
        message = f"{column!r} is not a column of {self.path}"
        by_index = f"columns by index ({suggest_columns(self)})"
        if not self.has_header:
            return (f"{message}, which is read without a header: its columns are numbered 0..{len(self.columns) - 1} "
                    f"(first row {preview(self.first_row)}). Pass {by_index}, or header=True if the first row "
                    "names the columns.")
        if self.data_like:
            return (f"{message}; its first row {preview(self.first_row)} looks like data, not a header: pass "
                    f"header=None and {by_index}.")
        return (f"{message}; its columns are {_listed(self.columns)}.{did_you_mean(column, self.columns)} Pass "
                f"{argument}= with one of them (by name, or by index 0..{len(self.columns) - 1}).")

    def take(self, indices: Sequence[int]) -> Table:
        """The table with the data rows at `indices` only."""
        return dataclasses.replace(
            self, rows=tuple(self.rows[i] for i in indices), lines=tuple(self.lines[i] for i in indices))

    def sample_per_value(self, column: Column, limit: int, seed: int | None = None) -> Table:
        """At most `limit` rows of each value of `column` (a seeded draw), in file order.

        Rows that lack the column count as the value `""`, so a loader still reports them as bad rows.

        Example:

        >>> table = Table("t.csv", ("text", "label"), (("a", "x"), ("b", "x"), ("c", "y")), (2, 3, 4))
        >>> [row[1] for row in table.sample_per_value("label", 1, seed=0).rows]
        ['x', 'y']
        """
        position = self.index(column, "label_column")
        taken: dict[str, list[int]] = {}
        for row in np.random.default_rng(seed).permutation(len(self.rows)):
            group = taken.setdefault((self.cell(int(row), position) or "").strip(), [])
            if len(group) < limit:
                group.append(int(row))
        return self.take(sorted(itertools.chain.from_iterable(taken.values())))


def read_table(
    path: str | os.PathLike,
    *,
    delimiter: str | None = None,
    header: bool | str | None = "auto",
    columns: Sequence[Column] = (),
) -> Table:
    """Reads a delimited text file: the delimiter sniffed, the header there or not, blank lines skipped.

    Args:
        path: the file (UTF-8; a byte-order mark is dropped).
        delimiter: the field delimiter; default: the extension's when the first lines split evenly on it, else
            sniffed (`sniff_delimiter`).
        header: `True` (or `0`, as in pandas), `False` / `None` (columns named `"0"`, `"1"`, ...), or `"auto"`: a
            header unless every one of `columns` is an int and the first row looks like data (one log line says
            so).
        columns: the columns the caller will ask for (names or ints), for `header="auto"`.

    Returns:
        A `Table`.

    Raises:
        ValueError: the file is empty, not UTF-8 text, not a valid delimited file, or its delimiter cannot be told.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "reviews.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("text;label\\nGreat, loved it;pos\\nDull;neg\\n")
    >>> table = read_table(path)
    >>> table.delimiter, table.columns, table.rows[0]
    (';', ('text', 'label'), ('Great, loved it', 'pos'))
    """
    header = header_policy(header)
    path = os.fspath(path)
    text = _read_text(path)
    head = list(itertools.islice(io.StringIO(text, newline=""), SNIFF_LINES))
    delimiter = delimiter or sniff_delimiter(path, head)
    records, lines = [], []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=_quoting(delimiter))
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                records.append(tuple(cells))
                lines.append(reader.line_num)
    except csv.Error as error:
        raise ValueError(f"{path}:{reader.line_num} is not a valid delimited row ({error}).") from None
    if not records:
        raise ValueError(f"{path} is empty: it has no rows.")
    first = records[0]
    data_like = first_row_data_like(first, records[1:SNIFF_LINES])
    by_index = bool(columns) and all(isinstance(c, int) and not isinstance(c, bool) for c in columns)
    has_header = bool(header) and not (header == "auto" and by_index and data_like)
    if has_header:
        names, records, lines = tuple(cell.strip() for cell in first), records[1:], lines[1:]
    else:
        names = tuple(str(i) for i in range(max(len(r) for r in records[:SNIFF_LINES])))
    if header == "auto" and not has_header:
        logger.info("%s has no header row: its first row %s looks like data (%s); its columns are numbered 0..%d.",
                    path, preview(first), data_like, len(names) - 1)
    return Table(path, names, tuple(records), tuple(lines), delimiter, has_header, first, data_like)


def header_policy(header: bool | int | str | None) -> bool | str:
    """`header=` as `"auto"`, `True` or `False`: `0` is pandas' spelling of `True` (row 0 is the header).

    Example:

    >>> header_policy(0), header_policy(None), header_policy("auto")
    (True, False, 'auto')
    """
    if header is None or header is False:
        return False
    if header is True or (type(header) is int and header == 0):
        return True
    if header == "auto":
        return "auto"
    raise ValueError(f"header={header!r}; expected 'auto', True (or 0: the first row is the header), or "
                     "False / None (no header row).")


def sniff_delimiter(path: str, head: Sequence[str]) -> str:
    """The delimiter of a table from its first lines `head`.

    The extension's delimiter when the lines split evenly on it (the same number of fields, at least two);
    else `csv.Sniffer`'s guess among `SNIFF_DELIMITERS` when the lines split evenly on it; else the first of
    `SNIFF_DELIMITERS` that splits them evenly; else the Sniffer's guess, else the extension's.

    Raises:
        ValueError: none of these gives a delimiter; the message asks for `delimiter=`.

    Example:

    >>> sniff_delimiter("SMSSpamCollection", ["ham\\tHi, there\\n", "spam\\tWIN, now, now\\n"])
    '\\t'
    """
    expected = EXTENSION_DELIMITERS.get(os.path.splitext(path)[1].lower())
    if expected and _splits_evenly(head, expected):
        return expected
    try:
        sniffed = csv.Sniffer().sniff("".join(head), delimiters=SNIFF_DELIMITERS).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and _splits_evenly(head, sniffed):
        return sniffed
    even = [d for d in SNIFF_DELIMITERS if _splits_evenly(head, d)]
    found = (even[0] if even else None) or sniffed or expected
    if found is None:
        raise ValueError(f"Cannot tell the delimiter of {path}: its first lines split evenly on none of "
                         "tab, comma, semicolon, pipe. Pass delimiter=... (and header=).")
    return found


def first_row_data_like(first: Sequence[str], rest: Sequence[Sequence[str]]) -> str:
    """Why the row `first` reads as data rather than a header (`""` when it reads as a header).

    A header cell is a name: not a number, not a value that recurs in its column in the rows `rest`, and not a
    sentence (at most `_NAME_MAX_CHARS` characters and `_NAME_MAX_WORDS` words, no `,;!?"`). An empty cell
    (an unnamed column) says nothing.

    Example:

    >>> first_row_data_like(["ham", "Go until jurong point"], [["spam", "WIN"], ["ham", "Ok lar"]])
    "'ham' recurs in column 0"
    >>> first_row_data_like(["label", "text"], [["spam", "WIN"], ["ham", "Ok lar"]])
    ''
    """
    for i, raw in enumerate(first):
        cell = raw.strip()
        if not cell:
            continue
        if _NUMBER.fullmatch(cell):
            return f"{cell!r} is a number"
        if any(len(row) > i and row[i].strip() == cell for row in rest):
            return f"{cell!r} recurs in column {i}"
        if len(cell) > _NAME_MAX_CHARS or len(cell.split()) > _NAME_MAX_WORDS or _SENTENCE_MARKS & set(cell):
            return f"{_short(cell)!r} reads as text, not a column name"
    return ""


def suggest_columns(table: Table) -> str:
    """`label_column=i, text_column=j` guessed from the rows: the label is the column of fewest distinct
    values, the text the longest of the others (first row included when it is data).

    Example:

    >>> table = Table("t", ("0", "1"), (("ham", "Go until"), ("spam", "WIN it"), ("ham", "Ok")), (1, 2, 3))
    >>> suggest_columns(table)
    'label_column=0, text_column=1'
    """
    rows = list(table.rows[:SNIFF_LINES])
    if table.has_header and table.data_like:
        rows.insert(0, table.first_row)
    width = len(table.columns)
    if width < 2 or not rows:
        return "label_column=<index>, text_column=<index>"
    cells = [[row[i].strip() for row in rows if len(row) > i] for i in range(width)]
    label = min(range(width), key=lambda i: (len(set(cells[i])) or len(rows) + 1, i))
    text = max((i for i in range(width) if i != label), key=lambda i: (np.mean([len(c) for c in cells[i]] or [0]), -i))
    return f"label_column={label}, text_column={text}"


def preview(cells: Sequence[str]) -> str:
    """A row as a short tuple for messages: `('ham', 'Go until jurong...')`."""
    shown = ", ".join(repr(_short(cell)) for cell in cells[:_PREVIEW_CELLS])
    return f"({shown}{', ...' if len(cells) > _PREVIEW_CELLS else ''})"


def _short(cell: str) -> str:
    return cell if len(cell) <= _PREVIEW_CHARS else cell[: _PREVIEW_CHARS - 3].rstrip() + "..."


def _listed(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _quoting(delimiter: str) -> int:
    # Tab-separated fields hold no tabs, so a quote in a sentence is text.
    return csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL


def _splits_evenly(head: Sequence[str], delimiter: str) -> bool:
    try:
        counts = {len(r) for r in csv.reader(head, delimiter=delimiter, quoting=_quoting(delimiter)) if r}
    except csv.Error:
        return False
    return len(counts) == 1 and min(counts) >= 2


def _read_text(path: str) -> str:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); save it as UTF-8.") from None
