"""What the entry points keep off the terminal: TensorFlow's C++ start-up lines and libjpeg notes.

TensorFlow 2.21 prints its C++ log lines (`I0000 ... port.cc:153] oneDNN custom operations
are on`, `cudart_stub.cc ... Could not find cuda drivers`, `E0000 ... failed call to cuInit`,
`WARNING: All log messages before absl::InitializeLog() ...`) straight to file descriptor 2
before `TF_CPP_MIN_LOG_LEVEL` applies, and libjpeg prints `Corrupt JPEG data: ...` there while
images decode (tfft.data drops or decodes such files itself). `install()` sends file
descriptor 2 through a filter that drops exactly those lines and passes everything else
(Python's warnings, errors and tracebacks) through unchanged. `--verbosity=<n>`,
`--debug` or `TFFT_DEBUG=1` keep them.
"""

import atexit
import os
import re
import sys
import threading
import warnings

NOISE = re.compile(
    rb"^(?:[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] "  # TensorFlow / absl C++ log lines
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow"  # the CPU feature note
    rb"|Corrupt JPEG data: |Premature end of JPEG file|Warning: unknown JFIF revision)")
_STATE = {}


def wanted(argv=None):
    """Whether the user asked for TensorFlow's own log lines."""
    argv = sys.argv if argv is None else argv
    return os.environ.get("TFFT_DEBUG") == "1" or any(
        a.startswith(("--verbosity", "-v=")) or a == "--debug" for a in argv[1:])


def install(argv=None):
    """Filters the noise out of file descriptor 2 for the rest of the process (idempotent)."""
    warnings.filterwarnings("ignore", message="Your input ran out of data")  # Keras, at a dataset's end
    if _STATE or wanted(argv):
        return
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no file descriptors to play with (an embedded interpreter): leave stderr alone
        return
    thread = threading.Thread(target=_pump, args=(read_end, original), daemon=True)
    thread.start()
    _STATE.update(original=original, thread=thread)
    atexit.register(_flush)


def _pump(read_end, original):
    with os.fdopen(read_end, "rb", buffering=0) as source:
        pending = b""
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if not NOISE.match(line):
                    os.write(original, line + b"\n")
        if pending and not NOISE.match(pending):
            os.write(original, pending)


def _flush():
    """At exit: close the pipe's write side (file descriptor 2) and let the filter finish."""
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_STATE["original"], 2)  # closes the pipe's last write end: the pump reads EOF
    _STATE["thread"].join(timeout=2.0)
