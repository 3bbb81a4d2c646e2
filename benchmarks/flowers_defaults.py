"""Flowers with `fine_tune`'s defaults: accuracy that holds on photos no choice has seen (issue 18).

Choosing a recipe (validation accuracy only; the final split is not scored):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/flowers_defaults.py --backbones efficientnet_lite0 \
        --seeds 0 --recipe '{"ema": 0.999}' --label ema

The final score of the chosen defaults, once, over three seeds and three backbones:

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/flowers_defaults.py \
        --backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2 --seeds 0,1,2 --score-final

A small two-class set (about 120 training photos a class):

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/flowers_defaults.py --classes daisy,dandelion \
        --per-class 150 --seeds 0,1,2 --score-final

Data: `../shared/data/flowers` (5 classes, 300 photos each). A FINAL split (20% of each
class, drawn with `--final-seed`, the same for every run) is set aside before anything
else and never used to choose: each run splits the other photos into train and
validation with its own `--seeds` value, trains with `tfft.build_model(backbone,
num_classes, input_shape=<native size>)` and `tfft.fine_tune(model, train, validation)`
with nothing else but `--recipe` (the defaults are the product), and reports validation
accuracy; with `--score-final` also accuracy on the final split (and with test-time flip
augmentation, `--tta`). A Markdown table with mean and spread goes to stdout and, with the
command, to `--out`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

import tfft  # noqa: E402
from tfft import data as data_lib  # noqa: E402
from tfft import tta as tta_lib  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(common.FLOWERS), help="folder with one subfolder per class")
    parser.add_argument("--backbones", default="efficientnet_lite0")
    parser.add_argument("--seeds", default="0", help="comma list: one train/validation split and run each")
    parser.add_argument("--final-seed", type=int, default=2026, help="seed of the final split (fixed)")
    parser.add_argument("--final-split", type=float, default=0.2)
    parser.add_argument("--validation-split", type=float, default=0.15, help="of the photos left after the final split")
    parser.add_argument("--classes", default="", help="comma list of class folders (default: all)")
    parser.add_argument("--per-class", type=int, default=0, help="at most this many photos per class (0: all)")
    parser.add_argument("--image-size", type=int, default=0, help="0: the backbone's native size")
    parser.add_argument("--resize", default="stretch", help="the loader's resize policy (its default: stretch)")
    parser.add_argument("--recipe", default="{}", help="JSON of fine_tune keywords (default: none, the rule)")
    parser.add_argument("--label", default="defaults", help="the row's name for the recipe")
    parser.add_argument("--score-final", action="store_true", help="also score the final split (once per recipe!)")
    parser.add_argument("--tta", default="flip", help="test-time views scored besides the plain ones ('' for none)")
    parser.add_argument("--out", default=str(common.RESULTS), help="Markdown file to append to ('' only prints)")
    return parser.parse_args(argv)


def split_folders(args, scratch):
    """`(pool_dir, final_dir, class_names)`: folders of symlinks, the final split set aside."""
    root = Path(args.data)
    names = [c for c in args.classes.split(",") if c] or sorted(p.name for p in root.iterdir() if p.is_dir())
    files, labels = [], []
    rng = np.random.default_rng(args.final_seed)
    for i, name in enumerate(names):
        found = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in data_lib.IMAGE_EXTENSIONS)
        if args.per_class:
            found = [found[j] for j in sorted(rng.permutation(len(found))[:args.per_class])]
        files += found
        labels += [i] * len(found)
    parts = data_lib.stratified_split_indices(labels, 0.0, args.final_split, seed=args.final_seed)
    out = {}
    for split, indices in (("pool", parts["train"]), ("final", parts["test"])):
        for i in indices:
            folder = Path(scratch) / split / names[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            os.symlink(files[i], folder / files[i].name)
        out[split] = str(Path(scratch) / split)
    return out["pool"], out["final"], names


def one_run(args, backbone, seed, pool, final, names, recipe):
    size = args.image_size or tfft.get_backbone_spec(backbone).input_shape[0]
    bundle = data_lib.from_image_directory({"train": pool, "test": final}, image_size=size, resize=args.resize,
                                           validation_split=args.validation_split, seed=seed, class_names=names)
    keras.utils.set_random_seed(seed)
    model = tfft.build_model(backbone, num_classes=len(names), input_shape=(size, size, 3))
    start = time.perf_counter()
    result = tfft.fine_tune(model, bundle.train, bundle.validation, seed=seed, verbose=0, **recipe)
    seconds = time.perf_counter() - start
    tfft.compile_model(model)
    row = {"backbone": backbone, "seed": seed, "size": size, "train": len(bundle.labels["train"]),
           "validation": model.evaluate(bundle.validation, return_dict=True, verbose=0)["accuracy"],
           "minutes": seconds / 60, "epochs": result.phases[-1].final_epoch}
    if args.tta:
        row["validation_tta"] = tta_lib.evaluate(model, bundle.validation, views=("original", *args.tta.split(",")))[
            "accuracy"]
    if args.score_final:
        row["final"] = model.evaluate(bundle.test, return_dict=True, verbose=0)["accuracy"]
        row["final_examples"] = len(bundle.labels["test"])
        if args.tta:
            row["final_tta"] = tta_lib.evaluate(model, bundle.test, views=("original", *args.tta.split(",")))[
                "accuracy"]
    print("[flowers_defaults] " + json.dumps(row), flush=True)
    keras.backend.clear_session()
    return row


def summarize(rows, keys):
    lines = []
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        mine = [r for r in rows if r["backbone"] == backbone]
        cells = [backbone, str(len(mine)), f"{statistics.mean(r['minutes'] for r in mine):.1f}"]
        for key in keys:
            values = [100 * r[key] for r in mine if key in r]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            each = ", ".join(f"{v:.1f}" for v in values)
            cells.append(f"**{statistics.mean(values):.1f}**{spread} ({each})" if values else "")
        lines.append(cells)
    return lines


def main(argv=None):
    args = parse_args(argv)
    recipe = json.loads(args.recipe)
    started, load = time.time(), common.load_average()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        pool, final, names = split_folders(args, scratch)
        for backbone in args.backbones.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows.append(one_run(args, backbone, seed, pool, final, names, recipe))
    keys = ["validation"] + (["validation_tta"] if args.tta else [])
    keys += (["final"] + (["final_tta"] if args.tta else [])) if args.score_final else []
    headers = ["backbone", "runs", "minutes per run"] + [f"{k} accuracy % (mean ± sd over seeds)" for k in keys]
    body = common.table(headers, summarize(rows, keys))
    print(body)
    notes = [f"recipe: {args.label} = fine_tune(model, train, validation, **{recipe}); classes {names}; "
             f"final split: {args.final_split:.0%} of each class (seed {args.final_seed}, "
             f"{rows[0].get('final_examples', '-')} photos), never used to choose; validation "
             f"{args.validation_split:.0%} of the rest; {rows[0]['train']} training photos; loader resize "
             f"{args.resize!r}; test-time views: original{', ' + args.tta if args.tta else ''}.",
             "Rows: " + json.dumps(rows)]
    if args.out:
        common.report(f"Flowers, fine_tune defaults: {args.label}", body, notes=notes, out=args.out,
                      started=started, load_before=load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
