"""What tfft knows about a model it built: `model.tfft_info` (task, classes, backbone, modality, ...)."""


def model_info(model):
    """A copy of `model.tfft_info` (task, num_classes, modality, backbone, ...); {} for other models.

    Example:
    >>> import keras
    >>> model_info(keras.Sequential())
    {}
    """
    return dict(getattr(model, "tfft_info", None) or {})
