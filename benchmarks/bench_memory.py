"""(c) Peak memory of a ResNet50 fine-tune: tfft against plain Keras (issue 8).

Command (appends a section to benchmarks/RESULTS.md; a few minutes on 2 shared cores):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_memory.py

Each side runs in its own fresh process (peak RSS is per process and never goes down), the
sides alternating for `--rounds` rounds: the same two-phase recipe on ResNet50
(weights=None) at 224 px, batch 32, `--batches` batches of real flower photos held in
memory. tfft: `tfft.build_model` + `tfft.fine_tune(head_epochs=1, finetune_epochs=1)`
with its defaults (the head phase on cached features). Plain Keras: the transfer-learning
guide by hand (frozen base, `fit` the head, unfreeze with BatchNorm frozen, recompile at
a 10x lower rate, `fit` again). Reported: each process's peak RSS (`ru_maxrss`), the
median per side and the ratio (target: tfft no more than plain Keras).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


SIDES = ("tfft", "tfft_workdir", "tfft_bare", "plain")
LABELS = {"tfft": "tfft.build_model + tfft.fine_tune (defaults, no workdir)",
          "tfft_workdir": "tfft, fine_tune(workdir=...) (defaults: checkpoint, backup, best weights in a file)",
          "tfft_bare": "tfft, fine_tune(default_callbacks=False)",
          "plain": "plain Keras, by hand"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="batches per epoch")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=None, help="image folder (default ../shared/data/flowers)")
    parser.add_argument("--out", default=str(common.RESULTS), help="results file ('' to only print)")
    return parser.parse_args(argv)


def one_side(args):
    """Runs one side in this process and prints its peak RSS."""
    import keras

    from bench_finetune_overhead import load_batches, pipeline, plain_keras_model

    args.steps = args.batches
    x, y, source = load_batches(args)
    data = pipeline(x, y, args.batch_size)
    base_rss = common.peak_rss_mb()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    if args.side.startswith("tfft"):
        import tfft

        model = tfft.build_model("resnet50", num_classes=5, weights=None,
                                 input_shape=(args.image_size, args.image_size, 3))
        import tempfile

        with tempfile.TemporaryDirectory() as workdir:
            tfft.fine_tune(model, data, head_epochs=1, finetune_epochs=1, verbose=0,
                           default_callbacks=args.side != "tfft_bare",
                           workdir=workdir if args.side == "tfft_workdir" else None)
    else:
        model = plain_keras_model("resnet50", args.image_size, 5)
        base = model.layers[2]
        base.trainable = False
        model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(data, epochs=1, verbose=0)
        base.trainable = True
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
        model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(data, epochs=1, verbose=0)
    common.dump({"side": args.side, "peak_rss_mb": common.peak_rss_mb(), "rss_after_data_mb": base_rss,
                 "seconds": time.perf_counter() - start, "source": source})


def main(argv=None):
    args = parse_args(argv)
    if args.side:
        one_side(args)
        return 0
    started, load = time.time(), common.load_average()
    runs = {side: [] for side in SIDES}
    source = ""
    for r in range(args.rounds):
        for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
            cmd = [sys.executable, __file__, "--side", side, "--image-size", str(args.image_size), "--batch-size",
                   str(args.batch_size), "--batches", str(args.batches)] + (["--data", args.data] if args.data else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"{side} failed:\n{proc.stderr[-3000:]}")
            result = common.parse_result(proc.stdout)
            source = result["source"]
            runs[side].append(result)
            print(f"round {r} {side}: peak RSS {result['peak_rss_mb']:.0f} MB in {result['seconds']:.0f} s",
                  flush=True)
    rows = []
    for side, label in LABELS.items():
        peaks = [r["peak_rss_mb"] for r in runs[side]]
        rows.append([label, " / ".join(f"{p:.0f}" for p in peaks), common.median(peaks),
                     common.median([r["rss_after_data_mb"] for r in runs[side]]),
                     common.median([r["seconds"] for r in runs[side]])])
    ratio, with_workdir, bare = (rows[i][2] / rows[3][2] for i in range(3))
    body = common.table(["side", "peak RSS per run (MB)", "median peak RSS (MB)", "RSS after loading data (MB)",
                         "median time (s)"], rows)
    body += (f"\n\n**ratio tfft / plain (median peak RSS): {ratio:.3f}** with tfft's default callbacks and no "
             f"workdir, **{with_workdir:.3f}** with a workdir, {bare:.3f} without callbacks (target: at most 1.0)")
    notes = [f"ResNet50 (weights=None) at {args.image_size} px, batch {args.batch_size}, {args.batches} batches "
             f"per epoch, one head epoch + one fine-tune epoch (tfft: the head on cached features), data: {source}, "
             "held in memory on both sides",
             "tfft's default callbacks include EarlyStopping(restore_best_weights=True), whose copy of the best "
             "weights (ResNet50: 23.6 M float32 values, about 94 MB) waits in a file (the backup folder with a "
             "workdir, else a temporary folder) instead of host memory; the plain side has no callbacks",
             "both sides import tfft (its data loader reads the photos); each run is a fresh process; CPU only "
             "(no GPU here, so no GPU memory rows)"]
    common.report("Peak memory of a ResNet50 fine-tune: tfft vs plain Keras", body, notes=notes,
                  out=args.out or None, started=started, load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
