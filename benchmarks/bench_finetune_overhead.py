"""(a) `tfft.fine_tune` step time against hand-written plain Keras; XLA on and off (issue 8).

Commands (each appends a section to benchmarks/RESULTS.md):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_finetune_overhead.py
    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_finetune_overhead.py --mode xla

`--mode overhead` (the default) times the fine-tune phase (backbone unfrozen, BatchNorm
frozen) of ResNet50 at 96 px, batch 32, on real flower photos: `tfft.fine_tune(...,
head_epochs=0, finetune_epochs=1)` with its default callbacks against the same network
written by hand (`keras.applications.ResNet50` + preprocessing + the same head,
BatchNorm layers set non-trainable, Adam at the same rate) trained with `model.fit`, on
the same `tf.data` pipeline. The two alternate for `--rounds` rounds; the first
`--warmup` steps of each round (tracing) are dropped, and the ratio is that of the median
step times (target: at most 1.05).

`--mode xla` times a full training step of tfft models (EfficientNet-Lite0 and ResNet50
at 96 px, batch 32, all layers trainable) compiled with `jit_compile=False` and `True`,
alternating, and records what `jit_compile="auto"` resolves to on this machine. On a GPU,
add `--policy mixed_float16` for the mixed-precision rows.
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
    parser.add_argument("--mode", choices=("overhead", "xla"), default="overhead")
    parser.add_argument("--backbone", default="resnet50", help="overhead mode: a keras.applications ResNet/VGG")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=12, help="steps per round (warm-up included)")
    parser.add_argument("--warmup", type=int, default=2, help="steps dropped at the start of each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--policy", default="float32",
                        help="xla mode: Keras dtype policy, e.g. mixed_float16 on a GPU, mixed_bfloat16")
    parser.add_argument("--data", default=None, help="image folder (default ../shared/data/flowers)")
    parser.add_argument("--out", default=str(common.RESULTS), help="results file ('' to only print)")
    return parser.parse_args(argv)


def load_batches(args):
    """`steps * batch_size` real photos as arrays (synthetic ones when the data is absent)."""
    import numpy as np

    import tfft

    n = args.steps * args.batch_size
    folder = common.flowers_or_none(args.data)
    if folder is None:
        rng = np.random.default_rng(0)
        return (rng.random((n, args.image_size, args.image_size, 3)) * 255).astype("float32"), \
            rng.integers(0, 5, n), "synthetic"
    bundle = tfft.data.from_image_directory(folder, image_size=args.image_size, batch_size=args.batch_size,
                                            cache=False)
    xs, ys = [], []
    for x, y in bundle.train:
        xs.append(x.numpy())
        ys.append(y.numpy())
        if sum(len(b) for b in ys) >= n:
            break
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], f"flowers photos ({folder})"


def pipeline(x, y, batch_size):
    """The one tf.data pipeline both sides train on."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def plain_keras_model(backbone, image_size, num_classes, dropout=0.2):
    """The Keras transfer-learning guide's model, written by hand."""
    import keras

    apps = {"resnet50": (keras.applications.ResNet50, keras.applications.resnet50.preprocess_input),
            "resnet101": (keras.applications.ResNet101, keras.applications.resnet.preprocess_input),
            "vgg16": (keras.applications.VGG16, keras.applications.vgg16.preprocess_input)}
    cls, preprocess = apps[backbone]
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Lambda(preprocess)(inputs)
    base = cls(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    base.trainable = True
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # the guide's Keras 3 correction (keras-team/keras#20298)
    return model


def run_overhead(args):
    import keras

    import tfft

    x, y, source = load_batches(args)
    data = pipeline(x, y, args.batch_size)
    lr = 1e-4
    keras.utils.set_random_seed(0)
    tfft_model = tfft.build_model(args.backbone, num_classes=5, weights=None,
                                  input_shape=(args.image_size, args.image_size, 3))
    plain = plain_keras_model(args.backbone, args.image_size, 5)
    plain.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    times = {"tfft.fine_tune": [], "plain model.fit": []}
    for r in range(args.rounds):
        for side in (("tfft", "plain") if r % 2 == 0 else ("plain", "tfft")):
            timer = common.StepTimer()
            if side == "tfft":
                tfft.fine_tune(tfft_model, data, head_epochs=0, finetune_epochs=1, finetune_learning_rate=lr,
                               callbacks=[timer], verbose=0)
                times["tfft.fine_tune"] += common.timed_steps(timer.times, args.warmup)
            else:
                plain.fit(data, epochs=1, callbacks=[timer], verbose=0)
                times["plain model.fit"] += common.timed_steps(timer.times, args.warmup)
            print(f"round {r} {side}: median step {common.median(timer.times[args.warmup:]):.3f} s", flush=True)
    t_tfft, t_plain = common.median(times["tfft.fine_tune"]), common.median(times["plain model.fit"])
    rows = [[name, len(ts), common.median(ts), args.batch_size / common.median(ts), min(ts)]
            for name, ts in times.items()]
    body = common.table(["side", "timed steps", "median step (s)", "images/s", "fastest step (s)"], rows)
    ratio = t_tfft / t_plain
    body += f"\n\n**ratio tfft / plain (median step time): {ratio:.3f}** (target: at most 1.05)"
    notes = [f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, weights=None, fine-tune phase "
             "(backbone trainable, BatchNorm frozen), Adam 1e-4 (tfft: cosine schedule), "
             f"data: {source}, {args.steps} steps per round, first {args.warmup} dropped, {args.rounds} rounds "
             "alternating which side goes first",
             "tfft side: `fine_tune` with its default callbacks (EpochSeed, TerminateOnNaN, EarlyStopping) and "
             "default metrics (accuracy, F1, precision, recall); plain side: `model.fit` with accuracy only"]
    return "fine_tune overhead vs plain Keras", body, notes, {"ratio": ratio}


def run_xla(args):
    import keras

    import tfft

    x, y, source = load_batches(args)
    data = pipeline(x, y, args.batch_size)
    rows, notes, result = [], [], {}
    keras.mixed_precision.set_global_policy(args.policy)
    for backbone in ("efficientnet_lite0", "resnet50"):
        keras.utils.set_random_seed(0)
        models = {}
        for jit in (False, True):
            model = tfft.build_model(backbone, num_classes=5, weights=None, freeze="none",
                                     input_shape=(args.image_size, args.image_size, 3))
            tfft.compile_model(model, learning_rate=1e-4, jit_compile=jit)
            models[jit] = model
        auto = tfft.build_model(backbone, num_classes=5, weights=None, input_shape=(args.image_size,) * 2 + (3,))
        tfft.compile_model(auto, jit_compile="auto")
        notes.append(f"{backbone}: `jit_compile=\"auto\"` resolves to {auto.jit_compile} here")
        times = {False: [], True: []}
        for r in range(args.rounds):
            for jit in ((False, True) if r % 2 == 0 else (True, False)):
                timer = common.StepTimer()
                models[jit].fit(data, epochs=1, callbacks=[timer], verbose=0)
                times[jit] += common.timed_steps(timer.times, args.warmup)
                print(f"{backbone} round {r} jit={jit}: median {common.median(timer.times[args.warmup:]):.3f} s",
                      flush=True)
        off, on = common.median(times[False]), common.median(times[True])
        rows.append([backbone, common.median(times[False]), common.median(times[True]), on / off])
        result[backbone] = on / off
        del models, auto
        keras.backend.clear_session()
    body = common.table(["model (96 px, batch 32, full training step)", "XLA off: median step (s)",
                         "XLA on: median step (s)", "ratio on / off"], rows)
    notes.append(f"data: {source}; {args.steps} steps per round, first {args.warmup} dropped (XLA compiles "
                 f"there), {args.rounds} rounds alternating; CPU only: no GPU on this machine, so no GPU rows")
    notes.append(f"dtype policy: {args.policy}")
    return f"XLA (jit_compile) on vs off, {args.policy}", body, notes, result


def main(argv=None):
    args = parse_args(argv)
    started, load = time.time(), common.load_average()
    title, body, notes, _ = (run_overhead if args.mode == "overhead" else run_xla)(args)
    common.report(title, body, notes=notes, out=args.out or None, started=started, load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
