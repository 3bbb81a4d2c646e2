"""Shared helpers of the speed and memory benchmarks (issue 8).

Each benchmark is one command that prints a table and appends a dated section (command,
machine, load, table, notes) to `benchmarks/RESULTS.md`. Timings are medians of timed steps
after warm-up steps, and the two sides of a comparison run interleaved in one process (or
in alternating subprocesses), so that load from other processes on a shared machine hits
both sides alike.
"""

import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from pathlib import Path

import keras

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
FLOWERS = REPO.parent / "shared" / "data" / "flowers"


class StepTimer(keras.callbacks.Callback):
    """Records the wall time of every training batch (`on_train_batch_begin` to `_end`).

    Keras returns from a step only once it has run (the logs are read at batch end), so
    the interval is the step's compute plus the input pipeline's hand-over.

    Example:
    >>> timer = StepTimer()
    >>> timer.times
    []
    """

    def __init__(self):
        super().__init__()
        self.times = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if logs:
            float(logs.get("loss", 0.0))  # make sure the step has finished
        self.times.append(time.perf_counter() - self._start)


def median(values):
    return statistics.median(values) if values else float("nan")


def timed_steps(times, warmup):
    """The step times after the first `warmup` steps (tracing, caches, thread pools)."""
    return list(times[warmup:])


def peak_rss_mb():
    """This process's peak resident memory in MB (Linux `ru_maxrss` is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb():
    """This process's current resident memory in MB (MiB, as `peak_rss_mb`)."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def machine():
    """One line: CPU model and cores, OS, TensorFlow and Keras versions, GPUs."""
    import tensorflow as tf

    cpu = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
            f"TensorFlow {tf.__version__}, Keras {keras.__version__}; "
            f"GPUs: {len(gpus) or 'none'}")


def load_average():
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def table(headers, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def command_line():
    return "flock /tmp/tfft_heavy.lock .venv/bin/python " + " ".join(
        shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def report(title, body, *, notes=(), out=RESULTS, started=None, load_before=None):
    """Prints `body` and appends a dated section with the command and machine to `out`.

    Args:
        title: the section's heading.
        body: Markdown (a table).
        notes: extra lines (what was compared, caveats).
        out: the results file (None: print only).
        started: `time.time()` at the start, to record the benchmark's wall time.
        load_before: `load_average()` at the start.
    """
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    meta = [f"- command: `{command_line()}`", f"- machine: {machine()}",
            f"- load average (1/5/15 min) at start / end: {load_before or 'n/a'} / {load_average()} "
            "(a shared machine: other jobs ran alongside; both sides of each comparison ran interleaved)"]
    if started is not None:
        meta.append(f"- wall time of the benchmark: {time.time() - started:.0f} s")
    section = "\n".join([f"## {title} ({stamp})", "", *meta, "", body, "", *[f"- {n}" for n in notes], ""])
    print(section, flush=True)
    if out:
        out = Path(out)
        new = not out.exists()
        with open(out, "a") as f:
            if new:
                f.write("# Benchmark results\n\nAppended by the commands in `benchmarks/` (see README.md there).\n\n")
            f.write(section + "\n")
    return section


def flowers_or_none(path=None):
    path = Path(path) if path else FLOWERS
    return path if path.is_dir() else None


def dump(obj):
    """One JSON line on stdout (for subprocess benchmarks)."""
    print("RESULT " + json.dumps(obj), flush=True)


def parse_result(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError("the benchmark subprocess printed no RESULT line:\n" + stdout[-3000:])
