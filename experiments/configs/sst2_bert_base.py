r"""BERT-base (uncased, keras-hub preset) fine-tuned on SST-2 sentiment: the BERT paper's recipe.

    python -m experiments.train --config=experiments/configs/sst2_bert_base.py --workdir=runs/sst2_bert \
        [--config.data.path=/path/to/sst2/train.tsv --config.data.validation_path=/path/to/sst2/dev.tsv]

    # under a minute, offline: a tiny random BERT (2 layers, hidden 16) with a WordPiece
    # vocabulary computed from the smoke sentences, in place of the downloaded preset
    python -m experiments.train --config=experiments/configs/sst2_bert_base.py:smoke --workdir=/tmp/smoke

The preset `bert_base_en_uncased` downloads from Kaggle on first use. Offline, save it on a
machine with internet and pass the directory as `--config.backbone=/path/to/preset`.
AdamW at 2e-5 with 10% linear warmup then linear decay, 128 tokens, batch 32.
"""

from experiments.config import TINY_BERT, apply_smoke, base_config, parse_variant, shared_data_path


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "bert_base_en_uncased"
    config.task = "binary"
    config.sequence_length = 128
    config.dropout = 0.1
    config.data.source = "text"
    config.data.path = shared_data_path("sst2", "train.tsv")
    config.data.validation_path = shared_data_path("sst2", "dev.tsv")
    config.data.text_column = "sentence"
    config.data.label_column = "label"
    config.data.test_split = 0.1
    config.batch_size = 32
    config.head_epochs = 1
    config.finetune_epochs = 3
    config.finetune_learning_rate = 2e-5
    config.finetune_optimizer = "adamw"
    config.weight_decay = 0.01
    config.finetune_schedule = "linear"
    config.warmup_fraction = 0.1
    if variant == "smoke":
        apply_smoke(config, limit=24)
        config.backbone = TINY_BERT
        config.weights = "none"
        config.head_learning_rate = 1e-2
        config.finetune_learning_rate = 1e-3
    return config
