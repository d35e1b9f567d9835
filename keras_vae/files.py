"""Writing files without half-written results: the one module that writes for keras_vae.

- `atomic_write`, `write_json`: a file written under a temporary name and
  renamed into place (the writer and `sha256_of` live in the numpy-only
  leaf `keras_vae.recipes`, which the device code shares);
- `staged`: a file or folder made by someone else's writer (Keras, a
  converter) under a temporary name, renamed into place when the block
  succeeds;
- `run_directory`: a whole run folder built under a temporary name;
- `check_output`: the one rule every command that writes follows before it
  starts: no replacing without `--overwrite`, never its own input;
- `sha256_of`, `size_of`: checksums of files and folders.

Example:

>>> with keras_vae.files.staged("out/decoder.onnx") as tmp:
...     convert(tmp); check(tmp)   # `out/decoder.onnx` appears only now
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from keras_vae.recipes import atomic_write, clip, partial_name, sha256_of, size_of

__all__ = ["RUN_ENTRIES", "RunDirectoryError", "atomic_write", "check_output",
           "check_replaceable", "partial_name", "remove", "run_directory", "scratch_directory", "sha256_of",
           "size_of", "staged", "write_json"]


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


def check_output(path, *, overwrite: bool, inputs=(), flag: str = "--out") -> Path:
    """Checks, before any work, that a command may write `path`; returns it as a `Path`.

    The one rule of every command that writes (train, fit-sampler,
    train-code-prior, sample, score, export, the demo):

    - an existing `path` is replaced only with `--overwrite` (folders further
      only when `check_replaceable` allows it, which `run_directory` checks);
    - `path` is never one of the command's `inputs`, nor inside one, nor a
      folder holding one, even with `--overwrite`: symbolic links and
      relative names are resolved first, so no spelling of the input passes.

    The write itself is atomic (`atomic_write`, `staged`, `run_directory`).

    Args:
        path: The file or folder to write.
        overwrite: Whether `--overwrite` was given.
        inputs: Paths the command reads (None entries and names that are not
            local paths, such as a TFDS dataset, are skipped).
        flag: The option that named `path`, for messages.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
        ValueError: `path` is, holds or lies inside an input.
    """
    path = Path(path)
    target = Path(os.path.realpath(path))
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = Path(os.path.realpath(given))
        if target == source or source in target.parents or target in source.parents:
            relation = ("is" if target == source else
                        "lies inside" if source in target.parents else "holds")
            raise ValueError(f"{flag} {clip(path)} {relation} the input {clip(given)}; a "
                             f"command never writes over what it reads, even with "
                             f"--overwrite: choose another {flag}.")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{clip(path)} already exists; choose another {flag} or pass "
                              "--overwrite to replace it.")
    return path


def remove(path) -> None:
    """Deletes a file or a folder tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# What a keras-vae run or export folder holds (train, `make demo`, export):
# `--overwrite` replaces a folder only when every entry in it is one of these.
RUN_ENTRIES = re.compile(
    r"^(model\.keras|history\.json|samples\.png|reconstructions\.png|evaluation\.json"
    r"|onnx_samples\.png|onnx_interpolation\.png|export|manifest\.json|README\.md"
    r"|recipes\.py|reader\.py|images\.py|sampler\.py|edge_io\.py"
    r"|sample_onnx\.py|sample_litert\.py|serve\.py|web"
    r"|protocol\.py|batcher\.py|service\.py|routes\.py|uploads\.py|workers\.py|http_limits\.py"
    r"|model_prior\.keras|model_prior\.json"
    r"|\w+(\.\w+)?\.(onnx|tflite)|\w+_savedmodel)$"
)


class RunDirectoryError(FileExistsError):
    """A run folder that exists, is being written by another process, or may not be replaced."""


def check_replaceable(out) -> None:
    """Checks that `--overwrite` may replace `out`: a previous keras-vae run or export, nothing else.

    Refused: the file-system root, the home folder, the current folder or
    any folder above it, a symbolic link, a file, and any folder holding an
    entry that keras-vae does not write (`RUN_ENTRIES`).

    Raises:
        RunDirectoryError: naming the reason.
    """
    out = Path(out)
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    if resolved in (Path(resolved.anchor), Path.home().resolve()) or cwd == resolved \
            or resolved in cwd.parents:
        raise RunDirectoryError(f"--overwrite refuses to replace {out} ({resolved}): the root, "
                                "the home folder or a folder holding the current one.")
    if out.is_symlink() or not out.is_dir():
        raise RunDirectoryError(f"--overwrite replaces only a run folder; {out} is a "
                                f"{'symbolic link' if out.is_symlink() else 'file'}.")
    strangers = sorted(p.name for p in out.iterdir() if not RUN_ENTRIES.match(p.name))
    if strangers:
        shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
        raise RunDirectoryError(
            f"--overwrite replaces only a previous keras-vae run or export, and {out} holds "
            f"{len(strangers)} other entries ({clip(shown)}); move them or choose another --out."
        )


@contextlib.contextmanager
def _lock(out: Path):
    """Holds an exclusive, non-blocking lock on `out` (a `.NAME.lock` file beside it).

    `flock` is released by the kernel when the process dies, so a killed run
    leaves at most a stale lock file, which the next run takes over and
    removes. The file is unlinked while held; a process that locked an
    unlinked file notices (its inode differs from the path's) and retries.

    Raises:
        RunDirectoryError: another process holds the lock.
    """
    import fcntl

    path = out.with_name(f".{out.name}.lock")
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunDirectoryError(
                f"Another keras-vae process ({clip(owner, 60) or 'unknown'}) is writing {out}; "
                "wait for it to finish or choose another --out.") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # locked a lock file another process just removed: try again
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {HOST}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


@contextlib.contextmanager
def _temporary_files_in(folder: Path):
    """Points Python's and native code's temporary files (`tempfile`, TMPDIR) into `folder`.

    Converters (tf2onnx, the TFLite converter) write their temporaries there,
    inside the half-built run folder: a killed run leaves them where the next
    run's stale-folder cleanup removes them, never in the system temp folder.
    """
    folder.mkdir()
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(folder), str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def run_directory(out, overwrite: bool = False):
    """Yields a temporary directory that becomes `out` only if the block succeeds.

    - One writer at a time: the block runs under a lock on `out`; a second
      process fails at once (`RunDirectoryError`) instead of both reporting
      success and one silently replacing the other.
    - `overwrite` replaces only a previous keras-vae run or export
      (`check_replaceable`); the old folder is removed once the new one is in
      place.
    - What a killed run leaves (`.OUT.partial-*`, with the converters'
      temporaries inside, and `.OUT.old-*` from an interrupted replace) is
      cleaned by the next run in the same folder (an old run is put back if
      its replacement never arrived).

    Raises:
        FileExistsError: `out` exists and `overwrite` is False, or may not be
            replaced, or is being written by another process (checked before
            any work starts).
    """
    out = Path(out)
    if out.name in ("", ".", ".."):  # `.`, `..`, `/`: name the folder itself
        out = Path(os.path.abspath(out))
    if out.exists() and not overwrite:
        raise FileExistsError(
            f"{out} already exists; choose another --out or pass --overwrite to replace it."
        )
    if overwrite and (out.exists() or out.is_symlink()):
        check_replaceable(out)  # before the lock: `/` has no folder beside it to lock in
    out.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        _remove_stale(out)
        if out.exists() or out.is_symlink():
            if not overwrite:  # appeared while we waited for the lock
                raise FileExistsError(f"{out} already exists; choose another --out or pass "
                                      "--overwrite to replace it.")
            check_replaceable(out)
        prefix = f".{out.name}.partial-{HOST}-{os.getpid()}-"
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
        tmp.chmod(0o777 & ~umask())  # mkdtemp makes 0700; a run directory is a normal one
        try:
            with _temporary_files_in(tmp / ".tmp"):
                yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{HOST}-{os.getpid()}")
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


def _remove_stale(out: Path) -> None:
    """Cleans what killed runs of this host left beside `out` (called under its lock).

    `.OUT.partial-HOST-PID-*` folders of dead processes are deleted. A
    `.OUT.old-HOST-PID` folder (a replace killed between its two renames) is
    put back as `out` when `out` is missing, else deleted.
    """
    for kind in ("partial", "old"):
        prefix = f".{out.name}.{kind}-"
        for stale in sorted(out.parent.glob(f"{prefix}*")):
            host, _, rest = stale.name[len(prefix):].partition("-")
            pid = rest.split("-", 1)[0]
            if host != HOST or not pid.isdigit() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not out.exists() and not out.is_symlink():
                os.replace(stale, out)
            else:
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
