"""Exceptions that tfft raises on purpose, each with a message that names the fix."""

import difflib


class OfflineError(RuntimeError):
    """A download was needed but the network (or the hub) cannot be reached.

    The message always says what to do offline: a local weights file, a local preset
    directory, `weights=None`, or a prepared `data_dir`.
    """


def close_matches(name, candidates, n=5):
    """Returns up to `n` entries of `candidates` that look like `name`, for error messages."""
    candidates = [str(c) for c in candidates]
    matches = difflib.get_close_matches(str(name), candidates, n=n, cutoff=0.5)
    if not matches:
        lowered = str(name).lower()
        matches = [c for c in candidates if lowered in c.lower() or c.lower() in lowered][:n]
    return matches


def did_you_mean(name, candidates):
    """Formats a ` Did you mean ...?` suffix (empty when nothing is close)."""
    matches = close_matches(name, candidates)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
