"""Command-line entry points of tfft: `python -m experiments.train|tune|evaluate|export|demo`.

Each module's `main()` parses absl flags and calls a testable `run(...)`; the configs live in
`experiments/configs/`, one file per experiment, each file's docstring its command line.
"""

import sys as _sys

if _sys.argv[:1] == ["-m"]:  # `python -m experiments.<entry point>`: before TensorFlow loads
    from experiments import quiet as _quiet

    _quiet.install()
