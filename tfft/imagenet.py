"""`imagenet_classifier`: a backbone with its original 1000-way ImageNet head."""

import importlib

import keras

from tfft import backbones as backbones_lib

_APPLICATIONS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152", "resnet50v2": "ResNet50V2",
    "resnet101v2": "ResNet101V2", "resnet152v2": "ResNet152V2", "vgg16": "VGG16", "vgg19": "VGG19",
}


def imagenet_classifier(name, *, input_shape=(224, 224, 3), weights="pretrained"):
    """Raw 0-255 RGB images in, ImageNet class probabilities out.

    Args:
        name: an image backbone of the registry.
        input_shape: `(224, 224, 3)` for keras.applications networks with their top.
        weights: `"pretrained"` (the official file from the Keras cache or a download;
            for `efficientnet_lite0` the converted checkpoint of its pip package), a path
            to a full (with top) weights file, or None.
    """
    spec = backbones_lib.get_backbone_spec(name)
    if spec.modality != "image":
        raise ValueError(f"{name!r} is not an image backbone.")
    if name == "efficientnet_lite0":
        module = importlib.import_module("tfft.efficientnet_lite")
        return module.imagenet_classifier(input_shape=input_shape, weights=weights)
    network = getattr(keras.applications, _APPLICATIONS[name])(
        include_top=True, weights=None, input_shape=tuple(input_shape), classifier_activation="softmax"
    )
    from tfft import weights as weights_lib

    if weights == "pretrained":
        weights = weights_lib.imagenet_weights_or_raise(name, include_top=True)
    if weights is not None:
        weights_lib.load_local_weights(network, weights)  # clear errors on a name or shape mismatch
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    outputs = network(spec.preprocessing()(inputs))
    return keras.Model(inputs, outputs, name=f"{name}_imagenet")
