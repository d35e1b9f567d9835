"""Every command and flag gets a bounded, clear answer to a bad value.

Each `keras-vae` command (train, evaluate, score, sample, export) and both
edge samplers run with bad values: exit 2, a one-line message naming the
problem, no traceback, nothing written, and no more than a few seconds or a
few MB spent (huge counts are refused by the parser before any allocation;
file headers that declare terabytes are checked before reading).
"""

import json
import struct
import time
import zipfile
import zlib

import keras
import numpy as np
import pytest

import keras_vae
import keras_vae.export
from keras_vae import cli, recipes, saving
from keras_vae.export import sample_litert, sample_onnx


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny model, its ONNX export, and hostile data files."""
    root = tmp_path_factory.mktemp("bad")
    keras.utils.set_random_seed(0)
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    vae.compile()
    saving.save_model(vae, root / "model.keras")
    keras_vae.export.export(vae, root / "export", formats="onnx", graphs=("decoder",))
    # Huge-image manifests of a VAE and of a VQ-VAE (code grids): every file checks out,
    # the output size does not.
    keras_vae.export.export(keras_vae.VQVAE(image_shape=(8, 8, 1), codebook_size=8,
                                            code_dim=4, seed=0),
                            root / "vq_export", formats="onnx", graphs=("decoder",))
    for source, name in (("export", "huge_export"), ("vq_export", "huge_vq_export")):
        huge = root / name
        huge.mkdir()
        for p in (root / source).iterdir():
            if p.is_file():
                (huge / p.name).write_bytes(p.read_bytes())
        manifest = json.loads((huge / "manifest.json").read_text())
        manifest["image"]["shape"] = [4096, 4096, 1]
        (huge / "manifest.json").write_text(json.dumps(manifest))
    # An .npz whose header declares a terabyte array (the file is a few hundred bytes).
    with zipfile.ZipFile(root / "terabyte.npz", "w") as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (10**6, 10**6)})
            f.write(bytes(64))
    # An .npz whose header is consistent with neither its own size.
    with zipfile.ZipFile(root / "liar.npz", "w") as z:
        with z.open("x.npy", "w") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f4", "fortran_order": False, "shape": (1000, 8, 8)})
            f.write(bytes(64))
    # IDX folders: one declares 4e9 x 255 x 255 images, one is a gzip bomb
    # (256 MiB of zeros behind a header that declares 40 images).
    import gzip
    for name, dims, extra in (("idx_huge", (2**32 - 1, 255, 255), 0),
                              ("idx_bomb", (40, 8, 8), 1 << 28)):
        (root / name).mkdir()
        with gzip.open(root / name / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, *dims))
            f.write(bytes(40 * 64))
            for _ in range(extra >> 24):
                f.write(bytes(1 << 24))
    # Image folders: one PNG declares 100000 x 100000 pixels (Pillow's bomb
    # error), one 5000 x 5000 (over keras_vae's own limit, under Pillow's).
    for name, side in (("bomb", 100_000), ("big", 5_000)):
        (root / name).mkdir()
        (root / name / "a.png").write_bytes(_png_header(side, side))
    return root


def _png_header(width, height):
    """A PNG whose IHDR declares `width` x `height` grey pixels (its data is a stub)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


TRAIN = ["train", "--dataset", "digits", "--arch", "mlp", "--out", "{tmp}/run"]
MODEL = "{files}/model.keras"
EXPORT = "{files}/export"

# (argv, what the message must name); {tmp} is a fresh folder, {files} the fixture's.
CLI_CASES = {
    "train negative seed": (TRAIN + ["--seed", "-1"], "--seed: must be in [0, 4294967295]"),
    "train huge seed": (TRAIN + ["--seed", str(2**70)], "--seed: must be in"),
    "train zero epochs": (TRAIN + ["--epochs", "0"], "--epochs: must be in [1,"),
    "train negative beta": (TRAIN + ["--beta", "-1"], "--beta: must be >= 0"),
    "train nan beta": (TRAIN + ["--beta", "nan"], "--beta: must be >= 0"),
    "train zero learning rate": (TRAIN + ["--learning-rate", "0"], "--learning-rate: must be > 0"),
    "train inf learning rate": (TRAIN + ["--learning-rate", "inf"], "--learning-rate"),
    "train zero latent": (TRAIN + ["--latent-dim", "0"], "--latent-dim: must be in [1, 4096]"),
    "train huge latent": (TRAIN + ["--latent-dim", "100000000"], "--latent-dim"),
    "train zero batch": (TRAIN + ["--batch-size", "0"], "--batch-size: must be in [1,"),
    "train huge batch": (TRAIN + ["--batch-size", str(10**12)], "--batch-size"),
    "train huge layer": (TRAIN + ["--arch-options", '{"hidden_units": [1000000000]}'],
                         "--arch-options: the value 1000000000 is out of range"),
    "train long options": (TRAIN + ["--arch-options", '{"a": "' + "x" * 20000 + '"}'],
                           "--arch-options: 20009 characters; at most 10000"),
    "train many layers": (TRAIN + ["--arch-options", json.dumps({"hidden_units": [8] * 1000})],
                          "--arch-options: a list of 1000 items"),
    "train deep options": (TRAIN + ["--arch-options", '{"a": ' + "[" * 3000 + "]" * 3000 + "}"],
                           "--arch-options: not valid JSON"),
    "train fraction over one": (TRAIN + ["--validation-fraction", "1.5"],
                                "--validation-fraction"),
    "train split over one": (TRAIN + ["--validation-split", "1.5"], "--validation-split"),
    "train negative free bits": (TRAIN + ["--free-bits", "-1"], "--free-bits: must be >= 0"),
    "train negative warm-up": (TRAIN + ["--kl-warmup", "-5"], "--kl-warmup: must be >= 0"),
    "train zero iwae": (TRAIN + ["--iwae-k", "0"], "--iwae-k: must be in [1, 10000]"),
    "train verbose 7": (TRAIN + ["--verbose", "7"], "--verbose: invalid choice"),
    "train checkpoint suffix": (TRAIN + ["--checkpoint", "{tmp}/best.txt"],
                                "--checkpoint: '"),
    "train terabyte npz": (["train", "--dataset", "{files}/terabyte.npz", "--out", "{tmp}/run"],
                           "MiB a local source may load"),
    "train lying npz": (["train", "--dataset", "{files}/liar.npz", "--out", "{tmp}/run"],
                        "more than the file holds"),
    "train decompression bomb": (["train", "--dataset", "{files}/bomb", "--out", "{tmp}/run"],
                                 "too large to decode"),
    "train oversized image": (["train", "--dataset", "{files}/big", "--out", "{tmp}/run"],
                              "declares 5000x5000 pixels"),
    "train huge idx": (["train", "--dataset", "{files}/idx_huge", "--out", "{tmp}/run"],
                       "MiB a local source may load"),
    "train idx gzip bomb": (["train", "--dataset", "{files}/idx_bomb", "--out", "{tmp}/run"],
                            "truncated or padded"),
    "train out is a file": (["train", "--dataset", "digits", "--out", "{files}/model.keras"],
                            "already exists"),
    "evaluate negative seed": (["evaluate", MODEL, "--seed", "-3"], "--seed: must be in"),
    "evaluate negative batch": (["evaluate", MODEL, "--batch-size", "-3"], "--batch-size"),
    "evaluate zero iwae": (["evaluate", MODEL, "--iwae-k", "0"], "--iwae-k"),
    "evaluate terabyte npz": (["evaluate", MODEL, "--dataset", "{files}/terabyte.npz"],
                              "refusing to allocate"),
    "evaluate bomb": (["evaluate", MODEL, "--dataset", "{files}/bomb"], "too large to decode"),
    "evaluate not a model": (["evaluate", "{files}/liar.npz"], "unexpected or unsafe member"),
    "score zero k": (["score", MODEL, "--k", "0"], "--k: must be in"),
    "score percentile": (["score", MODEL, "--percentile", "101"], "--percentile: must be"),
    "score quantile": (["score", MODEL, "--quantile", "1.5"], "--quantile: must be"),
    "score zero quantile": (["score", MODEL, "--quantile", "0"], "--quantile: must be"),
    "score out suffix": (["score", MODEL, "--out", "{tmp}/scores.txt"], "must end in .npy"),
    "score out a directory": (["score", MODEL, "--out", "{tmp}/dir.npy"], "is a directory"),
    "sample zero n": (["sample", MODEL, "--n", "0", "--out", "{tmp}/s.png"],
                      "--n: must be in [1, 4096]"),
    "sample huge n": (["sample", MODEL, "--n", str(10**9), "--out", "{tmp}/s.png"],
                      "--n: must be in [1, 4096]"),
    "sample negative seed": (["sample", MODEL, "--seed", "-1", "--out", "{tmp}/s.png"],
                             "--seed: must be in"),
    "sample negative class": (["sample", MODEL, "--class-ids", "-1", "--out", "{tmp}/s.png"],
                              "--class-ids: must be in"),
    "sample class of unconditional": (["sample", MODEL, "--class-ids", "1", "--out",
                                       "{tmp}/s.png"], "class"),
    "sample out a directory": (["sample", MODEL, "--out", "{tmp}/dir.npy"], "is a directory"),
    "sample out jpg": (["sample", MODEL, "--out", "{tmp}/s.jpg"], "must end in .png or .npy"),
    "sample out no suffix": (["sample", MODEL, "--out", "{tmp}/samples"], "must end in"),
    "sample parent is a file": (["sample", MODEL, "--out", "{files}/model.keras/s.png"],
                                "is not a directory"),
    "export negative seed": (["export", MODEL, "--seed", "-1", "--out", "{tmp}/e"],
                             "--seed: must be in"),
    "export unknown format": (["export", MODEL, "--formats", "gif", "--out", "{tmp}/e"],
                              "gif"),
}

SAMPLER_CASES = {
    "zero n": (["--n", "0"], "--n: must be in [1, 4096]"),
    "huge n": (["--n", str(10**9)], "--n: must be in [1, 4096]"),
    "negative seed": (["--seed", "-1"], "--seed: must be in"),
    "text seed": (["--seed", "one"], "--seed: expected a seed"),
    "negative interpolation seed": (["--interpolate", "-1", "3"], "--interpolate: must be in"),
    "one step": (["--interpolate", "0", "1", "--steps", "1"], "--steps: must be in [2, 4096]"),
    "huge steps": (["--interpolate", "0", "1", "--steps", str(10**9)], "--steps: must be in"),
    "zero batch": (["--batch-size", "0"], "--batch-size: must be in"),
    "negative threads": (["--threads", "-1"], "--threads: must be in [0, 1024]"),
    "negative class": (["--class-ids", "-2"], "--class-ids: must be in"),
    "out a directory": (["--out", "{tmp}/dir.npy"], "is a directory"),
    "out jpg": (["--out", "{tmp}/g.jpg"], "must end in .png or .npy"),
    "out parent is a file": (["--out", "{files}/model.keras/g.png"], "is not a directory"),
    "unknown precision": (["--precision", "int3"], "--precision: invalid choice"),
    "images too large": (["--export", "{files}/huge_export"], "exceed the 256 MiB"),
    "code-grid images too large": (["--export", "{files}/huge_vq_export"], "exceed the 256 MiB"),
}


def _fill(argv, tmp, files):
    return [a.replace("{tmp}", str(tmp)).replace("{files}", str(files)) for a in argv]


def _run(main, argv, capsys):
    """Runs a main in-process; returns (exit code, stderr, seconds)."""
    start = time.monotonic()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    seconds = time.monotonic() - start
    return code, capsys.readouterr().err, seconds


def _check(code, err, message, seconds):
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert "error:" in lines[-1] and message in lines[-1], err
    if not lines[0].startswith("usage:"):  # argparse prints its usage above the error line
        assert len(lines) == 1, err
    assert len(lines[-1]) < 1200
    assert seconds < 30


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_commands_refuse_bad_values(files, tmp_path, capsys, case):
    argv, message = CLI_CASES[case]
    (tmp_path / "dir.npy").mkdir()
    before = {p.name for p in tmp_path.iterdir()}
    code, err, seconds = _run(cli.main, _fill(argv, tmp_path, files), capsys)
    _check(code, err, message, seconds)
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing written


# Every case for both samplers, but the hostile-export ones for onnxruntime only: the
# fixture exports ONNX files, which is what those cases tamper with.
SAMPLER_PARAMS = [pytest.param(case, sampler, id=f"{case}-{name}")
                  for case in sorted(SAMPLER_CASES)
                  for sampler, name in ((sample_onnx, "onnx"), (sample_litert, "litert"))
                  if not (SAMPLER_CASES[case][0][0] == "--export" and name == "litert")]


@pytest.mark.parametrize("case, sampler", SAMPLER_PARAMS)
def test_samplers_refuse_bad_values(files, tmp_path, capsys, case, sampler):
    argv, message = SAMPLER_CASES[case]
    export = str(files / "export")
    if argv[0] == "--export":
        export, argv = _fill(argv[1:2], tmp_path, files)[0], ["--n", "16"]
    (tmp_path / "dir.npy").mkdir()
    before = {p.name for p in tmp_path.iterdir()}
    code, err, seconds = _run(sampler.main, [export, *_fill(argv, tmp_path, files),
                                             *([] if "--out" in argv else
                                               ["--out", str(tmp_path / "g.png")])], capsys)
    _check(code, err, message, seconds)
    assert {p.name for p in tmp_path.iterdir()} == before


def test_good_values_still_work(files, tmp_path, capsys):
    """The same commands with good values: a missing --out folder is created, .npy written."""
    out = tmp_path / "new" / "folder" / "s.npy"
    assert cli.main(["sample", str(files / "model.keras"), "--n", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 8, 8, 1)
    grid = tmp_path / "g" / "grid.png"
    assert sample_onnx.main([str(files / "export"), "--n", "3", "--out", str(grid)]) == 0
    assert grid.stat().st_size > 0
    capsys.readouterr()


def test_validators_name_their_range():
    with pytest.raises(Exception, match=r"must be in \[1, 4096\], got 0"):
        recipes.image_count("0")
    assert recipes.seed_int(str(2**32 - 1)) == 2**32 - 1
    assert recipes.non_negative_float("0") == 0.0
    with pytest.raises(Exception, match="must be > 0"):
        recipes.positive_float("-0.0")


# ------------------------------------------ a VQ-VAE's sampling at its limit


@pytest.fixture(scope="module")
def vq_with_prior(tmp_path_factory):
    """A 28x28 VQ-VAE (7x7 code grids) with the default PixelCNN code prior, untrained."""
    from keras_vae.models.vqvae import VQVAE
    from keras_vae.parts import code_prior

    vq = VQVAE(image_shape=(28, 28, 1), seed=0)
    vq.code_prior = code_prior.build(vq.grid_shape, vq.codebook_size)
    return vq, saving.save_model(vq, tmp_path_factory.mktemp("vq") / "vq.keras")


def test_vq_sample_limit_scales_with_the_grid(vq_with_prior):
    from keras_vae.models import vqvae

    vq, _ = vq_with_prior
    assert vq.grid_shape == (7, 7) and vq.max_samples() == 256
    assert vq.max_samples() * 49 * 49 <= vqvae.MAX_CODE_PRIOR_POSITIONS
    small = vqvae.VQVAE(image_shape=(8, 8, 1), codebook_size=4, code_dim=2, seed=0)
    assert small.max_samples() == recipes.MAX_IMAGES  # no code prior: uniform codes are free


def test_vq_sample_over_its_limit_is_refused_at_once(vq_with_prior, tmp_path, capsys):
    _, path = vq_with_prior
    start = time.monotonic()
    assert cli.main(["sample", str(path), "--n", "257", "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "7x7 code grids draws at most 256 images at a time" in err and "got 257" in err
    assert time.monotonic() - start < 10 and not (tmp_path / "s.png").exists()


_SAMPLE = """
import resource, sys, time
from keras_vae import cli
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
assert cli.main(["sample", sys.argv[1], "--n", sys.argv[2], "--out", sys.argv[3]]) == 0
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) >> 10,
      time.monotonic() - start)
"""


@pytest.mark.slow
def test_vq_sample_at_its_limit_stays_in_budget(vq_with_prior, tmp_path):
    import subprocess
    import sys

    vq, path = vq_with_prior
    out = subprocess.run([sys.executable, "-c", _SAMPLE, str(path), str(vq.max_samples()),
                          str(tmp_path / "s.npy")], capture_output=True, text=True,
                         timeout=600, check=True).stdout.split()
    grown_mb, seconds = int(out[-2]), float(out[-1])
    assert np.load(tmp_path / "s.npy").shape == (256, 28, 28, 1)
    # docs/scaling.md: under 30 s and 1 GB on 2 idle cores; slack for a busy machine.
    assert grown_mb < 400 and seconds < 120, (grown_mb, seconds)
