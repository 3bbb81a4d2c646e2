"""Tables nobody here wrote: `tfft.data.tables` and `from_text_files` on files as they come.

The SMS spam collection (no extension, tab-separated, no header, string labels), a headerless
news CSV (labels 1..4, title and description), semicolon-separated data, sentence pairs, and
`experiments`' `data.limit` on such files. Small files are written to `tmp_path`.
"""

import logging

import pytest
import tensorflow as tf

from tfft import data
from tfft.data import tables

SMS = [
    ("ham", "Go until jurong point, crazy.. Available only in bugis n great world la e buffet..."),
    ("ham", 'Ok lar... Joking wif u oni... "really"'),
    ("spam", "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121"),
    ("ham", "U dun say so early hor... U c already then say..."),
    ("ham", "Nah I don't think he goes to usf, he lives around here though"),
    ("spam", "FreeMsg Hey there darling it's been 3 week's now and no word back! I'd like some fun"),
]
NEWS = [
    ("3", "Wall St. Bears Claw Back Into the Black (Reuters)",
     "Reuters - Short-sellers, Wall Street's dwindling band of ultra-cynics, are seeing green again."),
    ("3", "Carlyle Looks Toward Commercial Aerospace (Reuters)", "Reuters - Private investment firm Carlyle Group."),
    ("1", "Venezuela Votes", "Caracas - Chavez wins the recall vote, says the count."),
    ("2", "Phelps Wins Gold", "Athens - The swimmer takes the 200m, again."),
    ("4", "New Chip Race", "Intel and AMD race on, with \"dual core\" parts."),
    ("1", "Talks in Gaza", "Gaza - Talks resume."),
    ("2", "Final Score", "Boston wins 4-2."),
    ("4", "Search Engine Update", "A new index, twice the size."),
]


def _messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tfft.data"]


def _texts(dataset):
    return sorted(t.decode() for batch, _ in dataset for t in batch.numpy())


@pytest.fixture
def sms(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    path.write_text("".join(f"{label}\t{text}\n" for label, text in SMS), encoding="utf-8")
    return path


@pytest.fixture
def news(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("".join(",".join(f'"{c}"' if '"' not in c else '"' + c.replace('"', '""') + '"' for c in row)
                            + "\n" for row in NEWS), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# The SMS spam collection: no extension, tab-separated, no header, string labels.


def test_sms_collection_names_the_missing_header(sms):
    with pytest.raises(ValueError) as error:
        data.from_text_files(sms, label_column="Label")
    assert str(error.value) == (
        f"'Label' is not a column of {sms}; its first row ('ham', 'Go until jurong...') looks like data, not a "
        "header: pass header=None and columns by index (label_column=0, text_column=1).")


def test_sms_collection_read_without_header(sms):
    bundle = data.from_text_files(sms, header=None, label_column=0, text_column=1, batch_size=3)
    assert bundle.modality == "text" and bundle.class_names == ("ham", "spam")
    assert bundle.counts == {"train": (4, 2)}
    assert _texts(bundle.train) == sorted(text for _, text in SMS)  # quotes, commas and apostrophes kept
    table = tables.read_table(sms, header=None)
    assert table.delimiter == "\t" and table.columns == ("0", "1") and table.lines == (1, 2, 3, 4, 5, 6)


def test_sms_collection_columns_by_index_detect_the_missing_header(sms, caplog):
    with caplog.at_level(logging.INFO, logger="tfft.data"):
        bundle = data.from_text_files(sms, label_column=0, text_column=1)
    assert bundle.counts == {"train": (4, 2)}
    assert _messages(caplog)[0] == (
        f"{sms} has no header row: its first row ('ham', 'Go until jurong...') looks like data ('ham' recurs in "
        "column 0); its columns are numbered 0..1.")


def test_sms_collection_names_without_header(sms):
    with pytest.raises(ValueError) as error:
        data.from_text_files(sms, header=None)
    assert str(error.value) == (
        f"'label' is not a column of {sms}, which is read without a header: its columns are numbered 0..1 (first "
        "row ('ham', 'Go until jurong...')). Pass columns by index (label_column=0, text_column=1), or header=True "
        "if the first row names the columns.")


# ---------------------------------------------------------------------------
# A headerless news CSV: labels 1..4, title and description joined.


def test_news_csv_labels_1_to_4_and_joined_text(news, caplog):
    with caplog.at_level(logging.INFO, logger="tfft.data"):
        bundle = data.from_text_files(news, header=None, label_column=0, text_column=[1, 2], text_separator=" ",
                                      batch_size=4)
    assert bundle.class_names == ("1", "2", "3", "4")
    assert bundle.counts == {"train": (2, 2, 2, 2)}
    assert _messages(caplog) == [f"{news}: labels 1..4 mapped to classes 0..3 (class names '1'..'4').",
                                 "text_column=[1, 2]: columns joined with ' ' into one text."]
    assert _texts(bundle.train) == sorted(f"{title} {text}" for _, title, text in NEWS)
    by_text = {f"{title} {text}": label for label, title, text in NEWS}
    for texts, labels in bundle.train:
        for text, label in zip(texts.numpy(), labels.numpy()):
            assert bundle.class_names[label] == by_text[text.decode()]


def test_news_csv_forgotten_header_none(news):
    with pytest.raises(ValueError) as error:
        data.from_text_files(news, text_column=["title", "description"])
    assert str(error.value) == (
        f"'label' is not a column of {news}; its first row ('3', 'Wall St. Bears...', 'Reuters - Short...') looks "
        "like data, not a header: pass header=None and columns by index (label_column=0, text_column=2).")


def test_presplit_news_keeps_the_training_classes(news, tmp_path):
    val = tmp_path / "val.csv"
    val.write_text('"4","Chips","Faster."\n"1","Votes","Counted."\n"0","Odd","Label zero is no class here."\n')
    bundle = data.from_text_files({"train": news, "validation": val}, header=False, label_column=0, text_column=1)
    assert bundle.counts["validation"] == (1, 0, 0, 1)  # "0" is not a class name, nor an index into "1".."4"
    assert bundle.skipped == (f"{val}:3",)


# ---------------------------------------------------------------------------
# Header files: wrong names, other delimiters.


def test_wrong_label_column_lists_the_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\nGreat film,pos\nDull,neg\n")
    with pytest.raises(ValueError) as error:
        data.from_text_files(path, label_column="Label")
    assert str(error.value) == (
        f"'Label' is not a column of {path}; its columns are 'text', 'label'. Did you mean 'label'? Pass "
        "label_column= with one of them (by name, or by index 0..1).")
    with pytest.raises(ValueError) as error:
        data.from_text_files(path, label_column=2)
    assert str(error.value) == f"label_column=2 is not a column of {path}: it has 2 column(s), 0..1, named 'text', " \
                               "'label'."


def test_semicolon_delimited_csv_is_sniffed(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("text;label\nGreat, loved it;pos\nDull;neg\nFine, I guess, fine;pos\n\nSo bad;neg\n")
    bundle = data.from_text_files(path, batch_size=8)
    assert tables.read_table(path).delimiter == ";"
    assert bundle.class_names == ("neg", "pos") and bundle.counts == {"train": (2, 2)}
    assert "Fine, I guess, fine" in _texts(bundle.train)
    explicit = data.from_text_files(path, delimiter=";", batch_size=8)
    assert explicit.counts == bundle.counts


def test_file_without_extension_is_sniffed_not_assumed_csv(tmp_path):
    piped = tmp_path / "reviews"
    piped.write_text("label|text\npos|Great, really\nneg|Dull, flat\n")
    assert tables.read_table(piped).delimiter == "|"
    assert data.from_text_files(piped).counts == {"train": (1, 1)}


def test_header_names_and_data_rows_are_told_apart():
    rows = [["spam", "WIN"], ["ham", "Ok lar"]]
    assert tables.first_row_data_like(["label", "text"], rows) == ""
    assert tables.first_row_data_like(["Quality", "#1 String"], rows) == ""
    assert tables.first_row_data_like(["ham", "Go"], rows) == "'ham' recurs in column 0"
    assert tables.first_row_data_like(["3", "Wall St."], rows) == "'3' is a number"
    assert tables.first_row_data_like(["x", "Reuters - Short-sellers, Wall"], rows) == (
        "'Reuters - Short...' reads as text, not a column name")


def test_header_spellings(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\nGreat\tpos\nDull\tneg\n")
    assert tables.read_table(path, header=0).columns == ("text", "label")  # pandas' spelling of True
    assert len(tables.read_table(path, header=False)) == 3
    with pytest.raises(ValueError) as error:
        data.from_text_files(path, header=1)
    assert str(error.value) == ("header=1; expected 'auto', True (or 0: the first row is the header), or False / "
                                "None (no header row).")


def test_byte_order_mark_blank_lines_and_quoted_line_breaks(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\r\n\"two\r\nlines\",a\r\n\r\n,b\r\nok,\r\n".encode("utf-8-sig"))
    table = tables.read_table(path)
    assert table.columns == ("text", "label") and table.lines == (3, 5, 6)
    bundle = data.from_text_files(path)
    assert bundle.counts == {"train": (1, 1)}  # an empty text is a text; an empty label is a bad row
    assert bundle.skipped == (f"{path}:6",)


# ---------------------------------------------------------------------------
# Sentence pairs and joined columns.


@pytest.fixture
def nli(tmp_path):
    path = tmp_path / "nli.tsv"
    rows = [("A man sleeps.", "A person rests.", "entailment"), ("A dog runs.", "A cat sits.", "contradiction")] * 3
    path.write_text("premise\thypothesis\tlabel\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_sentence_pairs_explicit_spelling(nli, caplog):
    with caplog.at_level(logging.INFO, logger="tfft.data"):
        bundle = data.from_text_files(nli, text_pair=("premise", "hypothesis"), batch_size=6)
    assert bundle.modality == "text_pair" and bundle.class_names == ("contradiction", "entailment")
    assert _messages(caplog) == ["text_pair=('premise', 'hypothesis'): sentence pairs, two texts per example."]
    (first, second), labels = next(iter(bundle.train))
    assert first.dtype == tf.string and second.shape == (6,)


def test_two_text_columns_without_separator_are_still_pairs(nli, caplog):
    with caplog.at_level(logging.INFO, logger="tfft.data"):
        bundle = data.from_text_files(nli, text_column=("premise", "hypothesis"))
    assert bundle.modality == "text_pair"
    assert _messages(caplog) == [
        "text_column=('premise', 'hypothesis') names two columns and no text_separator: read as sentence pairs "
        "(the older spelling of text_pair=('premise', 'hypothesis')); pass text_separator=' ' to join them into "
        "one text instead."]
    joined = data.from_text_files(nli, text_column=["premise", "hypothesis"], text_separator=" | ")
    assert joined.modality == "text" and "A dog runs. | A cat sits." in _texts(joined.train)


def test_pair_and_text_column_are_exclusive(nli):
    with pytest.raises(ValueError) as error:
        data.from_text_files(nli, text_column="premise", text_pair=("premise", "hypothesis"))
    assert str(error.value) == ("text_pair= reads sentence pairs; pass text_column= (with text_separator= to join "
                                "columns into one text) or text_pair=, not both.")
    with pytest.raises(ValueError, match=r"^text_pair takes two columns \(first and second text\), got \('premise',\)"):
        data.from_text_files(nli, text_pair=("premise",))


# ---------------------------------------------------------------------------
# experiments: config.data keys, and data.limit on the same files.

config_lib = pytest.importorskip("experiments.config", reason="experiments/ is not in this checkout")
inputs = pytest.importorskip("experiments.inputs")


def _text_config(path, **data_keys):
    config = config_lib.base_config()
    config.data.source, config.data.path = "text", str(path)
    config.data.validation_split = config.data.test_split = 0.0
    config.batch_size = 4
    for key, value in data_keys.items():
        config.data[key] = value
    return config


def test_limit_error_names_the_users_file(sms):
    config = _text_config(sms, limit=2, label_column="Label")
    with pytest.raises(ValueError) as error:
        with inputs.data_context(config) as scratch:
            inputs.load_data(config, scratch)
    assert str(error.value).startswith(f"'Label' is not a column of {sms}; its first row ('ham', ")
    assert "tfft-data-" not in str(error.value)


def test_limit_reads_the_table_as_the_loader_does(sms, news):
    config = _text_config(sms, limit=1, label_column="0", text_column="1", header="false")
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch)
    assert bundle.class_names == ("ham", "spam") and bundle.counts == {"train": (1, 1)}
    config = _text_config(news, limit=1, label_column="0", text_column="1+2")
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch)
    assert bundle.class_names == ("1", "2", "3", "4") and bundle.counts == {"train": (1, 1, 1, 1)}
    assert len(_texts(bundle.train)[0].split()) > 3  # title and description


@pytest.mark.parametrize("value, expected", [
    ("", (None, None)), ("sentence", ("sentence", None)), ("1", (1, None)),
    ("title+description", (["title", "description"], None)), ("1+2", ([1, 2], None)),
    ("premise,hypothesis", (None, ("premise", "hypothesis"))), ("1,2", (None, (1, 2))),
])
def test_text_column_syntax(value, expected):
    options = inputs.text_options(_text_config("x", text_column=value).data)
    assert (options["text_column"], options["text_pair"]) == expected
    assert options["text_separator"] == (" " if isinstance(expected[0], list) else None)


@pytest.mark.parametrize("keys, message", [
    (dict(text_column="a+b,c"), "config.data.text_column='a+b,c' mixes '+' (columns joined into one text) and ',' "
                                "(sentence pairs); use one."),
    (dict(text_column="a,b,c"), "config.data.text_column='a,b,c': sentence pairs take two columns, "
                                "'premise,hypothesis'."),
    (dict(header="maybe"), "config.data.header='maybe'; use auto, true or false."),
    (dict(delimiter="::"), "config.data.delimiter='::'; use one character, tab, or \"\" to sniff it."),
])
def test_bad_text_keys_fail_before_loading(keys, message):
    with pytest.raises(config_lib.UsageError) as error:
        inputs.check_data(_text_config(__file__, **keys))
    assert str(error.value) == message


def test_delimiter_names():
    assert inputs.text_options(_text_config("x", delimiter="tab").data)["delimiter"] == "\t"
    assert inputs.text_options(_text_config("x", delimiter="\\t").data)["delimiter"] == "\t"
    assert inputs.text_options(_text_config("x", delimiter=";").data)["delimiter"] == ";"
    defaults = inputs.text_options(_text_config("x").data)
    assert defaults == dict(text_column=None, text_pair=None, text_separator=None, label_column="label",
                            delimiter=None, header="auto")
