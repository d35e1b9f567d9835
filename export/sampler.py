"""The command line both edge samplers share: parse, check the export, decode, write.

A device module: it imports only the Python standard library, numpy and the
device modules beside it (`recipes`, `reader`, `images`), so
`sample_onnx.py` / `sample_litert.py` run on a device that has no
TensorFlow, Keras or keras_vae. Each sampler gives `run_sampler` its
runtime's `load`; everything else (the arguments, the manifest and file
checks, the draws, the picture) is here, once.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

if __package__:
    from keras_vae import recipes

    from . import images, reader
    from .reader import EdgeError
else:  # run from an export folder: the device modules sit beside this file
    import images
    import reader
    import recipes
    from reader import EdgeError

# The most image values (float32) one sampler run holds: 256 MiB.
MAX_OUTPUT_VALUES = 1 << 26
# The autoregressive loop over code grids: the most logits one step holds (1 GiB of
# float32), and the most logits all its steps compute (one step per grid cell).
MAX_STEP_LOGITS = 1 << 28
MAX_CODE_LOGITS = 1 << 33


def parser(prog: str, runtime: str, precisions: list[str]) -> argparse.ArgumentParser:
    """The command line both samplers share; every value is checked as it is parsed."""
    p = argparse.ArgumentParser(
        prog=prog,
        description=f"Decode images from a keras-vae export with {runtime} (no TensorFlow).",
    )
    p.add_argument("export_dir", help="directory with manifest.json and the exported files")
    p.add_argument("--n", type=recipes.image_count, default=16,
                   help=f"number of prior samples (at most {recipes.MAX_IMAGES})")
    p.add_argument("--seed", type=recipes.seed_int, default=0,
                   help="seed of numpy's Generator for z")
    p.add_argument("--interpolate", type=recipes.seed_int, nargs=2, metavar=("SEED_A", "SEED_B"),
                   help="decode a path between the first draws of two seeds instead")
    p.add_argument("--steps", type=recipes.bounded_int(2, recipes.MAX_IMAGES, "a number of steps"),
                   default=8, help=f"images along --interpolate (2 to {recipes.MAX_IMAGES})")
    p.add_argument("--class-ids", type=recipes.bounded_int(0, 2**31 - 1, "a class id"), nargs="+",
                   default=None,
                   help="labels to generate (conditional exports), cycled over the images")
    p.add_argument("--precision", choices=precisions, default=precisions[0],
                   help="which exported decoder file to run")
    p.add_argument("--batch-size", type=recipes.bounded_int(1, 1 << 16, "a batch size"),
                   default=256)
    p.add_argument("--threads", type=recipes.bounded_int(0, 1024, "a thread count"), default=0,
                   help="runtime threads (0: its default)")
    p.add_argument("--out", type=recipes.image_file, default=Path("samples.png"),
                   help="PNG grid, or .npy for raw images")
    return p


def code_grids(manifest: dict, args, fmt: str, load) -> np.ndarray:
    """A VQ-VAE's `(n, h, w)` int32 codes: the autoregressive loop over its prior graph.

    The prior file (`graph` in the manifest's prior table; uniform codes when
    it is null) is verified and run in fp32, whatever the decoder's precision.

    Raises:
        EdgeError: interpolation asked for, a bad `--n`, a missing or bad file.
    """
    if args.interpolate:
        raise EdgeError("--interpolate needs continuous latents; a VQ-VAE export draws "
                        "discrete code grids (use --n and --seed).")
    prior = manifest["prior"]  # grid and codebook bounded by reader.check_manifest
    grid_shape, codebook_size = tuple(prior["grid_shape"]), prior["codebook_size"]
    check_code_cost(args.n, grid_shape, codebook_size)
    if prior.get("graph") is None:
        def run_logits(codes):  # no trained prior: uniform codes
            return np.zeros((*codes.shape, codebook_size), np.float32)
    else:
        entry = reader.find_file(manifest, prior["graph"], fmt, "fp32")
        _, run = load(reader.read_verified(args.export_dir, entry), args.threads, entry["path"],
                      "logits")

        def run_logits(codes):
            return run({"indices": codes})
    return recipes.autoregressive_codes(run_logits, args.n, grid_shape, codebook_size, args.seed)


def check_code_cost(n: int, grid_shape, codebook_size: int) -> None:
    """Refuses `n` code grids whose autoregressive loop exceeds the sampler's budget.

    Each of the grid's cells runs the prior on all `n` grids, giving
    `n * cells * codebook_size` logits: bounded per step by
    `MAX_STEP_LOGITS` and over the loop by `MAX_CODE_LOGITS`.
    """
    cells = math.prod(grid_shape)
    step = n * cells * codebook_size
    if step > MAX_STEP_LOGITS or step * cells > MAX_CODE_LOGITS:
        most = max(1, min(MAX_STEP_LOGITS // (cells * codebook_size),
                          MAX_CODE_LOGITS // (cells * cells * codebook_size)))
        raise EdgeError(
            f"{n} code grids of {list(grid_shape)} cells over {codebook_size} codes exceed the "
            f"cost a sampler runs at once; ask for at most {most} with --n.")


def check_output_size(n: int, shape) -> None:
    """Refuses `n` images of `shape` above what a sampler writes at once (any kind of model)."""
    if n * math.prod(shape) > MAX_OUTPUT_VALUES:
        raise EdgeError(
            f"{n} images of shape {list(shape)} exceed the {MAX_OUTPUT_VALUES >> 18} MiB of "
            "float32 images a sampler writes at once; ask for fewer with --n or --steps.")


def draw_z(manifest: dict, args) -> np.ndarray:
    """The z the arguments ask for: prior draws or an interpolation path."""
    latent_dim = int(manifest["latent_dim"])
    prior = manifest.get("prior")
    if args.interpolate:
        return recipes.interpolate(args.interpolate[0], args.interpolate[1], args.steps,
                                   latent_dim, prior)
    return recipes.sample_prior(prior, args.n, latent_dim, args.seed)


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
    try:
        ids = recipes.check_labels(class_ids, num_classes, what="--class-ids")
    except ValueError as e:
        raise EdgeError(str(e)) from None
    return np.resize(ids, n).astype(np.int32)


def run_sampler(argv, prog: str, runtime: str, fmt: str, precisions: list[str], load) -> int:
    """Parses arguments, checks the export, decodes with `load`'s runtime, writes the grid.

    Args:
        argv: Command-line arguments (None: `sys.argv[1:]`).
        prog: Program name for messages.
        runtime: Runtime name for messages.
        fmt: Manifest format of the files this runtime runs (`"onnx"`, `"litert"`).
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
        manifest = reader.read_manifest(args.export_dir)
        entry = reader.find_file(manifest, "decoder", fmt, args.precision)
        content = reader.read_verified(args.export_dir, entry)
        check_output_size(args.steps if args.interpolate else args.n,
                          manifest["image"]["shape"])
        class_labels(manifest, args.class_ids, 1)  # refused before any work
        inputs, decode = load(content, args.threads, entry["path"])
        del content
        reader.check_inputs(manifest, entry, inputs)
        reader.probe_decoder(manifest, decode, entry["path"])  # as the server does at start
        if reader.is_code_model(manifest):  # a VQ-VAE: code grids from its autoregressive prior
            key, z = "indices", code_grids(manifest, args, fmt, load)  # (n, h, w) int32
        else:
            key, z = "z", draw_z(manifest, args)  # (n, latent_dim)
        labels = class_labels(manifest, args.class_ids, len(z))
        batches = []
        for start in range(0, len(z), args.batch_size):
            feeds = {key: z[start:start + args.batch_size]}
            if labels is not None:
                feeds["label"] = labels[start:start + args.batch_size]
            batches.append(decode(feeds))
        decoded = np.concatenate(batches, axis=0)  # (n, *image shape)
        expected = (len(z), *manifest["image"]["shape"])
        if decoded.shape != expected:
            raise EdgeError(f"{entry['path']} produced {decoded.shape} images, expected "
                            f"{expected}.")
        reader.check_value_range(decoded, manifest["image"].get("value_range"), entry["path"])
        ncols = len(z) if args.interpolate else None
        written = images.save_images(decoded, args.out, ncols)
    except ValueError as e:  # EdgeError, and the recipes' checks of the manifest's tables
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"{prog}: error: {recipes.clip(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prog}: error: out of memory; ask for fewer images with --n or --steps, or "
              "a smaller --batch-size", file=sys.stderr)
        return 2
    print(f"Wrote {len(z)} images decoded by {runtime} ({entry['path']}) to {written}")
    return 0
