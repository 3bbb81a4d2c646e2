r"""VGG16 (ImageNet) fine-tuned on the 5-class flowers photos; the last conv block is unfrozen.

    python -m experiments.train --config=experiments/configs/flowers_vgg16.py \
        --workdir=runs/flowers_vgg16 [--config.data.path=/path/to/flowers]

    # under a minute on a laptop CPU (random weights, 32 px, 8 images per class):
    python -m experiments.train --config=experiments/configs/flowers_vgg16.py:smoke --workdir=/tmp/smoke

VGG16 has no BatchNormalization, so SGD with momentum at a small rate is the classic recipe
for its fine-tune phase. ImageNet weights download on first use; offline, use
`--config.weights=none` or a local weights file.
"""

from experiments.config import apply_smoke, base_config, parse_variant, shared_data_path


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "vgg16"
    config.image_size = 224
    config.data.source = "folder"
    config.data.path = shared_data_path("flowers")
    config.data.augment = "flip,rotation,zoom"
    config.data.validation_split = 0.15
    config.data.test_split = 0.15
    config.dropout = 0.5
    config.head_units = (256,)
    config.head_epochs = 5
    config.finetune_epochs = 5
    config.unfreeze = "top:1"  # block5
    config.finetune_optimizer = "sgd"
    config.finetune_learning_rate = 1e-3
    config.finetune_schedule = "cosine"
    if variant == "smoke":
        apply_smoke(config, image_size=32, limit=8, weights="none")
        config.data.augment = ""
        config.head_units = (16,)
    return config
