"""Augmentation by name (Keras's RandAugment, RandomErasing, AugMix, RandomColorJitter, presets) and
label-aware MixUp / CutMix (`tfft.data.augment`): 32x32 images, a few batches, no network."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfft
from tfft import order
from tfft.data import augment

SHAPE = (32, 32, 3)


def images(n=16, seed=0):
    return (np.random.default_rng(seed).random((n,) + SHAPE) * 255).astype("float32")


def batches(x, y, batch_size=4, weights=None):
    parts = (x, y) if weights is None else (x, y, weights)
    return tf.data.Dataset.from_tensor_slices(parts).batch(batch_size)


def constant_images(n):
    """Image i is the constant i * 10, so a mixed pixel tells which images went into it."""
    return np.broadcast_to((np.arange(n) * 10.0)[:, None, None, None], (n,) + SHAPE).astype("float32")


def collect(dataset, part):
    return np.concatenate([np.asarray(batch[part]) for batch in dataset])


def per_epoch(dataset, part=0):
    """The dataset's `part` in a given epoch, as a `fit` with `EpochSeed` would see it."""
    pin = order.EpochSeed()

    def epoch(e):
        pin.on_epoch_begin(e)
        return collect(dataset, part)

    return epoch, pin


# ---------------------------------------------------------------------------
# Augmentation names.


def kinds(layer):
    return [type(sub).__name__ for sub in layer.layers]


def test_new_names_and_presets_build_keras_layers():
    layer = augment.augmentation_layer("randaugment, erasing,augmix,color_jitter", seed=0)
    assert kinds(layer) == ["RandAugment", "RandomErasing", "AugMix", "RandomColorJitter"]
    assert all(tuple(sub.value_range) == (0, 255) for sub in layer.layers)
    strong = augment.augmentation_layer(["strong", "zoom"])
    assert kinds(strong) == ["RandomFlip", "RandAugment", "RandomErasing", "RandomZoom"]
    assert kinds(augment.augmentation_layer("default")) == ["RandomFlip", "RandomRotation", "RandomZoom",
                                                            "RandomContrast"]
    assert augment.augmentation_layer("") is None and augment.augmentation_layer(None) is None


@pytest.mark.parametrize("name", ["randaugment", "erasing", "augmix", "color_jitter"])
def test_new_augmentations_run_in_tf_data_on_raw_pixels(name):
    x = images(16)
    augmented = augment.augment_batches(batches(x, np.arange(16) % 2), name, seed=1)
    assert augment.is_augmented(augmented)
    out = collect(augmented, 0)
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - x).max() > 10.0  # it changed pixels, on the 0-255 scale
    np.testing.assert_array_equal(collect(augmented, 1), np.arange(16) % 2)


def test_seeded_augmentation_is_keyed_by_epoch_over_many_batches():
    """Each batch draws after the one before (a sequential map): with several batches per epoch a
    resumed run still augments epoch e as the uninterrupted one."""
    dataset = augment.augment_batches(batches(images(16), np.zeros(16)), "randaugment,erasing", seed=3)
    epoch, pin = per_epoch(dataset)
    try:
        resumed = epoch(2)
        epoch(0), epoch(1)
        np.testing.assert_array_equal(epoch(2), resumed)
        assert np.abs(epoch(3) - resumed).max() > 1.0
    finally:
        pin.on_train_end()


def test_unknown_augmentation_names_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown augmentation 'randaugmnt'. Did you mean 'randaugment'") as error:
        augment.augmentation_layer("flip,randaugmnt")
    assert "color_jitter" in str(error.value) and "'strong'" in str(error.value)


# ---------------------------------------------------------------------------
# MixUp / CutMix.


def test_mixup_mixes_images_and_labels_with_the_same_weights():
    n = 8
    mixed = augment.mix_batches(batches(constant_images(n), np.arange(n), batch_size=n), task="multiclass",
                                num_classes=n, mixup_alpha=0.8, seed=0)
    x, y = next(iter(mixed))
    x, y = x.numpy(), y.numpy()
    assert y.shape == (n, n) and np.allclose(y.sum(-1), 1.0)
    np.testing.assert_allclose(x[:, 0, 0, 0], y @ (np.arange(n) * 10.0), atol=1e-3)
    assert (y.max(-1) < 0.99).sum() >= n // 2  # mixed, not one-hot


def test_cutmix_label_weights_are_the_pasted_pixel_fractions():
    n = 8
    mixed = augment.mix_batches(batches(constant_images(n), np.arange(n), batch_size=n), task="multiclass",
                                num_classes=n, cutmix_alpha=1.0, seed=0)
    x, y = next(iter(mixed))
    fractions = np.stack([(x.numpy()[..., 0] == 10.0 * k).mean(axis=(1, 2)) for k in range(n)], -1)
    np.testing.assert_allclose(y.numpy(), fractions, atol=1e-6)
    assert (y.numpy().max(-1) < 0.99).any()


def test_mixing_is_keyed_by_epoch_and_switches_between_mixup_and_cutmix():
    n = 16
    dataset = augment.mix_batches(batches(constant_images(n), np.arange(n) % 4, batch_size=4), task="multiclass",
                                  num_classes=4, mixup_alpha=0.8, cutmix_alpha=1.0, prob=0.8, seed=5)
    epoch, pin = per_epoch(dataset, part=1)
    try:
        resumed = epoch(1)
        epoch(0)
        np.testing.assert_array_equal(epoch(1), resumed)
        assert not np.array_equal(epoch(2), resumed)
    finally:
        pin.on_train_end()


def test_binary_targets_are_mixed_and_weights_pass_through():
    """A sigmoid head's 0/1 labels become (batch, 1) targets, mixed like any others: binary
    cross-entropy on the mixed target is the mixture of the two losses."""
    n = 8
    x = constant_images(n)
    y = np.arange(n) % 2
    weights = np.linspace(0.5, 1.0, n).astype("float32")
    mixed = augment.mix_batches(batches(x, y, batch_size=n, weights=weights), task="binary", mixup_alpha=0.8,
                                seed=1)
    xm, ym, wm = (t.numpy() for t in next(iter(mixed)))
    assert ym.shape == (n, 1) and 0.0 <= ym.min() and ym.max() <= 1.0
    assert ((ym > 0.01) & (ym < 0.99)).any()
    np.testing.assert_array_equal(wm, weights)
    p = np.full((n, 1), 0.3, "float32")
    bce = keras.losses.BinaryCrossentropy(reduction=None)
    lam = ym  # the weight of label 1
    expected = lam[:, 0] * bce(np.ones((n, 1)), p).numpy() + (1 - lam[:, 0]) * bce(np.zeros((n, 1)), p).numpy()
    np.testing.assert_allclose(bce(ym, p).numpy(), expected, rtol=1e-5)


def test_multilabel_vectors_are_mixed():
    n = 8
    y = np.eye(4, dtype="float32")[np.arange(n) % 4]
    y[:, 3] = 1.0
    mixed = augment.mix_batches(batches(constant_images(n), y, batch_size=n), task="multilabel", mixup_alpha=1.0,
                                seed=2)
    ym = next(iter(mixed))[1].numpy()
    assert ym.shape == (n, 4) and np.allclose(ym[:, 3], 1.0)  # a label all images have stays 1
    assert ((ym[:, :3] > 0.01) & (ym[:, :3] < 0.99)).any()


def test_unmixed_batches_still_get_one_hot_labels():
    x = images(4)
    mixed = augment.mix_batches(batches(x, np.array([0, 2, 1, 2])), task="multiclass", num_classes=3,
                                mixup_alpha=0.8, prob=0.0, seed=0)
    xm, ym = next(iter(mixed))
    np.testing.assert_array_equal(xm.numpy(), x)
    np.testing.assert_array_equal(ym.numpy(), np.eye(3)[[0, 2, 1, 2]])


def test_bad_mixing_arguments_are_refused_clearly():
    data = batches(images(4), np.zeros(4))
    with pytest.raises(ValueError, match="need task in .*got task='regression'"):
        augment.mix_batches(data, task="regression", mixup_alpha=0.8)
    with pytest.raises(ValueError, match="needs num_classes"):
        augment.mix_batches(data, task="multiclass", mixup_alpha=0.8)
    with pytest.raises(ValueError, match=r"cutmix_alpha in \(0, 1\]"):
        augment.mix_batches(data, task="multiclass", num_classes=2, cutmix_alpha=2.0)
    with pytest.raises(ValueError, match="mixup_alpha > 0 and/or cutmix_alpha"):
        augment.mix_batches(data, task="multiclass", num_classes=2)


def test_a_model_trains_on_mixed_batches_and_validates_on_hard_labels():
    x, y = images(16), np.arange(16) % 3
    inner = keras.Sequential([keras.Input(SHAPE), keras.layers.Rescaling(1 / 255.0), keras.layers.Conv2D(4, 3)])
    model = tfft.build_model(inner, num_classes=3, input_shape=SHAPE)
    tfft.compile_model(model, label_smoothing=0.1)
    train = augment.mix_batches(augment.augment_batches(batches(x, y), "strong", seed=0), task="multiclass",
                                num_classes=3, mixup_alpha=0.8, cutmix_alpha=1.0, seed=0)
    history = model.fit(train, validation_data=batches(x, y), epochs=1, verbose=0).history
    assert {"loss", "accuracy", "f1", "val_loss", "val_accuracy", "val_f1"} <= set(history)
    assert np.isfinite(history["loss"][0]) and 0.0 <= history["accuracy"][0] <= 1.0
