"""The `keras-vae` command line: train, evaluate and sample.

Each command parses its arguments and calls library functions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_vae.export.edge_io import (
    MAX_IMAGES,
    bounded_float,
    bounded_int,
    clip,
    image_count,
    image_file,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_float,
    seed_int,
)

# Bounds of the command line's numbers (far above any sensible run).
MAX_BATCH = 1 << 16
MAX_LATENT_DIM = 4096
MAX_EPOCHS = 100_000
MAX_K = 10_000  # importance samples per example
MAX_ARCH_OPTIONS_CHARS = 10_000
MAX_ARCH_OPTION_VALUE = 1 << 16  # widths, filter counts, kernel sizes
MAX_ARCH_OPTION_ITEMS = 64  # layers in a list
MAX_MESSAGE = 1000  # characters of an error message


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_data_args(p, split="train"):
    p.add_argument("--dataset", default="digits",
                   help="TFDS name, 'digits', or a path: IDX directory, .npz, image folder")
    p.add_argument("--split", default=split,
                   help="split; local sources have 'train', sliced like 'train[:7000]'")
    p.add_argument("--batch-size", type=bounded_int(1, MAX_BATCH, "a batch size"), default=64)
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--data-dir", default=None, help="TFDS data directory")


def add_model_data_args(p):
    """A model file and the data it is scored on (binarized once: a fixed test set)."""
    p.add_argument("model", help="path to model.keras")
    add_data_args(p)
    p.add_argument("--binarize", choices=["static", "none"], default="static",
                   help="binarize once with --seed (the fixed evaluation set)")


def _binarize_arg(value):
    return None if value == "none" else value


def add_objective_args(p):
    from keras_vae import objectives

    p.add_argument("--kl-warmup", type=non_negative_int, default=0, metavar="STEPS",
                   help="KL warm-up length in optimizer steps (the cycle length for "
                        "--kl-schedule cyclical); 0 for none")
    p.add_argument("--kl-schedule", choices=sorted(set(objectives.SCHEDULES) - {"constant"}),
                   default="linear",
                   help="shape of the KL warm-up")
    p.add_argument("--free-bits", type=non_negative_float, default=0.0, metavar="NATS",
                   help="floor on each latent dimension's KL (nats), Kingma et al. 2016")
    p.add_argument("--iwae-k", type=bounded_int(1, MAX_K, "a sample count"), default=1,
                   metavar="K", help="train on the IWAE bound with K importance samples (1: the ELBO)")
    p.add_argument("--conditional", action="store_true",
                   help="condition encoder and decoder on the data's labels")


def _objective_kwargs(args) -> dict:
    """VAE constructor arguments of the objective flags."""
    from keras_vae import objectives

    if args.kl_warmup < 0:
        raise ValueError(f"--kl-warmup must be >= 0 steps, got {args.kl_warmup}")
    schedule = None
    if args.kl_warmup:
        key = "steps" if args.kl_schedule == "linear" else "period"
        schedule = objectives.get(args.kl_schedule, **{key: args.kl_warmup})
    return {"kl_schedule": schedule, "free_bits": args.free_bits, "iwae_k": args.iwae_k}


def cmd_train(args):
    from keras_vae import training

    model_config = {"latent_dim": args.latent_dim, "arch": args.arch,
                    "arch_options": args.arch_options, "likelihood": args.likelihood,
                    "beta": args.beta, "prior": args.prior, **_objective_kwargs(args)}
    result = training.run(
        args.out, dataset=args.dataset, split=args.split, batch_size=args.batch_size,
        validation_split=args.validation_split, binarize=_binarize_arg(args.binarize),
        data_dir=args.data_dir, model_config=model_config, conditional=args.conditional,
        epochs=args.epochs, learning_rate=args.learning_rate, strategy=args.strategy,
        mixed_precision=args.mixed_precision, seed=args.seed, deterministic=args.deterministic,
        resume=args.resume, backup_dir=args.backup_dir, checkpoint=args.checkpoint,
        overwrite=args.overwrite, verbose=args.verbose, record=vars(args) | {"func": None})
    if result.out is not None:
        print(f"Wrote {args.out}/model.keras, history.json, samples.png, reconstructions.png "
              f"({result.seconds:.1f} s of training)")


def _json_object(text: str) -> dict:
    """argparse type: a small JSON object (`{...}`) of bounded numbers, else a usage error.

    At most `MAX_ARCH_OPTIONS_CHARS` characters, lists of at most
    `MAX_ARCH_OPTION_ITEMS` items and numbers of at most
    `MAX_ARCH_OPTION_VALUE` in size: an option cannot ask for a layer that
    exhausts memory.
    """
    if len(text) > MAX_ARCH_OPTIONS_CHARS:
        raise argparse.ArgumentTypeError(
            f"{len(text)} characters; at most {MAX_ARCH_OPTIONS_CHARS} are accepted")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({clip(e)}): {clip(text)!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"k\": 1}}', "
                                         f"got {clip(text)!r}")
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.values() if isinstance(node, dict) else node
        if isinstance(node, list) and len(node) > MAX_ARCH_OPTION_ITEMS:
            raise argparse.ArgumentTypeError(
                f"a list of {len(node)} items; at most {MAX_ARCH_OPTION_ITEMS} are accepted")
        for item in items:
            if isinstance(item, (dict, list)):
                stack.append(item)
            elif isinstance(item, (int, float)) and not isinstance(item, bool) and not (
                    abs(item) <= MAX_ARCH_OPTION_VALUE):
                raise argparse.ArgumentTypeError(
                    f"the value {clip(item)} is out of range; numbers must lie within "
                    f"+-{MAX_ARCH_OPTION_VALUE}")
    return value


def cmd_evaluate(args):
    from keras_vae import data, evaluation, saving

    model = saving.load_model(args.model)
    ds = data.load(args.dataset, args.split, batch_size=args.batch_size,
                   binarize=_binarize_arg(args.binarize), shuffle=False, seed=args.seed,
                   data_dir=args.data_dir)
    print(json.dumps(evaluation.evaluate(model, ds, iwae_k=args.iwae_k, seed=args.seed)))


def cmd_score(args):
    import numpy as np

    from keras_vae import anomaly, data, files, saving

    model = saving.load_model(args.model, compile=False)

    def load(source, split):
        return data.load(source, split, batch_size=args.batch_size,
                         binarize=_binarize_arg(args.binarize), shuffle=False, seed=args.seed,
                         data_dir=args.data_dir)

    def scores_of(ds):
        return anomaly.score(model, ds, args.method, k=args.k, seed=args.seed)

    threshold = None
    if args.threshold_from:
        threshold = anomaly.calibrate_threshold(
            scores_of(load(args.threshold_from, args.threshold_split)), args.percentile)
    scores = scores_of(load(args.dataset, args.split))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(args.out, lambda f: np.save(f, scores))
    print(json.dumps({"method": args.method, **anomaly.summarize(scores, threshold)}))


def cmd_sample(args):
    import numpy as np

    from keras_vae import files, pictures, saving

    model = saving.load_model(args.model, compile=False)
    images = model.sample(args.n, seed=args.seed, class_ids=args.class_ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".npy":
        files.atomic_write(args.out, lambda f: np.save(f, np.asarray(images, np.float32)))
    else:
        pictures.save_grid(images, args.out)
    print(f"Wrote {args.n} samples to {args.out}")


def cmd_export(args):
    from keras_vae import export, saving

    model = saving.load_model(args.model, compile=False)
    manifest = export.export(
        model, args.out, formats=args.formats, quantize=args.quantize, graphs=args.graphs,
        seed=args.seed, overwrite=args.overwrite)
    print(export.table(manifest))
    print(f"Wrote {len(manifest['files'])} files and manifest.json to {args.out}")


def build_parser() -> argparse.ArgumentParser:
    from keras_vae import (
        __version__,
        anomaly,
        data,
        distribute,
        export,
        likelihoods,
        networks,
        priors,
    )

    parser = argparse.ArgumentParser(prog="keras-vae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"keras-vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a VAE and write model, history and pictures")
    add_data_args(p)
    p.add_argument("--arch", choices=sorted(networks.ARCHITECTURES), default="conv")
    p.add_argument("--latent-dim", type=bounded_int(1, MAX_LATENT_DIM, "a latent size"),
                   default=16)
    p.add_argument("--arch-options", type=_json_object, default={},
                   help='JSON options of the architecture builder, e.g. '
                        '\'{"filters": [32, 64], "decoder_dense_units": 0}\'')
    p.add_argument("--likelihood", default="bernoulli", choices=likelihoods.names())
    p.add_argument("--prior", default="standard_normal", choices=sorted(priors.PRIORS),
                   help="the prior p(z)")
    p.add_argument("--beta", type=non_negative_float, default=1.0)
    add_objective_args(p)
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS, "a number of epochs"),
                   default=30)
    p.add_argument("--learning-rate", type=positive_float, default=1e-3)
    p.add_argument("--binarize", default="dynamic",
                   choices=[m or "none" for m in data.BINARIZE_MODES])
    p.add_argument("--validation-split", type=bounded_float(0.0, 1.0, hi_open=True,
                                                            what="a fraction"), default=0.1)
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1,
                   help="Keras verbosity (0, 1, 2)")
    p.add_argument("--strategy", choices=sorted(distribute.STRATEGIES), default="default",
                   help="mirrored: all local GPUs; multiworker: all machines in TF_CONFIG")
    p.add_argument("--mixed-precision", nargs="?", const="auto", default=False,
                   choices=["auto", "float16", "bfloat16"],
                   help="float16 on GPU, bfloat16 on CPU (loss and KL stay float32)")
    p.add_argument("--resume", action="store_true",
                   help="back up each epoch to --backup-dir; rerun to continue after a crash")
    p.add_argument("--backup-dir", default=None, help="backup folder (default: OUT.backup)")
    p.add_argument("--checkpoint", type=output_file((".keras",)), default=None,
                   help="also save the best finite epoch to this .keras file")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic TensorFlow ops: same --seed, same weights")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="print the test negative ELBO as JSON")
    add_model_data_args(p)
    p.add_argument("--iwae-k", type=bounded_int(1, MAX_K, "a sample count"), default=None,
                   metavar="K",
                   help="add the importance-weighted NLL with K samples, bits/dim, "
                        "KL per dimension and active units")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="print anomaly scores (higher: more anomalous) as JSON")
    add_model_data_args(p)
    p.add_argument("--method", choices=sorted(anomaly.SCORES), default="neg_elbo")
    p.add_argument("--k", type=bounded_int(1, MAX_K, "a sample count"), default=None,
                   help="posterior samples (default 1, or 100 for iwae_nll)")
    p.add_argument("--threshold-from", default=None, metavar="DATASET",
                   help="normal validation data whose score percentile is the threshold")
    p.add_argument("--threshold-split", default="train", help="split of --threshold-from")
    p.add_argument("--percentile", type=bounded_float(0.0, 100.0, what="a percentile"),
                   default=99.0,
                   help="percentile of the validation scores used as threshold")
    p.add_argument("--out", type=output_file((".npy",)), default=None,
                   help="write the per-example scores to this .npy")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sample", help="write a PNG grid of samples from the prior")
    p.add_argument("model", help="path to model.keras")
    p.add_argument("--n", type=image_count, default=64,
                   help=f"number of samples (at most {MAX_IMAGES})")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class-ids", type=bounded_int(0, 2**31 - 1, "a class id"), nargs="+",
                   default=None, help="labels to generate (conditional models)")
    p.add_argument("--out", type=image_file, required=True,
                   help="PNG grid to write (or .npy for the raw images)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("export", help="export to SavedModel/ONNX/TFLite, each checked against "
                                      "Keras, with manifest.json")
    p.add_argument("model", help="path to model.keras")
    p.add_argument("--formats", default="savedmodel,onnx,tflite",
                   help=f"comma-separated: {', '.join(export.FORMATS)}")
    p.add_argument("--quantize", default="",
                   help=f"comma-separated: int8 (= int8_dynamic,int8_full), "
                        f"{', '.join(export.QUANTIZATIONS)} (decoder only)")
    p.add_argument("--graphs", default="decoder,encoder,scorer",
                   help="comma-separated: decoder, encoder, scorer")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the parity inputs")
    p.add_argument("--out", required=True, help="export directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv=None) -> int:
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as e:
        # One line, bounded: a message may quote a file's content.
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"keras-vae {args.command}: error: {clip(message, MAX_MESSAGE)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"keras-vae {args.command}: error: out of memory; use a smaller --batch-size, "
              "model or dataset", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
