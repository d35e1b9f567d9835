"""What the edge samplers share: reading and checking an export directory, drawing z, grids.

This module needs only the Python standard library and numpy (Pillow if
present), so `sample_onnx.py` / `sample_litert.py` run on a device that has
no TensorFlow, Keras or keras_vae: copy the sampler, this file and the export
directory, nothing else. The exporter uses the same `sha256_of` and manifest
layout, so writer and reader cannot drift apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import stat
import sys
from pathlib import Path, PurePosixPath

import numpy as np

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: `prior` is a table (version 1 exports: N(0, I))


class EdgeError(ValueError):
    """A problem with the export directory or the arguments, reported without a traceback."""


# ------------------------------------------------------------ checksums


def sha256_of(path) -> str:
    """SHA-256 of a file, or of a directory (SavedModel) as a sorted listing.

    A directory hashes the lines `relative/path <sha256 of the file>` of every
    file beneath it, in sorted order, so renaming, adding or changing any file
    changes the digest.
    """
    path = Path(path)
    if path.is_dir():
        listing = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = item.relative_to(path).as_posix()
            listing.update(f"{rel} {sha256_of(item)}\n".encode())
        return listing.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_of(path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# ------------------------------------------------------------- manifest

# What a sampler reads from an export folder, which it treats as untrusted
# input: at most this many bytes per exported file (a decoder is a few MB)...
MAX_FILE_BYTES = 2 << 30
# ...and per manifest.json (a few kB).
MAX_MANIFEST_BYTES = 4 << 20
# Longest text from the folder echoed in a message.
MAX_ECHO = 200


def clip(text, limit: int = MAX_ECHO) -> str:
    """`str(text)` cut to `limit` characters: what a message may quote from a file."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def echo(value) -> str:
    """`repr(value)` cut to `MAX_ECHO` characters."""
    return clip(repr(value))


def read_manifest(export_dir) -> dict:
    """Loads `export_dir/manifest.json` and checks its whole layout (`check_manifest`).

    The manifest must be a regular file (not a link) of at most
    `MAX_MANIFEST_BYTES`.

    Raises:
        EdgeError: missing directory or manifest, invalid JSON, wrong version,
            or a missing or mistyped entry (named in the message).
    """
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise EdgeError(f"No export directory at {export_dir}")
    try:
        os.lstat(export_dir / MANIFEST)
    except FileNotFoundError:
        raise EdgeError(
            f"No {MANIFEST} in {export_dir}: is this a keras-vae export directory?") from None
    raw = read_member(export_dir, MANIFEST, limit=MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        reason = "nested too deep" if isinstance(e, RecursionError) else clip(e)
        raise EdgeError(f"{MANIFEST} is not valid JSON ({reason}); re-run the export.") from None
    if isinstance(manifest, dict) and manifest.get("manifest_version") == 1:
        manifest = {**manifest, "manifest_version": MANIFEST_VERSION, "prior": STANDARD_NORMAL}
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        found = manifest.get("manifest_version") if isinstance(manifest, dict) else None
        raise EdgeError(f"{MANIFEST} is not a keras-vae manifest of version {MANIFEST_VERSION} "
                        f"(found {echo(found)})")
    return check_manifest(manifest)


# Bounds on what a manifest may declare (far above any real export).
MAX_LATENT_DIM = 1 << 16
MAX_IMAGE_VALUES = 1 << 24
MAX_CLASSES = 1 << 20
MAX_ENTRIES = 10_000


def _is_int(value, lo=0, hi=None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= lo
            and (hi is None or value <= hi))


def _is_str(value) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 4096


def check_manifest(manifest: dict) -> dict:
    """Checks the types and required keys of a manifest's whole layout; returns it.

    Everything a sampler reads is checked before it is used: `latent_dim`,
    `image.shape`, `num_classes`, `class_names`, `prior` (its type; the
    table is checked by `sample_prior`), `graphs`, and each `files` /
    `bundle` entry's `path`, `format`, `graph`, `precision`, `inputs`,
    `size_bytes` and `sha256`.

    Raises:
        EdgeError: naming the first missing or mistyped entry.
    """
    def need(ok, where, what):
        if not ok:
            raise EdgeError(f"{MANIFEST}: {where} must be {what}; re-run the export.")

    prior = manifest.get("prior")
    codes = is_code_model(manifest)
    need("latent_dim" in manifest and (
        _is_int(manifest["latent_dim"], 1, MAX_LATENT_DIM) or (codes and manifest["latent_dim"]
                                                                is None)),
         "'latent_dim'", f"an integer in [1, {MAX_LATENT_DIM}] (null for a code-grid model)")
    image = manifest.get("image")
    need(isinstance(image, dict), "'image'", "an object with a 'shape'")
    shape = image.get("shape")
    need(isinstance(shape, list) and 1 <= len(shape) <= 4
         and all(_is_int(d, 1, MAX_IMAGE_VALUES) for d in shape)
         and math.prod(shape) <= MAX_IMAGE_VALUES,
         "'image.shape'", f"a list of 1 to 4 positive integers (at most {MAX_IMAGE_VALUES} "
         "values in all)")
    need(_is_int(manifest.get("num_classes") or 0, 0, MAX_CLASSES), "'num_classes'",
         f"an integer in [0, {MAX_CLASSES}] or null")
    names = manifest.get("class_names")
    need(names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names)),
         "'class_names'", "a list of strings or null")
    need(prior is None or (isinstance(prior, dict) and isinstance(prior.get("type"), str)),
         "'prior'", "an object with a string 'type'")
    need(isinstance(manifest.get("graphs", {}), dict), "'graphs'", "an object")
    for key in ("files", "bundle"):
        entries = manifest.get(key, [] if key == "bundle" else None)
        need(isinstance(entries, list) and len(entries) <= MAX_ENTRIES, f"{key!r}",
             f"a list of at most {MAX_ENTRIES} entries")
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]"
            need(isinstance(entry, dict), where, "an object")
            need(_is_str(entry.get("path")), f"{where}.path", "a file name")
            need(_is_int(entry.get("size_bytes")), f"{where}.size_bytes",
                 "a non-negative integer")
            digest = entry.get("sha256")
            need(isinstance(digest, str) and len(digest) == 64
                 and all(c in "0123456789abcdef" for c in digest), f"{where}.sha256",
                 "64 lowercase hex digits")
            if key == "bundle":
                continue
            for field in ("format", "graph", "precision"):
                need(_is_str(entry.get(field)), f"{where}.{field}", "a string")
            for field in ("inputs", "outputs"):
                specs = entry.get(field, [] if field == "outputs" else None)
                need(isinstance(specs, list), f"{where}.{field}", "a list")
                for j, spec in enumerate(specs):
                    need(isinstance(spec, dict) and _is_str(spec.get("name"))
                         and _is_str(spec.get("dtype")) and isinstance(spec.get("shape"), list)
                         and all(d is None or _is_int(d) for d in spec["shape"]),
                         f"{where}.{field}[{j}]",
                         "an object with a 'name', a 'dtype' and a 'shape' (integers or null)")
    return manifest


def find_file(manifest: dict, graph: str, fmt: str, precision: str) -> dict:
    """The manifest entry of one exported file.

    Raises:
        EdgeError: no such file, listing the ones that exist.
    """
    for entry in manifest["files"]:
        if (entry.get("graph"), entry.get("format"), entry.get("precision")) == (
            graph, fmt, precision
        ):
            return entry
    have = sorted(
        f"{e.get('graph')}/{e.get('format')}/{e.get('precision')}" for e in manifest["files"]
    )
    listing = clip(", ".join(have) or "nothing")
    raise EdgeError(
        f"The export has no {graph} in {fmt} at precision {precision}; it has: {listing}"
    )


# ------------------------------------------------- files of the export folder


def member_path(export_dir, name) -> Path:
    """The path of a file the manifest names, which must stay inside `export_dir`.

    `name` is a relative POSIX path without `.`, `..` or empty parts, and no
    part of it may be a symbolic link: nothing outside the folder is reached.

    Raises:
        EdgeError: an unsafe name, a link, or a missing file.
    """
    text = name if isinstance(name, str) else ""
    parts = text.split("/")
    if (not text or "\\" in text or "\0" in text or PurePosixPath(text).is_absolute()
            or any(part in ("", ".", "..") for part in parts)):
        raise EdgeError(f"{MANIFEST} names {echo(name)}, which is not a plain relative path "
                        "inside the export folder; refusing it.")
    root = Path(export_dir).resolve()
    path = root
    for part in parts:
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            raise EdgeError(f"{echo(text)} is missing (listed in {MANIFEST}).") from None
        if stat.S_ISLNK(mode):
            raise EdgeError(f"{echo(text)} is a symbolic link in the export folder; the "
                            "sampler reads only regular files inside it.")
    if root not in path.resolve().parents:  # cannot happen without a link; stated anyway
        raise EdgeError(f"{echo(text)} lies outside the export folder; refusing it.")
    return path


def read_member(export_dir, name, size: int | None = None, sha256: str | None = None,
                limit: int | None = None, keep: bool = True) -> bytes | None:
    """Reads one regular file of the export folder, bounded, checking its size and SHA-256.

    The file is opened without following links (`O_NOFOLLOW`) and without
    blocking (`O_NONBLOCK`, so a FIFO cannot hang the reader), checked to be a
    regular file on the open descriptor, and read to at most `limit` bytes
    (or `size` + 1): a special file or a huge file costs nothing. Messages
    name the file but never its actual size or digest.

    Args:
        export_dir: The export folder.
        name: The file's path relative to it (as the manifest lists it).
        size: The size the manifest lists (None: not checked).
        sha256: The digest the manifest lists (None: not checked).
        limit: The most bytes read (default `MAX_FILE_BYTES`).
        keep: Return the content (False: only check it, reading in blocks).

    Returns:
        The file's bytes (or None when `keep` is False).

    Raises:
        EdgeError: an unsafe name, a link, a missing or special file, a file
            over `limit`, or a size or checksum that differs from the manifest.
    """
    limit = MAX_FILE_BYTES if limit is None else limit
    path = member_path(export_dir, name)
    label = echo(name)
    if not stat.S_ISREG(os.lstat(path).st_mode):
        raise EdgeError(f"{label} is not a regular file; the sampler reads only regular files.")
    if size is not None and size > limit:
        raise EdgeError(f"{MANIFEST} lists {label} as larger than the {limit >> 20} MiB a "
                        "sampler reads; refusing it.")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise EdgeError(f"{label} is not a regular file; the sampler reads only regular "
                            "files.")
        budget = min(limit, size) + 1 if size is not None else limit + 1
        digest, chunks, read = hashlib.sha256(), [], 0
        while read < budget:
            block = f.read(min(1 << 20, budget - read))
            if not block:
                break
            read += len(block)
            digest.update(block)
            if keep:
                chunks.append(block)
    if read > limit:
        raise EdgeError(f"{label} is larger than the {limit >> 20} MiB a sampler reads; "
                        "refusing it.")
    if size is not None and read != size:
        raise EdgeError(
            f"{label} does not have the size {MANIFEST} lists: the file is truncated or "
            "changed, or the manifest belongs to another export."
        )
    if sha256 is not None and digest.hexdigest() != sha256:
        raise EdgeError(
            f"{label} does not match its SHA-256 in {MANIFEST}: the file was changed, or the "
            "manifest belongs to another export."
        )
    return b"".join(chunks) if keep else None


def _tree_digest(export_dir, name, size: int, limit: int) -> tuple[int, str]:
    """`(bytes, sha256_of)` of a folder in the export (a SavedModel), links refused."""
    root = member_path(export_dir, name)
    listing, total = hashlib.sha256(), 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for child in sorted(dirs + names):
            mode = os.lstat(Path(folder) / child).st_mode
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise EdgeError(f"{echo(name)} holds a link or special file; the sampler reads "
                                "only regular files.")
    items = sorted(p for p in root.rglob("*") if p.is_file())
    for item in items:
        rel = item.relative_to(root).as_posix()
        total += item.stat().st_size
        if total > min(limit, size):
            break
        data = read_member(export_dir, f"{name}/{rel}", limit=limit)
        listing.update(f"{rel} {hashlib.sha256(data).hexdigest()}\n".encode())
    return total, listing.hexdigest()


def verify_file(export_dir, entry: dict) -> Path:
    """Checks that an exported file is a regular file inside the folder, with the manifest's
    size and SHA-256 (a folder, a SavedModel: every file beneath it, links refused).

    Returns:
        The file's path.

    Raises:
        EdgeError: missing, truncated or changed file, a link, a special file,
            a path outside the folder, or a manifest written for another export.
    """
    name = entry.get("path")
    path = member_path(export_dir, name)
    if stat.S_ISDIR(os.lstat(path).st_mode):
        total, digest = _tree_digest(export_dir, name, entry["size_bytes"], MAX_FILE_BYTES)
        if total != entry["size_bytes"]:
            raise EdgeError(f"{echo(name)} does not have the size {MANIFEST} lists: truncated "
                            "or changed, or the manifest belongs to another export.")
        if digest != entry["sha256"]:
            raise EdgeError(f"{echo(name)} does not match its SHA-256 in {MANIFEST}: the file "
                            "was changed, or the manifest belongs to another export.")
        return path
    read_member(export_dir, name, entry["size_bytes"], entry["sha256"], keep=False)
    return path


def read_verified(export_dir, entry: dict) -> bytes:
    """The bytes of an exported file, checked like `verify_file` as they are read.

    A runtime given these bytes (not the path) runs exactly what was checked:
    the file cannot be swapped between the check and the load.
    """
    return read_member(export_dir, entry.get("path"), entry["size_bytes"], entry["sha256"])


# ---------------------------------------------------------- ONNX external data

# The ONNX messages that can hold a TensorProto, by protobuf field number
# (onnx/onnx.proto): where an initializer could point at an external file.
_ONNX_CHILDREN = {
    "model": {7: "graph", 25: "function"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse",
                  23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
_TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION, _EXTERNAL = 13, 14, 1


class _Malformed(Exception):
    pass


def _varint(buf, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i
        shift += 7


def _proto_fields(buf):
    """Yields `(field, wire_type, value)` of one protobuf message (value: int or memoryview)."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        value = None
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i:i + length], i + length
        else:
            raise _Malformed
        if i > n:
            raise _Malformed
        yield field, wire, value


def onnx_uses_external_data(content: bytes) -> bool:
    """Whether an ONNX model keeps any tensor in an external data file.

    A linear walk over the protobuf fields that can hold a TensorProto (graph
    initializers, node attributes, subgraphs, functions, sparse tensors),
    skipping the tensor data itself; no onnx package needed. External data
    would be read by the runtime from files the manifest's checksum does not
    cover, so the samplers refuse such a model.

    Raises:
        EdgeError: the bytes are not a well-formed protobuf.
    """
    stack = [("model", memoryview(content), 0)]
    try:
        while stack:
            kind, buf, depth = stack.pop()
            if depth > 64:
                raise _Malformed
            children = _ONNX_CHILDREN[kind]
            for field, wire, value in _proto_fields(buf):
                if kind == "tensor" and (field == _TENSOR_EXTERNAL_DATA or (
                        field == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL)):
                    return True
                if field in children and wire == 2:
                    stack.append((children[field], value, depth + 1))
    except _Malformed:
        raise EdgeError("not a well-formed ONNX protobuf (truncated or corrupt?)") from None
    return False


def check_inputs(manifest: dict, entry: dict, runtime_inputs: dict) -> None:
    """Checks the runtime's view of the decoder against the manifest.

    Args:
        manifest: The export's manifest.
        entry: The decoder file's entry.
        runtime_inputs: `{name: (shape, dtype_name)}` as the runtime reports
            them, batch dimension as None or -1.

    Raises:
        EdgeError: a missing input, a latent size or dtype that disagrees.
    """
    latent_dim = manifest["latent_dim"]
    key = "z" if latent_dim is not None else "indices"  # a VQ-VAE decodes code grids
    if key not in runtime_inputs:
        raise EdgeError(f"{entry['path']} has no input {key!r} (it has "
                        f"{sorted(runtime_inputs)}).")
    for spec in entry["inputs"]:
        name = spec["name"]
        if name not in runtime_inputs:
            raise EdgeError(
                f"{entry['path']} has no input {name!r} (it has {sorted(runtime_inputs)})."
            )
        shape, dtype = runtime_inputs[name]
        if dtype != spec["dtype"]:
            raise EdgeError(
                f"{entry['path']} input {name!r} is {dtype}, the manifest says {spec['dtype']}."
            )
        if list(shape[1:]) != list(spec["shape"][1:]):
            raise EdgeError(
                f"{entry['path']} input {name!r} has shape {list(shape)}, the manifest says "
                f"{spec['shape']}."
            )
    if latent_dim is None:
        return
    z_shape = runtime_inputs["z"][0]
    if z_shape[-1] != latent_dim:
        raise EdgeError(
            f"{entry['path']} decodes {z_shape[-1]}-dimensional z but the manifest's latent "
            f"size is {latent_dim}: the manifest belongs to another model."
        )


# ------------------------------------------------------------- latents


def prior_z(n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
    """`(n, latent_dim)` float32 draws from N(0, I), the same call as `keras_vae.prior_z`."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)


STANDARD_NORMAL = {"type": "standard_normal"}


def sample_prior(prior: dict | None, n: int, latent_dim: int,
                 seed: int | None = None) -> np.ndarray:
    """`(n, latent_dim)` float32 draws from a prior in its manifest form.

    The one recipe for every runtime (Keras, onnxruntime, LiteRT, the browser):

    - `{"type": "standard_normal"}`: `default_rng(seed).standard_normal((n, d), float32)`;
    - `{"type": "mixture", "weights": (K,), "means": (K, d), "log_vars": (K, d)}`:
      with one generator `rng = default_rng(seed)`, first `u = rng.random(n)`
      (float64) picks component `k = searchsorted(cumsum(w) / sum(w), u, "right")`,
      then `eps = rng.standard_normal((n, d), float32)` and
      `z = means[k] + exp(log_vars[k] / 2) * eps` in float32.

    Raises:
        EdgeError: an unknown prior type or a malformed mixture table.
    """
    prior = STANDARD_NORMAL if prior is None else prior
    kind = prior.get("type") if isinstance(prior, dict) else None
    if kind == "standard_normal":
        return prior_z(n, latent_dim, seed)
    if kind != "mixture":
        raise EdgeError(f"Unknown prior {kind!r} in the manifest; this sampler knows "
                        "'standard_normal' and 'mixture'.")
    try:
        weights = np.asarray(prior["weights"], np.float64)
        means = np.asarray(prior["means"], np.float32)
        log_vars = np.asarray(prior["log_vars"], np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeError(f"The manifest's mixture prior is malformed ({e}).") from None
    k = len(weights)
    if (weights.ndim != 1 or k < 1 or means.shape != (k, latent_dim)
            or log_vars.shape != (k, latent_dim) or not np.all(np.isfinite(weights))
            or np.any(weights < 0) or weights.sum() <= 0
            or not (np.all(np.isfinite(means)) and np.all(np.isfinite(log_vars)))):
        raise EdgeError(
            f"The manifest's mixture prior must have K >= 1 finite non-negative weights and "
            f"(K, {latent_dim}) finite means and log_vars; got weights {weights.shape}, "
            f"means {means.shape}, log_vars {log_vars.shape}."
        )
    rng = np.random.default_rng(seed)
    u = rng.random(n)  # (n,) float64 in [0, 1)
    cdf = np.cumsum(weights) / weights.sum()
    comps = np.minimum(np.searchsorted(cdf, u, side="right"), k - 1)  # (n,)
    eps = rng.standard_normal((n, latent_dim), dtype=np.float32)
    return (means[comps] + np.exp(0.5 * log_vars[comps]) * eps).astype(np.float32)


AUTOREGRESSIVE_CODES = "autoregressive_codes"


def autoregressive_codes(run_logits, n: int, grid_shape, codebook_size: int,
                         seed: int | None = None) -> np.ndarray:
    """`(n, height, width)` int32 code grids drawn position by position from a code prior.

    The one recipe for every runtime (Keras, onnxruntime, LiteRT): with
    `rng = default_rng(seed)` and the grid starting at zeros, for each
    position `(i, j)` in raster order, `logits = run_logits(codes)[:, i, j]`
    (the prior network on the partial grid; causal, so later zeros do not
    matter), `p = softmax(logits)` in float64, `u = rng.random(n)` and
    `code = searchsorted(cumsum(p), u, "right")` (inverse CDF, clipped to the
    last code).

    Args:
        run_logits: `run_logits(codes (n, h, w) int32) -> (n, h, w, codebook_size)`
            logits; a function returning zeros draws uniform codes.
        n: Number of grids.
        grid_shape: `(height, width)`.
        codebook_size: Number of codes.
        seed: Seed of numpy's Generator.

    Returns:
        int32 codes in `[0, codebook_size)`.

    Raises:
        EdgeError: logits of the wrong shape or non-finite.
    """
    if n < 1:
        raise EdgeError(f"n must be >= 1, got {n}")
    height, width = (int(d) for d in grid_shape)
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, height, width), np.int32)
    expected = (n, height, width, int(codebook_size))
    for i in range(height):
        for j in range(width):
            logits = np.asarray(run_logits(codes))
            if logits.shape != expected or not np.all(np.isfinite(logits)):
                raise EdgeError(f"The code prior gave logits {logits.shape} (finite: "
                                f"{bool(np.all(np.isfinite(logits)))}), expected finite "
                                f"{expected}.")
            step = logits[:, i, j].astype(np.float64)  # (n, codebook_size)
            p = np.exp(step - step.max(axis=1, keepdims=True))
            cdf = np.cumsum(p, axis=1)
            cdf /= cdf[:, -1:]
            u = rng.random(n)  # (n,) float64 in [0, 1)
            picked = (cdf <= u[:, None]).sum(axis=1)  # searchsorted(cdf, u, "right")
            codes[:, i, j] = np.minimum(picked, codebook_size - 1)
    return codes


# Below this angle (radians) between two codes, slerp is numerically lerp.
SLERP_MIN_ANGLE = 1e-4


def slerp(start, end, steps: int = 8) -> np.ndarray:
    """Spherical interpolation along the great circle from `start` to `end`.

    `z(t) = sin((1 - t) w) / sin(w) * start + sin(t w) / sin(w) * end`, with
    `w` the angle between the codes: the angle to `start` grows linearly in
    t, and between codes of equal norm every point keeps that norm (a linear
    path cuts through the low-density centre of a Gaussian prior instead).
    Zero, nearly parallel or nearly opposite codes (`sin(w)` ~ 0, no unique
    great circle) fall back to linear interpolation. Computed in float64.

    Args:
        start: Code `(latent_dim,)`.
        end: Code `(latent_dim,)`.
        steps: Number of points, endpoints included (>= 2).

    Returns:
        `(steps, latent_dim)` float32; the first row equals `start` and the
        last equals `end` exactly.

    Raises:
        EdgeError: (a ValueError) codes of different shapes or steps < 2.
    """
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise EdgeError(f"Interpolation needs two codes of the same shape (latent_dim,); got "
                        f"{a.shape} and {b.shape}.")
    if int(steps) < 2:
        raise EdgeError(f"steps must be >= 2 (the two endpoints), got {steps}")
    t = np.linspace(0.0, 1.0, int(steps))[:, None]  # (steps, 1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    omega = 0.0
    if na > 0.0 and nb > 0.0:
        omega = float(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0)))
    if omega < SLERP_MIN_ANGLE or np.pi - omega < SLERP_MIN_ANGLE:
        path = (1.0 - t) * a + t * b
    else:
        path = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    path[0], path[-1] = a, b  # exact endpoints, not sin(w)/sin(w) rounding
    return path.astype(np.float32)


def interpolate(seed_a: int, seed_b: int, steps: int, latent_dim: int,
                prior: dict | None = None) -> np.ndarray:
    """`slerp` between the first prior draws of two seeds.

    Returns:
        `(steps, latent_dim)` float32; the first row is the first draw of
        `seed_a`, the last that of `seed_b`.
    """
    a = sample_prior(prior, 1, latent_dim, seed_a)[0]
    b = sample_prior(prior, 1, latent_dim, seed_b)[0]
    return slerp(a, b, steps)


def class_labels(manifest: dict, class_ids, n: int) -> np.ndarray | None:
    """int32 labels for a conditional export (cycled over `n`), None for an unconditional one."""
    num_classes = int(manifest.get("num_classes") or 0)
    if not num_classes:
        if class_ids:
            raise EdgeError("--class-ids given, but this export is unconditional.")
        return None
    if not class_ids:
        names = manifest.get("class_names")
        hint = f" ({', '.join(map(str, names))})" if names else ""
        raise EdgeError(
            f"This conditional export needs --class-ids in [0, {num_classes}){hint}."
        )
    ids = np.asarray(class_ids, dtype=np.int64)
    bad = sorted(set(ids[(ids < 0) | (ids >= num_classes)].tolist()))
    if bad:
        raise EdgeError(f"--class-ids must be in [0, {num_classes}); got {bad}")
    return np.resize(ids, n).astype(np.int32)


# -------------------------------------------------------------- pictures


def grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles `(n, h, w, c)` images in [0, 1] into one uint8 picture (white gaps)."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = image
    canvas = np.round(canvas * 255).astype(np.uint8)
    return canvas[..., 0] if c == 1 else canvas


def display_scale(images) -> int:
    """Upscale factor (nearest neighbour) that makes small images (8x8 digits) visible."""
    return max(1, 64 // max(np.asarray(images).shape[1:3]))


def save_images(images: np.ndarray, out, ncols: int | None = None) -> Path:
    """Writes images as a PNG grid, or as a float32 `.npy` array.

    A path ending in `.npy`, or a `.png` when Pillow is not installed, gets
    the raw `(n, h, w, c)` images (a `.npy` beside the requested name). A PNG
    is upscaled so 8x8 or 28x28 digits stay visible. Writes are atomic.

    Returns:
        The path written.

    Raises:
        EdgeError: a suffix other than `.png` or `.npy`.
    """
    out = Path(out)
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise EdgeError(f"{clip(out)} must end in .png or .npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() != ".npy":
        try:
            from PIL import Image
        except ImportError:
            print("Pillow is not installed: writing the images as a .npy array instead.",
                  file=sys.stderr)
            out = out.with_suffix(".npy")
        else:
            picture = grid(images, ncols)
            scale = display_scale(images)
            picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
            return atomic_write(out, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
    return atomic_write(out, lambda tmp: np.save(tmp, np.asarray(images, np.float32)))


def partial_name(path) -> Path:
    """The temporary name a file or folder is written under before it is renamed into place.

    Hidden, beside `path` (so the rename is atomic), unique to the process,
    and ending in `path`'s own name, so suffix-checking writers (`.keras`,
    `.weights.h5`) accept it: `.partial-<pid>-<name>`.
    """
    path = Path(path)
    return path.with_name(f".partial-{os.getpid()}-{path.name}")


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Writes a file through a temporary name beside it, then renames it into place.

    `write(f)` gets the open temporary file. An interrupted or failed write
    leaves the previous file (or none), never a truncated one. This is the
    one atomic writer of keras_vae (`keras_vae.files` builds on it).

    Returns:
        `path`.
    """
    path = Path(path)
    tmp = partial_name(path)
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ------------------------------------------------------ argument types

# The most images one command decodes (a grid of 4,096 28x28 digits is a
# 1.9k x 1.9k picture); more is refused with this limit named.
MAX_IMAGES = 4096
# Seeds numpy's Generator, Keras and TensorFlow all accept.
MAX_SEED = 2**32 - 1
IMAGE_SUFFIXES = (".png", ".npy")
# The most image values (float32) one sampler run holds: 256 MiB.
MAX_OUTPUT_VALUES = 1 << 26


def bounded_int(lo: int, hi: int | None = None, what: str = "an integer"):
    """An argparse `type=`: an integer in `[lo, hi]`, else a usage error naming the range.

    Example:

    >>> p.add_argument("--n", type=bounded_int(1, MAX_IMAGES))
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {clip(text)!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {clip(text)}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def bounded_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                  hi_open: bool = False, what: str = "a number"):
    """An argparse `type=`: a finite float in the range, else a usage error naming it."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {clip(text)!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            left = "finite" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
            right = "" if hi is None else f" and {'<' if hi_open else '<='} {hi:g}"
            raise argparse.ArgumentTypeError(f"must be {left}{right}, got {clip(text)}")
        return value

    parse.__name__ = what
    return parse


seed_int = bounded_int(0, MAX_SEED, "a seed")
non_negative_int = bounded_int(0, None, "a non-negative integer")
positive_int = bounded_int(1, None, "a positive integer")
image_count = bounded_int(1, MAX_IMAGES, "a number of images")
non_negative_float = bounded_float(0.0, what="a non-negative number")
positive_float = bounded_float(0.0, lo_open=True, what="a positive number")


def output_file(suffixes=IMAGE_SUFFIXES):
    """An argparse `type=`: a file to write, with one of `suffixes`, that is not a folder."""
    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{clip(text)!r} must end in {' or '.join(suffixes)}")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{clip(text)!r} is a directory; name a file")
        if path.parent.exists() and not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"{clip(str(path.parent))!r} is not a directory")
        return path

    parse.__name__ = "an output file"
    return parse


image_file = output_file()


# ---------------------------------------------------------------- the CLI


def parser(prog: str, runtime: str, precisions: list[str]) -> argparse.ArgumentParser:
    """The command line both samplers share; every value is checked as it is parsed."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Decode images from a keras-vae export with {runtime} (no TensorFlow).",
    )
    p.add_argument("export_dir", help="directory with manifest.json and the exported files")
    p.add_argument("--n", type=image_count, default=16,
                   help=f"number of prior samples (at most {MAX_IMAGES})")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of numpy's Generator for z")
    p.add_argument("--interpolate", type=seed_int, nargs=2, metavar=("SEED_A", "SEED_B"),
                   help="decode a path between the first draws of two seeds instead")
    p.add_argument("--steps", type=bounded_int(2, MAX_IMAGES, "a number of steps"), default=8,
                   help=f"images along --interpolate (2 to {MAX_IMAGES})")
    p.add_argument("--class-ids", type=bounded_int(0, 2**31 - 1, "a class id"), nargs="+",
                   default=None,
                   help="labels to generate (conditional exports), cycled over the images")
    p.add_argument("--precision", choices=precisions, default=precisions[0],
                   help="which exported decoder file to run")
    p.add_argument("--batch-size", type=bounded_int(1, 1 << 16, "a batch size"), default=256)
    p.add_argument("--threads", type=bounded_int(0, 1024, "a thread count"), default=0,
                   help="runtime threads (0: its default)")
    p.add_argument("--out", type=image_file, default=Path("samples.png"),
                   help="PNG grid, or .npy for raw images")
    return p


def is_code_model(manifest: dict) -> bool:
    """Whether the export decodes grids of discrete codes (a VQ-VAE) instead of z."""
    prior = manifest.get("prior")
    return isinstance(prior, dict) and prior.get("type") == AUTOREGRESSIVE_CODES


def code_grids(manifest: dict, args, fmt: str, load) -> np.ndarray:
    """A VQ-VAE's `(n, h, w)` int32 codes: the autoregressive loop over its prior graph.

    The prior file (`graph` in the manifest's prior table; uniform codes when
    it is null) is verified and run in fp32, whatever the decoder's precision.

    Raises:
        EdgeError: interpolation asked for, a bad `--n`, a missing or bad file.
    """
    if args.interpolate:
        raise EdgeError("--interpolate needs continuous codes; a VQ-VAE export draws "
                        "discrete code grids (use --n and --seed).")
    prior = manifest["prior"]
    try:
        grid_shape = tuple(int(d) for d in prior["grid_shape"])
        codebook_size = int(prior["codebook_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeError(f"The manifest's code prior is malformed ({e}).") from None
    if prior.get("graph") is None:
        def run_logits(codes):  # no trained prior: uniform codes
            return np.zeros((*codes.shape, codebook_size), np.float32)
    else:
        entry = find_file(manifest, prior["graph"], fmt, "fp32")
        _, run = load(read_verified(args.export_dir, entry), args.threads, entry["path"],
                      "logits")

        def run_logits(codes):
            return run({"indices": codes})
    return autoregressive_codes(run_logits, args.n, grid_shape, codebook_size, args.seed)


def check_output_size(n: int, shape) -> None:
    """Refuses `n` images of `shape` above what a sampler writes at once (any kind of model)."""
    if n * math.prod(shape) > MAX_OUTPUT_VALUES:
        raise EdgeError(
            f"{n} images of shape {list(shape)} exceed the {MAX_OUTPUT_VALUES >> 18} MiB of "
            "float32 images a sampler writes at once; ask for fewer with --n or --steps.")


def codes(manifest: dict, args) -> np.ndarray:
    """The z the arguments ask for: prior draws or an interpolation path."""
    latent_dim = int(manifest["latent_dim"])
    prior = manifest.get("prior")
    if args.interpolate:
        return interpolate(args.interpolate[0], args.interpolate[1], args.steps, latent_dim,
                           prior)
    return sample_prior(prior, args.n, latent_dim, args.seed)


def run_sampler(argv, prog: str, runtime: str, fmt: str, precisions: list[str], load) -> int:
    """Parses arguments, checks the export, decodes with `load`'s runtime, writes the grid.

    Args:
        argv: Command-line arguments (None: `sys.argv[1:]`).
        prog: Program name for messages.
        runtime: Runtime name for messages.
        fmt: Manifest format of the files this runtime runs.
        precisions: Precisions it can run, the default first.
        load: `load(content, threads, name, output="x") -> (inputs, run)`:
            `content` is the file's bytes, already checked against the manifest
            (the runtime loads them, not the path, so what runs is what was
            checked), `name` its name for messages; `inputs` is
            `{name: (shape, dtype_name)}` and `run(feeds)` gives `output`
            (images, or a code prior's `logits`); raises EdgeError when the
            runtime cannot load the file.

    Returns:
        The exit status: 0, or 2 with a one-line message on stderr.
    """
    args = parser(prog, runtime, precisions).parse_args(argv)
    try:
        manifest = read_manifest(args.export_dir)
        entry = find_file(manifest, "decoder", fmt, args.precision)
        content = read_verified(args.export_dir, entry)
        check_output_size(args.steps if args.interpolate else args.n,
                          manifest["image"]["shape"])
        if is_code_model(manifest):  # a VQ-VAE: code grids from its autoregressive prior
            key, z = "indices", code_grids(manifest, args, fmt, load)  # (n, h, w) int32
        else:
            key, z = "z", codes(manifest, args)  # (n, latent_dim)
        labels = class_labels(manifest, args.class_ids, len(z))
        inputs, decode = load(content, args.threads, entry["path"])
        del content
        check_inputs(manifest, entry, inputs)
        images = []
        for start in range(0, len(z), args.batch_size):
            feeds = {key: z[start:start + args.batch_size]}
            if labels is not None:
                feeds["label"] = labels[start:start + args.batch_size]
            images.append(decode(feeds))
        images = np.concatenate(images, axis=0)
        expected = (len(z), *manifest["image"]["shape"])
        if images.shape != expected or not np.all(np.isfinite(images)):
            raise EdgeError(
                f"{entry['path']} produced {images.shape} images (finite: "
                f"{bool(np.all(np.isfinite(images)))}), expected finite {expected}."
            )
        ncols = len(z) if args.interpolate else None
        written = save_images(images, args.out, ncols)
    except EdgeError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {clip(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; ask for fewer images with --n or --steps, or "
              "a smaller --batch-size", file=sys.stderr)
        return 2
    print(f"Wrote {len(z)} images decoded by {runtime} ({entry['path']}) to {written}")
    return 0
