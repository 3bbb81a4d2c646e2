"""Command-line entry points of tfft: `python -m experiments.train|tune|evaluate|export|demo`.

Each module's `main()` parses absl flags and calls a testable `run(...)`; the configs live in
`experiments/configs/`, one file per experiment, each file's docstring its command line.
"""
