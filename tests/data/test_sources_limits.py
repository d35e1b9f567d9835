"""A local source's declared sizes are checked before anything is allocated, at the documented limits.

`sources.MAX_ARRAY_VALUES` values and `sources.MAX_ARRAY_BYTES` bytes per
array: an array at the limit loads within the memory budget of
docs/scaling.md, one image over it is refused from its header alone.
"""

import struct
import subprocess
import sys
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from keras_vae.data import checks, sources

IMAGE = (28, 28)
AT_LIMIT = sources.MAX_ARRAY_VALUES // (IMAGE[0] * IMAGE[1])  # 171,196 28x28 images


def _npz(path, n, dtype=np.uint8):
    """A small file (compressed zeros) declaring `n` 28x28 images."""
    np.savez_compressed(path, x=np.zeros((n, *IMAGE), dtype))
    return path


def _refused_cheaply(path, match):
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ValueError, match=match):
        sources.load_arrays(str(path))
    seconds, peak = time.monotonic() - start, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 2 and peak < (16 << 20), (seconds, peak)


@pytest.mark.parametrize("n, dtype", [(AT_LIMIT + 1, np.uint8),
                                      (200_000_000 // 784 + 1, np.uint8),
                                      ((sources.MAX_ARRAY_BYTES // 8) // 784 + 1, np.float64)],
                         ids=["one image over", "200M values", "float64 over the bytes"])
def test_an_array_over_the_limit_is_refused_from_its_header(tmp_path, n, dtype):
    path = _npz(tmp_path / "big.npz", n, dtype)
    assert path.stat().st_size < (2 << 20)
    _refused_cheaply(path, r"a local source may load; refusing to allocate")


def test_a_zip_directory_inflating_past_deflate_is_refused(tmp_path):
    path = _npz(tmp_path / "x.npz", 64)
    raw = bytearray(path.read_bytes())
    entry = raw.index(b"PK\x01\x02")  # the central directory's only entry: x.npy
    compressed = struct.unpack_from("<I", raw, entry + 20)[0]
    struct.pack_into("<I", raw, entry + 24, compressed * 2000)  # claims 2000-fold
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as zf:
        assert zf.infolist()[0].file_size == compressed * 2000
    _refused_cheaply(path, "more than the file holds")


def test_as_float32_is_what_check_images_computes():
    x = np.random.default_rng(0).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    got = sources.as_float32(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(checks.check_images(got), checks.check_images(x))


_MEASURE = """
import resource, sys, time
from keras_vae.data import sources
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
x, _ = sources.load_arrays(sys.argv[1])
assert x.shape == (int(sys.argv[2]), 28, 28, 1) and x.dtype == "float32", x.shape
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10,
      time.monotonic() - start)
"""


@pytest.mark.slow
def test_an_array_at_the_limit_loads_within_its_budget(tmp_path):
    path = _npz(tmp_path / "limit.npz", AT_LIMIT)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(AT_LIMIT)],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    grown_mb, seconds = out.split()
    # uint8 read (134 MB), float32 (537 MB), the finiteness mask (134 MB), less
    # the uint8 freed: docs/scaling.md states 1 GiB.
    assert int(grown_mb) < 1024 and float(seconds) < 120, (grown_mb, seconds)
