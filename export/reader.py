"""Reading an export folder as untrusted input: its manifest, its files, the runtime's view.

A device module: it imports only the Python standard library, numpy and the
shared `recipes` (beside it in an export folder), never TensorFlow, Keras or
the rest of keras_vae. `read_manifest` checks the whole layout of
`manifest.json`, `read_verified` hands a runtime the bytes of a file checked
against the manifest's size and SHA-256 (so what runs is what was checked),
and `check_inputs` compares the runtime's view of a graph with the manifest.
Every problem is an `EdgeError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path, PurePosixPath

import numpy as np

if __package__:
    from keras_vae import recipes
else:  # run from an export folder: the shared recipes sit beside this file
    import recipes

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2  # 2: `prior` is a table (version 1 exports: N(0, I))


class EdgeError(ValueError):
    """A problem with the export directory or the arguments, reported without a traceback."""


# ------------------------------------------------------------- manifest

# What a sampler reads from an export folder, which it treats as untrusted
# input: at most this many bytes per exported file (a decoder is a few MB)...
MAX_FILE_BYTES = 2 << 30
# ...and per manifest.json (a few kB).
MAX_MANIFEST_BYTES = 4 << 20


def echo(value) -> str:
    """`repr(value)` cut to `recipes.MAX_ECHO` characters: a value from the folder, quoted."""
    return recipes.clip(repr(value))


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
        reason = "nested too deep" if isinstance(e, RecursionError) else recipes.clip(e)
        raise EdgeError(f"{MANIFEST} is not valid JSON ({reason}); re-run the export.") from None
    if isinstance(manifest, dict) and manifest.get("manifest_version") == 1:
        manifest = {**manifest, "manifest_version": MANIFEST_VERSION,
                    "prior": recipes.STANDARD_NORMAL}
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


def _is_number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _is_range(value) -> bool:
    """Whether `value` is a declared value range: null or `[low, high]`, finite, low < high."""
    return value is None or (isinstance(value, list) and len(value) == 2
                             and all(_is_number(v) for v in value) and value[0] < value[1])


def check_manifest(manifest: dict) -> dict:
    """Checks a manifest's whole layout, its values and its sizes; returns it.

    The one check of every consumer (the exporter before it writes, both
    samplers, the server and its scorer): everything they read is checked
    before it is used. Types and bounds of `latent_dim`, `image.shape`,
    `num_classes`, `class_names`; each declared value range (`image` and
    `graphs`: finite, low < high); the latents of the model's kind, a
    continuous prior's whole table (`recipes.check_prior`: finite, bounded)
    or a code grid and codebook (`recipes.check_code_grid`: bounded, so
    the autoregressive loop's cost is) with a matching `codes` entry; the
    `family` entry against the prior; the decoder's input against the
    latents; the `anomaly` threshold; and each `files` / `bundle` entry's
    `path`, `format`, `graph`, `precision`, `inputs`, `size_bytes`, `sha256`.

    Raises:
        EdgeError: naming the first missing, mistyped or out-of-range entry.
    """
    def need(ok, where, what):
        if not ok:
            raise EdgeError(f"{MANIFEST}: {where} must be {what}; re-run the export.")

    def table_check(check, *args):
        try:
            return check(*args)
        except ValueError as e:
            raise EdgeError(f"{MANIFEST}: {e}") from None

    prior = manifest.get("prior")
    codes = is_code_model(manifest)
    need("latent_dim" in manifest and (
        manifest["latent_dim"] is None if codes
        else _is_int(manifest["latent_dim"], 1, MAX_LATENT_DIM)),
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
    need(names is None or (isinstance(names, list) and len(names) <= MAX_CLASSES
                           and all(isinstance(n, str) for n in names)),
         "'class_names'", "a list of strings or null")
    need(_is_range(image.get("value_range")), "'image.value_range'",
         "null or [low, high], two finite numbers with low < high")
    need(prior is None or (isinstance(prior, dict) and isinstance(prior.get("type"), str)),
         "'prior'", "an object with a string 'type'")
    graphs = manifest.get("graphs", {})
    need(isinstance(graphs, dict) and len(graphs) <= MAX_ENTRIES, "'graphs'", "an object")
    for name, graph in graphs.items():
        need(isinstance(graph, dict) and _is_range(graph.get("value_range")),
             f"'graphs.{recipes.clip(name, 40)}'",
             "an object whose 'value_range' is null or [low, high] (finite, low < high)")
    if "decoder" in graphs and "value_range" in graphs["decoder"]:
        need(graphs["decoder"]["value_range"] == image.get("value_range"),
             "'graphs.decoder.value_range'", "the same as 'image.value_range'")
    if codes:  # a VQ-VAE: a bounded code grid, its codebook, the graph that scores codes
        grid = table_check(recipes.check_code_grid, prior.get("grid_shape"),
                           prior.get("codebook_size"))
        need(prior.get("graph") is None or _is_str(prior.get("graph")), "'prior.graph'",
             "a graph name or null")
        declared = manifest.get("codes")
        need(declared is None or (isinstance(declared, dict)
                                  and declared.get("grid_shape") == list(grid)
                                  and declared.get("codebook_size") == prior["codebook_size"]),
             "'codes'", "an object with the prior's 'grid_shape' and 'codebook_size'")
        decoder_input = ("indices", [None, *grid])
    else:  # continuous z: the whole table sample_prior draws from, finite and bounded
        need(manifest.get("codes") is None, "'codes'",
             "absent for a model with continuous latents (the prior is not over code grids)")
        table_check(recipes.check_prior, prior, manifest["latent_dim"])
        decoder_input = ("z", [None, manifest["latent_dim"]])
    anomaly = manifest.get("anomaly")
    need(anomaly is None or (isinstance(anomaly, dict) and _is_number(anomaly.get("threshold"))
                             and (anomaly.get("quantile") is None or (
                                 _is_number(anomaly["quantile"])
                                 and 0 < anomaly["quantile"] <= 1))),
         "'anomaly'", "null or an object with a finite 'threshold' (and a 'quantile' in (0, 1])")
    family = manifest.get("family")
    if family is not None:  # exports before the family entry have none
        need(isinstance(family, dict) and _is_str(family.get("name"))
             and family.get("latent_kind") in LATENT_KINDS, "'family'",
             f"an object with a 'name' and a 'latent_kind' in {sorted(LATENT_KINDS)}")
        need((family["latent_kind"] == "codes") == codes, "'family.latent_kind'",
             "'codes' exactly when the prior is over code grids (the family and the prior "
             "disagree)")
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
            if entry["graph"] == "decoder":
                name, shape = decoder_input
                if [s["shape"] for s in entry["inputs"] if s["name"] == name] != [shape]:
                    kind = "code grid" if codes else "latent size"
                    have = recipes.clip(", ".join(f"{s['name']} {s['shape']}"
                                                  for s in entry["inputs"]), 80)
                    raise EdgeError(
                        f"{MANIFEST}: {where} (the decoder) takes {have or 'nothing'}, not the "
                        f"{name!r} {shape} its {kind} needs: the manifest belongs to another "
                        "model, or its family was relabelled.")
    return manifest


# Outputs may pass their declared range by this share of its width (the rounding
# of fp16 and int8 files); a graph beyond it does not compute what it declares.
VALUE_RANGE_TOLERANCE = 1e-3


def check_value_range(values, value_range, what: str) -> None:
    """Refuses outputs that are not finite or lie outside their declared `[low, high]`.

    Raises:
        EdgeError: one line naming `what`, the range it reached and the declared one.
    """
    values = np.asarray(values)
    if values.size == 0:
        return
    if not np.all(np.isfinite(values)):
        raise EdgeError(f"{what} gives NaN or inf values; the export is broken.")
    if value_range is None:
        return
    low, high = (float(v) for v in value_range)
    slack = VALUE_RANGE_TOLERANCE * (high - low)
    lo, hi = float(values.min()), float(values.max())
    if lo < low - slack or hi > high + slack:
        raise EdgeError(f"{what} gives values in [{lo:.4g}, {hi:.4g}], outside the range "
                        f"[{low:g}, {high:g}] the manifest declares; refusing the export.")


# The kinds of latents a model family has: z drawn from a prior table, or code grids.
LATENT_KINDS = ("continuous", "codes")


def is_code_model(manifest: dict) -> bool:
    """Whether the export decodes grids of discrete codes (a VQ-VAE) instead of z."""
    prior = manifest.get("prior")
    return isinstance(prior, dict) and prior.get("type") == recipes.AUTOREGRESSIVE_CODES


# A format's other names in a manifest: LiteRT files are "litert", and a manifest
# may name them "tflite" (their suffix, the name exports wrote first); readers take both.
FORMAT_ALIASES = {"tflite": "litert"}


def format_name(name):
    """The one name of manifest format `name` (`"litert"` for `"tflite"`)."""
    return FORMAT_ALIASES.get(name, name) if isinstance(name, str) else name


def find_file(manifest: dict, graph: str, fmt: str, precision: str) -> dict:
    """The manifest entry of one exported file.

    Args:
        manifest: A checked manifest (`read_manifest`).
        graph: `"decoder"`, `"encoder"`, ...
        fmt: Its format: `"onnx"`, `"litert"` (or its alias `"tflite"`), ...
        precision: `"fp32"`, `"int8_full"`, ...

    Raises:
        EdgeError: no such file, listing the ones that exist.
    """
    want = (graph, format_name(fmt), precision)
    for entry in manifest["files"]:
        if (entry.get("graph"), format_name(entry.get("format")), entry.get("precision")) == want:
            return entry
    have = sorted(
        f"{e.get('graph')}/{e.get('format')}/{e.get('precision')}" for e in manifest["files"]
    )
    listing = recipes.clip(", ".join(have) or "nothing")
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


# Prior draws the decoder runs on when a consumer loads an export.
PROBE_DRAWS = 4


def probe_decoder(manifest: dict, run, what: str) -> None:
    """Runs a loaded decoder once on a few draws and checks its images against the manifest.

    The draws are `PROBE_DRAWS` prior draws of seed 0 (uniform codes for a
    code-grid model), with labels `0, 1, ...` for a conditional model: the
    same feeds for every consumer, so they refuse the same decoder alike.

    Args:
        manifest: A checked manifest (`read_manifest`).
        run: `run(feeds) -> images` in the consumer's runtime.
        what: The decoder file's name, for messages.

    Raises:
        EdgeError: images of the wrong shape, not finite, or outside the
            declared `image.value_range`.
    """
    rng = np.random.default_rng(0)
    if is_code_model(manifest):
        prior = manifest["prior"]
        feeds = {"indices": rng.integers(0, prior["codebook_size"],
                                         (PROBE_DRAWS, *prior["grid_shape"])).astype(np.int32)}
    else:
        feeds = {"z": recipes.sample_prior(manifest.get("prior"), PROBE_DRAWS,
                                           manifest["latent_dim"], rng)}
    classes = int(manifest.get("num_classes") or 0)
    if classes:
        feeds["label"] = (np.arange(PROBE_DRAWS) % classes).astype(np.int32)
    images = np.asarray(run(feeds))
    expected = (PROBE_DRAWS, *manifest["image"]["shape"])
    if images.shape != expected:
        raise EdgeError(f"{what} gives images of shape {list(images.shape)} for prior draws, "
                        f"the manifest says {list(expected)}.")
    check_value_range(images, manifest["image"].get("value_range"), what)
