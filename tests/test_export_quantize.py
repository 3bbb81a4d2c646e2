"""Quantized exports (experiments.export --quantize): each file is loaded back and scored against the Keras model.

Two tiny trained workdirs (`experiments.train.run` with `:smoke` configs): a two-conv random CNN on digits,
and a tiny random BERT on a generated TSV; each export converts in seconds.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from experiments import config as config_lib
from experiments import export, train
from tfft import io

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "experiments", "configs")


def _config(name, **overrides):
    config = config_lib.load_config(os.path.join(CONFIGS, name) + ":smoke")
    config.verbose = "0"
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    config.lock()
    return config


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """Digits at 32 px on a two-conv random CNN (a .keras backbone), 6 images per class."""
    root = tmp_path_factory.mktemp("image")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="block2_conv")(x)
    keras.Model(inputs, x).save(root / "cnn.keras")
    workdir = str(root / "run")
    train.run(_config("digits_efficientnet_lite0.py", backbone=str(root / "cnn.keras"), weights="none",
                      **{"data.limit": 6}), workdir)
    return workdir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A tiny random BERT (vocabulary from the data) on 40 generated sentences."""
    root = tmp_path_factory.mktemp("text")
    words = {0: ["dull", "boring", "awful", "bad"], 1: ["great", "lovely", "fun", "good"]}
    rng = np.random.default_rng(0)
    rows = [f"a {' '.join(rng.choice(words[i % 2], 3))} movie\t{i % 2}" for i in range(40)]
    (root / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    workdir = str(root / "run")
    train.run(_config("sst2_bert_base.py", sequence_length=16, **{"data.path": str(root / "train.tsv"),
                                                                   "data.validation_path": "", "data.limit": 0}),
              workdir)
    return workdir


def held_out_split(workdir):
    """`(inputs, labels)` of the run's test split, as the Keras model takes them."""
    config = config_lib.config_from_json(os.path.join(workdir, "config.json"))
    model = keras.models.load_model(os.path.join(workdir, "model.keras"), compile=False)
    size = None if model.tfft_info["modality"] == "text" else (32, 32)
    from experiments import inputs

    with inputs.data_context(config) as scratch:
        bundle = inputs.load_data(config, scratch, class_names=model.tfft_info.get("class_names"), image_size=size)
        xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in bundle.test.unbatch()])
    x = np.array(xs, dtype=object) if size is None else np.stack(xs).astype(np.float32)
    return model, x, np.array(ys)


def tflite_outputs(path, feed):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    runner = interpreter.get_signature_runner("serve")
    return np.asarray(next(iter(runner(**feed).values())))


def predicted_class(probs):
    return np.argmax(probs, -1) if probs.shape[-1] > 1 else (probs[:, 0] > 0.5).astype(int)


def assert_same_class_where_keras_is_clear(keras_probs, probs, tolerance):
    """Within `tolerance` a prediction can flip only where Keras's top two are closer than twice that (the
    smoke models are barely trained): everywhere else the class must be the same."""
    two = np.sort(np.concatenate([keras_probs, 1 - keras_probs], -1) if keras_probs.shape[-1] == 1 else keras_probs)
    clear = two[:, -1] - two[:, -2] > 2 * tolerance
    assert np.array_equal(predicted_class(probs)[clear], predicted_class(keras_probs)[clear])


def file_digests(root):
    digests = {}
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                digests[os.path.relpath(os.path.join(folder, name), root)] = hashlib.sha256(f.read()).hexdigest()
    return digests


# --------------------------------------------------------------------------------------------
# TFLite: float16, dynamic range, int8 calibrated on the run's training data
# --------------------------------------------------------------------------------------------


def test_image_tflite_quantizations_load_and_score_like_keras(image_run):
    float32 = export.run(image_run, "tflite", examples=4)["tflite"]
    model, x, _ = held_out_split(image_run)
    keras_probs = np.asarray(model(x, training=False))
    for quantize, tolerance in (("float16", 1e-2), ("dynamic", 5e-2), ("int8", 1e-1)):
        result = export.run(image_run, "tflite", quantize=quantize, examples=4,
                            calibration_examples=20)[f"tflite_{quantize}"]
        assert result["path"].endswith(f"export/model_{quantize}.tflite") and result["checks"]["pixels"]["ok"]
        assert result["float32_size_bytes"] == pytest.approx(float32["size_bytes"], rel=0.01)
        assert result["size_ratio"] == pytest.approx(os.path.getsize(result["path"]) / result["float32_size_bytes"])
        probs = tflite_outputs(result["path"], {"pixels": x})  # the file itself, on every test image
        assert probs.shape == keras_probs.shape
        assert np.max(np.abs(probs - keras_probs)) <= tolerance, quantize
        assert_same_class_where_keras_is_clear(keras_probs, probs, np.max(np.abs(probs - keras_probs)))
    assert os.path.exists(float32["path"])  # the float32 file is still there, unchanged by the others
    recorded = io.read_json(os.path.join(image_run, "export", "export.json"))
    assert {"tflite", "tflite_float16", "tflite_dynamic", "tflite_int8"} <= set(recorded)


def test_text_tflite_takes_tokens_and_quantizes_to_int8(text_run):
    with pytest.raises(config_lib.UsageError, match="--text_inputs=tokens"):
        export.run(text_run, "tflite", quantize="int8")  # strings in: refused, with what works
    model, x, _ = held_out_split(text_run)
    keras_probs = np.asarray(model(tf.constant(x.astype(str)), training=False))
    feed = export.tokenize(model, x)
    assert sorted(feed) == sorted(export.TOKEN_INPUTS) and feed["token_ids"].shape == (len(x), 16)
    for quantize in ("none", "dynamic", "int8"):
        key = export.report_key("tflite", quantize)
        result = export.run(text_run, "tflite", quantize=quantize, text_inputs="tokens", examples=4)[key]
        assert os.path.basename(result["path"]).startswith("encoder") and result["checks"]["tokens"]["ok"]
        probs = tflite_outputs(result["path"], feed)
        assert np.max(np.abs(probs - keras_probs)) <= export.TOLERANCE[key]
        assert_same_class_where_keras_is_clear(keras_probs, probs, np.max(np.abs(probs - keras_probs)))
    vocabulary = open(os.path.join(text_run, "export", "vocabulary.txt")).read().split("\n")
    tokenizer = model.get_layer("preprocessing").preprocessor.tokenizer
    assert vocabulary[: tokenizer.vocabulary_size()] == tokenizer.get_vocabulary()


# --------------------------------------------------------------------------------------------
# Keras: Model.quantize("int8")
# --------------------------------------------------------------------------------------------


def test_keras_int8_loads_back_quantized_and_predicts_close(text_run):
    result = export.run(text_run, "keras", quantize="int8", examples=4)["keras_int8"]
    assert result["path"].endswith("export/model_int8.keras") and result["checks"]["reloaded"]["ok"]
    assert result["size_ratio"] < 1.0 and "token_embedding" in result["quantized_layers"]
    loaded = keras.models.load_model(result["path"])
    modes = {layer.name: layer.quantization_mode for layer in loaded._flatten_layers()
             if getattr(layer, "quantization_mode", None)}
    assert modes and set(modes.values()) == {"int8"} and "head_logits" in modes
    model, x, _ = held_out_split(text_run)
    keras_probs = np.asarray(model(tf.constant(x.astype(str)), training=False))
    int8_probs = loaded.predict(list(x.astype(str)), verbose=0)
    assert np.max(np.abs(int8_probs - keras_probs)) <= export.TOLERANCE["keras_int8"]


def test_keras_int8_of_a_cnn_quantizes_the_head_and_says_what_stays_float(image_run):
    result = export.run(image_run, "keras", quantize="int8", examples=4)["keras_int8"]
    assert result["quantized_layers"] == ["head_logits"]
    assert {"block1_conv", "block2_conv"} <= set(result["float_layers"])


# --------------------------------------------------------------------------------------------
# Bad requests: one sentence, exit status 2, no traceback, nothing in the workdir lost
# --------------------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.export", *args], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=600)


def test_bad_requests_fail_in_one_sentence_and_keep_the_workdir(image_run, tmp_path):
    workdir = str(tmp_path / "moved")
    shutil.copytree(image_run, workdir)
    config = io.read_json(os.path.join(workdir, "config.json"))
    config["data"].update(source="folder", path=str(tmp_path / "gone"))  # the training data was moved away
    io.write_json(os.path.join(workdir, "config.json"), config)
    before = file_digests(workdir)
    cases = [
        (["--format=tflite", "--quantize=int8"], "--quantize=int8 calibrates on the run's training data"),
        (["--format=tflite", "--quantize=int4"], "quantize"),
        (["--format=saved_model", "--quantize=float16"], "applies to --format=tflite or --format=keras"),
        (["--format=keras", "--quantize=dynamic"], "--format=keras takes --quantize=int8 only"),
    ]
    for args, message in cases:
        done = _cli(f"--workdir={workdir}", *args)
        assert done.returncode == 2, (args, done.stdout[-2000:], done.stderr[-2000:])
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout, (args, done.stderr)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, done.stderr
        if "--quantize=int8" in args:
            assert "--data=PATH" in errors[0] and "--quantize=dynamic" in errors[0]  # it names the fix
    assert file_digests(workdir) == before  # every earlier export and run file is still there, unchanged


def test_int8_calibrates_on_data_given_with_the_data_flag(image_run, tmp_path):
    from experiments import inputs

    x, y = inputs.digits_arrays()
    np.savez(tmp_path / "calibration.npz", x=x[:20], y=y[:20])
    result = export.run(image_run, "tflite", quantize="int8", examples=4, data=str(tmp_path / "calibration.npz"),
                        calibration_examples=10)["tflite_int8"]
    assert result["checks"]["pixels"]["ok"] and os.path.exists(result["path"])
