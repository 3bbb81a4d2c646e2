r"""Any TensorFlow Datasets image classification dataset, by name (default `tf_flowers`).

    python -m experiments.train --config=experiments/configs/tfds_image.py \
        --workdir=runs/tfds_cifar10 --config.data.name=cifar10 --config.image_size=96 \
        [--config.data.data_dir=/path/to/tensorflow_datasets] [--config.backbone=resnet50v2]

    # under a minute, offline: TFDS mock data in the dataset's real format, random weights, 32 px
    python -m experiments.train --config=experiments/configs/tfds_image.py:smoke --workdir=/tmp/smoke

The image and label features are found from the dataset's info. Validation and test parts are
sliced off the end of `data.split` (TFDS slicing, not stratified). When the dataset is not
prepared in `data.data_dir` and the TFDS storage cannot be reached, the run stops at once
saying how to prepare it elsewhere.
"""

from experiments.config import apply_smoke, base_config, parse_variant


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "efficientnet_lite0"
    config.image_size = 224
    config.data.source = "tfds"
    config.data.name = "tf_flowers"
    config.data.split = "train"
    config.data.validation_split = 0.1
    config.data.test_split = 0.1
    config.data.augment = "flip"
    config.head_epochs = 3
    config.finetune_epochs = 3
    config.unfreeze = "top:2"
    if variant == "smoke":
        apply_smoke(config, image_size=32, limit=0, weights="none")
        config.data.mock_examples = 24
        config.data.augment = ""
        config.data.cache = "auto"
    return config
