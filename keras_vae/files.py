"""Writing files without half-written results: the one module that writes for keras_vae.

- `atomic_write`, `write_json`: a file written under a temporary name and
  renamed into place (the writer and `sha256_of` live in the numpy-only
  `keras_vae.export.edge_io`, which the device code shares);
- `staged`: a file or folder made by someone else's writer (Keras, a
  converter) under a temporary name, renamed into place when the block
  succeeds;
- `run_directory`: a whole run folder built under a temporary name;
- `sha256_of`, `size_of`: checksums of files and folders.

Example:

>>> with keras_vae.files.staged("out/decoder.onnx") as tmp:
...     convert(tmp); check(tmp)   # `out/decoder.onnx` appears only now
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from keras_vae.export.edge_io import atomic_write, partial_name, sha256_of, size_of

__all__ = ["atomic_write", "partial_name", "remove", "run_directory", "scratch_directory",
           "sha256_of", "size_of", "staged", "write_json"]


def write_json(obj, path, indent: int = 2) -> Path:
    """Writes `obj` as JSON atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=indent) + "\n"),
                        mode="w")


@contextlib.contextmanager
def staged(path):
    """Yields a temporary path beside `path` that replaces it when the block succeeds.

    The temporary path ends in `path`'s name (see `partial_name`); a file or a
    folder may be written there. On failure it is removed and `path` is left
    as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_name(path)
    remove(tmp)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if path.is_dir():  # os.replace cannot overwrite a non-empty directory
            old = path.with_name(f".old-{os.getpid()}-{path.name}")
            os.replace(path, old)
            os.replace(tmp, path)
            remove(old)
        else:
            os.replace(tmp, path)
    finally:
        remove(tmp)


def remove(path) -> None:
    """Deletes a file or a folder tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def run_directory(out, overwrite: bool = False):
    """Yields a temporary directory that becomes `out` only if the block succeeds.

    Raises:
        FileExistsError: `out` exists and `overwrite` is False (checked before
            any work starts).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; choose another --out or pass --overwrite to replace it."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.partial-"
    _remove_stale_partials(out.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{HOST}-{os.getpid()}-", dir=out.parent))
    tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; a run directory is a normal one
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


HOST = socket.gethostname().replace("-", "_")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(parent: Path, prefix: str) -> None:
    """Deletes half-built run directories left by killed processes of this host."""
    for stale in parent.glob(f"{prefix}*"):
        host, _, rest = stale.name[len(prefix):].partition("-")
        pid = rest.split("-", 1)[0]
        if host == HOST and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def scratch_directory():
    """Yields a temporary directory deleted afterwards (a non-chief worker's run folder)."""
    tmp = Path(tempfile.mkdtemp(prefix="keras_vae-scratch-"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask
