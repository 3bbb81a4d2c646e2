"""tfft: fine-tune pretrained Keras backbones on your own images and text.

Example:
    import tfft

    model = tfft.build_model("resnet50", num_classes=5)          # frozen backbone + head
    splits = tfft.data.from_image_directory("flowers/", backbone="resnet50", test_split=0.2)
    result = tfft.fine_tune(model, splits.train, splits.validation, workdir="runs/flowers")
    print(result.metrics)
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfft.backbones import get_backbone_spec, list_backbones, register_backbone  # noqa: E402
from tfft.callbacks import default_callbacks  # noqa: E402
from tfft.distribute import get_strategy  # noqa: E402
from tfft.errors import OfflineError  # noqa: E402
from tfft.finetune import FineTuneResult, fine_tune  # noqa: E402
from tfft.freezing import FreezeSummary, freeze, unfreeze  # noqa: E402
from tfft.layers import ImageNetPreprocessing, TextPreprocessor  # noqa: E402
from tfft.models import TransferModel, build_model, get_backbone  # noqa: E402
from tfft.optim import compile_model, make_schedule  # noqa: E402

__version__ = "0.1.0"


def imagenet_classifier(name, **kwargs):
    """The image backbone `name` with its original 1000-way ImageNet head: raw 0-255 RGB
    images in, class probabilities out (to check that weights loaded or converted right)."""
    from tfft import imagenet

    return imagenet.imagenet_classifier(name, **kwargs)


def __getattr__(name):
    # Heavier or optional parts load on first use, keeping `import tfft` fast.
    import importlib

    lazy = {
        "data": "tfft.data",
        "tuning": "tfft.tuning",
        "TransferHyperModel": ("tfft.tuning", "TransferHyperModel"),
        "make_tuner": ("tfft.tuning", "make_tuner"),
        "find_learning_rate": ("tfft.lr_finder", "find_learning_rate"),
        "features": "tfft.features",
        "tta": "tfft.tta",
        "recipe": "tfft.recipe",
        "lora": "tfft.lora",
    }
    if name not in lazy:
        raise AttributeError(f"module 'tfft' has no attribute {name!r}")
    target = lazy[name]
    if isinstance(target, str):
        return importlib.import_module(target)
    return getattr(importlib.import_module(target[0]), target[1])


__all__ = [
    "list_backbones", "get_backbone_spec", "register_backbone", "build_model", "freeze", "unfreeze",
    "compile_model", "make_schedule", "default_callbacks", "fine_tune", "FineTuneResult", "FreezeSummary",
    "get_strategy", "imagenet_classifier", "TransferModel", "get_backbone", "OfflineError",
    "ImageNetPreprocessing", "TextPreprocessor", "data", "TransferHyperModel", "make_tuner",
    "find_learning_rate",
]
