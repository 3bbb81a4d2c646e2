"""Tests for `tfft.data`: tiny images and text written to `tmp_path`, no network."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfft import data

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FLOWERS = SHARED_DATA / "flowers"
SST2 = SHARED_DATA / "sst2"


# ---------------------------------------------------------------------------
# Helpers and fixtures.


def _rgb(seed, height=24, width=28):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write_image(path, seed=0, mode="RGB", size=(24, 28)):
    """Writes an image in `mode` to `path` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_rgb(seed, *size)).convert(mode).save(path)
    return path


def _write_class_folders(root, per_class=10, classes=("cat", "dog"), ext=".png"):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _write_image(Path(root) / name / f"{i}{ext}", seed=100 * c + i)
    return Path(root)


def _truncate(path):
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 2])


def _all_batches(dataset):
    xs, ys = [], []
    for x, y in dataset:
        xs.append(x.numpy() if not isinstance(x, tuple) else tuple(p.numpy() for p in x))
        ys.append(y.numpy())
    return xs, np.concatenate(ys)


def _labels_match_folders(bundle, split):
    """Each example's label is the index of its parent folder's name."""
    names = [Path(f).parent.name for f in bundle.files[split]]
    expected = [bundle.class_names.index(n) for n in names]
    return list(bundle.labels[split]) == expected


@pytest.fixture
def mixed_images(tmp_path):
    """Two classes of six images each, in every format and mode, plus junk files."""
    root = tmp_path / "images"
    kinds = [
        ("a.jpg", "RGB"), ("b.jpeg", "RGB"), ("c.png", "L"), ("d.png", "RGBA"),
        ("e.bmp", "RGB"), ("f.gif", "P"),
    ]
    for c, name in enumerate(("cat", "dog")):
        for i, (file, mode) in enumerate(kinds):
            _write_image(root / name / file, seed=10 * c + i, mode=mode)
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


# ---------------------------------------------------------------------------
# Image folders.


def test_image_directory_formats_shapes_and_pixel_range(mixed_images):
    bundle = data.from_image_directory(mixed_images, image_size=32, batch_size=5)
    assert bundle.class_names == ("cat", "dog")
    assert bundle.num_classes == 2
    assert bundle.counts == {"train": (6, 6)}
    assert bundle.validation is None and bundle.test is None
    assert not any(f.endswith((".txt", ".DS_Store")) for f in bundle.files["train"])
    assert _labels_match_folders(bundle, "train")
    images, labels = _all_batches(bundle.train)
    assert len(labels) == 12
    for batch in images:
        assert batch.dtype == np.float32 and batch.shape[1:] == (32, 32, 3)
        assert batch.min() >= 0.0 and batch.max() <= 255.0
    assert max(b.max() for b in images) > 1.0  # Raw 0-255, not rescaled.
    assert "cat" in bundle.summary() and "train" in bundle.summary()


def test_image_directory_uses_backbone_input_size(tmp_path):
    model = tf.keras.Sequential([tf.keras.Input((40, 36, 3)), tf.keras.layers.Flatten()])
    root = _write_class_folders(tmp_path, per_class=2)
    bundle = data.from_image_directory(root, backbone=model, batch_size=4)
    assert bundle.image_size == (40, 36)
    images, _ = next(iter(bundle.train))
    assert images.shape[1:] == (40, 36, 3)


def test_default_image_size_is_224():
    assert data.resolve_image_size() == (224, 224)
    assert data.resolve_image_size(96) == (96, 96)


@pytest.mark.parametrize(
    "resize, borders_black", [("stretch", False), ("crop", False), ("pad", True)]
)
def test_resize_policies(tmp_path, resize, borders_black):
    # A white 20x40 (wide) image into a square: only "pad" adds black bars.
    path = tmp_path / "wide" / "x" / "white.png"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (40, 20), (255, 255, 255)).save(path)
    bundle = data.from_image_directory(
        tmp_path / "wide", image_size=16, resize=resize, batch_size=1
    )
    image = next(iter(bundle.train))[0].numpy()[0]
    assert image.shape == (16, 16, 3)
    assert (image[0].max() == 0.0) == borders_black
    assert image[8, 8].min() == pytest.approx(255.0)


def test_unknown_resize_policy_is_refused(tmp_path):
    root = _write_class_folders(tmp_path, per_class=1)
    with pytest.raises(ValueError, match="resize"):
        data.from_image_directory(root, image_size=8, resize="squash")


def test_stratified_splits_counts_and_reproducibility(tmp_path):
    root = _write_class_folders(tmp_path, per_class=10)
    kwargs = dict(image_size=8, validation_split=0.2, test_split=0.2, batch_size=4)
    bundle = data.from_image_directory(root, seed=1, **kwargs)
    assert bundle.counts == {"train": (6, 6), "validation": (2, 2), "test": (2, 2)}
    all_files = [f for s in data.SPLITS for f in bundle.files[s]]
    assert len(all_files) == len(set(all_files)) == 20
    for split in data.SPLITS:
        assert _labels_match_folders(bundle, split)
        assert len(_all_batches(bundle.split(split))[1]) == len(bundle.labels[split])
    again = data.from_image_directory(root, seed=1, **kwargs)
    other = data.from_image_directory(root, seed=2, **kwargs)
    assert again.files == bundle.files
    assert other.files["test"] != bundle.files["test"]


def test_training_order_is_seeded_and_reshuffled(tmp_path):
    root = _write_class_folders(tmp_path, per_class=8)

    def epoch_labels(bundle):
        return _all_batches(bundle.train)[1].tolist()

    first = data.from_image_directory(root, image_size=8, batch_size=4, seed=3)
    second = data.from_image_directory(root, image_size=8, batch_size=4, seed=3)
    epoch_1, epoch_2 = epoch_labels(first), epoch_labels(first)
    assert epoch_1 == epoch_labels(second)
    assert sorted(epoch_1) == sorted(epoch_2) == [0] * 8 + [1] * 8
    assert epoch_1 != epoch_2  # Reshuffled each epoch.


def test_too_small_split_is_an_error(tmp_path):
    root = _write_class_folders(tmp_path, per_class=2)
    with pytest.raises(ValueError, match="validation split is empty"):
        data.from_image_directory(root, image_size=8, validation_split=0.1)


def test_truncated_jpeg_skipped_with_count(tmp_path, caplog):
    root = _write_class_folders(tmp_path, per_class=4, ext=".jpg")
    _truncate(root / "cat" / "1.jpg")
    (root / "dog" / "fake.png").write_text("this is not a png")
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        bundle = data.from_image_directory(root, image_size=8, batch_size=3)
    assert "Skipped 2 bad image file(s)" in caplog.text
    assert "1.jpg" in caplog.text and "fake.png" in caplog.text
    assert len(bundle.skipped) == 2
    assert bundle.counts["train"] == (3, 4)
    assert _labels_match_folders(bundle, "train")
    assert len(_all_batches(bundle.train)[1]) == 7


def test_truncated_jpeg_raises_naming_the_file(tmp_path):
    root = _write_class_folders(tmp_path, per_class=3, ext=".jpg")
    _truncate(root / "dog" / "2.jpg")
    with pytest.raises(ValueError, match=r"dog/2\.jpg.*on_bad_file='skip'"):
        data.from_image_directory(root, image_size=8, on_bad_file="raise")


def test_header_validation_and_runtime_skip(tmp_path):
    # A truncated JPEG passes the header check; the pipeline drops it at run time.
    root = _write_class_folders(tmp_path, per_class=3, ext=".jpg")
    _truncate(root / "cat" / "0.jpg")
    bundle = data.from_image_directory(
        root, image_size=8, batch_size=2, validate="header", cache=False
    )
    assert len(_all_batches(bundle.train)[1]) == 5


def test_empty_class_folder(tmp_path, caplog):
    root = _write_class_folders(tmp_path, per_class=2)
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="empty.*has no image files"):
        data.from_image_directory(root, image_size=8)
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        bundle = data.from_image_directory(
            root, image_size=8, class_names=["cat", "dog", "empty"]
        )
    assert bundle.counts["train"] == (2, 2, 0)
    assert "zero examples" in caplog.text


def test_folder_outside_class_names(tmp_path):
    root = _write_class_folders(tmp_path, per_class=2, classes=("cat", "dog", "fox"))
    bundle = data.from_image_directory(root, image_size=8, class_names=["dog", "cat"])
    assert bundle.class_names == ("dog", "cat")
    assert bundle.counts["train"] == (2, 2)
    assert _labels_match_folders(bundle, "train")
    with pytest.raises(ValueError, match="'fox' is not in class_names"):
        data.from_image_directory(
            root, image_size=8, class_names=["dog", "cat"], on_bad_file="raise"
        )


def test_presplit_folders(tmp_path):
    _write_class_folders(tmp_path / "train", per_class=3)
    _write_class_folders(tmp_path / "val", per_class=1)
    bundle = data.from_image_directory(
        {"train": tmp_path / "train", "validation": tmp_path / "val"}, image_size=8
    )
    assert bundle.counts == {"train": (3, 3), "validation": (1, 1)}


def test_cache_to_directory(tmp_path):
    root = _write_class_folders(tmp_path / "img", per_class=2)
    cache_dir = tmp_path / "cache"
    bundle = data.from_image_directory(root, image_size=8, cache=cache_dir)
    first = _all_batches(bundle.train)[1]
    assert any(name.startswith("train-") for name in os.listdir(cache_dir))
    assert sorted(first) == sorted(_all_batches(bundle.train)[1])


# ---------------------------------------------------------------------------
# Augmentation.


def test_augmentation_only_on_train_and_changes_pixels(tmp_path):
    root = _write_class_folders(tmp_path, per_class=4)
    kwargs = dict(image_size=16, validation_split=0.25, batch_size=8, seed=0, cache=False)
    plain = data.from_image_directory(root, **kwargs)
    augmented = data.from_image_directory(root, augment=True, **kwargs)
    assert augmented.augmented and not plain.augmented
    assert data.is_augmented(augmented.train)
    assert not data.is_augmented(augmented.validation)
    assert not data.is_augmented(plain.train)
    x_plain, _ = _all_batches(plain.train)
    x_aug, _ = _all_batches(augmented.train)
    assert not np.allclose(x_plain[0], x_aug[0])
    assert x_aug[0].min() >= 0.0 and x_aug[0].max() <= 255.0
    v_plain, _ = _all_batches(plain.validation)
    v_aug, _ = _all_batches(augmented.validation)
    np.testing.assert_allclose(v_plain[0], v_aug[0])


def test_augmentation_layer_choices():
    layer = data.augmentation_layer(["flip", "translation"], seed=1)
    assert [type(sub).__name__ for sub in layer.layers] == ["RandomFlip", "RandomTranslation"]
    custom = tf.keras.layers.RandomFlip()
    assert data.augmentation_layer(custom) is custom
    assert data.augmentation_layer(False) is None
    with pytest.raises(ValueError, match="Unknown augmentation"):
        data.augmentation_layer(["sepia"])


# ---------------------------------------------------------------------------
# Text files.


def _write_table(path, header, rows, delimiter="\t"):
    lines = [delimiter.join(header)] + [delimiter.join(map(str, r)) for r in rows]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_tsv_text_and_labels(tmp_path):
    rows = [(f'sentence "{i}" here', i % 2) for i in range(10)]
    tsv = _write_table(tmp_path / "train.tsv", ("sentence", "label"), rows)
    bundle = data.from_text_files(tsv, batch_size=4, validation_split=0.2)
    assert bundle.modality == "text"
    assert bundle.class_names == ("0", "1")
    assert bundle.counts == {"train": (4, 4), "validation": (1, 1)}
    texts, labels = next(iter(bundle.train))
    assert texts.dtype == tf.string and texts.shape == (4,)
    for text, label in zip(texts.numpy(), labels.numpy()):
        number = int(text.decode().split('"')[1])
        assert number % 2 == label


def test_csv_sentence_pairs(tmp_path):
    rows = [(f"a{i}", f"b{i}", "yes" if i % 2 else "no") for i in range(6)]
    csv_path = _write_table(tmp_path / "pairs.csv", ("s1", "s2", "label"), rows, ",")
    bundle = data.from_text_files(csv_path, text_column=("s1", "s2"), batch_size=6)
    assert bundle.modality == "text_pair"
    assert bundle.class_names == ("no", "yes")
    (first, second), labels = next(iter(bundle.train))
    for a, b, label in zip(first.numpy(), second.numpy(), labels.numpy()):
        assert a[1:] == b[1:]
        assert int(a[1:]) % 2 == label


def test_missing_column_names_it(tmp_path):
    tsv = _write_table(tmp_path / "t.tsv", ("text", "label"), [("x", 0)])
    # Worded as tfft.data.tables words it (was "missing column 'sentence'; the header has (...)").
    with pytest.raises(ValueError, match="'sentence' is not a column of .*t.tsv; its columns are 'text', 'label'"):
        data.from_text_files(tsv, text_column="sentence")
    with pytest.raises(ValueError, match="'target' is not a column"):
        data.from_text_files(tsv, label_column="target")


def test_label_outside_class_list(tmp_path, caplog):
    rows = [("good", "pos"), ("bad", "neg"), ("meh", "neutral"), ("fine", "pos")]
    tsv = _write_table(tmp_path / "t.tsv", ("sentence", "label"), rows)
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        bundle = data.from_text_files(tsv, class_names=["neg", "pos"])
    assert bundle.counts["train"] == (1, 2)
    assert "neutral" in caplog.text and "t.tsv:4" in caplog.text
    with pytest.raises(ValueError, match="'neutral' not in class_names"):
        data.from_text_files(tsv, class_names=["neg", "pos"], on_bad_file="raise")
    # Integer labels index the class names.
    numeric = _write_table(tmp_path / "n.tsv", ("sentence", "label"), [("a", 1), ("b", 0)])
    named = data.from_text_files(numeric, class_names=["neg", "pos"])
    assert named.counts["train"] == (1, 1)


def test_text_folders(tmp_path):
    for name in ("neg", "pos"):
        for i in range(3):
            path = tmp_path / name / f"{i}.txt"
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"{name} review {i}", encoding="utf-8")
    (tmp_path / "pos" / "image.jpg").write_bytes(b"ignored")
    bundle = data.from_text_files(tmp_path, batch_size=6)
    assert bundle.counts == {"train": (3, 3)}
    assert _labels_match_folders(bundle, "train")
    texts, labels = next(iter(bundle.train))
    for text, label in zip(texts.numpy(), labels.numpy()):
        assert text.decode().startswith(bundle.class_names[label])


# ---------------------------------------------------------------------------
# Arrays.


def test_from_arrays_images_grayscale_to_rgb_and_resize():
    x = np.random.default_rng(0).integers(0, 256, (6, 10, 12, 1)).astype("uint8")
    bundle = data.from_arrays(x, [0, 1, 2] * 2, image_size=8, batch_size=6)
    assert bundle.modality == "image" and bundle.num_classes == 3
    images, labels = next(iter(bundle.train))
    assert images.shape == (6, 8, 8, 3) and images.dtype == tf.float32
    np.testing.assert_allclose(images[..., 0], images[..., 2])


def test_from_arrays_refuses_labels_outside_num_classes():
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*y\[1\] = 3"):
        data.from_arrays(np.zeros((3, 2)), [0, 3, 1], num_classes=3)
    with pytest.raises(ValueError, match="outside"):
        data.from_arrays(np.zeros((2, 2)), [0, -1])
    with pytest.raises(ValueError, match="2 labels"):
        data.from_arrays(np.zeros((3, 2)), [0, 1])


def test_from_arrays_text_multilabel_and_regression():
    text = data.from_arrays(["a", "b", "c", "d"], [0, 1, 0, 1], batch_size=2)
    assert text.modality == "text"
    assert next(iter(text.train))[0].dtype == tf.string
    multi = data.from_arrays(np.zeros((4, 3)), [[1, 0, 1], [0, 1, 0]] * 2)
    assert multi.task == "multilabel" and multi.counts["train"] == (2, 2, 2)
    assert next(iter(multi.train))[1].dtype == tf.float32
    regression = data.from_arrays(np.zeros((4, 3)), [0.5, 1.5, 2.0, 3.25], test_split=0.25)
    assert regression.task == "regression" and regression.num_classes is None
    assert len(regression.labels["test"]) == 1


def _data_messages(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "tfft.data"]


def test_from_arrays_labels_1_to_k_become_classes_0_to_k_minus_1(caplog):
    texts = ["stocks", "votes", "goals", "chips"] * 2
    with caplog.at_level(logging.INFO, logger="tfft.data"):
        bundle = data.from_arrays(texts, [3, 1, 2, 4] * 2, batch_size=8)
    assert _data_messages(caplog) == [
        "labels 1..4 mapped to classes 0..3 (class names '1'..'4'); pass num_classes=5 to keep them as class "
        "indices (class 0 then has no examples)."]
    assert bundle.class_names == ("1", "2", "3", "4") and bundle.num_classes == 4
    assert bundle.labels["train"].tolist() == [2, 0, 1, 3] * 2
    kept = data.from_arrays(texts, [3, 1, 2, 4] * 2, num_classes=5)
    assert kept.class_names == ("0", "1", "2", "3", "4") and kept.counts["train"] == (0, 2, 2, 2, 2)


def test_from_arrays_labels_1_to_k_with_conflicting_num_classes():
    with pytest.raises(ValueError) as error:
        data.from_arrays(["a", "b", "c", "d"], [1, 2, 3, 4], num_classes=4)
    assert str(error.value) == (
        "The labels go from 1 to 4, but num_classes=4 takes the class indices 0..3: pass y - 1, or num_classes=5 "
        "to keep a class 0 without examples, or leave num_classes and class_names out to map labels 1..4 to "
        "classes 0..3.")
    with pytest.raises(ValueError, match=r"^The labels go from 1 to 2, but num_classes=2"):
        data.from_arrays(["a", "b"], [1, 2], class_names=["neg", "pos"])


def test_from_arrays_empty_class_in_the_middle_is_named(caplog):
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        bundle = data.from_arrays(np.zeros((4, 2)), [0, 1, 3, 3])
    assert bundle.counts["train"] == (1, 1, 0, 2)
    assert _data_messages(caplog) == [
        "Class 2 has no examples (the labels are 0, 1, 3); it is kept as an empty class: relabel the classes 0..2 "
        "if it is not a class."]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        data.from_arrays(np.zeros((3, 2)), [1, 3, 5])
    assert _data_messages(caplog)[1] == (
        "Classes 1, 3 (label 2, 4) have no examples (the labels are 1, 3, 5); they are kept as empty classes: "
        "relabel the classes 0..2 if they are not classes.")


def test_datasets_remember_their_bundle_classes():
    """What `tfft.checks` compares with the model's classes when the datasets come without the bundle."""
    bundle = data.from_arrays(np.zeros((8, 2)), [0, 1] * 4, validation_split=0.25, batch_size=2)
    names = data.bundle.dataset_classes
    assert names(bundle.train) == names(bundle.validation) == ("0", "1")
    assert names(bundle.train.prefetch(1).cache().shuffle(4).take(2)) == ("0", "1")
    assert names(bundle.train.map(lambda x, y: (x, y // 2))) is None  # a map may relabel: first-batch check only
    assert names(tf.data.Dataset.range(3)) is None
    assert names(data.from_arrays(np.zeros((2, 1)), [0.5, 1.5]).train) is None  # regression


# ---------------------------------------------------------------------------
# Splits, folds, class weights.


def test_stratified_split_indices_rounds_per_class_and_keeps_train():
    labels = [0] * 300 + [1] * 300 + [2] * 3 + [3]
    parts = data.stratified_split_indices(labels, test_split=0.2, seed=0)
    counts = np.bincount(np.asarray(labels)[parts["test"]], minlength=4)
    assert counts.tolist() == [60, 60, 1, 0]
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(labels)))


def test_kfold_is_stratified_and_covers_everything(tmp_path):
    bundle = data.from_arrays(np.arange(20)[:, None], [0] * 10 + [1] * 10, batch_size=3)
    seen = []
    for train, val in data.kfold(bundle, k=5):
        x_val, y_val = _all_batches(val)
        x_train, y_train = _all_batches(train)
        assert np.bincount(y_val).tolist() == [2, 2]
        assert len(y_train) == 16
        values = np.concatenate(x_val).ravel().tolist()
        assert not set(values) & set(np.concatenate(x_train).ravel().tolist())
        seen += values
    assert sorted(seen) == list(range(20))
    folds = data.kfold_indices([0, 0, 1, 1, 1], k=2, seed=0)
    assert sorted(len(v) for _, v in folds) == [2, 3]
    with pytest.raises(ValueError, match="k must be"):
        data.kfold_indices([0, 1], k=3)


def test_class_weights():
    weights = data.class_weights([0, 0, 0, 1])
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0})
    bundle = data.from_arrays(np.zeros((6, 1)), [0, 0, 0, 0, 1, 2])
    assert data.class_weights(bundle) == pytest.approx({0: 0.5, 1: 2.0, 2: 2.0})


# ---------------------------------------------------------------------------
# TensorFlow Datasets.

tfds = pytest.importorskip("tensorflow_datasets")


def test_tfds_image_folder_builder(tmp_path):
    for split, per_class in (("train", 3), ("test", 2)):
        _write_class_folders(tmp_path / split, per_class=per_class, ext=".jpg")
    builder = tfds.folder_dataset.ImageFolder(str(tmp_path))
    bundle = data.from_tfds(
        builder, split={"train": "train", "test": "test"}, image_size=16,
        batch_size=4, augment=["flip"],
    )
    assert bundle.modality == "image" and bundle.class_names == ("cat", "dog")
    assert bundle.augmented and data.is_augmented(bundle.train)
    images, labels = _all_batches(bundle.train)
    assert images[0].shape[1:] == (16, 16, 3) and images[0].dtype == np.float32
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    assert len(_all_batches(bundle.test)[1]) == 4


def test_tfds_unknown_split_is_refused(tmp_path):
    _write_class_folders(tmp_path / "train", per_class=1)
    builder = tfds.folder_dataset.ImageFolder(str(tmp_path))
    with pytest.raises(ValueError, match="no split 'validation'"):
        data.from_tfds(builder, split={"train": "train", "validation": "validation"})


@pytest.mark.parametrize(
    "name, modality, class_names",
    [
        ("glue/sst2", "text", ("negative", "positive")),
        ("imdb_reviews", "text", ("neg", "pos")),
        ("glue/mrpc", "text_pair", ("not_equivalent", "equivalent")),
    ],
)
def test_tfds_mock_text(name, modality, class_names):
    with tfds.testing.mock_data(num_examples=6):
        bundle = data.from_tfds(name, batch_size=3)
        inputs, labels = next(iter(bundle.train))
    assert bundle.modality == modality and bundle.class_names == class_names
    first = inputs[0] if modality == "text_pair" else inputs
    assert first.dtype == tf.string and first.shape == (3,)
    assert labels.dtype == tf.int64


def test_tfds_mock_images():
    with tfds.testing.mock_data(num_examples=4):
        bundle = data.from_tfds("tf_flowers", image_size=24, batch_size=4)
        images, labels = next(iter(bundle.train))
    assert bundle.num_classes == 5
    assert images.shape == (4, 24, 24, 3) and images.dtype == tf.float32


def test_tfds_offline_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(data.tfds, "network_available", lambda *a, **k: False)
    with pytest.raises(data.DatasetNotPreparedError, match="data_dir") as error:
        data.from_tfds("tf_flowers", data_dir=tmp_path)
    assert "tfds build tf_flowers" in str(error.value)
    assert "network is unreachable" in str(error.value)
    with pytest.raises(data.DatasetNotPreparedError, match="download=False"):
        data.from_tfds("tf_flowers", data_dir=tmp_path, download=False)


def test_network_probe_fails_on_unresolvable_host():
    # `.invalid` never resolves (RFC 2606).
    assert data.network_available("tfft-probe.invalid", 443, timeout=0.5) is False


class TinyLabeledText(tfds.core.GeneratorBasedBuilder):
    """A 10-example text dataset that prepares offline (no downloads)."""

    VERSION = tfds.core.Version("1.0.0")
    # Metadata (README, citations) would be looked up in this module's package.
    pkg_dir_path = tfds.core.Path(__file__).parent

    def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["neg", "pos"]),
                }
            ),
            supervised_keys=("text", "label"),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(10), "test": self._generate_examples(4)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"text": f"example {i}", "label": i % 2}


def test_tfds_prepared_data_dir_and_slicing(tmp_path, monkeypatch):
    monkeypatch.setattr(data.tfds, "network_available", lambda *a, **k: False)
    TinyLabeledText(data_dir=str(tmp_path)).download_and_prepare()
    bundle = data.from_tfds(
        "tiny_labeled_text", data_dir=tmp_path, validation_split=0.2, batch_size=16
    )
    assert len(_all_batches(bundle.train)[1]) == 8
    assert len(_all_batches(bundle.validation)[1]) == 2
    prepared = tfds.builder_from_directory(str(tmp_path / "tiny_labeled_text" / "1.0.0"))
    from_dir = data.from_tfds(prepared, split={"train": "train", "test": "test"})
    assert len(_all_batches(from_dir.test)[1]) == 4


# ---------------------------------------------------------------------------
# The real data in ../shared/data.

needs_flowers = pytest.mark.skipif(
    not FLOWERS.is_dir(), reason=f"real flowers data not found at {FLOWERS}"
)
needs_sst2 = pytest.mark.skipif(
    not SST2.is_dir(), reason=f"real SST-2 data not found at {SST2}"
)


@needs_flowers
def test_real_flowers_counts_and_stratified_test_split():
    bundle = data.from_image_directory(
        FLOWERS, image_size=64, test_split=0.2, validate="header", batch_size=8
    )
    assert bundle.class_names == ("daisy", "dandelion", "roses", "sunflowers", "tulips")
    assert bundle.class_counts == (300,) * 5
    assert sum(bundle.class_counts) == 1500
    assert bundle.counts["test"] == (60,) * 5
    assert not bundle.skipped
    images, labels = next(iter(bundle.test))
    assert images.shape == (8, 64, 64, 3)


@pytest.mark.slow
@needs_flowers
def test_real_flowers_all_decode():
    bundle = data.from_image_directory(FLOWERS, image_size=32, batch_size=256)
    assert not bundle.skipped
    assert len(_all_batches(bundle.train)[1]) == 1500


@needs_sst2
def test_real_sst2_counts():
    bundle = data.from_text_files(
        {"train": SST2 / "train.tsv", "validation": SST2 / "dev.tsv"},
        class_names=["negative", "positive"],
        batch_size=32,
    )
    assert len(bundle.labels["train"]) == 6920
    assert len(bundle.labels["validation"]) == 872
    assert not bundle.skipped
    texts, labels = next(iter(bundle.validation))
    assert texts.dtype == tf.string and texts.shape == (32,)


def test_a_folder_of_split_folders_is_refused_with_the_mapping_to_pass(tmp_path):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / "photos" / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8)).save(folder / "a.png")
    with pytest.raises(ValueError, match=r"holds split folders \(train, val\), each with class subfolders, not one "
                                         r"folder per class: pass the splits as a mapping, e\.g\. \{'train': "):
        data.from_image_directory(tmp_path / "photos", image_size=8)
    bundle = data.from_image_directory({"train": tmp_path / "photos" / "train",
                                        "validation": tmp_path / "photos" / "val"}, image_size=8)
    assert bundle.class_names == ("cat", "dog") and bundle.counts == {"train": (1, 1), "validation": (1, 1)}


def _png_header(path, width, height):
    """A PNG file whose header claims `width` x `height` (the pixel data is never read)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0"))
                           + chunk(b"IEND", b""))


def test_a_huge_image_is_left_out_with_the_reason_and_one_photo_classes_load(tmp_path, caplog):
    for cls, n in (("cat", 4), ("dog", 1)):  # a class folder with one photo
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (12, 10)).save(tmp_path / cls / f"{i}.png")
    _png_header(tmp_path / "cat" / "huge.png", 20_000, 20_000)
    with pytest.raises(ValueError, match=r"huge\.png \(an image of 400 megapixels is over the 64-megapixel limit "
                                         r"for decoding: downscale it"):
        data.from_image_directory(tmp_path, image_size=8, on_bad_file="raise")
    with caplog.at_level(logging.WARNING, logger="tfft.data"):
        bundle = data.from_image_directory(tmp_path, image_size=8, validation_split=0.25)
    assert "Skipped 1 bad image file(s)" in caplog.text and "400 megapixels" in caplog.text
    assert bundle.counts["train"] == (3, 1) and bundle.counts["validation"] == (1, 0)  # dog keeps its one photo
