"""Post-training quantization of two fine-tuned models: file size, accuracy change and CPU latency per format.

For each model, one short `experiments.train` run (the same model for every format), then
`experiments.export.run` writes and checks each file:

* `flowers`: EfficientNet-Lite0 (converted ImageNet weights) on the flowers photos at 224 px
  (`experiments/configs/flowers_efficientnet_lite0.py`, `--flowers_head_epochs` head epochs on
  cached features and `--flowers_finetune_epochs` of the whole backbone); scored on the run's
  stratified 20% test split (300 photos).
* `sst2`: all-MiniLM-L6-v2 on SST-2 (`experiments/configs/sst2_minilm.py` on `--sst2_limit`
  training sentences per class, one head and `--sst2_finetune_epochs` fine-tuning epochs);
  scored on the run's validation split, the GLUE dev set (872 sentences). TFLite takes tokens
  (`--text_inputs=tokens`: TFLite cannot run the in-graph tokenizer, see experiments/export.py),
  so every TFLite row and the Keras latency rows run the encoder on the same token arrays.

Formats: the Keras model (float32), Keras `Model.quantize("int8")` (`--format=keras
--quantize=int8`), and TFLite float32 / float16 / dynamic range / int8 (`--format=tflite
--quantize=...`, int8 calibrated on `--calibration_examples` training examples). Accuracy: of
the whole held-out split, and its change against the Keras float32 model (points), the share of
identical predicted classes and the largest probability difference. Latency: one example at a
time, one thread (TFLite `num_threads=1`; TensorFlow's intra- and inter-op pools of 1 for Keras,
`predict_on_batch`), in a fresh process, the formats interleaved example by example; the median
over `--latency_examples` examples after 5 warm-up calls.

    flock /tmp/tfft_heavy.lock .venv/bin/python benchmarks/bench_quantize.py
    # a dry run, a few minutes
    .venv/bin/python benchmarks/bench_quantize.py --smoke --out ''
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

sys.path.insert(0, str(common.REPO))
TFLITE = ("none", "float16", "dynamic", "int8")
MODELS = ("flowers", "sst2")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default=",".join(MODELS))
    p.add_argument("--workdir_root", default=os.path.join(tempfile.gettempdir(), "tfft_bench_quantize"),
                   help="where the training runs go; a run whose model.keras exists is reused")
    p.add_argument("--flowers_head_epochs", type=int, default=10)
    p.add_argument("--flowers_finetune_epochs", type=int, default=1)
    p.add_argument("--sst2_limit", type=int, default=1000, help="training sentences per class")
    p.add_argument("--sst2_finetune_epochs", type=int, default=1)
    p.add_argument("--calibration_examples", type=int, default=100)
    p.add_argument("--latency_examples", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="the :smoke configs (a dry run)")
    p.add_argument("--out", default=str(common.RESULTS), help="results file ('' prints only)")
    p.add_argument("--latency_worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def train_run(name, args):
    """The run's workdir: trained now by `experiments.train`, or reused."""
    workdir = os.path.join(args.workdir_root, name + ("_smoke" if args.smoke else ""))
    if os.path.exists(os.path.join(workdir, "model.keras")) and os.path.exists(os.path.join(workdir, "metrics.json")):
        print(f"[bench_quantize] reusing {workdir}", flush=True)
        return workdir
    config = {"flowers": "flowers_efficientnet_lite0.py", "sst2": "sst2_minilm.py"}[name]
    overrides = {"flowers": [f"--config.head_epochs={args.flowers_head_epochs}",
                             f"--config.finetune_epochs={args.flowers_finetune_epochs}"],
                 "sst2": [f"--config.data.limit={args.sst2_limit}", "--config.head_epochs=1",
                          "--config.image_size=224",  # unused by text; experiments.inputs asks a text spec for it
                          f"--config.finetune_epochs={args.sst2_finetune_epochs}"]}[name]
    command = [sys.executable, "-m", "experiments.train",
               f"--config=experiments/configs/{config}" + (":smoke" if args.smoke else ""), f"--workdir={workdir}",
               "--config.verbose=2", "--config.overwrite=True"] + ([] if args.smoke else overrides)
    print("[bench_quantize] " + " ".join(command[1:]), flush=True)
    started = time.time()
    subprocess.run(command, cwd=common.REPO, check=True)
    print(f"[bench_quantize] trained {name} in {time.time() - started:.0f} s", flush=True)
    return workdir


def held_out(workdir):
    """`(model, inputs, labels)` of the run's held-out split (images: test; text: validation, the dev set)."""
    import keras
    import numpy as np

    import tfft  # noqa: F401
    from experiments import config as config_lib
    from experiments import inputs

    config = config_lib.config_from_json(os.path.join(workdir, "config.json"))
    config.data.augment = ""
    model = keras.models.load_model(os.path.join(workdir, "model.keras"), compile=False)
    text = model.tfft_info["modality"] == "text"
    size = None if text else tuple(model.input_shape[1:3])
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch, class_names=model.tfft_info.get("class_names"), image_size=size)
        split = bundle.validation if text else bundle.test
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in split.unbatch()])
    x = np.array(xs, dtype=object) if text else np.stack(xs).astype(np.float32)
    return model, x, np.array(ys)


def _export(workdir, fmt, quantize="none", **kwargs):
    """One `experiments.export.run`; a file beyond the export check's tolerance is still measured."""
    from experiments import export

    key = export.report_key(fmt, quantize)
    try:
        return export.run(workdir, fmt, quantize=quantize, examples=16, **kwargs)[key]
    except export.ExportMismatchError as e:
        print(f"[bench_quantize] {e}", flush=True)
        return json.load(open(os.path.join(workdir, "export", "export.json")))[key]


def export_all(workdir, args):
    """Every format's file, written and checked by experiments.export: `{label: export result}`."""
    text = "sst2" in os.path.basename(workdir)
    results = {"Keras float32": _export(workdir, "keras"), "Keras int8": _export(workdir, "keras", "int8")}
    for q in TFLITE:
        results[f"TFLite {'float32' if q == 'none' else q}"] = _export(
            workdir, "tflite", q, text_inputs="tokens" if text else "strings",
            calibration_examples=args.calibration_examples)
    return results


def predict_all(model, files, x, batch=32):
    """Probabilities of the held-out inputs for every format (TFLite on tokens for text)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from experiments import export

    text = model.tfft_info["modality"] == "text"
    keras_x = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in x] if text else x
    probs = {"Keras float32": model.predict(keras_x, batch_size=batch, verbose=0)}
    int8 = keras.models.load_model(files["Keras int8"]["path"], compile=False)
    probs["Keras int8"] = int8.predict(keras_x, batch_size=batch, verbose=0)
    feed = export.tokenize(model, x) if text else {"pixels": x}
    for label, result in files.items():
        if label.startswith("TFLite"):
            runner = tf.lite.Interpreter(model_path=result["path"]).get_signature_runner("serve")
            chunks = [np.asarray(next(iter(runner(**{k: v[i:i + batch] for k, v in feed.items()}).values())))
                      for i in range(0, len(x), batch)]
            probs[label] = np.concatenate(chunks)
    return probs


def predicted(p):
    import numpy as np

    return np.argmax(p, -1) if p.shape[-1] > 1 else (p[:, 0] > 0.5).astype(int)


def latency_worker(workdir, n):
    """Median ms per example of every format, one thread, interleaved (prints a RESULT line)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras
    import numpy as np

    from experiments import export

    report = json.load(open(os.path.join(workdir, "export", "export.json")))
    model, x, _ = held_out(workdir)
    x = x[:n]
    text = model.tfft_info["modality"] == "text"
    feed = export.tokenize(model, x) if text else {"pixels": x}
    calls = {}
    for label, key in (("Keras float32", None), ("Keras int8", "keras_int8")):
        m = model if key is None else keras.models.load_model(report[key]["path"], compile=False)
        m = export._token_model(m) if text else m
        tokens = [feed[name] for name in export.TOKEN_INPUTS] if text else None
        calls[label] = (lambda m, tokens: lambda i: m.predict_on_batch(
            [t[i:i + 1] for t in tokens] if tokens else x[i:i + 1]))(m, tokens)
    for q in TFLITE:
        runner = tf.lite.Interpreter(model_path=report[export.report_key("tflite", q)]["path"],
                                     num_threads=1).get_signature_runner("serve")
        calls[f"TFLite {'float32' if q == 'none' else q}"] = (
            lambda runner: lambda i: runner(**{k: v[i:i + 1] for k, v in feed.items()}))(runner)
    times = {label: [] for label in calls}
    labels = list(calls)
    for i in range(len(x) + 5):
        for label in labels[i % len(labels):] + labels[: i % len(labels)]:  # rotate who goes first
            start = time.perf_counter()
            calls[label](i % len(x))
            if i >= 5:
                times[label].append(1000 * (time.perf_counter() - start))
    common.dump({label: float(np.median(t)) for label, t in times.items()})


def measure(name, args):
    import numpy as np

    workdir = train_run(name, args)
    files = export_all(workdir, args)
    model, x, y = held_out(workdir)
    probs = predict_all(model, files, x)
    done = subprocess.run([sys.executable, __file__, "--latency_worker", workdir, "--latency_examples",
                           str(args.latency_examples)], cwd=common.REPO, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"latency worker failed:\n{done.stderr[-3000:]}")
    latency = common.parse_result(done.stdout)
    reference = probs["Keras float32"]
    base_accuracy = float(np.mean(predicted(reference) == y))
    tflite_float = files["TFLite float32"]["size_bytes"]
    rows = []
    for label, p in probs.items():
        accuracy = float(np.mean(predicted(p) == y))
        rows.append({"model": name, "format": label, "size_mb": files[label]["size_bytes"] / 1e6,
                     "size_vs_tflite_float32": files[label]["size_bytes"] / tflite_float, "accuracy": accuracy,
                     "change_points": 100 * (accuracy - base_accuracy),
                     "same_prediction": float(np.mean(predicted(p) == predicted(reference))),
                     "max_abs_diff": float(np.max(np.abs(p - reference))), "latency_ms": latency[label],
                     "examples": int(len(y))})
    info = {"workdir": workdir, "metrics": json.load(open(os.path.join(workdir, "metrics.json"))),
            "keras_int8_layers": (len(files["Keras int8"]["quantized_layers"]),
                                  len(files["Keras int8"]["float_layers"]))}
    return rows, info


def main(args):
    started, load = time.time(), common.load_average()
    rows, infos = [], {}
    for name in args.runs.split(","):
        data = common.REPO.parent / "shared" / "data" / ("flowers" if name == "flowers" else "sst2")
        if not data.exists():
            print(f"[bench_quantize] skipped {name}: {data} not found (see ../shared/data/README.md)")
            continue
        got, infos[name] = measure(name, args)
        rows += got
    if rows:
        write(args, rows, infos, started, load)


def write(args, rows, infos, started, load):
    table = common.table(
        ["model", "format", "file (MB)", "size / TFLite float32", "held-out accuracy", "change (points)",
         "same prediction", "max abs prob. diff", "latency (ms / example, 1 thread)"],
        [[r["model"], r["format"], f"{r['size_mb']:.2f}", f"{100 * r['size_vs_tflite_float32']:.0f}%",
          f"{100 * r['accuracy']:.2f}%", f"{r['change_points']:+.2f}", f"{100 * r['same_prediction']:.1f}%",
          f"{r['max_abs_diff']:.1e}", f"{r['latency_ms']:.2f}"] for r in rows])
    notes = []
    for name, info in infos.items():
        got = [r for r in rows if r["model"] == name]
        int8 = next(r for r in got if r["format"] == "TFLite int8")
        worst = max(abs(r["change_points"]) for r in got if r["format"] != "Keras float32")
        ratio = int8["size_vs_tflite_float32"]
        notes.append(
            f"{name}: {got[0]['examples']} held-out examples; TFLite int8 is {100 * ratio:.1f}% "
            f"of the float32 TFLite file (target <= 30%: {'met' if ratio <= 0.30 else 'missed'}); "
            f"largest accuracy change of a quantized format {worst:.2f} points (target within 0.5: "
            f"{'met' if worst <= 0.5 else 'missed'}); Keras int8 quantized {info['keras_int8_layers'][0]} layers and "
            f"left {info['keras_int8_layers'][1]} layers with weights in float32; workdir `{info['workdir']}`.")
    notes += ["Training: " + ("the `:smoke` configs" if args.smoke else
              f"flowers {args.flowers_head_epochs} head epochs (cached features) + {args.flowers_finetune_epochs} "
              f"fine-tuning epoch(s); SST-2 {args.sst2_limit} sentences per class, 1 head + "
              f"{args.sst2_finetune_epochs} fine-tuning epoch(s)") + f"; int8 calibrated on "
              f"{args.calibration_examples} training examples.",
              "Text rows: TFLite and the Keras latency run the encoder on token arrays (sequence_length tokens, "
              "the tokenizer outside); the Keras accuracy rows take raw strings (tokenizer inside).",
              "Sizes: Keras files saved without optimizer state; `size / TFLite float32` compares every file "
              "with the float32 TFLite file of the same model."]
    common.report("Quantized exports: size, accuracy and CPU latency (EfficientNet-Lite0 flowers, MiniLM SST-2)",
                  table, notes=notes, out=args.out or None, started=started, load_before=load)


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.latency_worker:
        latency_worker(parsed.latency_worker, parsed.latency_examples)
    else:
        main(parsed)
