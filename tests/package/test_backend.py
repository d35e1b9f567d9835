"""Quiet by default: TensorFlow's native log lines are kept off stderr, everything else is not."""

import os
import subprocess
import sys

NATIVE = ("I0000 00:00:1796676623.905030    3130 cudart_stub.cc:31] Could not find cuda drivers",
          "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
          "E0000 00:00:1796681933.604078   30201 node_def_util.cc:682] NodeDef mentions attribute")

FILTER = """
import os, sys
from keras_vae import backend
with backend.native_logs_filtered():
    for line in {lines!r}:
        os.write(2, line.encode() + b"\\n")
        os.write(2, b"kept: " + line[:5].encode() + b"\\n")
    os.write(2, b"progress 1/2\\r")   # a partial line goes out at once
    os.write(2, b"I0000 00:00:1.0  1 x.cc:1] split ")  # a native line in two writes
    os.write(2, b"in two\\n")
print("after", file=sys.stderr)
"""


def _run(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_the_filter_drops_native_lines_and_passes_the_rest_on():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", FILTER.format(lines=list(NATIVE))],
                          capture_output=True, env=env, timeout=120)  # bytes: "\r" kept
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"kept: I0000\nkept: WARNI\nkept: E0000\nprogress 1/2\rafter\n"


def test_asking_for_tensorflow_logs_turns_the_filter_off():
    done = _run(FILTER.format(lines=[NATIVE[0]]), TF_CPP_MIN_LOG_LEVEL="0")
    assert NATIVE[0] in done.stderr and "split in two" in done.stderr


def test_import_keras_vae_writes_nothing_to_stderr():
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", "import keras_vae; keras_vae.VAE"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr
