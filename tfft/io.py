"""Atomic writes: a crash while saving never leaves a half-written file under the final name.

Everything is written to a temporary file in the same directory, flushed, then moved into
place with `os.replace` (atomic on POSIX and Windows within one filesystem).
"""

import contextlib
import json
import os
import re
import tempfile

_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[\w.]+)?$")  # what atomic_path's mkstemp names


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path next to `path`; on success it replaces `path` atomically.

    The temporary name keeps the final suffix (`.keras`, `.weights.h5`, ...) since Keras
    checks suffixes. On an exception the temporary file is removed and `path` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    suffix = ".weights.h5" if base.endswith(".weights.h5") else os.path.splitext(base)[1]
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=directory)
    os.close(fd)
    os.remove(tmp)  # writers such as h5py / zipfile want to create the file themselves
    try:
        yield tmp
        if os.path.exists(tmp):
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, data, **kwargs):
    """Writes `data` as JSON to `path` atomically."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, default=_to_builtin, **kwargs)
            f.write("\n")


def write_text(path, text):
    """Writes `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def save_model(model, path):
    """`model.save(path)` atomically."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def save_weights(model, path):
    """`model.save_weights(path)` atomically (path ends with `.weights.h5`)."""
    with atomic_path(path) as tmp:
        model.save_weights(tmp)


def save_arrays(path, arrays):
    """Saves a list of arrays or variables to an `.npz` file atomically (NumPy converts them
    one at a time as it writes, so `model.weights` costs no full copy in memory)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, *arrays)


def load_arrays_into(path, variables):
    """Assigns the arrays of a `save_arrays` file to `variables`, in order, one at a time."""
    import numpy as np

    with np.load(path) as data:
        if len(data.files) != len(variables):
            raise ValueError(f"{path} holds {len(data.files)} arrays for {len(variables)} variables.")
        for i, variable in enumerate(variables):
            variable.assign(data[f"arr_{i}"])


def load_arrays(path):
    """The list of arrays `save_arrays` wrote, in order."""
    import numpy as np

    with np.load(path) as data:
        return [data[f"arr_{i}"] for i in range(len(data.files))]


def remove_stale_temporaries(directory):
    """Removes the temporary files that a process killed while saving left in `directory`
    (and its subfolders): `.NAME.XXXX.tmp...` files of `atomic_path`. Returns their paths.

    Call only when no other process writes to `directory`.
    """
    removed = []
    for root, _, files in os.walk(directory):
        for name in files:
            if _TEMPORARY.match(name):
                os.remove(os.path.join(root, name))
                removed.append(os.path.join(root, name))
    return removed


def read_json(path, default=None):
    """Reads JSON from `path`; `default` when it does not exist."""
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def _to_builtin(value):
    """JSON fallback for NumPy scalars and arrays."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)
