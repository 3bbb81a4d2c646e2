"""Experiment configs: each file's `get_config(arg=None)` returns a `ConfigDict`.

`arg` is the variant after the colon in `--config=file.py:<arg>`; every config accepts
`smoke` (a run of under a minute on a laptop CPU). Each file's docstring is its command line.
"""
