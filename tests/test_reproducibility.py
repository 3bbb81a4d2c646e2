"""Reproducibility: the same seed gives the same run, on CPU, in fresh processes.

What makes a tfft run repeatable: `keras.utils.set_random_seed(seed)` before the model is
built (initial weights, dropout's seed generators), `fine_tune(..., seed=seed)` (the
training order of epoch e is a function of (seed, e): `tfft.order.epoch_shuffle`), and
deterministic kernels, which TensorFlow's CPU kernels used here are;
`tf.config.experimental.enable_op_determinism()` makes TensorFlow raise on any op that has
no deterministic kernel instead. On GPUs, cuDNN picks convolution algorithms per run and
some kernels (`tf.math.unsorted_segment_sum`, scatter ops, XLA autotuning) add in
nondeterministic order: there `enable_op_determinism()` is needed, is slower, and bit
identity holds only for the same GPU model, driver and library versions.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import tfft

RUNNER = str(Path(__file__).with_name("fault_runner.py"))
REPO = str(Path(__file__).resolve().parents[1])


def run(workdir, *args):
    proc = subprocess.run([sys.executable, RUNNER, str(workdir), *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((Path(workdir) / "result.json").read_text())


@pytest.mark.parametrize("flags", [(), pytest.param(("--deterministic",), marks=pytest.mark.slow)])
def test_same_seed_same_metrics_in_fresh_processes(tmp_path, flags):
    """Two processes, same seed (dropout 0.2, shuffling, two phases): bit-identical results.

    With `--deterministic` the runs also call `enable_op_determinism()`, which raises on an
    op without a deterministic kernel: every op of a tfft run has one.
    """
    first, second = (run(tmp_path / name, *flags) for name in ("a", "b"))
    assert first["metrics"] == second["metrics"]
    assert first["history"] == second["history"]
    assert first["weights"] == second["weights"]


def tiny(seed, dropout=0.3):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu", name="conv")(inputs)
    backbone = keras.Model(inputs, x, name="tiny")
    return tfft.build_model(backbone, num_classes=2, dropout=dropout)


def fit(seed, data_seed=0):
    rng = np.random.default_rng(data_seed)
    y = np.arange(24) % 2
    x = (rng.random((24, 32, 32, 3)) * 100 + y[:, None, None, None] * 50).astype("float32")
    result = tfft.fine_tune(tiny(seed), (x, y), (x, y), head_epochs=2, finetune_epochs=1, batch_size=8, seed=seed,
                            verbose=0)
    return result.history["loss"], result.metrics


def test_same_seed_same_run_in_one_process():
    assert fit(3) == fit(3)


def test_another_seed_gives_another_run():
    """The seed reaches the weights, the dropout masks and the order: the check above can fail."""
    assert fit(3)[0] != fit(4)[0]


def test_seeded_augmentation_depends_on_the_epoch_only():
    """A resumed run starts at epoch e with fresh random layers: epoch e must augment as in the
    run that went through epochs 0..e-1 first (tfft.order.key_by_epoch, pinned by EpochSeed)."""
    from tfft import order

    x = (np.random.default_rng(0).random((8, 16, 16, 3)) * 255).astype("float32")
    bundle = tfft.data.from_arrays(x, np.arange(8) % 2, augment=["flip", "zoom", "contrast"], seed=3,
                                   batch_size=8, validation_split=0.0)
    pin = order.EpochSeed()

    def first_batch(epoch):
        pin.on_epoch_begin(epoch)
        return next(iter(bundle.train))[0].numpy()

    resumed = first_batch(2)  # as a run resumed at epoch 2
    first_batch(0), first_batch(1)
    uninterrupted = first_batch(2)
    np.testing.assert_array_equal(resumed, uninterrupted)
    assert np.abs(first_batch(3) - uninterrupted).max() > 1.0  # other epochs draw other augmentations
    pin.on_train_end()
