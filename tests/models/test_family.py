"""Model families: `family_of`, the registry's views, and a toy family added with one line."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

import keras_vae
import keras_vae.export
from keras_vae import cli, training
from keras_vae.export import manifest as manifest_lib
from keras_vae.models import FAMILIES, Family, Option, family, family_of
from keras_vae.models.tcvae import TCVAE
from keras_vae.models.vaegan import VAEGAN
from keras_vae.models.vqvae import VQVAE

# ------------------------------------------- the toy family (docs/architecture.md)

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def toy_source() -> str:
    """The toy family's module as docs/architecture.md prints it."""
    text = ARCHITECTURE.read_text()
    section = text[text.index("### A new family: its module plus one line"):]
    start = section.index("```python\n") + len("```python\n")
    return section[start:section.index("\n```", start)]


@pytest.fixture
def toy_family(tmp_path):
    path = tmp_path / "toy.py"
    path.write_text(toy_source())
    spec = importlib.util.spec_from_file_location("toy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its last line registers the family
    yield FAMILIES["toy"]
    FAMILIES.pop("toy")
    keras.saving.get_custom_objects().pop("keras_vae>Toy")


def test_the_documented_toy_is_a_module_plus_one_registration_line():
    source = toy_source()
    assert len(source.splitlines()) <= 50
    assert source.count("family.register(") == 1
    assert source.rstrip().splitlines()[-2].startswith("family.register(family.Family(\"toy\"")


def _binary(n, shape, seed=0):
    return (np.random.default_rng(seed).random((n, *shape)) > 0.5).astype(np.float32)


def test_toy_family_trains_exports_and_samples_on_the_device(toy_family, tmp_path):
    model = toy_family.model_class()
    model.compile(keras.optimizers.Adam(1e-2))
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(_binary(8, (4, 4, 1)), batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert family_of(model) is toy_family
    assert training.MODELS.get("toy") is toy_family.model_class

    out = tmp_path / "export"
    manifest = keras_vae.export.export(model, out, formats="onnx")
    assert manifest["family"] == {"name": "toy", "latent_kind": "continuous"}
    assert [(e["graph"], e["format"]) for e in manifest["files"]] == [("decoder", "onnx")]
    assert manifest["latent_dim"] == 2 and manifest["prior"] == {"type": "standard_normal"}
    assert manifest["files"][0]["parity"]["max_abs_error"] <= 1e-5

    target = tmp_path / "s.npy"
    done = subprocess.run([sys.executable, str(out / "sample_onnx.py"), str(out), "--n", "5",
                           "--seed", "3", "--out", str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The device's recipe for a standard normal prior, decoded by Keras.
    z = np.random.default_rng(3).standard_normal((5, 2), dtype=np.float32)
    want = ops.convert_to_numpy(model.likelihood.mean(model.decoder(z)))
    np.testing.assert_allclose(np.load(target), want, atol=1e-5)


def test_the_command_line_reads_a_new_family_s_options(toy_family, capsys):
    args = cli.build_parser().parse_args(["train", "--model", "toy", "--latent-dim", "3",
                                          "--out", "run"])
    assert cli._model_config(args) == {"latent_dim": 3}
    args = cli.build_parser().parse_args(["train", "--model", "toy", "--out", "run"])
    assert cli._model_config(args) == {"latent_dim": 2}  # the toy's default, not the VAE's
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["train", "--model", "toy", "--beta", "2", "--out", "r"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("keras-vae train: error: --beta does not apply to --model toy "
                   "(a toy autoencoder); its options: --latent-dim")


# ------------------------------------------------------------ the registry

def test_each_model_belongs_to_its_nearest_registered_family():
    assert family_of(TCVAE).name == "vae"  # the VAE family with another regularizer
    assert family_of(VAEGAN).name == "vaegan"  # a VAE subclass with its own family
    assert family_of(keras_vae.VAE).latent_kind == family.CONTINUOUS
    assert family_of(VQVAE).latent_kind == family.CODES
    assert [FAMILIES.get(n).model_class for n in ("vae", "vaegan", "vqvae")] == [
        keras_vae.VAE, VAEGAN, VQVAE]
    with pytest.raises(ValueError, match=r"Sequential belongs to no keras_vae model family; "
                                         r"registered: \['vae', 'vaegan', 'vqvae'\]"):
        family_of(keras.Sequential())
    with pytest.raises(ValueError, match=r"Unknown model family 'gan'; valid names: "
                                         r"\['vae', 'vaegan', 'vqvae'\]"):
        FAMILIES.get("gan")


def test_training_models_is_the_families_classes():
    assert dict(training.MODELS) == {"vae": keras_vae.VAE, "vaegan": VAEGAN, "vqvae": VQVAE}
    with pytest.raises(ValueError, match=r"Unknown model 'gan'; valid names"):
        training.MODELS.get("gan")


def test_a_family_name_is_registered_once_and_declares_a_known_kind():
    with pytest.raises(ValueError, match="'vae' is already registered"):
        family.register(Family("vae", keras_vae.VAE, family.CONTINUOUS))
    with pytest.raises(ValueError, match="Unknown latent kind 'grid'"):
        Family("toy", keras_vae.VAE, "grid")
    with pytest.raises(ValueError, match="declares a flag twice"):
        Family("toy", keras_vae.VAE, family.CONTINUOUS,
               options=(Option("--width", int, 1, "a"), Option("--width", int, 2, "b")))


def test_the_manifest_names_the_family_and_keeps_its_latents():
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp")
    vq = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    built = manifest_lib.build(vae, [])
    assert built["family"] == {"name": "vae", "latent_kind": "continuous"}
    assert built["latent_dim"] == 3 and built["prior"]["type"] == "standard_normal"
    built = manifest_lib.build(vq, [])
    assert built["family"] == {"name": "vqvae", "latent_kind": "codes"}
    assert built["latent_dim"] is None and built["codes"]["grid_shape"] == [2, 2]
    assert built["prior"]["type"] == "autoregressive_codes"


def test_wrong_kind_names_the_family_and_the_command_to_use():
    vq = family_of(VQVAE)
    with pytest.raises(ValueError) as e:
        vq.require(family.CONTINUOUS, "fit-sampler", "runs/vq/model.keras")
    assert str(e.value) == ("fit-sampler needs continuous latents; runs/vq/model.keras is a "
                            "vqvae (discrete codes): use train-code-prior")
    with pytest.raises(ValueError) as e:
        family_of(TCVAE).require(family.CODES, "train-code-prior", "model.keras")
    assert str(e.value) == ("train-code-prior needs discrete codes; model.keras is a vae "
                            "(continuous latents): use fit-sampler")
    with pytest.raises(ValueError) as e:
        vq.require(family.CONTINUOUS, "score", "m.keras")
    assert str(e.value) == "score needs continuous latents; m.keras is a vqvae (discrete codes)"
    vq.require(family.CODES, "train-code-prior", "m.keras")  # the right kind: no error
