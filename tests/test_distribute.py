"""tf.distribute: strategies by name, Mirrored and multi-worker runs equal one device,
only the chief writes files, mixed precision, the disk-backed feature cache.

Mirrored over 2 logical CPUs and the two-process MultiWorkerMirroredStrategy run in
subprocesses (`tests/distribute_worker.py`): logical devices and collectives must be set
up before TensorFlow initializes, which has happened in this process already.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import distribute
from tfft import features as features_lib

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distribute_worker.py")
TIMEOUT = 240  # seconds per subprocess; each takes 10-35 s on the shared 2-core CPU


def _load_worker():
    spec = importlib.util.spec_from_file_location("distribute_worker", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


worker = _load_worker()


def _tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


def _weights(npz):
    return [npz[f"w{i}"] for i in range(sum(k.startswith("w") for k in npz.files))]


@pytest.fixture(scope="module")
def reference():
    """The same tiny fine-tune on one device, in this process: (weights, per-epoch losses)."""
    _, model, result = worker.train("one_device")
    weights = [np.asarray(w) for w in model.get_weights()]
    keras.backend.clear_session()
    return weights, np.asarray(result.history["loss"])


def _assert_same_run(npz, reference):
    weights, losses = reference
    np.testing.assert_allclose(npz["loss"], losses, rtol=1e-4)
    for got, want in zip(_weights(npz), weights, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# Strategies by name ------------------------------------------------------------------

def test_strategy_names(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("TPU_NAME", raising=False)
    cpu = tfft.get_strategy("cpu")
    assert isinstance(cpu, tf.distribute.OneDeviceStrategy) and cpu.num_replicas_in_sync == 1
    assert isinstance(tfft.get_strategy("one_device"), tf.distribute.OneDeviceStrategy)
    assert isinstance(tfft.get_strategy("auto"), tf.distribute.OneDeviceStrategy)  # one CPU, no GPU
    assert tfft.get_strategy("default") is tf.distribute.get_strategy()
    assert tfft.get_strategy(cpu) is cpu


def test_unknown_strategy_names_the_close_match():
    with pytest.raises(ValueError, match="mirrored"):
        tfft.get_strategy("mirored")


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        tfft.get_strategy("multi_worker")


@pytest.mark.parametrize("config, chief", [
    (None, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
    ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
])
def test_is_chief_reads_tf_config(monkeypatch, config, chief):
    if config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(config))
    assert distribute.is_chief() is chief


def test_learning_rate_scaling_is_explicit():
    assert distribute.scaled_learning_rate(1e-3, 256) == pytest.approx(8e-3)
    assert distribute.scaled_learning_rate(1e-3, 64, base_batch_size=64) == pytest.approx(1e-3)


def test_global_batch_is_read_without_iterating():
    from tfft import order

    shuffled = order.epoch_shuffle(tf.data.Dataset.range(10), 10, seed=0).batch(4).map(lambda x: x).prefetch(2)
    assert distribute.dataset_batch_size(shuffled) == 4
    assert distribute.dataset_batch_size(tf.data.Dataset.range(10).batch(5, drop_remainder=True)) == 5
    assert distribute.dataset_batch_size(tf.data.Dataset.range(10)) is None
    line = distribute.describe(tfft.get_strategy("cpu"), shuffled, 1e-3)
    assert line == "1 replica (OneDeviceStrategy), global batch 4, learning rate 0.001 as given"


def test_fine_tune_prints_replicas_and_global_batch_per_phase(capsys):
    tfft.fine_tune(*_tiny_run(), head_epochs=1, finetune_epochs=1, verbose=0, default_callbacks=False)
    lines = [line for line in capsys.readouterr().out.splitlines() if "global batch" in line]
    assert lines == [
        "[tfft] phase head: 1 replica (_DefaultDistributionStrategy), global batch 4, learning rate 0.001 as given",
        "[tfft] phase finetune: 1 replica (_DefaultDistributionStrategy), global batch 4, learning rate 0.0001 "
        "as given",
    ]


def _tiny_run(n=8, batch_size=4):
    model = tfft.build_model(worker.tiny_backbone(), num_classes=worker.CLASSES, dropout=0.0)
    return model, worker.data(n, batch_size)


# Only the chief writes ---------------------------------------------------------------

def test_non_chief_workers_write_to_a_private_copy(tmp_path, monkeypatch):
    workdir = tmp_path / "run"
    (workdir / "phases").mkdir(parents=True)
    (workdir / "run_state.json").write_text('{"completed": []}')
    (workdir / "phases" / "head.weights.h5").write_text("weights")
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 0))
    assert distribute.worker_workdir(str(workdir)) == str(workdir)
    monkeypatch.setenv("TF_CONFIG", _tf_config([1, 2], 1))
    private = distribute.worker_workdir(str(workdir), resume_from=("run_state.json", "phases", "backup"))
    assert private != str(workdir) and not private.startswith(str(tmp_path))
    assert os.path.isfile(os.path.join(private, "run_state.json"))  # resumes from the chief's state
    assert os.path.isfile(os.path.join(private, "phases", "head.weights.h5"))
    assert distribute.worker_workdir(private) == private  # idempotent

    callbacks = tfft.default_callbacks(str(tmp_path / "other"), backup_dir=str(tmp_path / "other" / "backup" / "h"))
    paths = [getattr(cb, "filepath", None) or getattr(cb, "backup_dir", None) or getattr(cb, "filename", None)
             or getattr(cb, "log_dir", None) for cb in callbacks]
    paths = [p for p in paths if p]
    assert len(paths) == 4 and not any(str(p).startswith(str(tmp_path)) for p in paths), paths
    assert not (tmp_path / "other").exists()


# Mirrored and multi-worker runs equal one device ---------------------------------------

def test_mirrored_on_two_logical_cpus_equals_one_device(tmp_path, reference):
    out = tmp_path / "mirrored.npz"
    proc = subprocess.run([sys.executable, WORKER, "--strategy", "mirrored", "--logical-cpus", "2", "--out",
                           str(out)], env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = np.load(out)
    assert int(run["replicas"]) == 2 and bool(run["cached"])  # head phase on cached features, 4 per replica
    assert "2 replicas (MirroredStrategy), global batch 8 (4 per replica)" in proc.stdout
    _assert_same_run(run, reference)


def test_two_worker_multi_worker_mirrored_agrees_and_only_the_chief_writes(tmp_path, reference):
    ports = _free_ports(2)
    procs = []
    for index in range(2):
        # Each worker names its own workdir: the chief's must hold the run, the other's stay empty.
        cmd = [sys.executable, WORKER, "--strategy", "multi_worker", "--workdir", str(tmp_path / f"run{index}"),
               "--out", str(tmp_path / f"worker{index}.npz")]
        procs.append(subprocess.Popen(cmd, env=_env(TF_CONFIG=_tf_config(ports, index)), stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    chief, other = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert bool(chief["chief"]) and not bool(other["chief"])
    assert int(chief["replicas"]) == 2
    for a, b in zip(_weights(chief), _weights(other), strict=True):
        np.testing.assert_array_equal(a, b)  # synchronous training: identical weights
    _assert_same_run(chief, reference)  # and the same as one device with the same global batch
    assert (tmp_path / "run0" / "model.keras").is_file() and (tmp_path / "run0" / "run_state.json").is_file()
    assert not (tmp_path / "run1").exists()


# Mixed precision, disk-backed feature cache ---------------------------------------------

def test_mixed_bfloat16_trains_with_float32_outputs():
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model, dataset = _tiny_run(n=16)
        assert model.get_layer("backbone").get_layer("conv1").compute_dtype == "bfloat16"
        result = tfft.fine_tune(model, dataset, dataset, head_epochs=1, finetune_epochs=1, verbose=0,
                                default_callbacks=False)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.output.dtype == "float32"
    assert model.predict(worker.data(4, 4), verbose=0).dtype == np.float32
    assert all(np.isfinite(result.history["loss"])) and np.isfinite(result.metrics["val_loss"])


def test_disk_backed_feature_cache_equals_the_in_memory_one(tmp_path):
    results = []
    for store in (features_lib.FeatureStore(), features_lib.FeatureStore(memory_limit=1, directory=str(tmp_path))):
        keras.utils.set_random_seed(3)
        model, dataset = _tiny_run(n=16)
        result = tfft.fine_tune(model, dataset, dataset, head_epochs=3, finetune_epochs=0, verbose=0, seed=0,
                                default_callbacks=False, feature_store=store)
        assert result.phases[0].cached_features
        results.append((model.get_layer("head_logits").get_weights(), result.history["loss"]))
    assert os.listdir(tmp_path), "the tiny memory limit should have put the features on disk"
    (memory_weights, memory_loss), (disk_weights, disk_loss) = results
    np.testing.assert_allclose(disk_loss, memory_loss, rtol=1e-5)
    for a, b in zip(memory_weights, disk_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


# experiments.train under MultiWorkerMirroredStrategy, killed and resumed ------------------

def _tiny_backbone_file(path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="block1_rescale")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="block1_conv")(x)
    x = keras.layers.BatchNormalization(name="block1_bn")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="block2_conv")(x)
    keras.Model(inputs, x, name="tiny_cnn").save(path)
    return path


def _start_train(workdir, backbone, ports):
    config = os.path.join(os.path.dirname(HERE), "experiments", "configs", "digits_efficientnet_lite0.py")
    args = [sys.executable, "-m", "experiments.train", f"--config={config}:smoke", f"--workdir={workdir}",
            f"--config.backbone={backbone}", "--config.weights=none", "--config.strategy=multi_worker",
            "--config.head_epochs=2", "--config.finetune_epochs=6", "--config.batch_size=8", "--config.verbose=0"]
    return [subprocess.Popen(args, env=_env(TF_CONFIG=_tf_config(ports, i)), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=os.path.dirname(HERE)) for i in range(2)]


def test_multi_worker_command_line_run_killed_and_resumed_resumes_every_worker(tmp_path):
    """Both workers of a 2-process `experiments.train` run are killed mid fine-tune phase and
    started again with the same command: the worker that is not the chief resumes from the
    chief's run state too (so their collectives line up), and no epoch is lost or repeated."""
    import signal
    import time

    backbone = _tiny_backbone_file(str(tmp_path / "tiny.keras"))
    workdir = tmp_path / "run"
    procs = _start_train(workdir, backbone, _free_ports(2))
    state, deadline = workdir / "run_state.json", time.time() + TIMEOUT
    try:
        while time.time() < deadline and all(p.poll() is None for p in procs):
            try:
                if "3" in json.loads(state.read_text())["phases"].get("finetune", {}).get("epochs", {}):
                    break  # epochs 0-1 head, 2-7 fine-tune: killed two epochs into the fine-tune phase
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.01)
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.communicate()
    assert not (workdir / "metrics.json").exists()
    finetune = json.loads(state.read_text())["phases"]["finetune"]
    done, committed = max(int(e) for e in finetune["epochs"]), int(finetune["backup"]["epoch"])

    procs = _start_train(workdir, backbone, _free_ports(2))
    outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    resumed_at = []
    for out in outputs:  # both resumed the fine-tune phase after its last backed-up epoch
        starts = [line for line in out.splitlines() if line.startswith("[tfft] phase finetune: epochs 3..8")]
        assert starts and ", resuming at epoch " in starts[0], out[-3000:]
        resumed_at.append(int(starts[0].split("resuming at epoch ")[1].split()[0]))
        assert "phase head:" not in out  # the finished head phase is restored, not rerun
    assert resumed_at[0] == resumed_at[1] == committed + 1 > 3  # 1-based: after the last committed backup
    rows = json.loads(state.read_text())["phases"]
    assert sorted(map(int, rows["head"]["epochs"])) == [0, 1]
    assert sorted(map(int, rows["finetune"]["epochs"])) == list(range(2, 8)) and done < 7
    assert json.loads((workdir / "metrics.json").read_text())["phases"][0]["resumed"] is True


TEXT_UNDER_MIRRORED = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras_hub, tfft
vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "a"]
strategy = tfft.get_strategy("mirrored")
with strategy.scope():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocab), num_layers=1, num_heads=1, hidden_dim=4,
                                             intermediate_dim=8, max_sequence_length=8)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(keras_hub.models.BertTokenizer(vocabulary=vocab),
                                                                   sequence_length=6)
    model = tfft.build_model(backbone, preprocessor=preprocessor, num_classes=2, weights=None)
texts, labels = ["a good film", "a bad film"] * 4, np.array([1, 0] * 4)
result = tfft.fine_tune(model, (texts, labels), (texts, labels), head_epochs=1, finetune_epochs=1, batch_size=4,
                        verbose=0)
print("replicas", strategy.num_replicas_in_sync, "val_loss", result.metrics["val_loss"])
"""


def test_a_text_model_fine_tunes_under_mirrored_strategy():
    """Raw strings go through a 2-replica MirroredStrategy (Keras's symbolic build averaged the batch, strings too)."""
    proc = subprocess.run([sys.executable, "-c", TEXT_UNDER_MIRRORED], env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replicas 2 val_loss" in proc.stdout
