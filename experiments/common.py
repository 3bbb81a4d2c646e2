"""Kept for config files written against tfft before the split of this module (2026-12):
they import the schema helpers from here. New code imports `experiments.config`."""

from experiments.config import (  # noqa: F401
    TINY_BERT,
    UsageError,
    apply_smoke,
    base_config,
    parse_variant,
    shared_data_path,
)
