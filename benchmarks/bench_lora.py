"""LoRA rank 8 against full fine-tuning of all-MiniLM-L6-v2 on SST-2: parameters, speed, memory, accuracy.

Both sides are the same `tfft.build_model("all_minilm_l6_v2_en", task="binary", pooling="mean")`
(same seed: same head initialization, same data order), trained with AdamW (weight decay 0.01,
10% linear warmup then linear decay), batch 32, for the same epochs on the same sentences:

* `full`: `tfft.freeze(model, "none")`: every parameter of the encoder and the head trains,
  at `--full_learning_rate` (1e-4, the rate of the SST-2 sections of RESULTS.md).
* `lora`: `tfft.freeze(model, "lora:8")`: keras-hub's `Backbone.enable_lora(8)` (query and
  value projections) through `tfft.lora`, the rest of the encoder frozen, the head trained,
  at the rate picked from `--lora_learning_rates` on a held-out part of the training data.

Data: `--train` (default `sst2/train.tsv`, 6,920 sentences) minus a stratified held-out 10%;
the held-out part picks LoRA's learning rate (one `--sweep_epochs` run per rate on the first
`--sweep_limit` training sentences) and is reported; `sst2/dev.tsv` (872 sentences) is only
predicted at the end, from raw strings, after merging the adapters (`tfft.lora.merge_lora`).

Each run is a fresh subprocess, so peak RSS (`ru_maxrss`) is that run's own: the process peak
(TensorFlow, the model, the data, training) and its growth during `fit` (the peak minus the
RSS just before `fit`: gradients, optimizer slots, activations). Step time: the median of the
training steps after `--warmup` steps (`common.StepTimer`).

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_lora.py
    # step times only, both sides interleaved in one process (a few minutes)
    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_lora.py --timing
    # a dry run, a few minutes
    .venv/bin/python benchmarks/bench_lora.py --limit 300 --epochs 1 --sweep_limit 200 --out ''
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

SST2 = common.REPO.parent / "shared" / "data" / "sst2"
PRESET = "all_minilm_l6_v2_en"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", default=str(SST2 / "train.tsv"))
    p.add_argument("--dev", default=str(SST2 / "dev.tsv"))
    p.add_argument("--limit", type=int, default=0, help="use only the first N training sentences (dry runs)")
    p.add_argument("--heldout", type=float, default=0.1, help="stratified fraction of the training data held out")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--sequence_length", type=int, default=64)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--full_learning_rate", type=float, default=1e-4)
    p.add_argument("--lora_learning_rates", default="1e-3,2e-3,4e-3")
    p.add_argument("--sweep_epochs", type=int, default=1)
    p.add_argument("--sweep_limit", type=int, default=2000, help="training sentences of each sweep run")
    p.add_argument("--warmup", type=int, default=5, help="steps left out of the step-time median")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(common.RESULTS), help="results file ('' prints only)")
    p.add_argument("--timing", action="store_true",
                   help="only step times, both sides in one process, interleaved (no accuracy, no memory)")
    p.add_argument("--rounds", type=int, default=4, help="--timing: alternating rounds per side")
    p.add_argument("--steps", type=int, default=12, help="--timing: training steps per side and round")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--learning_rate", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--train_limit", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--score_dev", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def read_tsv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def splits(args):
    """`(train_x, train_y, heldout_x, heldout_y)`: a stratified held-out part of the training data."""
    import numpy as np

    x, y = read_tsv(args.train)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    rng = np.random.default_rng(args.seed)
    y = np.array(y)
    held = np.zeros(len(y), bool)
    for label in (0, 1):
        index = np.flatnonzero(y == label)
        held[rng.choice(index, int(round(args.heldout * len(index))), replace=False)] = True
    x = np.array(x, dtype=object)
    order = rng.permutation(np.flatnonzero(~held))  # one fixed order; fit shuffles per epoch from the seed
    return x[order], y[order], x[held], y[held]


def worker(args):
    """One run in this process: build, freeze / LoRA, fit, score; prints a RESULT line."""
    import keras
    import numpy as np

    import tfft
    from tfft import lora

    keras.utils.set_random_seed(args.seed)
    train_x, train_y, held_x, held_y = splits(args)
    if args.train_limit:
        train_x, train_y = train_x[: args.train_limit], train_y[: args.train_limit]
    model = tfft.build_model(PRESET, task="binary", pooling="mean", dropout=0.1, sequence_length=args.sequence_length)
    summary = tfft.freeze(model, f"lora:{args.rank}" if args.worker == "lora" else "none")
    steps = int(np.ceil(len(train_y) / args.batch_size)) * args.epochs
    warmup = int(round(0.1 * steps))
    tfft.compile_model(model, optimizer="adamw", learning_rate=args.learning_rate, schedule="linear",
                       warmup_steps=warmup, decay_steps=max(1, steps - warmup), weight_decay=0.01)
    timer = common.StepTimer()
    rss_before = common.rss_mb()
    start = time.time()
    model.fit(train_x, train_y, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=[timer],
              verbose=2)
    train_time = time.time() - start
    peak = common.peak_rss_mb()
    result = {"run": args.worker, "learning_rate": args.learning_rate, "epochs": args.epochs,
              "examples": int(len(train_y)), "trainable_params": summary.trainable_params,
              "total_params": summary.trainable_params + summary.frozen_params,
              "step_s": common.median(common.timed_steps(timer.times, args.warmup)), "steps": len(timer.times),
              "train_s": train_time, "peak_rss_mb": peak, "fit_rss_growth_mb": peak - rss_before,
              "load_after_fit": common.load_average(),
              "heldout_accuracy": accuracy(model, held_x, held_y)}
    if args.worker == "lora":
        result["lora_layers"] = len(summary.lora_layers)
        adapted = model.predict(held_x[:64], verbose=0)
        result["merged_layers"] = len(lora.merge_lora(model))
        result["merge_max_abs_diff"] = float(np.max(np.abs(model.predict(held_x[:64], verbose=0) - adapted)))
    if args.score_dev:
        dev_x, dev_y = read_tsv(args.dev)
        result["dev_accuracy"] = accuracy(model, np.array(dev_x, dtype=object), np.array(dev_y))
        result["dev_examples"] = len(dev_y)
    common.dump(result)


def accuracy(model, x, y):
    import numpy as np

    probs = model.predict(x, batch_size=64, verbose=0)[:, 0]
    return float(np.mean((probs > 0.5).astype(int) == np.asarray(y)))


def timing(args):
    """Step times of both sides in one process, alternating rounds (who goes first alternates too)."""
    import keras

    import tfft

    started, load = time.time(), common.load_average()
    train_x, train_y, _, _ = splits(args)
    n = args.steps * args.batch_size
    models = {}
    for name, spec in (("full", "none"), ("lora", f"lora:{args.rank}")):
        keras.utils.set_random_seed(args.seed)
        model = tfft.build_model(PRESET, task="binary", pooling="mean", dropout=0.1,
                                 sequence_length=args.sequence_length)
        tfft.freeze(model, spec)
        tfft.compile_model(model, optimizer="adamw", learning_rate=1e-4, weight_decay=0.01)
        models[name] = model
    times = {name: [] for name in models}
    for r in range(args.rounds):
        for name in (("full", "lora") if r % 2 == 0 else ("lora", "full")):
            timer = common.StepTimer()
            start = (r * n) % max(1, len(train_y) - n)
            models[name].fit(train_x[start:start + n], train_y[start:start + n], batch_size=args.batch_size,
                             epochs=1, shuffle=False, callbacks=[timer], verbose=0)
            times[name] += common.timed_steps(timer.times, 2 if r == 0 else 0)  # each side traces in its first fit
    full, lo = common.median(times["full"]), common.median(times["lora"])
    body = common.table(["run", "median step (s)", "timed steps"],
                        [["full fine-tuning", f"{full:.3f}", len(times["full"])],
                         [f"LoRA rank {args.rank} (query, value)", f"{lo:.3f}", len(times["lora"])],
                         ["LoRA / full", f"{lo / full:.2f}", ""]])
    notes = [f"Both models in one process, {args.rounds} alternating rounds of {args.steps} steps per side (batch "
             f"{args.batch_size}, sequence_length {args.sequence_length}, AdamW), the first steps of each side's "
             "first fit left out; the same sentences for both. This is the fair speed comparison on a shared "
             "machine; the accuracy section's step times come from sequential processes under different load."]
    common.report(f"LoRA rank {args.rank} vs. full fine-tuning step time, interleaved, all-MiniLM-L6-v2", body,
                  notes=notes, out=args.out or None, started=started, load_before=load)


def spawn(args, run, learning_rate, *, epochs, train_limit=0, score_dev=False):
    command = [sys.executable, __file__, "--worker", run, "--learning_rate", repr(learning_rate),
               "--epochs", str(epochs), "--train_limit", str(train_limit), "--train", args.train, "--dev", args.dev,
               "--limit", str(args.limit), "--heldout", str(args.heldout), "--batch_size", str(args.batch_size),
               "--sequence_length", str(args.sequence_length), "--rank", str(args.rank), "--warmup",
               str(args.warmup), "--seed", str(args.seed)] + (["--score_dev"] if score_dev else [])
    print(f"[bench_lora] {run} lr={learning_rate:g} epochs={epochs} limit={train_limit or 'all'}", flush=True)
    done = subprocess.run(command, cwd=common.REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"worker {run} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = common.parse_result(done.stdout)
    print(f"[bench_lora]   {json.dumps(result)}", flush=True)
    return result


def main(args):
    started, load = time.time(), common.load_average()
    if not Path(args.train).exists():
        print(f"[bench_lora] skipped: SST-2 not found at {args.train} (see ../shared/data/README.md)")
        return
    rates = [float(r) for r in args.lora_learning_rates.split(",")]
    sweep = {lr: spawn(args, "lora", lr, epochs=args.sweep_epochs, train_limit=args.sweep_limit) for lr in rates}
    best = max(rates, key=lambda lr: (sweep[lr]["heldout_accuracy"], -lr))
    runs = {"full": spawn(args, "full", args.full_learning_rate, epochs=args.epochs, score_dev=True),
            "lora": spawn(args, "lora", best, epochs=args.epochs, score_dev=True)}
    write(args, runs, sweep, best, started, load)


def write(args, runs, sweep, best, started, load):
    full, lo = runs["full"], runs["lora"]
    rows = []
    for name, r in (("full fine-tuning", full), (f"LoRA rank {args.rank} (query, value)", lo)):
        rows.append([name, f"{r['learning_rate']:g}", f"{r['trainable_params']:,} / {r['total_params']:,} "
                     f"({100 * r['trainable_params'] / r['total_params']:.2f}%)", f"{r['step_s']:.3f}",
                     f"{r['peak_rss_mb']:.0f}", f"{r['fit_rss_growth_mb']:.0f}", f"{100 * r['heldout_accuracy']:.2f}%",
                     f"**{100 * r['dev_accuracy']:.2f}%**", f"{r['train_s'] / 60:.1f} min"])
    rows.append(["LoRA / full", "", f"{lo['trainable_params'] / full['trainable_params']:.4f}",
                 f"{lo['step_s'] / full['step_s']:.2f}", f"{lo['peak_rss_mb'] / full['peak_rss_mb']:.2f}",
                 f"{lo['fit_rss_growth_mb'] / max(1e-9, full['fit_rss_growth_mb']):.2f}",
                 f"{100 * (lo['heldout_accuracy'] - full['heldout_accuracy']):+.2f} pt",
                 f"{100 * (lo['dev_accuracy'] - full['dev_accuracy']):+.2f} pt", ""])
    body = common.table(["run", "learning rate", "trainable params", "step (s)", "peak RSS (MB)",
                         "RSS growth in fit (MB)", "held-out accuracy", "dev accuracy", "training time"], rows)
    share = lo["trainable_params"] / lo["total_params"]
    gap = 100 * (full["dev_accuracy"] - lo["dev_accuracy"])
    notes = [
        f"Data: {full['examples']} training sentences of `{os.path.relpath(args.train, common.REPO.parent)}` "
        f"(a stratified {args.heldout:.0%} held out), {args.epochs} epochs for both, batch {args.batch_size}, "
        f"sequence_length {args.sequence_length}, mean pooling, AdamW (weight decay 0.01), 10% warmup + linear "
        f"decay, seed {args.seed}; dev: {full['dev_examples']} sentences of `dev.tsv`, predicted from raw strings "
        "(LoRA after `merge_lora`).",
        "LoRA learning rate picked on the held-out training sentences (dev unseen): " + ", ".join(
            f"{lr:g}: {100 * r['heldout_accuracy']:.2f}%" for lr, r in sweep.items())
        + f" after {args.sweep_epochs} epoch(s) on {next(iter(sweep.values()))['examples']} sentences; "
        f"chosen {best:g}.",
        f"Targets: trainable parameters {100 * share:.2f}% of the model "
        f"(<= 3%: {'met' if share <= 0.03 else 'missed'}); "
        f"dev accuracy within 1.0 point of full fine-tuning: {'met' if gap <= 1.0 else 'missed'} "
        f"({gap:+.2f} points full - LoRA).",
        f"LoRA adapted {lo['lora_layers']} layers (Keras's EinsumDense.enable_lora: A is (hidden, heads, rank), B "
        f"(rank, head_dim), so each projection has {args.rank} ranks per head); merging them changed held-out "
        f"probabilities by at most {lo['merge_max_abs_diff']:.1e}.",
        f"The runs are sequential fresh processes (not interleaved): 1/5/15-minute load average at the end of "
        f"fit: full {full['load_after_fit']}, LoRA {lo['load_after_fit']} (2.0 = both cores busy).",
        "Peak RSS is each run's fresh process (TensorFlow and the 22.7 M-parameter model included); the growth "
        "column is the peak minus the RSS just before `fit`.",
    ]
    common.report(f"LoRA rank {args.rank} vs. full fine-tuning, all-MiniLM-L6-v2 on SST-2", body, notes=notes,
                  out=args.out or None, started=started, load_before=load)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.worker:
        worker(parsed)
    elif parsed.timing:
        timing(parsed)
    else:
        main(parsed)
