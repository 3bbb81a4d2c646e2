"""One process of the tf.distribute tests (`tests/test_distribute.py`).

Logical devices and `TF_CONFIG` must be set before TensorFlow initializes, so each
strategy runs in its own process. Every process trains the same tiny tfft model on the same
data with `tfft.fine_tune` (head phase on cached features, then a fine-tune phase), and
writes its final weights and losses to `--out` (an `.npz` file).

Usage:

    python tests/distribute_worker.py --strategy one_device --out /tmp/a.npz
    python tests/distribute_worker.py --strategy mirrored --logical-cpus 2 --out /tmp/b.npz
    TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:P0", "127.0.0.1:P1"]}, "task": {"type": "worker", "index": 0}}' \\
        python tests/distribute_worker.py --strategy multi_worker --workdir /tmp/run --out /tmp/w0.npz
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

SHAPE = (16, 16, 3)
CLASSES = 3


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", required=True, help="a tfft.get_strategy name")
    parser.add_argument("--logical-cpus", type=int, default=1, help="split the CPU into this many logical devices")
    parser.add_argument("--out", required=True, help="where the weights and losses go (.npz)")
    parser.add_argument("--workdir", default=None, help="fine_tune's workdir")
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    return parser.parse_args(argv)


def split_cpu(n):
    """Splits the one physical CPU into `n` logical devices (before TF initializes)."""
    import tensorflow as tf

    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def tiny_backbone():
    """A two-conv network with BatchNormalization, as a stand-in for a real backbone."""
    import keras

    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.Activation("relu", name="conv1_relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny")


def data(n, batch_size):
    """Learnable, deterministic images and labels, batched (no shuffling: same order everywhere)."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    y = (np.arange(n) % CLASSES).astype("int64")
    x = (rng.random((n,) + SHAPE) + y[:, None, None, None] * 0.5).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


def train(strategy_name, *, workdir=None, examples=32, batch_size=8, head_epochs=2, finetune_epochs=1):
    """Builds the tiny model under the strategy and fine-tunes it; returns (strategy, model, result)."""
    import keras

    import tfft

    strategy = tfft.get_strategy(strategy_name)
    keras.utils.set_random_seed(1)
    with strategy.scope():
        model = tfft.build_model(tiny_backbone(), num_classes=CLASSES, dropout=0.0)
    dataset = data(examples, batch_size)
    result = tfft.fine_tune(model, dataset, dataset, head_epochs=head_epochs, finetune_epochs=finetune_epochs,
                            head_learning_rate=1e-2, finetune_learning_rate=1e-3, workdir=workdir, verbose=0,
                            seed=0)
    return strategy, model, result


def main(argv=None):
    args = parse_args(argv)
    split_cpu(args.logical_cpus)
    import numpy as np

    from tfft import distribute

    strategy, model, result = train(args.strategy, workdir=args.workdir, examples=args.examples,
                                    batch_size=args.batch_size, head_epochs=args.head_epochs,
                                    finetune_epochs=args.finetune_epochs)
    weights = {f"w{i}": np.asarray(w) for i, w in enumerate(model.get_weights())}
    np.savez(args.out, loss=np.asarray(result.history["loss"]), val_loss=result.metrics["val_loss"],
             replicas=strategy.num_replicas_in_sync, chief=distribute.is_chief(strategy),
             cached=result.phases[0].cached_features, **weights)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": result.history["loss"],
                      "chief": distribute.is_chief(strategy)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
