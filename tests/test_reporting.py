"""tfft.reporting: curves, confusion matrices, per-class tables."""

import csv

import numpy as np
import pytest

from tfft import reporting

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == PNG_MAGIC


def test_plot_curves_writes_a_png_with_phase_boundaries(tmp_path):
    history = {"loss": [1.0, 0.8, 0.5, 0.4], "val_loss": [1.1, 0.9, 0.7, 0.6], "accuracy": [0.3, 0.5, 0.7, 0.8],
               "val_accuracy": [0.3, 0.4, 0.6, 0.7], "learning_rate": [1e-3, 1e-3, 1e-4, 1e-4]}
    path = reporting.plot_curves(history, tmp_path / "curves.png", phase_boundaries=[("finetune", 2)],
                                 epochs=[0, 1, 2, 3], title="test")
    assert _is_png(path)
    # loss first, learning_rate left out, val_* drawn with their training metric
    assert [name for name, _ in reporting._curve_groups(history)] == ["loss", "accuracy"]


def test_per_class_metrics_match_hand_counts():
    rows = reporting.per_class_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 1], ["a", "b", "c"])
    assert [r["class"] for r in rows] == ["a", "b", "c"]
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == 0.5
    assert rows[1]["precision"] == pytest.approx(2 / 4) and rows[1]["recall"] == 1.0
    assert rows[2]["precision"] == 0.0 and rows[2]["recall"] == 0.0 and rows[2]["support"] == 1


def test_classification_report_multiclass_and_binary():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    report = reporting.classification_report([0, 1, 2, 2], probs, ["a", "b", "c"], task="multiclass")
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    binary = reporting.classification_report([0, 1, 1, 0], np.array([[0.2], [0.8], [0.4], [0.1]]), ["neg", "pos"],
                                             task="binary")
    assert binary["accuracy"] == 0.75
    assert binary["confusion_matrix"] == [[2, 0], [1, 1]]
    assert binary["per_class"][1]["recall"] == 0.5


def test_classification_report_multilabel_has_no_confusion_matrix():
    y = np.array([[1, 0], [0, 1], [1, 1]])
    report = reporting.classification_report(y, np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), ["x", "y"],
                                             task="multilabel")
    assert "confusion_matrix" not in report
    assert report["accuracy"] == pytest.approx(2 / 3)
    assert report["per_class"][1]["recall"] == 0.5


def test_regression_is_refused():
    with pytest.raises(ValueError, match="classification"):
        reporting.classification_report([0.5], [[0.4]], [], task="regression")


def test_classification_artefacts(tmp_path):
    report = reporting.classification_report([0, 1, 1], np.eye(2)[[0, 1, 0]], ["cat", "dog"])
    written = reporting.write_classification_artefacts(report, ["cat", "dog"], tmp_path, split="test")
    assert _is_png(written["confusion_matrix"])
    with open(written["per_class_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == ["cat", "dog"] and float(rows[1]["recall"]) == 0.5
    text = (tmp_path / "per_class.txt").read_text()
    assert "precision" in text and "dog" in text


def test_history_csv_puts_epoch_and_phase_first(tmp_path):
    rows = [{"epoch": 0, "phase": "head", "loss": 1.0}, {"epoch": 1, "phase": "finetune", "loss": 0.5, "val_loss": 0.7}]
    reporting.write_history_csv(rows, tmp_path / "history.csv")
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,phase,loss,val_loss"
    assert lines[2] == "1,finetune,0.5,0.7"


def test_collect_predictions_keeps_pairs_aligned():
    import tensorflow as tf

    class Echo:
        def predict_on_batch(self, x):
            return np.asarray(x)

    ds = tf.data.Dataset.from_tensor_slices((np.arange(5.0)[:, None], np.arange(5))).shuffle(5).batch(2)
    y_true, y_pred = reporting.collect_predictions(Echo(), ds)
    np.testing.assert_array_equal(y_true, y_pred[:, 0])
