"""Every command that writes follows one rule (`files.check_output`).

No existing path is replaced without `--overwrite`; an output is never the
command's own input (nor inside it, nor a folder holding it), even with
`--overwrite`; and what is written appears whole (a temporary name, then a
rename), leaving nothing half-written beside it.
"""

import json
import os

import numpy as np
import pytest

import keras_vae
from keras_vae import cli, demo, files, saving
from keras_vae.models.vqvae import VQVAE

DATA = ["--dataset", "digits", "--split", "train[:64]"]
TINY = [*DATA, "--arch", "mlp", "--latent-dim", "2", "--arch-options",
        '{"hidden_units": [8]}', "--epochs", "1", "--verbose", "0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A VAE and a VQ-VAE for the 8x8 digits, an .npz source and an IDX-like folder."""
    folder = tmp_path_factory.mktemp("inputs")
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    vae.compile()
    vq = VQVAE(image_shape=(8, 8, 1), codebook_size=4, code_dim=2, seed=0)
    vq.compile()
    x, y = keras_vae.data.load_arrays("digits", "train[:64]")
    np.savez(folder / "data.npz", x=x, y=y)
    (folder / "mnist").mkdir()
    return {"vae": saving.save_model(vae, folder / "vae.keras"),
            "vq": saving.save_model(vq, folder / "vq.keras"),
            "npz": folder / "data.npz", "idx": folder / "mnist"}


def _demo(argv):
    try:
        return demo.main(argv)
    except SystemExit as e:
        return e.code


# command -> (argv of a run writing OUT, the output's name, its input, run by `demo.main`)
COMMANDS = {
    "train": (lambda m, out: ["train", *TINY, "--dataset", m["npz"], "--out", out],
              "run", "npz"),
    "fit-sampler": (lambda m, out: ["fit-sampler", m["vae"], *DATA, "--components", "2",
                                    "--out", out], "fitted.keras", "vae"),
    "train-code-prior": (lambda m, out: ["train-code-prior", m["vq"], *DATA, "--epochs", "1",
                                         "--verbose", "0", "--out", out], "prior.keras", "vq"),
    "sample": (lambda m, out: ["sample", m["vae"], "--n", "4", "--out", out], "grid.png", "vae"),
    "sample-npy": (lambda m, out: ["sample", m["vae"], "--n", "4", "--out", out], "s.npy",
                   "vae"),
    "score": (lambda m, out: ["score", m["vae"], *DATA, "--out", out], "scores.npy", "vae"),
    "export": (lambda m, out: ["export", m["vae"], "--formats", "onnx", "--graphs", "decoder",
                               "--out", out], "export", "vae"),
    "demo": (lambda m, out: ["--data", m["idx"], "--epochs", "1", "--out", out], "demo", "idx"),
}


def _run(name, argv):
    argv = [str(a) for a in argv]
    return _demo(argv) if name == "demo" else cli.main(argv)


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_an_unrelated_file_is_kept_without_overwrite(inputs, tmp_path, capsys, name):
    argv, out_name, _ = COMMANDS[name]
    out = tmp_path / out_name
    out.write_bytes(b"someone else's file\n")
    assert _run(name, argv(inputs, out)) == 2
    _one_line_error(capsys, "already exists", "--overwrite")
    assert out.read_bytes() == b"someone else's file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]  # nothing beside it


@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_output_is_never_the_input(inputs, tmp_path, capsys, name, overwrite):
    argv, _, which = COMMANDS[name]
    source = inputs[which]
    link = tmp_path / f"link{source.suffix}"
    os.symlink(source, link)  # another spelling of the input
    before = {p: p.stat().st_mtime_ns for p in source.parent.rglob("*")}
    contents = source.read_bytes() if source.is_file() else None
    for out in (source, link, source.parent / "." / source.name):
        code = _run(name, argv(inputs, out) + (["--overwrite"] if overwrite else []))
        assert code == 2, out
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        if name.startswith(("sample", "score")):  # a .png or .npy output: refused while parsing
            assert "must end in .png or .npy" in err or "must end in .npy" in err, err
        else:
            assert err.count("\n") == 1 and "is the input" in err, err
    assert {p: p.stat().st_mtime_ns for p in source.parent.rglob("*")} == before
    if contents is not None:
        assert source.read_bytes() == contents


@pytest.mark.parametrize("name", ["train", "export", "demo"])
def test_a_folder_holding_the_input_is_refused(inputs, tmp_path, capsys, name):
    argv, _, which = COMMANDS[name]
    source = inputs[which]
    before = sorted(p.name for p in source.parent.iterdir())
    assert _run(name, argv(inputs, source.parent) + ["--overwrite"]) == 2
    _one_line_error(capsys, "holds the input")
    assert sorted(p.name for p in source.parent.iterdir()) == before


FILE_COMMANDS = ["fit-sampler", "train-code-prior", "sample", "sample-npy", "score"]


@pytest.mark.parametrize("name", FILE_COMMANDS)
def test_overwrite_replaces_a_file_whole(inputs, tmp_path, capsys, name):
    argv, out_name, _ = COMMANDS[name]
    out = tmp_path / out_name
    out.write_bytes(b"an older result\n")
    companion = out.with_suffix(".json") if name == "train-code-prior" else None
    if companion is not None:
        companion.write_text("{}")
        assert _run(name, argv(inputs, out)) == 2  # the report is guarded too
        assert "already exists" in capsys.readouterr().err
        out.unlink()
        assert _run(name, argv(inputs, out)) == 2
        _one_line_error(capsys, f"{companion} already exists")
        out.write_bytes(b"an older result\n")
    assert _run(name, argv(inputs, out) + ["--overwrite"]) == 0, capsys.readouterr().err
    assert out.read_bytes() != b"an older result\n"
    if out.suffix == ".keras":
        saving.load_model(out)
    elif out.suffix == ".npy":
        assert np.isfinite(np.load(out)).all()
    else:
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if companion is not None:
        assert "history" in json.loads(companion.read_text())
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted({out_name, *([companion.name] if companion else [])}), left


@pytest.mark.parametrize("name", ["train", "export"])
def test_overwrite_replaces_a_previous_run_only(inputs, tmp_path, capsys, name):
    argv, out_name, _ = COMMANDS[name]
    out = tmp_path / out_name
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert _run(name, argv(inputs, out) + ["--overwrite"]) == 2  # not a keras-vae folder
    _one_line_error(capsys, "--overwrite replaces only a previous keras-vae run")
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    (out / "history.json").write_text("{}")  # a previous run's entry
    assert _run(name, argv(inputs, out) + ["--overwrite"]) == 0, capsys.readouterr().err
    assert (out / ("model.keras" if name == "train" else "manifest.json")).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out_name]


def test_check_output_names_the_relation(tmp_path):
    model = tmp_path / "run" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"m")
    with pytest.raises(ValueError, match="--out .* is the input"):
        files.check_output(model, overwrite=True, inputs=(model,))
    with pytest.raises(ValueError, match="holds the input"):
        files.check_output(tmp_path / "run", overwrite=True, inputs=(model,))
    with pytest.raises(ValueError, match="lies inside the input"):
        files.check_output(tmp_path / "run" / "x", overwrite=True, inputs=(tmp_path / "run",))
    with pytest.raises(FileExistsError, match="--checkpoint"):
        files.check_output(model, overwrite=False, inputs=(), flag="--checkpoint")
    # Beside the input, a name not taken, a TFDS name and None are all fine.
    assert files.check_output(model.with_name("b.keras"), overwrite=False,
                              inputs=(model, "mnist", None)) == model.with_name("b.keras")
