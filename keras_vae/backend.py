"""TensorFlow, imported once and quietly, and native log lines kept off the terminal.

TensorFlow's and LiteRT's C++ code writes lines (`I0000 ... cudart_stub.cc`, the absl
warning, the CPU-feature note, `cuInit` on machines without a GPU, the converter's
`fully_quantize: ...`, the XNNPACK delegate note) straight to file descriptor 2, where no
Python logger or `TF_CPP_MIN_LOG_LEVEL` value reaches them. They say nothing a user of
keras-vae acts on, so `native_logs_filtered` reads file descriptor 2 through a pipe around
the calls that write them and passes on every other line.

Set `TF_CPP_MIN_LOG_LEVEL` yourself (to 0 or 1) to see them again.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

# A native log line: absl/TensorFlow ("I0000 00:00:1796676623.905030  3130 file.cc:31] ..."),
# or the start-up and converter notes that come without that prefix.
NATIVE_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions:"
    rb"|INFO: Created TensorFlow Lite \S+ delegate"
    rb"|fully_quantize: \d+, inference_type: )")


def wants_native_logs() -> bool:
    """True when the user asked TensorFlow to log (`TF_CPP_MIN_LOG_LEVEL` below 2)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() in ("0", "1")


@contextlib.contextmanager
def native_logs_filtered():
    """Drops native log lines written to file descriptor 2 while the block runs, as they come.

    Every other byte is passed on at once (a warning during a long `fit` is not
    held back), so it can wrap a whole command.
    """
    if wants_native_logs():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    pump = threading.Thread(target=_pass_on, args=(read_end, saved), daemon=True)
    pump.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end held here: the pump sees its end
        pump.join(timeout=5)
        os.close(saved)


def _pass_on(read_end: int, out: int) -> None:
    """Copies `read_end` to `out` without the native log lines, until the pipe closes."""
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while chunk := pipe.read(1 << 16):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(_line_out(line) for line in lines)
            # A partial line is passed on now (a progress bar redraws with "\r"), but for
            # a start that may become a native log line, which arrives whole soon after.
            redrawn, _, last = pending.rpartition(b"\r")
            if redrawn or pending.endswith(b"\r"):
                kept, pending = kept + redrawn + b"\r", last
            if pending and not _may_be_native(pending):
                kept, pending = kept + pending, b""
            if kept:
                os.write(out, kept)
    if pending and not NATIVE_LOG.match(pending):
        os.write(out, pending)


def _line_out(line: bytes) -> bytes:
    """What is passed on of one line: without native log lines, also those after a "\r"."""
    parts = line.split(b"\r")
    if NATIVE_LOG.match(parts[-1]):  # the line ends as a native log line: drop its newline too
        return b"".join(part + b"\r" for part in parts[:-1] if not NATIVE_LOG.match(part))
    return b"\r".join(part for part in parts if not NATIVE_LOG.match(part)) + b"\n"


def _may_be_native(start: bytes) -> bool:
    return bool(NATIVE_LOG.match(start)) or any(
        prefix.startswith(start[:len(prefix)]) for prefix in _NATIVE_PREFIXES)


# First bytes of the native log lines (`NATIVE_LOG`): a partial line that could still become one.
_NATIVE_PREFIXES = (b"I0000", b"W0000", b"E0000", b"F0000", b"WARNING: All log messages",
                    b"To enable the following", b"INFO: Created TensorFlow Lite",
                    b"fully_quantize:")


def quiet_import():
    """Imports and returns `tensorflow`, dropping its native start-up lines from stderr."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with native_logs_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery logs too (cuInit)
    return tf
