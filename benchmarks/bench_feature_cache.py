"""(b) The head phase on cached backbone features against recomputing the backbone (issues 8, 15).

Command (appends a section to benchmarks/RESULTS.md; about 5-10 minutes on 2 shared cores):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_feature_cache.py

`tfft.fine_tune(..., head_epochs=10, finetune_epochs=0)` on `--examples` flower photos at
`--image-size` px with a frozen ResNet50 (random weights: the cost is the same; issue 15's
setting), once with `cache_features=True`
(features computed once, then 10 epochs of the head on them) and once with
`cache_features=False` (the backbone runs on every batch of every epoch), each on a fresh
model and a fresh `FeatureStore`, alternating for `--rounds` rounds. Decoded images are
cached in memory by `tfft.data` and warmed up before timing, so both sides read the same
in-memory pixels and the difference is the backbone. Reported: median wall time of the
whole head phase (feature extraction included) and the ratio (target: at least 8x), each
side's final validation accuracy, and the largest difference of the two models' predicted
probabilities on the validation photos (the cache must train the same model: the training
split reshuffles each epoch, and the cached features follow that order exactly).
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
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--examples", type=int, default=512, help="photos used (train + validation)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default=None, help="image folder (default ../shared/data/flowers)")
    parser.add_argument("--out", default=str(common.RESULTS), help="results file ('' to only print)")
    return parser.parse_args(argv)


def subset_folder(folder, per_class):
    """A temporary folder of symlinks to the first `per_class` photos of each class."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="tfft_bench_flowers_"))
    for cls in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        (root / cls.name).mkdir()
        for photo in sorted(cls.glob("*.jpg"))[:per_class]:
            (root / cls.name / photo.name).symlink_to(photo)
    return root


def weights_for(backbone):
    try:
        from tfft import efficientnet_lite

        if backbone == "efficientnet_lite0" and efficientnet_lite.pretrained_weights_path():
            return "pretrained"
    except Exception:  # noqa: BLE001 - the pip weights are optional here
        pass
    return None


def main(argv=None):
    args = parse_args(argv)
    started, load = time.time(), common.load_average()
    import keras

    import tfft
    from tfft import features as features_lib

    folder = common.flowers_or_none(args.data)
    if folder is None:
        raise SystemExit(f"No flower photos at {common.FLOWERS}; pass --data=<folder with one subfolder per class>.")
    subset = subset_folder(folder, args.examples // 5)
    bundle = tfft.data.from_image_directory(subset, image_size=args.image_size, batch_size=args.batch_size,
                                            validation_split=0.2, cache=True)
    for split in (bundle.train, bundle.validation):  # fill tf.data's in-memory cache of decoded images
        for _ in split:
            pass
    weights = weights_for(args.backbone)
    runs, probs = {True: [], False: []}, {}
    for r in range(args.rounds):
        for cache in ((True, False) if r % 2 == 0 else (False, True)):
            keras.utils.set_random_seed(0)
            model = tfft.build_model(args.backbone, num_classes=bundle.num_classes, weights=weights,
                                     input_shape=(args.image_size, args.image_size, 3))
            start = time.perf_counter()
            result = tfft.fine_tune(model, bundle.train, bundle.validation, head_epochs=args.epochs,
                                    finetune_epochs=0, cache_features=cache, patience=args.epochs + 1,
                                    feature_store=features_lib.FeatureStore(), seed=0, verbose=0)
            seconds = time.perf_counter() - start
            assert result.phases[0].cached_features is cache
            runs[cache].append((seconds, result.metrics.get("val_accuracy", float("nan"))))
            probs[cache] = model.predict(bundle.validation, verbose=0)
            print(f"round {r} cache={cache}: {seconds:.1f} s, val_accuracy {runs[cache][-1][1]:.3f}", flush=True)
            del model
            keras.backend.clear_session()
    cached = common.median([s for s, _ in runs[True]])
    uncached = common.median([s for s, _ in runs[False]])
    rows = [["cached features (computed once)", len(runs[True]), cached, runs[True][-1][1]],
            ["backbone recomputed every epoch", len(runs[False]), uncached, runs[False][-1][1]]]
    body = common.table([f"head phase, {args.epochs} epochs", "runs", "median wall time (s)",
                         "val accuracy (last run)"], rows)
    body += f"\n\n**speed-up uncached / cached: {uncached / cached:.2f}x** (target: at least 8x); largest difference " \
        f"of predicted probabilities between the two models: {abs(probs[True] - probs[False]).max():.2e} " \
        "(target: under 1e-3)"
    notes = [f"{args.backbone} (weights: {weights or 'random'}) frozen, {args.image_size} px, batch "
             f"{args.batch_size}, {sum(bundle.counts['train'])} train / {sum(bundle.counts['validation'])} validation "
             f"flower photos, decoded images cached in memory and warmed up before timing; "
             f"{args.rounds} rounds alternating which side goes first",
             "the wall time includes the one-time feature extraction of the cached side and the validation "
             "pass of every epoch on both sides",
             "both sides see the same batches in the same order (tfft.order.DatasetOrder): "
             "tests/test_recipe.py::test_cached_features_follow_a_tfft_datasets_epoch_order pins it"]
    common.report("Head phase: cached features vs recomputing the backbone", body, notes=notes,
                  out=args.out or None, started=started, load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
