r"""Exports a run's model for serving, and checks each export against the Keras model.

    python -m experiments.export --workdir=runs/flowers --format=saved_model|tflite|keras|all
    python -m experiments.export --workdir=runs/flowers --format=tflite --quantize=float16|dynamic|int8
    python -m experiments.export --workdir=runs/flowers --format=keras --quantize=int8
    python -m experiments.export --workdir=runs/sst2 --format=tflite --text_inputs=tokens [--quantize=int8]

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

Post-training quantization, `--quantize` (TFLite Model Maker's three options, and Keras's int8),
each to a file of its own beside the float32 ones:

* `--format=tflite --quantize=float16` (`model_float16.tflite`): float16 weights.
* `--format=tflite --quantize=dynamic` (`model_dynamic.tflite`): int8 weights, activations
  quantized on the fly (dynamic range).
* `--format=tflite --quantize=int8` (`model_int8.tflite`): int8 weights and activations, whose
  ranges are calibrated on `--calibration_examples` examples of the run's training data
  (rebuilt, unaugmented, from `config.json`; `--data=PATH` calibrates on other data of the
  same kind). Ops without an int8 kernel stay float; inputs and outputs stay float32.
* `--format=keras --quantize=int8` (`model_int8.keras`): Keras's `Model.quantize("int8")` on
  the Dense, EinsumDense and Embedding layers (int8 kernels, per-channel scales); other
  layers (convolutions, normalization) stay float32. `keras.models.load_model` reads it.

Text models in TFLite: the model's tokenizer needs TensorFlow string ops (run by TFLite's Flex
delegate, which TF 2.21's TFLite interpreter no longer has) and tensorflow-text custom ops, so a
TFLite file with the tokenizer inside can be neither checked here nor int8-calibrated (the
converter runs the graph to calibrate). `--text_inputs=tokens` exports the model without its
tokenizer (`encoder*.tflite`: int32 `token_ids`, `segment_ids`, `padding_mask`, each
`(batch, sequence_length)`, in; every `--quantize` option works), with the tokenizer's
vocabulary as `export/vocabulary.txt`; strings go through the Keras preprocessor (or the
SavedModel) first.

Every export is loaded back and its predictions on real examples of the run's data are
compared with the Keras model's (max |difference| of the outputs, agreement of the top
class); `workdir/export/export.json` records the differences and the file sizes (quantized
files: also the size of the float32 one).
"""

import os
import shutil
import tempfile
import warnings

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from experiments import config as config_lib
from experiments import entry, inputs
from experiments import workdir as workdir_lib
from experiments.evaluate import data_config
from tfft import io

FORMATS = ("saved_model", "tflite", "keras")
QUANTIZE = ("none", "float16", "dynamic", "int8")
TEXT_INPUTS = ("strings", "tokens")
TOKEN_INPUTS = ("token_ids", "segment_ids", "padding_mask")
# Largest accepted |export - keras| over the checked outputs (probabilities in [0, 1]), per report key. For
# quantized files these catch a broken export (wrong inputs, a failed calibration), not an accuracy loss: a
# confident model's probability can move by a tenth under int8; benchmarks/bench_quantize.py measures accuracy.
TOLERANCE = {"saved_model": 1e-4, "keras": 1e-5, "tflite": 2e-3, "tflite_float16": 1e-2, "tflite_dynamic": 0.1,
             "tflite_int8": 0.25, "keras_int8": 0.1}
# Keras's `Model.quantize` covers these layer types (keras-hub's ReversibleEmbedding is an Embedding).
KERAS_QUANTIZABLE = ("Dense", "EinsumDense", "Embedding")


def define_flags(module_name=__name__):
    """`--workdir`, `--format`, `--quantize`, `--text_inputs`, `--data`, `--examples`, `--calibration_examples`,
    `--debug` (defined only when this module is the program)."""
    key = entry.module_key(module_name)
    entry.define_string_flag("workdir", None, "The workdir of a finished experiments.train run.",
                              module_name=module_name, required=True)
    flags.DEFINE_flag(flags.EnumFlag("format", "saved_model", "What to export.", FORMATS + ("all",)), module_name=key)
    flags.DEFINE_flag(flags.EnumFlag(
        "quantize", "none", "Post-training quantization: float16, dynamic or int8 with --format=tflite; int8 with "
        "--format=keras (Keras's Model.quantize).", QUANTIZE), module_name=key)
    flags.DEFINE_flag(flags.EnumFlag(
        "text_inputs", "strings", "Text models with --format=tflite: 'tokens' exports the model without its "
        "tokenizer (token_ids, segment_ids, padding_mask in), the only TFLite form of a text model.", TEXT_INPUTS),
        module_name=key)
    entry.define_string_flag("data", None, "Calibrate --quantize=int8 (and check the exports) on this data instead "
                              "of the run's: an image / text folder with one subfolder per class, a CSV / TSV "
                              "file, or an .npz file with x and y.", module_name=module_name)
    flags.DEFINE_integer("examples", 8, "How many real examples to check each export on.", module_name=key)
    flags.DEFINE_integer("calibration_examples", 100, "Training examples that calibrate --quantize=int8.",
                         module_name=key)
    entry.define_debug_flag(module_name)


class ExportMismatchError(RuntimeError):
    """An export's predictions differ from the Keras model's by more than the tolerance."""


def _decode_resize(height, width):
    def decode(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return tf.image.resize(tf.cast(image, tf.float32), (height, width))

    return decode


def _outputs(model, y):
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


TEXT_TFLITE = (
    "--format=tflite takes raw inputs for image models only: a text model's in-graph tokenizer needs TensorFlow "
    "string ops (Flex) and tensorflow-text custom ops that TF 2.21's TFLite interpreter cannot run, so such a file "
    "could be neither checked nor int8-calibrated; add --text_inputs=tokens to export the model without its "
    "tokenizer (int32 token_ids, segment_ids and padding_mask in; every --quantize option works), or serve strings "
    "with --format=saved_model.")


def _token_model(model):
    """The text model after its tokenizer: `[token tensors in TOKEN_INPUTS order]` in, the outputs out."""
    structure = {name: name for name in TOKEN_INPUTS}
    outputs = keras.tree.pack_sequence_as(structure, model.get_layer("preprocessing").output)
    return keras.Model([outputs[name] for name in TOKEN_INPUTS], model.output, name="encoder")


def tokenize(model, texts):
    """The text model's tokens of `texts` (strings, or two arrays of a sentence pair), padded to its
    `sequence_length`: `{name: int32 array}` for the `--text_inputs=tokens` TFLite file."""
    pre = model.get_layer("preprocessing").preprocessor
    x = tuple(_string_tensor(p) for p in texts) if isinstance(texts, list) else _string_tensor(texts)
    tokens = pre(x=x)
    return {name: np.asarray(tokens[name]).astype(np.int32) for name in TOKEN_INPUTS}


def _serving_function(model, text_inputs):
    """`(function, input_signature)` of the TFLite endpoint."""
    info = dict(getattr(model, "tfft_info", {}) or {})
    if info.get("modality") == "text":
        if text_inputs != "tokens":
            raise config_lib.UsageError(TEXT_TFLITE)
        encoder, length = _token_model(model), int(info.get("sequence_length") or 0) or None

        def from_tokens(token_ids, segment_ids, padding_mask):
            return encoder([token_ids, segment_ids, tf.cast(padding_mask, tf.bool)], training=False)

        return from_tokens, [tf.TensorSpec([None, length], tf.int32, name=name) for name in TOKEN_INPUTS]
    height, width = _image_size(model)
    return (lambda pixels: model(pixels, training=False)), [tf.TensorSpec([None, height, width, 3], tf.float32,
                                                                          name="pixels")]


def tflite_flatbuffer(model, quantize="none", *, representative=None, text_inputs="strings"):
    """The TFLite conversion of `model` (bytes), post-training quantized as `quantize` says.

    Args:
        model: a tfft model (images; text with `text_inputs="tokens"`).
        quantize: `"none"` (float32), `"float16"`, `"dynamic"` (int8 weights) or `"int8"` (int8
            weights and activations, calibrated on `representative`).
        representative: for `"int8"`: a list of input dicts (`{"pixels": (1, h, w, 3)}` or the
            token arrays), e.g. from `real_examples(..., calibration=n)`.
        text_inputs: `"tokens"` for a text model (see the module docstring).

    Example:
    ```python
    flatbuffer = export.tflite_flatbuffer(model, "int8", representative=[{"pixels": x[i:i + 1]} for i in range(100)])
    ```
    """
    function, signature = _serving_function(model, text_inputs)
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", function, input_signature=signature)
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if not representative:
                raise config_lib.UsageError("--quantize=int8 needs representative examples to calibrate on.")
            converter.representative_dataset = lambda: iter(representative)
        return converter.convert()


def save_tflite(model, path, quantize="none", *, representative=None, text_inputs="strings"):
    """Converts the model to TFLite (see `tflite_flatbuffer`) and writes it to `path` atomically."""
    flatbuffer = tflite_flatbuffer(model, quantize, representative=representative, text_inputs=text_inputs)
    with io.atomic_path(path) as out:
        with open(out, "wb") as f:
            f.write(flatbuffer)
    return path


def _tflite_predict(path, feed):
    """Runs the TFLite file's `serve` signature on `feed` (pixels, or a dict of token arrays)."""
    with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still TF 2.21's interpreter
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serve")
    feed = feed if isinstance(feed, dict) else {"pixels": np.asarray(feed, np.float32)}
    outputs = runner(**feed)
    return np.asarray(next(iter(outputs.values())))


def quantize_keras(model, mode="int8"):
    """Keras's `Model.quantize(mode)` on the layers it supports (Dense, EinsumDense, Embedding), in place.

    Returns:
        `(quantized, float_layers)`: the names of the quantized layers, and the names of the other
        layers with weights (convolutions, normalization, ...), which keep float32 weights.

    Example:
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    >>> quantize_keras(model)
    (['d'], [])
    """
    types = tuple(getattr(keras.layers, name) for name in KERAS_QUANTIZABLE)
    model.quantize(mode, filters=lambda layer: isinstance(layer, types))  # Keras quantizes leaf layers only
    leaves = [layer for layer in model._flatten_layers() if layer.weights and len(list(layer._flatten_layers())) == 1]
    quantized = [layer.name for layer in leaves if getattr(layer, "quantization_mode", None) == mode]
    return quantized, [layer.name for layer in leaves if layer.name not in quantized]


def _take(dataset, n):
    return [x for x, *_ in dataset.unbatch().take(n)]


def _as_inputs(xs, text):
    """Unbatched dataset elements as one model input: strings, a sentence-pair list, or pixels."""
    if text and isinstance(xs[0], tuple):
        return [np.array([x[i].numpy() for x in xs], dtype=object) for i in range(2)]
    if text:
        return np.array([x.numpy() for x in xs], dtype=object)
    return np.stack([x.numpy() for x in xs]).astype(np.float32)


def real_examples(config, model, n, *, calibration=0):
    """`n` real examples of the run's data, and `calibration` training examples.

    Returns:
        `(inputs for Keras, raw inputs for serving, calibration inputs)`. Images: the pipeline's
        0-255 pixels, their encoded bytes (the original files where the data are files, else
        lossless PNGs of the pixels), and unaugmented training pixels. Text: the strings, twice,
        and training strings. The calibration inputs are None when `calibration` is 0.
    """
    config = config.copy_and_resolve_references()
    config.data.augment = ""
    info = dict(getattr(model, "tfft_info", {}) or {})
    text = info.get("modality") == "text"
    size = None if text else _image_size(model)
    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch, class_names=info.get("class_names"), image_size=size)
        split = next(s for s in ("test", "validation", "train") if bundle.split(s) is not None)
        xs = _take(bundle.split(split), n)
        files = list(bundle.files.get(split, ()))[: len(xs)] if split != "train" else []
        encoded = [tf.io.read_file(f).numpy() for f in files] if size and len(files) == len(xs) else None
        train = _take(bundle.train, calibration) if calibration else None
    if not xs or (calibration and not train):
        raise config_lib.UsageError(f"The run's data ({config.data.source} {config.data.path or config.data.name}) "
                                    "yields no examples.")
    calibration_inputs = _as_inputs(train, text) if calibration else None
    if text:
        texts = _as_inputs(xs, text)
        return texts, texts, calibration_inputs
    pixels = _as_inputs(xs, text)
    if encoded is None:
        pixels = np.round(np.clip(pixels, 0, 255))
        encoded = [tf.io.encode_png(tf.cast(p, tf.uint8)).numpy() for p in pixels]
    return pixels, np.array(encoded, dtype=object), calibration_inputs


def _check(key, name, reference, actual, *, binary=False):
    """Max |export - keras| and agreement of the predicted class; ok when within `TOLERANCE[key]`."""
    reference, actual = np.asarray(reference, np.float64), np.asarray(actual, np.float64)
    diff = float(np.max(np.abs(reference - actual)))
    same = None
    if np.ndim(reference) > 1 and np.shape(reference)[-1] > 1:
        same = float(np.mean(np.argmax(reference, -1) == np.argmax(actual, -1)))
    elif binary:
        same = float(np.mean((reference > 0.5) == (actual > 0.5)))
    ok = diff <= TOLERANCE[key]
    agreement = "" if same is None else f", same class on {100 * same:.0f}%"
    print(f"[tfft] {key} {name}: max |export - keras| = {diff:.2e} on {len(reference)} examples{agreement} "
          f"({'ok' if ok else 'TOO LARGE'}, tolerance {TOLERANCE[key]:.0e})", flush=True)
    return {"max_abs_diff": diff, "examples": int(len(reference)), "same_top_class": same, "ok": ok}


def _string_tensor(texts):
    """A tf.string tensor of str or UTF-8 bytes (`astype(str)` would decode bytes as ASCII)."""
    return tf.constant([t if isinstance(t, bytes) else str(t).encode("utf-8") for t in np.asarray(texts).ravel()])


def _keras_predict(model, x):
    if isinstance(x, list):
        return np.asarray(model([_string_tensor(p) for p in x], training=False))
    if x.dtype == object:
        return np.asarray(model(_string_tensor(x), training=False))
    return np.asarray(model(x, training=False))


def report_key(fmt, quantize="none"):
    """The key of an export in `export.json` and in `run`'s result: `tflite`, `tflite_int8`, `keras_int8`, ..."""
    return fmt if quantize in (None, "none") else f"{fmt}_{quantize}"


def _info(model):
    return dict(getattr(model, "tfft_info", {}) or {})


def _sized(result, path, key, float_size=None):
    """Adds the file size (and its ratio to the float32 file's) to `result`, and prints it."""
    size = os.path.getsize(path)
    result["size_bytes"] = size
    if float_size:
        result.update(float32_size_bytes=int(float_size), size_ratio=size / float_size)
        print(f"[tfft] {key}: {size / 1e6:.2f} MB, {100 * size / float_size:.0f}% of the float32 file's "
              f"{float_size / 1e6:.2f} MB", flush=True)
    return result


def _export_tflite(model, out_dir, keras_inputs, reference, *, quantize, calibration, text_inputs, float_size):
    key, text = report_key("tflite", quantize), _info(model).get("modality") == "text"
    name = ("encoder" if text else "model") + ("" if quantize == "none" else f"_{quantize}") + ".tflite"
    representative = None
    if quantize == "int8":
        feed = tokenize(model, calibration) if text else {"pixels": np.asarray(calibration, np.float32)}
        count = len(next(iter(feed.values())))
        representative = [{k: v[i:i + 1] for k, v in feed.items()} for i in range(count)]
        print(f"[tfft] {key}: calibrating on {count} training examples", flush=True)
    path = save_tflite(model, os.path.join(out_dir, name), quantize, representative=representative,
                       text_inputs=text_inputs)
    feed = tokenize(model, keras_inputs) if text else keras_inputs
    binary = _info(model).get("task") in ("binary", "multilabel")
    checks = {("tokens" if text else "pixels"): _check(key, "tokens" if text else "pixels", reference,
                                                       _tflite_predict(path, feed), binary=binary)}
    result = {"path": os.path.abspath(path), "checks": checks, "quantize": quantize}
    if text:
        vocabulary = model.get_layer("preprocessing").preprocessor.tokenizer.get_vocabulary()
        io.write_text(os.path.join(out_dir, "vocabulary.txt"), "\n".join(vocabulary) + "\n")
        result.update(inputs=list(TOKEN_INPUTS), sequence_length=_info(model).get("sequence_length"),
                      vocabulary=os.path.abspath(os.path.join(out_dir, "vocabulary.txt")))
    if quantize != "none" and not float_size:
        float_size = len(tflite_flatbuffer(model, text_inputs=text_inputs))
    return _sized(result, path, key, float_size if quantize != "none" else None)


def _export_keras(model, out_dir, keras_inputs, reference, *, quantize, source, float_size):
    key = report_key("keras", quantize)
    if quantize == "none":
        path = os.path.join(out_dir, "model.keras")
        io.save_model(model, path)
        checks = {"keras": _check(key, "reloaded", reference, _keras_predict(keras.models.load_model(path),
                                                                           keras_inputs))}
        return _sized({"path": os.path.abspath(path), "checks": checks}, path, key)
    quantized_model = keras.models.load_model(source, compile=False)
    quantized, kept = quantize_keras(quantized_model, quantize)
    if not quantized:
        raise config_lib.UsageError(f"--format=keras --quantize={quantize}: the model has no Dense, EinsumDense or "
                                    "Embedding layer, the layers Keras quantizes; use --format=tflite instead.")
    print(f"[tfft] {key}: Keras quantized {len(quantized)} Dense / EinsumDense / Embedding layers; {len(kept)} "
          f"other layers with weights stay float32 ({', '.join(sorted(set(kept))[:5])}"
          f"{', ...' if len(set(kept)) > 5 else ''})", flush=True)
    path = os.path.join(out_dir, f"model_{quantize}.keras")
    io.save_model(quantized_model, path)
    reloaded = keras.models.load_model(path)
    binary = _info(model).get("task") in ("binary", "multilabel")
    checks = {"reloaded": _check(key, "reloaded", reference, _keras_predict(reloaded, keras_inputs), binary=binary)}
    if not float_size:
        with tempfile.TemporaryDirectory() as tmp:  # the float32 file without optimizer state, to compare sizes
            io.save_model(model, os.path.join(tmp, "model.keras"))
            float_size = os.path.getsize(os.path.join(tmp, "model.keras"))
    result = {"path": os.path.abspath(path), "checks": checks, "quantize": quantize, "quantized_layers": quantized,
              "float_layers": kept}
    return _sized(result, path, key, float_size)


def export_format(model, fmt, out_dir, keras_inputs, raw_inputs, *, quantize="none", calibration=None,
                  text_inputs="strings", source=None, float_size=None):
    """Writes one export and checks it; returns `{"path", "checks": {...}, "size_bytes", ...}`.

    `quantize`, `calibration` (training inputs for int8 TFLite) and `text_inputs` as for `run`;
    `source`: the `.keras` file `model` was loaded from (Keras int8 quantizes a fresh copy);
    `float_size`: the size of the same format's float32 file, when known (else it is converted
    or saved once more, in memory or a temporary folder, to compare sizes).
    """
    reference = _keras_predict(model, keras_inputs)
    if fmt == "keras":
        return _export_keras(model, out_dir, keras_inputs, reference, quantize=quantize, source=source,
                             float_size=float_size)
    if fmt == "tflite":
        return _export_tflite(model, out_dir, keras_inputs, reference, quantize=quantize, calibration=calibration,
                              text_inputs=text_inputs, float_size=float_size)
    info = _info(model)
    key = "outputs" if info.get("task") == "regression" else "probabilities"
    checks = {}
    path = save_serving_model(model, os.path.join(out_dir, "saved_model"))
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    if info.get("modality") == "text":
        if isinstance(raw_inputs, list):
            a, b = (_string_tensor(part) for part in raw_inputs)
            out = serve(text_a=a, text_b=b)
        else:
            out = serve(text=_string_tensor(raw_inputs))
        checks["strings"] = _check(fmt, "strings", reference, out[key].numpy())
    else:
        out = serve(images=tf.constant(list(raw_inputs)))
        checks["image_bytes"] = _check(fmt, "image bytes", reference, out[key].numpy())
        out = loaded.signatures["serving_pixels"](pixels=tf.constant(keras_inputs))
        checks["pixels"] = _check(fmt, "pixels", reference, out[key].numpy())
    return {"path": os.path.abspath(path), "checks": checks}


def check_request(fmt, quantize="none", text_inputs="strings"):
    """The formats to export; refuses a combination that cannot work before anything is read or written."""
    if fmt != "all" and fmt not in FORMATS:
        raise config_lib.UsageError(f"format={fmt!r}; use one of {FORMATS} or 'all'.")
    if quantize not in QUANTIZE:
        raise config_lib.UsageError(f"--quantize={quantize!r} is not a quantization this export knows; use float16, "
                                    "dynamic or int8 with --format=tflite, int8 with --format=keras, or none.")
    if text_inputs not in TEXT_INPUTS:
        raise config_lib.UsageError(f"--text_inputs={text_inputs!r}; use one of {TEXT_INPUTS}.")
    if quantize != "none" and fmt not in ("tflite", "keras"):
        raise config_lib.UsageError(f"--quantize={quantize} applies to --format=tflite or --format=keras, not "
                                    f"--format={fmt}: a SavedModel keeps its float32 weights (TFLite's converter "
                                    "and Keras's Model.quantize do the quantizing).")
    if fmt == "keras" and quantize not in ("none", "int8"):
        raise config_lib.UsageError(f"--format=keras takes --quantize=int8 only (Keras's Model.quantize); "
                                    f"{quantize} is a TFLite option: use --format=tflite --quantize={quantize}.")
    if text_inputs == "tokens" and fmt not in ("tflite", "all"):
        raise config_lib.UsageError(f"--text_inputs=tokens is for --format=tflite; --format={fmt} takes strings.")
    return FORMATS if fmt == "all" else (fmt,)


def _load_examples(config, model, examples, calibration, workdir, data):
    """`real_examples`, with the one-sentence fix when int8 has no training data to calibrate on."""
    try:
        if data:
            config = data_config(config, data)
        inputs.check_data(config)
        return real_examples(config, model, max(1, int(examples)), calibration=calibration)
    except (config_lib.UsageError, OSError, ValueError) as e:
        if not calibration:
            raise
        where = f"--data={data}" if data else f"{os.path.join(workdir, 'config.json')}"
        raise config_lib.UsageError(
            f"--quantize=int8 calibrates on the run's training data, which cannot be rebuilt from {where} "
            f"({str(e).splitlines()[0].rstrip('.')}); pass --data=PATH with examples of the same kind (an image / "
            "text folder with one subfolder per class, a CSV / TSV file, or an .npz file with x and y), or use "
            "--quantize=dynamic, which needs no data.") from None


def _source_stamp(path):
    """What identifies the model file an export was made from (its size and modification time)."""
    return {"size": os.path.getsize(path), "mtime": os.path.getmtime(path)}


def _float_size(previous, stamp):
    """The size of an earlier float32 export of the same model file, when it is still there as recorded."""
    if not previous or previous.get("source") != stamp or not previous.get("size_bytes"):
        return None
    path = previous.get("path", "")
    return previous["size_bytes"] if os.path.isfile(path) and os.path.getsize(path) == previous["size_bytes"] else None


def run(workdir, fmt="saved_model", *, examples=8, quantize="none", text_inputs="strings", data=None,
        calibration_examples=100):
    """Exports `workdir/model.keras` as `fmt` (or `"all"`), quantized as `quantize` says, and checks each export.

    Args:
        workdir: the run's folder (`config.json`, `model.keras`).
        fmt: `"saved_model"`, `"tflite"`, `"keras"` or `"all"`.
        examples: how many real examples each export is checked on.
        quantize: `"none"`, or post-training quantization: `"float16"`, `"dynamic"`, `"int8"`
            (`tflite`), `"int8"` (`keras`).
        text_inputs: text models with `tflite`: `"tokens"` (see the module docstring).
        data: calibrate (and check) on this data instead of the run's (a path as for
            `experiments.evaluate --data`).
        calibration_examples: training examples that calibrate int8 TFLite.

    Returns:
        `{key: {"path", "checks", "size_bytes", ...}}` with keys from `report_key` (`tflite`,
        `tflite_int8`, `keras_int8`, ...), also merged into `workdir/export/export.json`.

    Raises:
        UsageError: before anything is written: a combination that cannot work, a missing
            model, int8 without training data to calibrate on.
        ExportMismatchError: an export predicts differently from the Keras model.

    Example:
    ```python
    report = export.run("runs/flowers", "tflite", quantize="int8")
    print(report["tflite_int8"]["size_ratio"], report["tflite_int8"]["checks"]["pixels"]["max_abs_diff"])
    ```
    """
    formats = check_request(fmt, quantize, text_inputs)
    config = workdir_lib.read_workdir_config(workdir)
    path = os.path.join(workdir, "model.keras")
    if not os.path.exists(path):
        raise config_lib.UsageError(f"{workdir} holds no model.keras; run experiments.train with this workdir first.")
    model = keras.models.load_model(path, compile=False)
    text = _info(model).get("modality") == "text"
    if fmt == "all" and text and text_inputs != "tokens":
        formats = ("saved_model", "keras")
    if text and "tflite" in formats and text_inputs != "tokens":
        raise config_lib.UsageError(TEXT_TFLITE)
    if not text and text_inputs == "tokens":
        raise config_lib.UsageError("--text_inputs=tokens is for text models; this run's model takes images.")
    calibration = int(calibration_examples) if quantize == "int8" and "tflite" in formats else 0
    keras_inputs, raw_inputs, calibration_inputs = _load_examples(config, model, examples, calibration, workdir, data)
    out_dir = os.path.join(workdir, "export")
    report_path = os.path.join(out_dir, "export.json")
    report = io.read_json(report_path, {})
    keys = [report_key(f, quantize) for f in formats]
    stamp = _source_stamp(path)
    for f, key in zip(formats, keys):
        report[key] = export_format(model, f, out_dir, keras_inputs, raw_inputs, quantize=quantize,
                                    calibration=calibration_inputs, text_inputs=text_inputs, source=path,
                                    float_size=_float_size(report.get(f), stamp))
        report[key]["source"] = stamp
        print(f"[tfft] {key}: {report[key]['path']}", flush=True)
    io.write_json(report_path, report)
    bad = [f"{key} ({name}: {c['max_abs_diff']:.2e})" for key in keys for name, c in report[key]["checks"].items()
           if not c["ok"]]
    if bad:
        raise ExportMismatchError(f"Exports differ from the Keras model beyond tolerance: {', '.join(bad)}. "
                                  f"See {report_path}.")
    return {key: report[key] for key in keys}


def main(argv):
    f = flags.FLAGS
    try:
        entry.start(argv, "--workdir=DIR --format=tflite --quantize=int8", run, f.workdir, f.format,
                    examples=f.examples, quantize=f.quantize, text_inputs=f.text_inputs, data=f.data,
                    calibration_examples=f.calibration_examples)
    except ExportMismatchError as e:
        print(f"error: {e}", flush=True)
        raise SystemExit(1)


def launch(argv=None):
    """Defines the flags and runs `main` (the program's entry: `python -m experiments.export`, `tfft export`)."""
    entry.launch(define_flags, main, argv)


if __name__ == "__main__":
    launch()
