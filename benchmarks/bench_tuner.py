"""A 20-trial KerasTuner search over head hyperparameters on a frozen backbone: plain
KerasTuner (the backbone recomputed every epoch of every trial) against
`tfft.TransferHyperModel` (backbone features computed once, shared by all trials).

Same data, same model, same trials (RandomSearch, same seed, the same hyperparameters
registered in the same order), one script; each search runs in a fresh process so their
memory is measured apart. Prints both wall times, the ratio, the resident memory after
every trial, and appends a section to benchmarks/RESULTS.md.

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_tuner.py

Options: --backbone=efficientnet_lite0 --weights=pretrained --images=400 --image_size=96
--trials=20 --epochs=5 --data=../shared/data/flowers --no-write (do not touch RESULTS.md).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common  # noqa: E402
REPO = os.path.dirname(HERE)
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "flowers")
# Head hyperparameters only (the rest as DEFAULT_SEARCH_SPACE), every key given so that the plain side
# can read the same values: learning rate, optimizer, weight decay, dropout, head width, label smoothing, batch.
SEARCH_SPACE = {"unfreeze": "none", "warmup_fraction": 0.0}


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="pretrained")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--image_size", type=int, default=96)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variant", choices=["plain", "tfft"], default=None, help="internal: run one search")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--no-write", dest="write", action="store_false")
    return parser.parse_args(argv)


def subset(root, per_class, out):
    """Symlinks the first `per_class` images of each class folder into `out`."""
    for cls in sorted(os.listdir(root)):
        src = os.path.join(root, cls)
        if not os.path.isdir(src):
            continue
        os.makedirs(os.path.join(out, cls), exist_ok=True)
        for name in sorted(os.listdir(src))[:per_class]:
            os.symlink(os.path.join(src, name), os.path.join(out, cls, name))
    return out


def run_search(args):
    """One search in this process; returns its timings, memory and trials."""
    import keras_tuner as kt

    import tfft
    from tfft import tuning

    start = time.perf_counter()
    classes = [c for c in os.listdir(args.data) if os.path.isdir(os.path.join(args.data, c))]
    root = subset(args.data, args.images // len(classes), tempfile.mkdtemp(prefix="bench_tuner_data_"))
    data = tfft.data.from_image_directory(root, image_size=args.image_size, validation_split=0.25, batch_size=32,
                                          seed=0)
    space = dict(SEARCH_SPACE, head_epochs=args.epochs)
    hypermodel = tfft.TransferHyperModel(args.backbone, num_classes=data.num_classes, weights=args.weights,
                                         input_shape=(args.image_size, args.image_size, 3), search_space=space,
                                         seed=0)

    class PlainHyperModel(kt.HyperModel):
        """What a KerasTuner user writes: build the model, fit it on the images."""

        def build(self, hp):
            config = hypermodel.trial_config(hp)  # the very same hyperparameters, in the same order
            model = tfft.build_model(args.backbone, num_classes=data.num_classes, weights=args.weights,
                                     input_shape=(args.image_size, args.image_size, 3), freeze="backbone",
                                     dropout=config["dropout"], head_units=tuple(config["head_units"]))
            return tfft.compile_model(model, optimizer=config["head_optimizer"],
                                      learning_rate=config["head_learning_rate"], weight_decay=config["weight_decay"],
                                      label_smoothing=config["label_smoothing"])

        def fit(self, hp, model, train, validation_data=None, **kwargs):
            config = hypermodel.trial_config(hp)
            kwargs.pop("epochs", None)
            batches = train.unbatch().batch(config["batch_size"])
            return model.fit(batches, validation_data=validation_data, epochs=config["head_epochs"], **kwargs)

    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_tuner_")
    options = dict(objective="val_accuracy", max_trials=args.trials, seed=args.seed, directory=workdir,
                   project_name=args.variant, overwrite=True)
    if args.variant == "plain":
        tuner = kt.RandomSearch(PlainHyperModel(), **options)
    else:
        tuner = tuning.make_tuner(hypermodel, algorithm="random", **options)

    memory, trial_seconds = [], []
    original_end, original_begin = tuner.on_trial_end, tuner.on_trial_begin

    def on_trial_begin(trial):
        trial_seconds.append(-time.perf_counter())
        original_begin(trial)

    def on_trial_end(trial):
        original_end(trial)
        trial_seconds[-1] += time.perf_counter()
        memory.append(round(common.rss_mb(), 1))

    tuner.on_trial_begin, tuner.on_trial_end = on_trial_begin, on_trial_end
    setup = time.perf_counter() - start
    tuner.search(data.train, validation_data=data.validation, verbose=0)
    total = time.perf_counter() - start
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    return {
        "variant": args.variant, "seconds": round(total, 1), "setup_seconds": round(setup, 1),
        "trial_seconds": [round(s, 2) for s in trial_seconds], "rss_mb": memory,
        "trials": [{k: v for k, v in t.hyperparameters.values.items()} for t in trials],
        "scores": [t.score for t in trials], "statuses": [t.status for t in trials],
        "counts": {k: len(v) for k, v in data.labels.items()},
        "feature_store": {"misses": tfft.features.default_store.misses, "hits": tfft.features.default_store.hits},
    }


def child(args, variant):
    cmd = [sys.executable, os.path.abspath(__file__), f"--variant={variant}", f"--backbone={args.backbone}",
           f"--weights={args.weights}", f"--data={args.data}", f"--images={args.images}",
           f"--image_size={args.image_size}", f"--trials={args.trials}", f"--epochs={args.epochs}",
           f"--seed={args.seed}"]
    print(f"running the {variant} search: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"the {variant} search failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len("BENCH "):])


def growth(rss):
    """Resident memory growth from trial 5 (after warm-up) to the last trial, MB."""
    if len(rss) < 6:
        return None
    return round(rss[-1] - rss[4], 1)


def report(args, plain, cached):
    ratio = plain["seconds"] / cached["seconds"]
    same = plain["trials"] == cached["trials"]
    lines = [
        f"## KerasTuner search, frozen backbone: plain vs tfft cached features ({time.strftime('%Y-%m-%d')})",
        "",
        f"{args.trials} trials (RandomSearch, seed {args.seed}, head hyperparameters only: learning rate, optimizer, "
        f"weight decay, dropout, head width, label smoothing, batch size), {args.epochs} epochs each, "
        f"`{args.backbone}` weights={args.weights} at {args.image_size} px, "
        f"{sum(plain['counts'].values())} flower photos ({plain['counts']}); CPU: {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, shared with other jobs. Each search in its own process.",
        "",
        "| search | wall time (s) | median trial (s) | RSS after trial 1 / 5 / last (MB) "
        "| growth trial 5 to last (MB) |",
        "|---|---|---|---|---|",
    ]
    for name, r in (("plain KerasTuner (backbone recomputed)", plain), ("tfft.TransferHyperModel (cached)", cached)):
        rss = r["rss_mb"]
        median = sorted(r["trial_seconds"])[len(r["trial_seconds"]) // 2]
        lines.append(f"| {name} | {r['seconds']} | {median} | {rss[0]} / {rss[min(4, len(rss) - 1)]} / {rss[-1]} "
                     f"| {growth(rss)} |")
    lines += [
        "",
        f"Speed-up end to end: **{ratio:.1f}x**. Same trials in both searches: {same}. "
        f"Best val_accuracy: plain {max(s for s in plain['scores'] if s is not None):.3f}, "
        f"tfft {max(s for s in cached['scores'] if s is not None):.3f}. tfft feature store: "
        f"{cached['feature_store']['misses']} feature computations, {cached['feature_store']['hits']} reuses. "
        "What tfft saves: the backbone's features are computed once per input pipeline and shared by all trials "
        "and epochs; head-only trials put their head on one shared, built, frozen backbone; the trial checkpoint "
        "(full model) is written once per phase instead of at every improving epoch.",
        "",
        "Repeat: `flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_tuner.py "
        f"--backbone={args.backbone} --weights={args.weights} --images={args.images} "
        f"--image_size={args.image_size} --trials={args.trials} --epochs={args.epochs}`",
        "",
    ]
    return "\n".join(lines), ratio


def main(argv=None):
    args = parse(argv)
    if args.variant:
        result = run_search(args)
        print("BENCH " + json.dumps(result), flush=True)
        return 0
    if not os.path.isdir(args.data):
        sys.exit(f"No data at {args.data} (the shared flower photos); pass --data=<folder of class folders>.")
    plain = child(args, "plain")
    cached = child(args, "tfft")
    text, ratio = report(args, plain, cached)
    print(text)
    print(json.dumps({"plain": plain, "tfft": cached}))
    if args.write:
        path = os.path.join(HERE, "RESULTS.md")
        with open(path, "a") as f:
            f.write(("\n" if os.path.exists(path) and os.path.getsize(path) else "# Benchmarks\n\n") + text + "\n")
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
