"""TensorFlow, imported once and quietly.

TensorFlow's C++ runtime writes start-up lines (`I0000 ... cudart_stub.cc`, the absl
warning, the CPU-feature note, `cuInit` on machines without a GPU) straight to file
descriptor 2, where no Python logger or `TF_CPP_MIN_LOG_LEVEL` value reaches them. They say
nothing a user of keras-vae acts on, so `quiet_import` holds file descriptor 2 while
TensorFlow loads and finds its devices, then passes on every other line it wrote.

Set `TF_CPP_MIN_LOG_LEVEL` yourself (to 0 or 1) to see TensorFlow's lines again.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# A C++ log line of absl/TensorFlow ("I0000 00:00:1796676623.905030    3130 file.cc:31] ...").
_CPP_LOG = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions:)")


def wants_tensorflow_logs() -> bool:
    """True when the user asked TensorFlow to log (`TF_CPP_MIN_LOG_LEVEL` below 2)."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2").strip() in ("0", "1")


def quiet_import():
    """Imports and returns `tensorflow`, dropping its C++ start-up lines from stderr."""
    if "tensorflow" in sys.modules or wants_tensorflow_logs():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no file descriptor 2 (an embedding host): nothing to hold
        import tensorflow as tf

        return tf
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery logs too (cuInit)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().splitlines(keepends=True)
                    if not _CPP_LOG.match(line)]
            if kept:
                sys.stderr.buffer.write(b"".join(kept))
                sys.stderr.flush()
    return tf
