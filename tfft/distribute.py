"""`get_strategy`: a tf.distribute strategy by name (TensorFlow's own engine, nothing home-made)."""

import json
import logging
import os

import tensorflow as tf

from tfft.errors import did_you_mean

logger = logging.getLogger("tfft")

STRATEGIES = ("auto", "cpu", "one_device", "mirrored", "multi_worker", "tpu", "default")


def _devices(kind):
    return tf.config.list_logical_devices(kind)


def get_strategy(name="auto", *, devices=None, tpu=None):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: `"auto"` (TPU if one is configured, Mirrored over all GPUs if there is more
            than one, one device otherwise), `"cpu"`, `"one_device"` (the first GPU, else
            the CPU), `"mirrored"` (all GPUs of this host; without GPUs, all logical CPU
            devices, for tests), `"multi_worker"` (MultiWorkerMirroredStrategy from
            `TF_CONFIG`), `"tpu"`, `"default"` (TensorFlow's default strategy), or a
            strategy instance (returned as is).
        devices: explicit device list for `"mirrored"`.
        tpu: TPU address / name for `"tpu"` (default: `$TPU_NAME` or the local TPU).

    Example:
    >>> strategy = get_strategy("cpu")
    >>> strategy.num_replicas_in_sync
    1
    """
    if isinstance(name, tf.distribute.Strategy):
        return name
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}.{did_you_mean(name, STRATEGIES)} Use one of {STRATEGIES}.")
    gpus = _devices("GPU")
    if name == "auto":
        if tpu or os.environ.get("TPU_NAME") or _devices("TPU"):
            name = "tpu"
        elif len(gpus) > 1:
            name = "mirrored"
        elif "TF_CONFIG" in os.environ and len(json.loads(os.environ["TF_CONFIG"]).get("cluster", {}).get("worker", [])) > 1:
            name = "multi_worker"
        else:
            name = "one_device"
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "cpu":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    elif name == "mirrored":
        devices = devices or ([d.name for d in gpus] if gpus else [d.name for d in _devices("CPU")])
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multi_worker' needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
                "set on every worker (see README, 'Many machines')."
            )
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    logger.info("Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy=None):
    """True on the process that writes checkpoints and artefacts (worker 0 / the chief)."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


def scaled_learning_rate(base_rate, global_batch_size, base_batch_size=32):
    """Linear learning-rate scaling (Goyal et al.): `base_rate * global_batch / base_batch`."""
    return float(base_rate) * float(global_batch_size) / float(base_batch_size)
