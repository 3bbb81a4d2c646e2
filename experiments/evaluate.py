r"""Re-scores the model a run saved, on one of its splits or on new data.

    python -m experiments.evaluate --workdir=runs/flowers [--split=test|validation|train]
    python -m experiments.evaluate --workdir=runs/flowers --data=/path/to/new/flowers
    python -m experiments.evaluate --workdir=runs/flowers --tta=flip[,flip_vertical,crop,five_crop,scale:1.15]

The splits are rebuilt from the run's `config.json` (same seed, same examples). `--data` takes
data of the run's kind: a folder of class subfolders (images, or .txt files for a text run),
a CSV / TSV file with the run's text and label columns, or an `.npz` file with `x` and `y`;
its labels must be among the run's classes. `--tta` scores the outputs averaged over the original
images and the views it names (test-time augmentation, `tfft.tta`; image runs only). Results go to
`workdir/evaluation/<name>/` (`<name>_tta_<views>` with `--tta`; `metrics.json`, `confusion_matrix.png`,
`per_class.csv`) and are printed.
"""

import os
import re

import keras
from absl import flags

from experiments import config as config_lib
from experiments import entry, inputs, modeling
from experiments import workdir as workdir_lib
from tfft import io, reporting
from tfft import tta as tta_lib
from tfft.info import model_info

SPLITS = ("test", "validation", "train")


def define_flags(module_name=__name__):
    """`--workdir`, `--split`, `--data`, `--debug` (defined only when this module is the program)."""
    entry.define_string_flag("workdir", None, "The workdir of a finished (or checkpointed) experiments.train run.",
                              module_name=module_name, required=True)
    flags.DEFINE_flag(flags.EnumFlag("split", "test", "Which split of the run's data to score.", SPLITS),
                      module_name=entry.module_key(module_name))
    entry.define_string_flag("data", None, "Score on this data instead: an image / text folder with one "
                              "subfolder per class, a CSV / TSV file, or an .npz file with x and y.",
                              module_name=module_name)
    entry.define_string_flag("tta", "", "Test-time augmentation: a comma list of views averaged with the original "
                              "images (flip, flip_vertical, crop[:F], five_crop[:F], scale:S); empty for none.",
                              module_name=module_name)
    entry.define_debug_flag(module_name)


def _tta_views(tta):
    """`--tta` as `(views with the original first, folder suffix)`; `((), "")` for none.

    An unknown view is a usage error."""
    text = tta if isinstance(tta, str) or tta is None else ",".join(tta)
    if not text or text.strip().lower() in ("", "none", "false", "0"):
        return (), ""
    try:
        views = tta_lib.with_original(text)
    except ValueError as e:
        raise config_lib.UsageError(f"--tta={text!r}: {e}") from None
    return views, "_tta_" + re.sub(r"[^a-z0-9.]+", "_", text.strip().lower())


def data_config(config, data):
    """The run's config pointed at `data`: all of it is scored, unaugmented."""
    config = config.copy_and_resolve_references()
    if not os.path.exists(data):
        raise config_lib.UsageError(f"--data={data!r} does not exist.")
    if data.endswith(".npz"):
        source = "arrays"
    elif os.path.isfile(data):
        source = "text"
    elif config.data.source in ("text",):
        source = "text"
    else:
        source = "folder"
    config.data.source = source
    config.data.path = data
    config.data.validation_path = ""
    config.data.test_path = ""
    config.data.validation_split = 0.0
    config.data.test_split = 0.0
    config.data.limit = 0
    config.data.mock_examples = 0
    return config


def run(workdir, *, split="test", data=None, tta=None):
    """Scores `workdir/model.keras` on `split` of the run's data, or on `data`.

    Args:
        workdir: the run's folder (holds `config.json` and `model.keras`).
        split: `"test"`, `"validation"` or `"train"`.
        data: a path to score instead of a split (see the module docstring).
        tta: test-time augmentation views averaged with the original images (a comma list or a
            sequence, see `tfft.tta`); None or empty for none.

    Returns:
        The metrics dict written to `workdir/evaluation/<split or data name>/metrics.json`.

    Example:
    ```python
    metrics = evaluate.run("runs/flowers", split="validation")
    print(metrics["accuracy"])
    ```
    """
    if split not in SPLITS:
        raise config_lib.UsageError(f"split={split!r}; use one of {SPLITS}.")
    views, suffix = _tta_views(tta)
    config = workdir_lib.read_workdir_config(workdir)
    model_path = os.path.join(workdir, "model.keras")
    if not os.path.exists(model_path):
        raise config_lib.UsageError(f"{workdir} holds no model.keras yet: the run has not finished an epoch. Run "
                                "experiments.train with this workdir first (a rerun resumes it).")
    model = keras.models.load_model(model_path, compile=False)
    info = model_info(model)
    class_names = info.get("class_names") or None
    config = config.copy_and_resolve_references()
    config.data.augment = ""
    name = split
    if data:
        config = data_config(config, data)
        name = os.path.splitext(os.path.basename(os.path.normpath(data)))[0] or "data"
    name += suffix
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch, class_names=class_names,
                                  image_size=_model_image_size(model))
        dataset = bundle.train if data else bundle.split(split)
        if dataset is None:
            raise config_lib.UsageError(f"The run {workdir} has no {split} split (its data.{split}_split is 0 and "
                                    f"data.{split}_path is empty); try --split=validation or --data=PATH.")
        metrics, report = modeling.score(model, dataset, class_names=class_names or bundle.class_names,
                                         task=info.get("task", config.task), tta=views or None,
                                         label_smoothing=modeling.run_label_smoothing(workdir))
    out = os.path.join(workdir, "evaluation", name)
    results = {"workdir": os.path.abspath(workdir), "split": None if data else split, "data": data,
               "tta": list(views) or None, **metrics}
    if report:
        results["per_class"] = report["per_class"]
        results["confusion_matrix"] = report.get("confusion_matrix")
        reporting.write_classification_artefacts(report, class_names or bundle.class_names, out,
                                                 split=name)
        print(reporting.format_per_class(report["per_class"]), flush=True)
    io.write_json(os.path.join(out, "metrics.json"), results)
    print(f"[tfft] {name}: {modeling.summarize_metrics(metrics)}", flush=True)
    print(f"[tfft] results: {os.path.abspath(out)}", flush=True)
    return results


def _model_image_size(model):
    shape = getattr(model, "input_shape", None)
    if isinstance(shape, tuple) and len(shape) == 4 and shape[1]:
        return (int(shape[1]), int(shape[2]))
    return None


def main(argv):
    entry.start(argv, "--workdir=DIR --split=test", run, flags.FLAGS.workdir, split=flags.FLAGS.split,
                data=flags.FLAGS.data, tta=flags.FLAGS.tta)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.evaluate`, `tfft evaluate`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
