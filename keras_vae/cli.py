"""The `keras-vae` commands: train, evaluate, score, sample, fit-sampler, train-code-prior, export.

Each command parses its arguments and calls library functions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from keras_vae import backend
from keras_vae.recipes import (
    MAX_IMAGES,
    bounded_float,
    bounded_int,
    clip,
    image_count,
    image_file,
    output_file,
    positive_float,
    seed_int,
)

# Bounds of the command line's numbers (far above any sensible run).
MAX_BATCH = 1 << 16
MAX_EPOCHS = 100_000
MAX_K = 10_000  # importance samples per example
MAX_ARCH_OPTIONS_CHARS = 10_000
MAX_ARCH_OPTION_VALUE = 1 << 16  # widths, filter counts, kernel sizes
MAX_ARCH_OPTION_ITEMS = 64  # layers in a list
MAX_MESSAGE = 1000  # characters of an error message


class DeprecatedFlag(argparse.Action):
    """A flag kept one release under its old name: says so on stderr, stores the new one."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


# Command names kept one release: old name -> the command it runs.
DEPRECATED_COMMANDS = {"fit-prior": "fit-sampler", "train-prior": "train-code-prior"}


def _percentile_as_quantile(text: str) -> float:
    return bounded_float(0.0, 100.0, lo_open=True, what="a percentile")(text) / 100.0


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


class Parser(argparse.ArgumentParser):
    """An `ArgumentParser` that runs its `checks` on the parsed arguments.

    Each check returns None or a message; the first message is a usage error
    in one line (exit status 2), before any work.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checks = []

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        for check in self.checks:
            message = check(namespace)
            if message:
                self.exit(2, f"{self.prog}: error: {message}\n")
        return namespace, extras


def _option_type(option):
    """The argparse `type=` of a family's `Option`: a bounded number, a JSON object or text."""
    if option.type is dict:
        return _json_object
    if option.type is int:
        return bounded_int(option.low, option.high, option.what or "an integer")
    if option.type is float:
        return bounded_float(option.low, option.high, lo_open=option.low_open,
                             what=option.what or "a number")
    return option.type


def add_family_options(p, families) -> None:
    """Adds every family's train options to parser `p`, each flag once, and their check.

    A family's flag is stored only when given; the check then fills in the
    `--model` family's defaults and refuses, in one line, the flags of other
    families and `--conditional` for a family that cannot be conditioned.

    Args:
        p: A `Parser` (`keras-vae train`).
        families: The registry of families (`keras_vae.models.FAMILIES`).
    """
    declared = {}  # flag -> (its first Option, {help: [family names]})
    for family in families.values():
        for option in family.options:
            _, helps = declared.setdefault(option.flag, (option, {}))
            helps.setdefault(option.help, []).append(family.name)
    for flag, (option, helps) in declared.items():
        text = "; ".join(f"{', '.join(names)}: {help}" for help, names in helps.items())
        if option.type is bool:
            p.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
            continue
        choices = option.choices() if callable(option.choices) else option.choices
        p.add_argument(flag, type=_option_type(option), choices=choices,
                       default=argparse.SUPPRESS, metavar=option.metavar, help=text)

    def check(args):
        family = families.get(args.model)
        own = {o.flag for o in family.options}
        foreign = [flag for flag, (o, _) in declared.items()
                   if flag not in own and hasattr(args, o.dest)]
        if foreign:
            return (f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply "
                    f"to --model {family.name} ({family.summary}); its options: "
                    f"{', '.join(sorted(own)) or 'none'}")
        if args.conditional and not family.conditional:
            return (f"--conditional does not apply to --model {family.name} "
                    f"({family.summary}): it is unconditional")
        for o in family.options:
            if not hasattr(args, o.dest):
                setattr(args, o.dest, o.default)
        return None

    p.checks.append(check)


def _variant(args) -> tuple[dict, dict]:
    """The model variant's `training.run` arguments and extra model config.

    `--tc-beta` (a VAE-family option) selects beta-TCVAE, which needs the
    number of training examples (the split less the validation fraction
    `data.load` holds out).
    """
    if getattr(args, "tc_beta", None) is None:
        return {}, {}
    from keras_vae import data
    from keras_vae.models.tcvae import TCVAE

    if data.is_local(args.dataset):
        n = len(data.load_arrays(args.dataset, args.split)[0])
    else:
        n = int(data.load(args.dataset, args.split, batch_size=1, shuffle=False,
                          data_dir=args.data_dir).cardinality())
    if n < 1:
        raise ValueError(f"Cannot count the examples of {args.dataset} {args.split} for "
                         "--tc-beta.")
    dataset_size = max(n - int(round(n * args.validation_fraction)), 1)
    return {"model_class": TCVAE}, {"tc_beta": args.tc_beta, "dataset_size": dataset_size}


def _model_config(args) -> dict:
    """Constructor arguments of the `--model` family from its train options."""
    from keras_vae.models import FAMILIES

    family = FAMILIES.get(args.model)
    return family.config({o.dest: getattr(args, o.dest) for o in family.options})


def cmd_train(args):
    from keras_vae import files, training

    files.check_output(args.out, overwrite=args.overwrite, inputs=(args.dataset,))
    for flag in ("--checkpoint", "--backup-dir"):  # written during the run, not replaced
        given = getattr(args, flag[2:].replace("-", "_"))
        if given is not None:
            files.check_output(given, overwrite=True, inputs=(args.dataset,), flag=flag)
    run_kwargs, variant_config = _variant(args)
    model_config = {**_model_config(args), **variant_config}
    config = training.RunConfig(
        args.out, dataset=args.dataset, split=args.split, batch_size=args.batch_size,
        validation_fraction=args.validation_fraction, binarize=_binarize_arg(args.binarize),
        data_dir=args.data_dir, conditional=args.conditional,
        model=run_kwargs.get("model_class") or args.model, model_config=model_config,
        epochs=args.epochs, learning_rate=args.learning_rate, strategy=args.strategy,
        mixed_precision=args.mixed_precision, seed=args.seed, deterministic=args.deterministic,
        resume=args.resume, backup_dir=args.backup_dir, checkpoint=args.checkpoint,
        overwrite=args.overwrite, verbose=args.verbose)
    result = training.run(config, record=vars(args) | {"func": None})
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
    from keras_vae.models.family import CONTINUOUS, family_of

    model = saving.load_model(args.model)
    family = family_of(model)
    for flag, given in (("--iwae-k", args.iwae_k), ("--sample-metrics", args.sample_metrics),
                        ("--disentanglement", args.disentanglement)):
        if given:
            family.require(CONTINUOUS, f"evaluate {flag}", args.model)
    ds = data.load(args.dataset, args.split, batch_size=args.batch_size,
                   binarize=_binarize_arg(args.binarize), shuffle=False, seed=args.seed,
                   data_dir=args.data_dir)
    if not family.continuous:  # discrete codes: reconstruction + the code prior's NLL
        from keras_vae.parts import code_prior

        print(json.dumps(code_prior.likelihood(model, ds)))
        return
    result = evaluation.evaluate(model, ds, iwae_k=args.iwae_k, seed=args.seed)
    if args.sample_metrics:
        metrics = _sample_metrics(model, args)
        result.update({key: metrics[key] for key in ("fid", "precision", "recall")})
        result["sample_metrics"] = metrics  # and what the features are: not Inception
    if args.disentanglement:
        result["disentanglement"] = _disentanglement(model, args)
    print(json.dumps(result))


def _sample_metrics(model, args) -> dict:
    """Frechet distance, precision and recall in the features of the dataset's own classifier."""
    from keras_vae import data
    from keras_vae.evaluation import quality

    x_ref, y_ref = data.load_arrays(args.dataset, args.reference_split)
    if y_ref is None or (y_ref < 0).any():
        raise ValueError(f"--sample-metrics trains a classifier on {args.dataset!r} to get its "
                         "features, and this source has no labels.")
    net = quality.feature_extractor(x_ref, y_ref, cache_dir=args.feature_cache, seed=args.seed)
    class_ids = list(range(model.num_classes)) if getattr(model, "num_classes", 0) else None
    return quality.sample_metrics(model, x_ref, extractor=net, n=min(args.sample_n, len(x_ref)),
                                  seed=args.seed, class_ids=class_ids)


def _disentanglement(model, args) -> dict:
    """MIG and DCI of the posterior means against the source's ground-truth factors."""
    from keras_vae import data
    from keras_vae.evaluation import disentanglement

    factors = data.load_factors(args.dataset, args.split)
    x, _ = data.load_arrays(args.dataset, args.split)
    names = (data.shapes.COLOR_FACTOR_NAMES if factors.shape[1] > len(data.shapes.FACTOR_NAMES)
             else data.shapes.FACTOR_NAMES)
    return disentanglement.disentanglement_metrics(model, x, factors, factor_names=list(names),
                                                   seed=args.seed)


def cmd_score(args):
    import numpy as np

    from keras_vae import data, files, saving
    from keras_vae.models.family import CONTINUOUS, family_of
    from keras_vae.uses import anomaly

    if args.out:
        files.check_output(args.out, overwrite=args.overwrite,
                           inputs=(args.model, args.dataset, args.threshold_from))
    model = saving.load_model(args.model, compile=False)
    family_of(model).require(CONTINUOUS, "score", args.model)

    def load(source, split):
        return data.load(source, split, batch_size=args.batch_size,
                         binarize=_binarize_arg(args.binarize), shuffle=False, seed=args.seed,
                         data_dir=args.data_dir)

    def scores_of(ds):
        return anomaly.score(model, ds, args.method, k=args.k, seed=args.seed)

    threshold = None
    if args.threshold_from:
        threshold = anomaly.calibrate_threshold(
            scores_of(load(args.threshold_from, args.threshold_split)), args.quantile)
    scores = scores_of(load(args.dataset, args.split))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        files.atomic_write(args.out, lambda f: np.save(f, scores))
    print(json.dumps({"method": args.method, **anomaly.summarize(scores, threshold)}))


def cmd_sample(args):
    import numpy as np

    from keras_vae import files, saving
    from keras_vae.uses import pictures

    files.check_output(args.out, overwrite=args.overwrite, inputs=(args.model,))
    model = saving.load_model(args.model, compile=False)
    images = model.sample(args.n, seed=args.seed, class_ids=args.class_ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix.lower() == ".npy":
        files.atomic_write(args.out, lambda f: np.save(f, np.asarray(images, np.float32)))
    else:
        pictures.save_grid(images, args.out)
    print(f"Wrote {args.n} samples to {args.out}")


def cmd_fit_sampler(args):
    import numpy as np

    from keras_vae import data, files, saving
    from keras_vae.models.family import CONTINUOUS, family_of
    from keras_vae.parts import priors

    files.check_output(args.out, overwrite=args.overwrite, inputs=(args.model, args.dataset))
    model = saving.load_model(args.model)
    family_of(model).require(CONTINUOUS, "fit-sampler", args.model)
    ds = data.load(args.dataset, args.split, batch_size=args.batch_size,
                   binarize=_binarize_arg(args.binarize), shuffle=False, seed=args.seed,
                   data_dir=args.data_dir)
    z = priors.aggregate_latents(model, ds, latents=args.latents, seed=args.seed)
    model.sampling_prior = priors.fit_latents(z, components=args.components, seed=args.seed,
                                              source=f"{args.dataset} {args.split}")
    saving.save_model(model, args.out)
    print(json.dumps({
        "out": str(args.out), "components": args.components, "latents": args.latents,
        "n_latents": len(z),
        # Mean log-density of the training latents under each prior: how much
        # closer the sampler is to the aggregate posterior than the prior.
        "mean_log_density_fitted": float(np.mean(model.sampling_prior.log_prob(z))),
        "mean_log_density_prior": float(np.mean(model.prior.log_prob(z))),
    }))


def cmd_train_code_prior(args):
    from keras_vae import data, files, saving
    from keras_vae.models.family import CODES, family_of
    from keras_vae.parts import code_prior

    out = Path(args.out) if args.out else Path(args.model).parent / "model_prior.keras"
    for path in (out, out.with_suffix(".json")):  # the model and its report
        files.check_output(path, overwrite=args.overwrite, inputs=(args.model, args.dataset))
    model = saving.load_model(args.model)
    family_of(model).require(CODES, "train-code-prior", args.model)

    def images(split):  # binarized once: Bernoulli likelihoods score binary images
        return data.load(args.dataset, split, batch_size=256, binarize="static", shuffle=False,
                         seed=args.seed, data_dir=args.data_dir)

    held_out = images(args.test_split) if args.test_split else None
    history = code_prior.train_prior(
        model, images(args.split), epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.learning_rate, validation_data=held_out, seed=args.seed,
        verbose=args.verbose)
    saving.save_model(model, out)
    given = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    report = {"history": history.history, "args": given | {"func": None}}
    if held_out is not None:
        report["held_out"] = {"split": args.test_split,
                              **code_prior.likelihood(model, held_out)}
    files.write_json(report, out.with_suffix(".json"))
    print(json.dumps(report.get("held_out", {})))
    print(f"Wrote {out} (the VQ-VAE with its code prior) and {out.with_suffix('.json')}")


def cmd_export(args):
    from keras_vae import export, files, saving

    files.check_output(args.out, overwrite=args.overwrite, inputs=(args.model, args.calibrate))
    model = saving.load_model(args.model, compile=False)
    graphs = args.graphs or None  # default: every graph its family offers
    anomaly = _calibrate(model, args) if args.calibrate else None  # bad data: before any work
    manifest = export.export(
        model, args.out, formats=args.formats, quantize=args.quantize, graphs=graphs,
        seed=args.seed, overwrite=args.overwrite, anomaly=anomaly)
    print(export.table(manifest))
    print(f"Wrote {len(manifest['files'])} files and manifest.json to {args.out}")
    if anomaly is not None:
        print(f"Anomaly threshold {anomaly['threshold']:.3f} nats (the {anomaly['quantile']:g} "
              f"quantile of {anomaly['calibration_examples']} scores on {args.calibrate} "
              f"{args.calibrate_split})")


def _calibrate(model, args) -> dict:
    """The scorer's threshold on normal data, for the manifest (`--calibrate`)."""
    from keras_vae import data
    from keras_vae.export import calibration
    from keras_vae.models.family import CONTINUOUS, family_of

    family_of(model).require(CONTINUOUS, "export --calibrate", args.model)
    x, y = data.load_arrays(args.calibrate, args.calibrate_split)
    labels = y if getattr(model, "num_classes", 0) else None
    return calibration.calibrate(model, x, args.quantile, labels=labels,
                                 source=f"{args.calibrate} {args.calibrate_split}")


def build_parser() -> argparse.ArgumentParser:
    from keras_vae import __version__, data, export
    from keras_vae.models import FAMILIES
    from keras_vae.parts import distribute
    from keras_vae.uses import anomaly

    parser = argparse.ArgumentParser(prog="keras-vae", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"keras-vae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train a VAE and write model, history and pictures")
    add_data_args(p)
    p.add_argument("--model", choices=sorted(FAMILIES), default="vae",
                   help="the model family: " + "; ".join(
                       f"{f.name}: {f.summary}" for f in FAMILIES.values()))
    p.add_argument("--conditional", action="store_true",
                   help="condition encoder and decoder on the data's labels")
    add_family_options(p, FAMILIES)  # each family's own flags, refused for the others
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS, "a number of epochs"),
                   default=30)
    p.add_argument("--learning-rate", type=positive_float, default=1e-3)
    p.add_argument("--binarize", default="dynamic",
                   choices=[m or "none" for m in data.BINARIZE_MODES])
    fraction = bounded_float(0.0, 1.0, hi_open=True, what="a fraction")
    p.add_argument("--validation-fraction", type=fraction, default=0.1,
                   help="fraction of the split held out for validation")
    p.add_argument("--validation-split", dest="validation_fraction", action=DeprecatedFlag,
                   new="--validation-fraction", type=fraction)
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
    p.add_argument("--sample-metrics", action="store_true",
                   help="add the Frechet distance, precision and recall of samples against "
                        "--reference-split, in the features of a classifier trained on it "
                        "(cached; not Inception FID: see docs/metrics.md)")
    p.add_argument("--reference-split", default="train",
                   help="real images for --sample-metrics (and its classifier's training set)")
    p.add_argument("--sample-n", type=bounded_int(2, 100_000, "a number of samples"), default=2000,
                   help="samples (and real images) compared by --sample-metrics")
    p.add_argument("--feature-cache", default=None,
                   help="folder of cached feature classifiers (default ~/.cache/keras_vae)")
    p.add_argument("--disentanglement", action="store_true",
                   help="add MIG and DCI against the ground-truth factors (shapes datasets)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="print anomaly scores (higher: more anomalous) as JSON")
    add_model_data_args(p)
    p.add_argument("--method", choices=sorted(anomaly.SCORES), default="negative_elbo")
    p.add_argument("--k", type=bounded_int(1, MAX_K, "a sample count"), default=None,
                   help="posterior samples (default 1, or 100 for iwae_nll)")
    p.add_argument("--threshold-from", default=None, metavar="DATASET",
                   help="normal validation data whose score quantile is the threshold")
    p.add_argument("--threshold-split", default="train", help="split of --threshold-from")
    p.add_argument("--quantile", type=bounded_float(0.0, 1.0, lo_open=True, what="a quantile"),
                   default=0.99, help="quantile of the validation scores used as threshold")
    p.add_argument("--percentile", dest="quantile", action=DeprecatedFlag, new="--quantile",
                   type=_percentile_as_quantile)
    p.add_argument("--out", type=output_file((".npy",)), default=None,
                   help="write the per-example scores to this .npy")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("sample", help="write a PNG grid of samples from the prior")
    p.add_argument("model", help="path to model.keras")
    p.add_argument("--n", type=image_count, default=64,
                   help=f"number of samples (at most {MAX_IMAGES}; a VQ-VAE with a code "
                        "prior fewer, 256 on 7x7 code grids: docs/scaling.md)")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--class-ids", type=bounded_int(0, 2**31 - 1, "a class id"), nargs="+",
                   default=None, help="labels to generate (conditional models)")
    p.add_argument("--out", type=image_file, required=True,
                   help="PNG grid to write (or .npy for the raw images)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("fit-sampler", help="fit a Gaussian mixture to the training latents and "
                                           "save the model with it as its sampling prior")
    add_model_data_args(p)
    p.add_argument("--components", type=bounded_int(1, 1024, "a number of components"), default=10,
                   metavar="K",
                   help="mixture components")
    p.add_argument("--latents", choices=["mean", "sample"], default="mean",
                   help="fit the posterior means or one posterior sample per image")
    p.add_argument("--codes", dest="latents", action=DeprecatedFlag, new="--latents",
                   choices=["mean", "sample"])
    p.add_argument("--out", type=output_file((".keras",)), required=True,
                   help="the new model file (.keras)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.set_defaults(func=cmd_fit_sampler)

    p = sub.add_parser("train-code-prior", help="fit a PixelCNN prior on a VQ-VAE's code grids "
                                                "and write the model with it")
    p.add_argument("model", help="path to a VQ-VAE's model.keras")
    add_data_args(p)
    p.add_argument("--test-split", default=None,
                   help="held-out split: its bits per code grid and likelihood figure")
    p.add_argument("--epochs", type=bounded_int(1, MAX_EPOCHS, "a number of epochs"), default=20)
    p.add_argument("--learning-rate", type=positive_float, default=1e-3)
    p.add_argument("--out", type=output_file((".keras",)), default=None,
                   help="model file to write, with its report beside it as .json "
                        "(default: model_prior.keras beside MODEL)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out and its .json report")
    p.add_argument("--verbose", type=int, choices=[0, 1, 2], default=2, help="Keras verbosity")
    p.set_defaults(func=cmd_train_code_prior)

    sub.add_parser("serve", add_help=False,
                   help="serve an export over HTTP (Open Inference Protocol, anomaly scores, "
                        "the browser page) without TensorFlow; keras-vae serve --help")

    p = sub.add_parser("export", help="export to SavedModel/ONNX/LiteRT, each checked against "
                                      "Keras, with manifest.json")
    p.add_argument("model", help="path to model.keras")
    p.add_argument("--formats", default="savedmodel,onnx,litert",
                   help=f"comma-separated: {', '.join(export.FORMATS)} (litert writes .tflite "
                        "files; tflite is accepted for litert)")
    p.add_argument("--quantize", default="",
                   help=f"comma-separated: int8 (= int8_dynamic,int8_full), "
                        f"{', '.join(export.QUANTIZATIONS)} (decoder only)")
    p.add_argument("--graphs", default="",
                   help="comma-separated (default: every graph the model offers): a VAE has "
                        "decoder, encoder, scorer; a VQ-VAE decoder, encoder, prior")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the parity inputs")
    p.add_argument("--out", required=True, help="export directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--calibrate", default=None, metavar="SOURCE",
                   help="normal data whose scorer quantile becomes the anomaly threshold "
                        "in the manifest (served by keras-vae serve at /v1/score)")
    p.add_argument("--calibrate-split", default="train", help="split of --calibrate")
    p.add_argument("--quantile", type=bounded_float(0.0, 1.0, lo_open=True, what="a quantile"),
                   default=0.99,
                   help="quantile of the normal scores used as the threshold")
    p.set_defaults(func=cmd_export)
    return parser


def device_program(name: str) -> Path:
    """The path of a device-side program installed with the package (`keras_vae/export/NAME`).

    Found without importing `keras_vae.export`: the program runs in its own
    interpreter, and the library never imports the device code.
    """
    folder = importlib.util.find_spec("keras_vae.export").submodule_search_locations[0]
    return Path(folder) / name


def serve(argv) -> None:
    """`keras-vae serve ...`: replaces this process with the TensorFlow-free server.

    The server (`keras_vae/export/serve.py`, numpy + onnxruntime + Starlette)
    runs in a fresh interpreter, so no TensorFlow is loaded in the serving
    process; it takes the same flags as `python serve.py`.
    """
    script = device_program("serve.py")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, str(script), *argv])


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        serve(argv[1:])
    if argv[:1] and argv[0] in DEPRECATED_COMMANDS:
        new = DEPRECATED_COMMANDS[argv[0]]
        print(f"keras-vae: {argv[0]} is deprecated; use {new}", file=sys.stderr)
        argv = [new, *argv[1:]]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # usage errors (exit 2, one line), --help and --version (0)
        return e.code if isinstance(e.code, int) else 2
    try:
        with backend.native_logs_filtered():
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
