r"""Exports a run's model for serving, and checks each export against the Keras model.

    python -m experiments.export --workdir=runs/flowers --format=saved_model|tflite|keras|all

* `saved_model` (`workdir/export/saved_model/`): TensorFlow SavedModel whose serving
  signatures take raw inputs. Image models: `serving_default` takes encoded image bytes
  (JPEG, PNG, BMP, GIF; `images`: a string batch), `serving_pixels` takes 0-255 RGB pixels
  of any size (`pixels`: float32 `(batch, height, width, 3)`); both decode / resize as
  training did. Text models: `serving_default` takes strings (`text`; `text_a`, `text_b`
  for sentence pairs). Outputs: `probabilities` (or `outputs` for regression), and
  `class_ids` for multiclass models.
* `tflite` (`workdir/export/model.tflite`, image models): float32 0-255 pixels at the
  model's input size in, the model's outputs out.
* `keras` (`workdir/export/model.keras`): the Keras model file.

Every export is loaded back and its predictions on real examples of the run's data are
compared with the Keras model's; `workdir/export/export.json` records the differences.
"""

import os
import shutil
import tempfile

import numpy as np
from absl import flags

from experiments import config as config_lib
from experiments import entry, inputs
from experiments import workdir as workdir_lib

FORMATS = ("saved_model", "tflite", "keras")
# Largest accepted |export - keras| over the checked outputs (probabilities in [0, 1]).
TOLERANCE = {"saved_model": 1e-4, "keras": 1e-5, "tflite": 2e-3}


def define_flags(module_name=__name__):
    """`--workdir`, `--format`, `--examples`, `--debug` (defined only when this module is the program)."""
    key = entry.module_key(module_name)
    entry.define_string_flag("workdir", None, "The workdir of a finished experiments.train run.",
                              module_name=module_name, required=True)
    flags.DEFINE_flag(flags.EnumFlag("format", "saved_model", "What to export.", FORMATS + ("all",)), module_name=key)
    flags.DEFINE_integer("examples", 8, "How many real examples to check each export on.", module_name=key)
    entry.define_debug_flag(module_name)


class ExportMismatchError(RuntimeError):
    """An export's predictions differ from the Keras model's by more than the tolerance."""


def _decode_resize(height, width):
    import tensorflow as tf

    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), (height, width))

    return decode


def _outputs(model, y):
    import tensorflow as tf

    info = dict(getattr(model, "tfft_info", {}) or {})
    if info.get("task") == "regression":
        return {"outputs": y}
    result = {"probabilities": y}
    if info.get("task") == "multiclass":
        result["class_ids"] = tf.argmax(y, axis=-1, output_type=tf.int32)
    return result


def _image_size(model):
    shape = model.input_shape
    return int(shape[1]), int(shape[2])


def save_serving_model(model, path):
    """Writes a SavedModel with raw-input serving signatures (see the module docstring)."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(model)
    info = dict(getattr(model, "tfft_info", {}) or {})
    if info.get("modality") == "text":
        if info.get("sentence_pairs"):
            specs = [tf.TensorSpec([None], tf.string, name="text_a"), tf.TensorSpec([None], tf.string, name="text_b")]
            archive.add_endpoint("serving_default", lambda a, b: _outputs(model, model([a, b], training=False)),
                                 input_signature=specs)
        else:
            archive.add_endpoint("serving_default", lambda text: _outputs(model, model(text, training=False)),
                                 input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    else:
        height, width = _image_size(model)
        decode = _decode_resize(height, width)

        def from_bytes(images):
            pixels = tf.map_fn(decode, images, fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32))
            return _outputs(model, model(pixels, training=False))

        def from_pixels(pixels):
            pixels = tf.image.resize(tf.cast(pixels, tf.float32), (height, width))
            return _outputs(model, model(pixels, training=False))

        archive.add_endpoint("serving_default", from_bytes,
                             input_signature=[tf.TensorSpec([None], tf.string, name="images")])
        archive.add_endpoint("serving_pixels", from_pixels,
                             input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="pixels")])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".saved_model-", dir=os.path.dirname(os.path.abspath(path)))
    shutil.rmtree(tmp)
    archive.write_out(tmp, verbose=False)
    if os.path.exists(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def save_tflite(model, path):
    """Converts an image model to TFLite (float32 0-255 pixels at the model's input size in)."""
    import keras
    import tensorflow as tf

    info = dict(getattr(model, "tfft_info", {}) or {})
    if info.get("modality") == "text":
        raise config_lib.UsageError("--format=tflite is for image models: TFLite has no kernels for the text model's "
                                "in-graph WordPiece tokenizer. Export text models with --format=saved_model.")
    height, width = _image_size(model)
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda pixels: model(pixels, training=False),
                             input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        flatbuffer = converter.convert()
    from tfft import io

    with io.atomic_path(path) as out:
        with open(out, "wb") as f:
            f.write(flatbuffer)
    return path


def _tflite_predict(path, pixels):
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still TF 2.21's interpreter
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serve")
    outputs = runner(pixels=np.asarray(pixels, np.float32))
    return np.asarray(next(iter(outputs.values())))


def real_examples(config, model, n):
    """`n` real examples of the run's data: `(inputs for Keras, raw inputs for serving)`.

    Images: the pipeline's 0-255 pixels, and their encoded bytes (the original files where the
    data are files, else lossless PNGs of the pixels). Text: the strings, twice.
    """
    import tensorflow as tf

    config = config.copy_and_resolve_references()
    config.data.augment = ""
    info = dict(getattr(model, "tfft_info", {}) or {})
    size = None if info.get("modality") == "text" else _image_size(model)
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch, class_names=info.get("class_names"), image_size=size)
        split = next(s for s in ("test", "validation", "train") if bundle.split(s) is not None)
        dataset = bundle.split(split)
        xs = []
        for x, _ in (dataset.unbatch() if split != "train" else dataset.unbatch().take(n)).take(n):
            xs.append(x)
        files = list(bundle.files.get(split, ()))[: len(xs)] if split != "train" else []
        encoded = [tf.io.read_file(f).numpy() for f in files] if size and len(files) == len(xs) else None
    if info.get("modality") == "text":
        if isinstance(xs[0], tuple):
            pairs = [np.array([x[i].numpy() for x in xs], dtype=object) for i in range(2)]
            return pairs, pairs
        texts = np.array([x.numpy() for x in xs], dtype=object)
        return texts, texts
    pixels = np.stack([x.numpy() for x in xs]).astype(np.float32)
    if encoded is None:
        pixels = np.round(np.clip(pixels, 0, 255))
        encoded = [tf.io.encode_png(tf.cast(p, tf.uint8)).numpy() for p in pixels]
    return pixels, np.array(encoded, dtype=object)


def _check(fmt, name, reference, actual):
    diff = float(np.max(np.abs(np.asarray(reference, np.float64) - np.asarray(actual, np.float64))))
    same = float(np.mean(np.argmax(reference, -1) == np.argmax(actual, -1))) if np.ndim(reference) > 1 and \
        np.shape(reference)[-1] > 1 else None
    ok = diff <= TOLERANCE[fmt]
    print(f"[tfft] {fmt} {name}: max |export - keras| = {diff:.2e} on {len(reference)} examples "
          f"({'ok' if ok else 'TOO LARGE'}, tolerance {TOLERANCE[fmt]:.0e})", flush=True)
    return {"max_abs_diff": diff, "examples": int(len(reference)), "same_top_class": same, "ok": ok}


def _keras_predict(model, x):
    import tensorflow as tf

    if isinstance(x, list):
        return np.asarray(model([tf.constant(p.astype(str)) for p in x], training=False))
    if x.dtype == object:
        return np.asarray(model(tf.constant(x.astype(str)), training=False))
    return np.asarray(model(x, training=False))


def export_format(model, fmt, out_dir, keras_inputs, raw_inputs):
    """Writes one export and checks it; returns `{"path", "checks": {...}}`."""
    import keras
    import tensorflow as tf

    from tfft import io

    reference = _keras_predict(model, keras_inputs)
    info = dict(getattr(model, "tfft_info", {}) or {})
    key = "outputs" if info.get("task") == "regression" else "probabilities"
    checks = {}
    if fmt == "keras":
        path = os.path.join(out_dir, "model.keras")
        io.save_model(model, path)
        reloaded = keras.models.load_model(path)
        checks["keras"] = _check(fmt, "reloaded", reference, _keras_predict(reloaded, keras_inputs))
    elif fmt == "saved_model":
        path = save_serving_model(model, os.path.join(out_dir, "saved_model"))
        loaded = tf.saved_model.load(path)
        serve = loaded.signatures["serving_default"]
        if info.get("modality") == "text":
            if isinstance(raw_inputs, list):
                a, b = (tf.constant(part.astype(str)) for part in raw_inputs)
                out = serve(text_a=a, text_b=b)
            else:
                out = serve(text=tf.constant(raw_inputs.astype(str)))
            checks["strings"] = _check(fmt, "strings", reference, out[key].numpy())
        else:
            out = serve(images=tf.constant(list(raw_inputs)))
            checks["image_bytes"] = _check(fmt, "image bytes", reference, out[key].numpy())
            out = loaded.signatures["serving_pixels"](pixels=tf.constant(keras_inputs))
            checks["pixels"] = _check(fmt, "pixels", reference, out[key].numpy())
    else:
        path = save_tflite(model, os.path.join(out_dir, "model.tflite"))
        checks["pixels"] = _check(fmt, "pixels", reference, _tflite_predict(path, keras_inputs))
    return {"path": os.path.abspath(path), "checks": checks}


def run(workdir, fmt="saved_model", *, examples=8):
    """Exports `workdir/model.keras` as `fmt` (or `"all"`) and checks each export.

    Returns:
        `{format: {"path", "checks"}}`, also merged into `workdir/export/export.json`.

    Raises:
        ExportMismatchError: an export predicts differently from the Keras model.

    Example:
    ```python
    report = export.run("runs/flowers", "tflite")
    print(report["tflite"]["checks"]["pixels"]["max_abs_diff"])
    ```
    """
    import keras

    import tfft  # noqa: F401  (registers tfft's layers for loading)
    from tfft import io

    formats = FORMATS if fmt == "all" else (fmt,)
    for f in formats:
        if f not in FORMATS:
            raise config_lib.UsageError(f"format={f!r}; use one of {FORMATS} or 'all'.")
    config = workdir_lib.read_workdir_config(workdir)
    path = os.path.join(workdir, "model.keras")
    if not os.path.exists(path):
        raise config_lib.UsageError(f"{workdir} holds no model.keras; run experiments.train with this workdir first.")
    model = keras.models.load_model(path, compile=False)
    if fmt == "all" and (model.tfft_info or {}).get("modality") == "text":
        formats = ("saved_model", "keras")
    keras_inputs, raw_inputs = real_examples(config, model, max(1, int(examples)))
    out_dir = os.path.join(workdir, "export")
    report_path = os.path.join(out_dir, "export.json")
    report = io.read_json(report_path, {})
    for f in formats:
        report[f] = export_format(model, f, out_dir, keras_inputs, raw_inputs)
        print(f"[tfft] {f}: {report[f]['path']}", flush=True)
    io.write_json(report_path, report)
    bad = [f"{f} ({name}: {c['max_abs_diff']:.2e})" for f in formats for name, c in report[f]["checks"].items()
           if not c["ok"]]
    if bad:
        raise ExportMismatchError(f"Exports differ from the Keras model beyond tolerance: {', '.join(bad)}. "
                                  f"See {report_path}.")
    return {f: report[f] for f in formats}


def main(argv):
    try:
        entry.start(argv, "--workdir=DIR --format=saved_model", run, flags.FLAGS.workdir, flags.FLAGS.format,
                     examples=flags.FLAGS.examples)
    except ExportMismatchError as e:
        print(f"error: {e}", flush=True)
        raise SystemExit(1)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.export`, `tfft export`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
