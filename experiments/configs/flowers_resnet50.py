r"""ResNet50 (ImageNet) fine-tuned on the 5-class flowers photos.

    python -m experiments.train --config=experiments/configs/flowers_resnet50.py \
        --workdir=runs/flowers_resnet50 [--config.data.path=/path/to/flowers]

    # under a minute on a laptop CPU (random weights, 32 px, 8 images per class):
    python -m experiments.train --config=experiments/configs/flowers_resnet50.py:smoke --workdir=/tmp/smoke

`data.path` is a folder with one subfolder of images per class (defaults to the shared
flowers copy, `../shared/data/flowers`). ImageNet weights download on first use (or come
from the Keras cache); offline, use `--config.weights=none` or a local weights file.
"""

from experiments.config import apply_smoke, base_config, parse_variant, shared_data_path


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "resnet50"
    config.image_size = 224
    config.data.source = "folder"
    config.data.path = shared_data_path("flowers")
    config.data.augment = "flip,rotation,zoom"
    config.data.validation_split = 0.15
    config.data.test_split = 0.15
    config.head_epochs = 5
    config.finetune_epochs = 5
    config.unfreeze = "top:1"  # the conv5 block
    config.head_learning_rate = 1e-3
    config.finetune_learning_rate = 1e-4
    config.finetune_schedule = "cosine"
    if variant == "smoke":
        apply_smoke(config, image_size=32, limit=8, weights="none")
        config.data.augment = ""
    return config
