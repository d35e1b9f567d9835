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
import sys
from pathlib import Path

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


def read_manifest(export_dir) -> dict:
    """Loads `export_dir/manifest.json` and checks its layout.

    Raises:
        EdgeError: missing directory or manifest, invalid JSON, wrong version.
    """
    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not export_dir.is_dir():
        raise EdgeError(f"No export directory at {export_dir}")
    if not path.is_file():
        raise EdgeError(f"No {MANIFEST} in {export_dir}: is this a keras-vae export directory?")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeError(f"{path} is not valid JSON ({e}); re-run the export.") from None
    if isinstance(manifest, dict) and manifest.get("manifest_version") == 1:
        manifest = {**manifest, "manifest_version": MANIFEST_VERSION, "prior": STANDARD_NORMAL}
    if not isinstance(manifest, dict) or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise EdgeError(
            f"{path} is not a keras-vae manifest of version {MANIFEST_VERSION} "
            f"(found {manifest.get('manifest_version') if isinstance(manifest, dict) else None!r})"
        )
    for key in ("latent_dim", "image", "files"):
        if key not in manifest:
            raise EdgeError(f"{path} has no {key!r} entry; re-run the export.")
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
    raise EdgeError(
        f"The export has no {graph} in {fmt} at precision {precision}; it has: "
        f"{', '.join(have) or 'nothing'}"
    )


def verify_file(export_dir, entry: dict) -> Path:
    """Checks that an exported file exists with the manifest's size and SHA-256.

    Returns:
        The file's path.

    Raises:
        EdgeError: missing, truncated or changed file, or a manifest written
            for another export.
    """
    path = Path(export_dir) / entry["path"]
    if not path.exists():
        raise EdgeError(f"{path} is missing (listed in {MANIFEST}).")
    size = size_of(path)
    if size != entry.get("size_bytes"):
        raise EdgeError(
            f"{path} has {size} bytes but {MANIFEST} says {entry.get('size_bytes')}: the file "
            "is truncated or changed, or the manifest belongs to another export."
        )
    digest = sha256_of(path)
    if digest != entry.get("sha256"):
        raise EdgeError(
            f"{path} does not match the SHA-256 in {MANIFEST} ({digest[:12]}... != "
            f"{str(entry.get('sha256'))[:12]}...): the file was changed, or the manifest "
            "belongs to another export."
        )
    return path


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

    A path ending in `.npy`, or any path when Pillow is not installed, gets
    the raw `(n, h, w, c)` images (a `.npy` beside the requested name). A PNG
    is upscaled so 8x8 or 28x28 digits stay visible. Writes are atomic.

    Returns:
        The path written.
    """
    out = Path(out)
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


# ---------------------------------------------------------------- the CLI


def parser(prog: str, runtime: str, precisions: list[str]) -> argparse.ArgumentParser:
    """The command line both samplers share."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Decode images from a keras-vae export with {runtime} (no TensorFlow).",
    )
    p.add_argument("export_dir", help="directory with manifest.json and the exported files")
    p.add_argument("--n", type=int, default=16, help="number of prior samples")
    p.add_argument("--seed", type=int, default=0, help="seed of numpy's Generator for z")
    p.add_argument("--interpolate", type=int, nargs=2, metavar=("SEED_A", "SEED_B"),
                   help="decode a path between the first draws of two seeds instead")
    p.add_argument("--steps", type=int, default=8, help="images along --interpolate")
    p.add_argument("--class-ids", type=int, nargs="+", default=None,
                   help="labels to generate (conditional exports), cycled over the images")
    p.add_argument("--precision", choices=precisions, default=precisions[0],
                   help="which exported decoder file to run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="runtime threads (0: its default)")
    p.add_argument("--out", default="samples.png", help="PNG grid, or .npy for raw images")
    return p


def is_code_model(manifest: dict) -> bool:
    """Whether the export decodes grids of discrete codes (a VQ-VAE) instead of z."""
    prior = manifest.get("prior")
    return isinstance(prior, dict) and prior.get("type") == AUTOREGRESSIVE_CODES


def code_grids(manifest: dict, args, fmt: str, load) -> np.ndarray:
    """A VQ-VAE's `(n, h, w)` int32 codes: the autoregressive loop over its prior graph.

    The prior file (`graph` in the manifest's prior table; uniform codes when
    it is null) is verified and run at the sampler's precision.

    Raises:
        EdgeError: interpolation asked for, a bad `--n`, a missing or bad file.
    """
    if args.interpolate:
        raise EdgeError("--interpolate needs continuous codes; a VQ-VAE export draws "
                        "discrete code grids (use --n and --seed).")
    if args.n < 1:
        raise EdgeError(f"--n must be >= 1, got {args.n}")
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
        _, run = load(verify_file(args.export_dir, entry), args.threads, "logits")

        def run_logits(codes):
            return run({"indices": codes})
    return autoregressive_codes(run_logits, args.n, grid_shape, codebook_size, args.seed)


def codes(manifest: dict, args) -> np.ndarray:
    """The z the arguments ask for: prior draws or an interpolation path."""
    latent_dim = int(manifest["latent_dim"])
    prior = manifest.get("prior")
    if args.interpolate:
        return interpolate(args.interpolate[0], args.interpolate[1], args.steps, latent_dim,
                           prior)
    if args.n < 1:
        raise EdgeError(f"--n must be >= 1, got {args.n}")
    return sample_prior(prior, args.n, latent_dim, args.seed)


def run_sampler(argv, prog: str, runtime: str, fmt: str, precisions: list[str], load) -> int:
    """Parses arguments, checks the export, decodes with `load`'s runtime, writes the grid.

    Args:
        argv: Command-line arguments (None: `sys.argv[1:]`).
        prog: Program name for messages.
        runtime: Runtime name for messages.
        fmt: Manifest format of the files this runtime runs.
        precisions: Precisions it can run, the default first.
        load: `load(path, threads, output="x") -> (inputs, run)` where `inputs`
            is `{name: (shape, dtype_name)}` and `run(feeds)` gives that
            output (images, or a code prior's `logits`); raises EdgeError
            when the runtime cannot load the file.

    Returns:
        The exit status: 0, or 2 with a one-line message on stderr.
    """
    args = parser(prog, runtime, precisions).parse_args(argv)
    try:
        if args.batch_size < 1:
            raise EdgeError(f"--batch-size must be >= 1, got {args.batch_size}")
        manifest = read_manifest(args.export_dir)
        entry = find_file(manifest, "decoder", fmt, args.precision)
        path = verify_file(args.export_dir, entry)
        if is_code_model(manifest):  # a VQ-VAE: code grids from its autoregressive prior
            key, z = "indices", code_grids(manifest, args, fmt, load)  # (n, h, w) int32
        else:
            key, z = "z", codes(manifest, args)  # (n, latent_dim)
        labels = class_labels(manifest, args.class_ids, len(z))
        inputs, decode = load(path, args.threads)
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
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    print(f"Wrote {len(z)} images decoded by {runtime} ({entry['path']}) to {written}")
    return 0
