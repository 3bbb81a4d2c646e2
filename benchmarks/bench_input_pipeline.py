"""(d) The `tfft.data` image-folder pipeline against the model's own step rate (issue 8).

Command (appends a section to benchmarks/RESULTS.md; about 5-10 minutes on 2 shared cores):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_input_pipeline.py

Input: `tfft.data.from_image_directory` over the 1,500 flower photos at `--image-size` px,
batch 32: images/s of full passes over the training split, uncached (JPEG decoding and
resizing every pass, `cache=False`) and cached in memory (`cache=True`, passes after the
first). Model: images/s of training steps on batches held in memory (median of the steps
after `--warmup`): the ResNet50 fine-tune step (backbone trainable, BatchNorm frozen), the
head-phase step without feature caching (frozen backbone forward + head), and the
EfficientNet-Lite0 head-phase step; and the ResNet50 fine-tune step fed straight from the
uncached pipeline, which shows whether the input slows the model down on this machine
(both compete for the same CPU cores here; on a GPU host the input runs on the CPU alone).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--passes", type=int, default=2, help="timed passes over the data per pipeline")
    parser.add_argument("--steps", type=int, default=8, help="model steps per measurement (warm-up included)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--data", default=None, help="image folder (default ../shared/data/flowers)")
    parser.add_argument("--out", default=str(common.RESULTS), help="results file ('' to only print)")
    return parser.parse_args(argv)


def images_per_second(dataset, passes):
    """Median images/s over `passes` full passes."""
    rates = []
    for _ in range(passes):
        start, n = time.perf_counter(), 0
        for x, _ in dataset:
            n += int(x.shape[0])
        rates.append(n / (time.perf_counter() - start))
    return common.median(rates), n


def model_rate(model, data, args):
    timer = common.StepTimer()
    model.fit(data.take(args.steps), epochs=1, callbacks=[timer], verbose=0)
    return args.batch_size / common.median(common.timed_steps(timer.times, args.warmup))


def main(argv=None):
    args = parse_args(argv)
    started, load = time.time(), common.load_average()
    import keras
    import numpy as np
    import tensorflow as tf

    import tfft

    folder = common.flowers_or_none(args.data)
    if folder is None:
        raise SystemExit(f"No flower photos at {common.FLOWERS}; pass --data=<folder with one subfolder per class>.")
    size = (args.image_size, args.image_size, 3)
    load_kwargs = dict(image_size=args.image_size, batch_size=args.batch_size)
    uncached = tfft.data.from_image_directory(folder, cache=False, **load_kwargs).train
    cached = tfft.data.from_image_directory(folder, cache=True, **load_kwargs).train
    rows = []
    rate, n = images_per_second(uncached, args.passes)
    rows.append([f"tfft.data folder pipeline, uncached (decode + resize, {n} photos per pass)", rate])
    images_per_second(cached, 1)  # the first pass fills the in-memory cache
    rate_cached, _ = images_per_second(cached, args.passes)
    rows.append(["tfft.data folder pipeline, cached in memory", rate_cached])
    print(rows, flush=True)

    batches = list(uncached.take(args.steps))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    in_memory = tf.data.Dataset.from_tensor_slices((x, y)).batch(args.batch_size).prefetch(tf.data.AUTOTUNE)
    model_rows = []
    for backbone, phase in (("resnet50", "fine-tune"), ("resnet50", "head"), ("efficientnet_lite0", "head")):
        keras.utils.set_random_seed(0)
        model = tfft.build_model(backbone, num_classes=5, weights=None, input_shape=size,
                                 freeze="none" if phase == "fine-tune" else "backbone")
        tfft.compile_model(model, learning_rate=1e-4)
        rate = model_rate(model, in_memory, args)
        model_rows.append([f"{backbone} {phase}-phase training step, batches in memory", rate])
        print(model_rows[-1], flush=True)
        if phase == "fine-tune":
            fed = model_rate(model, uncached, args)
            model_rows.append([f"{backbone} {phase}-phase training step, fed by the uncached pipeline", fed])
            print(model_rows[-1], flush=True)
        del model
        keras.backend.clear_session()
    fastest = max(rate for what, rate in model_rows if "in memory" in what)
    body = common.table(["what", "images/s"], rows + model_rows)
    body += (f"\n\n**uncached pipeline / fastest model step: {rows[0][1] / fastest:.1f}x; cached pipeline / fastest "
             f"model step: {rows[1][1] / fastest:.1f}x** (above 1: the model, not the input, is the bottleneck)")
    notes = [f"{args.image_size} px, batch {args.batch_size}, weights=None (the cost of pretrained weights is the "
             f"same); model steps: median of {args.steps - args.warmup} steps after {args.warmup} warm-up steps; "
             f"pipeline: median of {args.passes} full passes",
             "the pipeline decodes in parallel (`num_parallel_calls=AUTOTUNE`) on the same 2 shared cores that train "
             "the model; the head-phase rows are without feature caching (with it, the backbone runs once)",
             "CPU only: no GPU on this machine, so no GPU rows"]
    common.report("Input pipeline vs model step rate", body, notes=notes, out=args.out or None, started=started,
                  load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
