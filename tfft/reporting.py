"""Reports of a run: learning curves, confusion matrix, per-class precision and recall.

Everything here works on plain NumPy arrays and per-epoch history dicts, so it serves
`fine_tune` results, Keras `History` objects and histories read back from a workdir. Files
are written atomically (`tfft.io`); plots use Matplotlib's non-interactive Agg backend.

Example:
```python
result = tfft.fine_tune(model, train, val, workdir="runs/x")
reporting.plot_curves(result.history, "runs/x/curves.png", phase_boundaries=[("finetune", 5)])
y_true, y_prob = reporting.collect_predictions(model, test)
report = reporting.classification_report(y_true, y_prob, class_names, task="multiclass")
print(reporting.format_per_class(report["per_class"]))
```
"""

import csv
import io as _stdio
import math
import os

import numpy as np

from tfft import io

CLASSIFICATION_TASKS = ("multiclass", "binary", "multilabel")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path):
    plt = _pyplot()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=os.path.splitext(path)[1][1:] or "png")
    plt.close(fig)
    return os.fspath(path)


# --------------------------------------------------------------------------------------------
# Learning curves
# --------------------------------------------------------------------------------------------


def _curve_groups(history):
    """Metric names grouped as `[("loss", ["loss", "val_loss"]), ...]`, loss first."""
    base = []
    for key in history:
        name = key[4:] if key.startswith("val_") else key
        if name in ("learning_rate", "lr") or name in base:
            continue
        base.append(name)
    base.sort(key=lambda n: (n != "loss", n))
    return [(name, [k for k in (name, f"val_{name}") if k in history]) for name in base]


def plot_curves(history, path, *, epochs=None, phase_boundaries=(), title=None, max_panels=6):
    """Plots each metric per epoch, training and validation, with the phase boundaries marked.

    Args:
        history: `{metric: [value per epoch]}` (both phases concatenated, as in
            `FineTuneResult.history`); `val_*` keys are drawn with their training metric.
        path: the `.png` file to write.
        epochs: the 0-based epoch index of each entry (default 0, 1, 2, ...); a phase that
            stopped early leaves a gap before the next one.
        phase_boundaries: `[(phase_name, first_epoch_index), ...]` for phases after the first:
            a dashed vertical line is drawn before that epoch, labelled with the phase name.
        title: the figure title.
        max_panels: at most this many metrics are drawn (loss first, then alphabetical).

    Returns:
        `path`.

    Example:
    >>> plot_curves({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7]}, "/tmp/c.png",
    ...             phase_boundaries=[("finetune", 1)])
    '/tmp/c.png'
    """
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    groups = [g for g in _curve_groups(history) if g[1]][:max_panels] or [("loss", [])]
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, keys) in zip(axes.flat, groups):
        for key in keys:
            values = [float("nan") if v is None else float(v) for v in history[key]]
            x = np.arange(len(values)) if epochs is None else np.asarray(epochs[: len(values)])
            ax.plot(x + 1, values, marker="o", markersize=3,
                    label="validation" if key.startswith("val_") else "train")
        for phase, start in phase_boundaries:
            ax.axvline(start + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.annotate(phase, xy=(start + 0.5, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8, color="gray")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save_figure(fig, os.fspath(path))


# --------------------------------------------------------------------------------------------
# Predictions and classification reports
# --------------------------------------------------------------------------------------------


def collect_predictions(model, dataset):
    """Runs `model` over a batched `(x, y[, w])` dataset once; returns `(y_true, y_pred)` arrays.

    The labels and the predictions come from the same pass, so a shuffled dataset still
    gives aligned pairs.
    """
    labels, outputs = [], []
    for batch in dataset:
        x, y = batch[0], batch[1]
        outputs.append(np.asarray(model.predict_on_batch(x)))
        labels.append(np.asarray(y))
    if not labels:
        raise ValueError("The dataset is empty: there is nothing to score.")
    return np.concatenate(labels), np.concatenate(outputs)


def predicted_classes(y_prob, task, threshold=0.5):
    """Class indices (multiclass, binary) or a multi-hot matrix (multilabel) from model outputs."""
    y_prob = np.asarray(y_prob)
    if task == "multiclass":
        return np.argmax(y_prob, axis=-1)
    if task == "binary":
        return (y_prob.reshape(-1) > threshold).astype(np.int64)
    if task == "multilabel":
        return (y_prob > threshold).astype(np.int64)
    raise ValueError(f"No classes to predict for task {task!r}; use one of {CLASSIFICATION_TASKS}.")


def confusion_matrix(y_true, y_pred, num_classes):
    """`num_classes x num_classes` counts: row = true class, column = predicted class."""
    from sklearn import metrics

    return metrics.confusion_matrix(np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1),
                                    labels=np.arange(num_classes))


def per_class_metrics(y_true, y_pred, class_names):
    """Precision, recall, F1 and support per class (zero where a class is never predicted).

    Args:
        y_true: class indices, or a multi-hot matrix (multilabel).
        y_pred: the same form as `y_true`.
        class_names: one name per class.

    Returns:
        A list of `{"class", "precision", "recall", "f1", "support"}` dicts, in class order.

    Example:
    >>> rows = per_class_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["cat", "dog"])
    >>> [(r["class"], round(r["precision"], 2), r["recall"]) for r in rows]
    [('cat', 1.0, 0.5), ('dog', 0.67, 1.0)]
    """
    from sklearn import metrics

    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    labels = None if y_true.ndim == 2 else np.arange(len(class_names))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return [
        {"class": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    ]


def classification_report(y_true, y_prob, class_names, task="multiclass"):
    """Accuracy, macro averages, per-class metrics and the confusion matrix of a classifier.

    Args:
        y_true: integer labels (multiclass, binary) or multi-hot rows (multilabel).
        y_prob: the model's outputs (probabilities).
        class_names: names of the classes (binary: two names, negative first).
        task: `"multiclass"`, `"binary"` or `"multilabel"`.

    Returns:
        A dict with `accuracy`, `macro_precision`, `macro_recall`, `macro_f1`, `per_class`
        (see `per_class_metrics`), and `confusion_matrix` (a nested list; not for multilabel).
    """
    if task not in CLASSIFICATION_TASKS:
        raise ValueError(f"classification_report needs a classification task, got {task!r}.")
    class_names = list(class_names) or [str(i) for i in range(2 if task == "binary" else np.shape(y_prob)[-1])]
    y_pred = predicted_classes(y_prob, task)
    y_true = np.asarray(y_true)
    y_true = y_true.astype(np.int64).reshape(-1) if task != "multilabel" else (y_true > 0.5).astype(np.int64)
    rows = per_class_metrics(y_true, y_pred, class_names)
    report = {
        "accuracy": float(np.mean(np.all(y_true == y_pred, axis=-1) if task == "multilabel" else y_true == y_pred)),
        "macro_precision": float(np.mean([r["precision"] for r in rows])),
        "macro_recall": float(np.mean([r["recall"] for r in rows])),
        "macro_f1": float(np.mean([r["f1"] for r in rows])),
        "examples": int(len(y_true)),
        "per_class": rows,
    }
    if task != "multilabel":
        report["confusion_matrix"] = confusion_matrix(y_true, y_pred, len(class_names)).tolist()
    return report


def format_per_class(rows):
    """A fixed-width text table of `per_class_metrics` rows (for logs and `per_class.txt`)."""
    width = max([len("class")] + [len(r["class"]) for r in rows])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    for r in rows:
        lines.append(f"{r['class']:<{width}}  {r['precision']:9.3f}  {r['recall']:6.3f}  {r['f1']:5.3f}"
                     f"  {r['support']:7d}")
    return "\n".join(lines)


def write_per_class(rows, path):
    """Writes `per_class_metrics` rows as CSV (`class,precision,recall,f1,support`)."""
    buffer = _stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["class", "precision", "recall", "f1", "support"])
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buffer.getvalue())
    return os.fspath(path)


def plot_confusion_matrix(matrix, class_names, path, *, title="Confusion matrix", normalize=True):
    """Draws a confusion matrix (rows: true class, columns: predicted) with counts in the cells.

    Args:
        matrix: a square array of counts.
        class_names: one name per row.
        path: the `.png` file to write.
        title: the figure title.
        normalize: color by the row-normalized rate (the recall of each class); the cells
            always show the raw counts.

    Returns:
        `path`.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = len(matrix)
    shade = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1) if normalize else matrix
    size = max(3.5, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row rate" if normalize else "count")
    ax.set_xticks(range(n), labels=[str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(n), labels=[str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if shade[i, j] > 0.6 * (shade.max() or 1) else "black")
    ax.set_title(title)
    fig.tight_layout()
    return _save_figure(fig, os.fspath(path))


def write_classification_artefacts(report, class_names, directory, *, split="test"):
    """Writes `confusion_matrix.png` (not for multilabel) and `per_class.csv` / `per_class.txt`.

    Returns:
        `{artefact name: path}` of what was written.
    """
    written = {}
    if "confusion_matrix" in report:
        written["confusion_matrix"] = plot_confusion_matrix(
            report["confusion_matrix"], class_names, os.path.join(directory, "confusion_matrix.png"),
            title=f"Confusion matrix ({split}, {report['examples']} examples)",
        )
    written["per_class_csv"] = write_per_class(report["per_class"], os.path.join(directory, "per_class.csv"))
    text = f"Per-class metrics on {split} ({report['examples']} examples)\n" + format_per_class(report["per_class"])
    written["per_class_txt"] = os.path.join(directory, "per_class.txt")
    io.write_text(written["per_class_txt"], text + "\n")
    return written


# --------------------------------------------------------------------------------------------
# History tables
# --------------------------------------------------------------------------------------------


def write_history_csv(rows, path):
    """Writes per-epoch rows (`[{"phase", "epoch", metric: value, ...}]`) as one CSV table."""
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    front = [k for k in ("epoch", "phase") if k in keys]
    fieldnames = front + sorted(k for k in keys if k not in front)
    buffer = _stdio.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fieldnames, restval="")
    writer.writeheader()
    writer.writerows(rows)
    io.write_text(path, buffer.getvalue())
    return os.fspath(path)
