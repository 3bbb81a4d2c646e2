"""The tiny models and data the tests share (keras-hub's test-base idea): built in milliseconds.

    from tiny import tiny_cnn, two_class_images
"""

import keras
import numpy as np

SHAPE = (32, 32, 3)


def tiny_cnn(widths=(4, 8), batchnorm=True, seed=None, shape=SHAPE):
    """A stand-in image backbone: conv (stride 2, `conv1`) -> BatchNorm (`bn1`) -> conv (stride 2, `conv2`)."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(widths[0], 3, strides=2, activation="relu", name="conv1")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.Conv2D(widths[1], 3, strides=2, activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny")


def two_class_images(n=24, seed=0, shape=SHAPE):
    """`(x, y)`: `n` random 0-255 images, class 1 brighter in its top half (learnable in a few steps)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.uniform(0, 200, (n,) + tuple(shape)).astype("float32")
    x[y == 1, : shape[0] // 2] += 55.0
    return x, y


def tiny_vgg(widths=(4, 4, 8, 8, 8), shape=SHAPE):
    """VGG's layer names (`block<i>_conv1`, `block<i>_pool`) on five one-conv blocks: the block specs
    (`top:2`, gradual unfreezing) resolve as on VGG16, at a thousandth of its weights to save."""
    inputs = keras.Input(shape)
    x = inputs
    for i, width in enumerate(widths, start=1):
        x = keras.layers.Conv2D(width, 3, padding="same", activation="relu", name=f"block{i}_conv1")(x)
        x = keras.layers.MaxPooling2D(name=f"block{i}_pool")(x)
    return keras.Model(inputs, x, name="tiny_vgg")
