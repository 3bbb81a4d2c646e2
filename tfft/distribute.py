"""tf.distribute for tfft: a strategy by name, who writes files, what the batch and rate are.

tfft uses TensorFlow's own engine (`tf.distribute`) and nothing home-made: build the model
under `strategy.scope()` and `fine_tune`, `compile_model` and the tuner train under the
model's strategy. Batch sizes are global (a dataset's batch is split across replicas) and
learning rates are never rescaled behind the user's back: `fine_tune` prints the replica
count, the global batch and the rate at the start of each phase, and
`scaled_learning_rate` does the linear scaling when asked. Under
MultiWorkerMirroredStrategy every worker runs the same code, but only the chief keeps
files: `worker_workdir` gives the other workers a private temporary directory.
"""

import atexit
import json
import logging
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from tfft.errors import did_you_mean

logger = logging.getLogger("tfft")

STRATEGIES = ("auto", "cpu", "one_device", "mirrored", "multi_worker", "tpu", "default")


def _gpus():
    """Physical GPUs. Listing physical (not logical) devices leaves TensorFlow's runtime
    uninitialized, which MultiWorkerMirroredStrategy needs (it configures collectives at
    start-up) and which keeps `tf.config.set_logical_device_configuration` possible."""
    return tf.config.list_physical_devices("GPU")


def _cluster_size():
    """Tasks named in `TF_CONFIG`'s cluster (chief and workers); 0 without `TF_CONFIG`."""
    try:
        cluster = json.loads(os.environ.get("TF_CONFIG", "") or "{}").get("cluster", {})
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {os.environ.get('TF_CONFIG')!r}") from e
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def _resolve_auto(tpu):
    if tpu or os.environ.get("TPU_NAME") or tf.config.list_physical_devices("TPU"):
        return "tpu"
    if _cluster_size() > 1:
        return "multi_worker"
    return "mirrored" if len(_gpus()) > 1 else "one_device"


def _is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        getattr(strategy.extended, "_num_workers", 1) > 1)


_KERAS_PATCHED = False


def enable_keras_multi_worker():
    """Lets Keras 3's `fit` / `evaluate` run under a strategy of several replicas (one or many workers).

    Keras 3.15 (TensorFlow backend) fails there in two places (keras-team/keras#20585):
    before the first step `fit` averages a whole `(x, y)` batch over the replicas with
    `strategy.reduce("MEAN", ...)` to build the model symbolically, which fails on a nest
    under MultiWorkerMirroredStrategy (`Attempt to convert a value (PerReplica...)`) and on
    strings under any strategy (`AddN` has no string kernel: text models take raw strings);
    and each step's logs are averaged with `strategy.reduce("MEAN", v, axis=0)`, which fails
    on scalar metrics across workers (`Invalid reduction dimension 0`). This changes exactly
    those two points: the symbolic build takes the first local replica's batch (only shapes
    matter) whenever there are several replicas, and, for several workers, the logs are
    averaged across replicas (`axis=None`). Everything else, the gradients' all-reduce
    included, stays TensorFlow's. Idempotent; `get_strategy` and `fine_tune` call it.
    """
    global _KERAS_PATCHED
    if _KERAS_PATCHED:
        return
    from keras.src.backend.tensorflow import trainer as tf_trainer  # private: see BUILD_NOTES, "Private APIs"

    trainer_cls = tf_trainer.TensorFlowTrainer
    original_build = trainer_cls._maybe_symbolic_build
    original_reduce = tf_trainer.reduce_per_replica

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if strategy is None or strategy.num_replicas_in_sync < 2 or iterator is None:
            return original_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            data_batch = keras.tree.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v, next(it))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _is_multi_worker(strategy):
            return keras.tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original_reduce(values, strategy, reduction)

    trainer_cls._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _KERAS_PATCHED = True


def get_strategy(name="auto", *, devices=None, tpu=None):
    """Returns a `tf.distribute.Strategy`.

    Build the model under `strategy.scope()`; `fine_tune`, `compile_model` and the tuner
    then train under it. Call this first thing in a program: MultiWorkerMirroredStrategy
    must be created before TensorFlow runs anything.

    Args:
        name: `"auto"` (TPU if one is configured, MultiWorkerMirrored if `TF_CONFIG` names
            a cluster of more than one task, Mirrored over all GPUs if there is more than
            one, one device otherwise), `"cpu"`, `"one_device"` (the first GPU, else the
            CPU), `"mirrored"` (all GPUs of this host; without GPUs, all logical CPU
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
        if _is_multi_worker(name) or name.num_replicas_in_sync > 1:
            enable_keras_multi_worker()
        return name
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}.{did_you_mean(name, STRATEGIES)} Use one of {STRATEGIES}.")
    if name == "auto":
        name = _resolve_auto(tpu)
    if name == "default":
        strategy = tf.distribute.get_strategy()
    elif name == "cpu":
        strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if _gpus() else "/cpu:0")
    elif name == "mirrored":
        kind = "GPU" if _gpus() else "CPU"
        devices = devices or [d.name for d in tf.config.list_logical_devices(kind)]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        if strategy.num_replicas_in_sync > 1:
            enable_keras_multi_worker()
    elif name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multi_worker' needs TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}} '
                "set on every worker (see README, 'Many GPUs, many machines, TPU')."
            )
        _cluster_size()  # a clear error for malformed JSON
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        enable_keras_multi_worker()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or os.environ.get("TPU_NAME", ""))
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    logger.info("Strategy %s with %d replica(s).", type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def is_chief(strategy=None):
    """True on the process that writes checkpoints and artefacts.

    That is the task of type `"chief"`, or worker 0 of a cluster without a chief, as named
    by `TF_CONFIG`; a process without `TF_CONFIG` (one host, any number of GPUs) is the
    chief. A strategy that exposes `cluster_resolver` (MultiWorkerMirroredStrategy) is
    asked directly.

    Example:
    >>> is_chief()  # no TF_CONFIG: the only process
    True
    """
    resolver = getattr(getattr(strategy, "extended", None), "_cluster_resolver", None) or getattr(
        strategy, "cluster_resolver", None)
    if resolver is not None and getattr(resolver, "task_type", None):
        task_type, task_id = resolver.task_type, resolver.task_id
        spec = resolver.cluster_spec().as_dict()
        return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    has_chief = "chief" in config.get("cluster", {})
    return task.get("type") == "worker" and task.get("index", 0) == 0 and not has_chief


_WORKER_DIRS = set()


def _remove_worker_dirs():
    for path in list(_WORKER_DIRS):
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_remove_worker_dirs)


def worker_workdir(workdir, *, resume_from=(), strategy=None):
    """`workdir` on the chief; on other workers a private temporary directory.

    Under MultiWorkerMirroredStrategy every worker runs the same callbacks (checkpoints,
    backups, logs), but only the chief's files must persist: the others write into a
    temporary directory that is deleted when the process exits (the pattern of the
    TensorFlow multi-worker guide). `resume_from` names entries of `workdir` (files or
    folders, e.g. the run state and backups) that are copied into the temporary directory
    when they exist, so that every worker resumes from the chief's state when `workdir`
    is on a shared filesystem. Idempotent: a directory this function made is returned as is.

    Args:
        workdir: the run's directory, or None (returned as is).
        resume_from: names inside `workdir` to copy for a non-chief worker.
        strategy: passed to `is_chief`.

    Example:
    >>> worker_workdir("runs/a")  # on the chief (or without TF_CONFIG)
    'runs/a'
    """
    if workdir is None or is_chief(strategy) or os.fspath(workdir) in _WORKER_DIRS:
        return workdir
    private = tempfile.mkdtemp(prefix="tfft-worker-")
    _WORKER_DIRS.add(private)
    for name in resume_from:
        source = os.path.join(workdir, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(private, name))
        elif os.path.isfile(source):
            shutil.copy2(source, os.path.join(private, name))
    logger.info("Not the chief: files meant for %s go to the temporary %s.", workdir, private)
    return private


def dataset_batch_size(dataset):
    """The batch size of a batched `tf.data.Dataset`, or None when it cannot be told.

    Read from the static shape when the batch dimension is fixed, otherwise from the
    `batch` transformation in the dataset's pipeline; the dataset is not iterated.

    Example:
    >>> dataset_batch_size(tf.data.Dataset.range(10).batch(4).prefetch(1))
    4
    """
    leaves = tf.nest.flatten(dataset.element_spec)
    if leaves and getattr(leaves[0], "shape", None) is not None and leaves[0].shape.rank:
        if leaves[0].shape[0] is not None:
            return int(leaves[0].shape[0])
    queue, seen = [dataset], set()
    while queue:
        ds = queue.pop(0)
        if id(ds) in seen:
            continue
        seen.add(id(ds))
        size = getattr(ds, "_batch_size", None)
        if size is not None:
            value = tf.get_static_value(size)
            return int(value) if value is not None else None
        try:
            queue.extend(ds._inputs())
        except (AttributeError, NotImplementedError, TypeError):
            continue
    return None


def describe(strategy, dataset=None, learning_rate=None):
    """One line: replicas, global batch (and per replica), and the learning rate as given.

    Example:
    >>> describe(tf.distribute.get_strategy(), tf.data.Dataset.range(8).batch(4), 1e-3)
    '1 replica (_DefaultDistributionStrategy), global batch 4, learning rate 0.001 as given'
    """
    replicas = int(strategy.num_replicas_in_sync)
    text = f"{replicas} replica{'s' if replicas != 1 else ''} ({type(strategy).__name__})"
    batch = dataset_batch_size(dataset) if dataset is not None else None
    if batch is not None:
        text += f", global batch {batch}"
        if replicas > 1:
            text += f" ({batch / replicas:g} per replica)"
    elif dataset is not None:
        text += ", global batch unknown"
    if learning_rate is not None:
        shown = f"{learning_rate:g}" if isinstance(learning_rate, (int, float)) else type(learning_rate).__name__
        text += f", learning rate {shown} as given"
        if replicas > 1:
            text += " (not rescaled: see tfft.distribute.scaled_learning_rate)"
    return text


def scaled_learning_rate(base_rate, global_batch_size, base_batch_size=32):
    """Linear learning-rate scaling (Goyal et al. 2017): `base_rate * global / base batch`.

    tfft never rescales a rate by itself; call this when the global batch grows with the
    number of replicas.

    Example:
    >>> scaled_learning_rate(1e-3, global_batch_size=256, base_batch_size=32)
    0.008
    """
    return float(base_rate) * float(global_batch_size) / float(base_batch_size)
