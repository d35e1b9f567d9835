"""Every consumer of an export runs the one manifest check, and refuses alike.

The edge sampler and the server (at start) refuse the same manifests with the
same one-line reason; a decoder whose images leave the declared value range
is refused by both when they load it, and by the exporter before it writes.
"""

import dataclasses
import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import keras_vae
import keras_vae.export
from keras_vae import recipes
from keras_vae.export import manifest as manifest_lib
from keras_vae.export import reader, sample_onnx, sampler, serve, service
from keras_vae.export.errors import ExportError
from keras_vae.models.vqvae import VQVAE


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """`{"vae": folder, "vq": folder}`: tiny ONNX exports of a VAE and of a VQ-VAE."""
    root = tmp_path_factory.mktemp("consumers")
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    keras_vae.export.export(vae, root / "vae", formats="onnx",
                            graphs=("decoder", "encoder", "scorer"))
    vq = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    keras_vae.export.export(vq, root / "vq", formats="onnx", graphs=("decoder", "encoder"))
    return {"vae": root / "vae", "vq": root / "vq"}


def change_manifest(change):
    def apply(folder):
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text())
        change(manifest)
        path.write_text(json.dumps(manifest))
    return apply


def set_prior(**table):
    return change_manifest(lambda m: m.update(prior=table))


def as_codes(grid_shape, codebook_size):
    """A VAE export's manifest declaring a code grid instead of z."""
    def change(m):
        m.pop("family")
        m.update(latent_dim=None, prior={"type": recipes.AUTOREGRESSIVE_CODES, "graph": None,
                                         "grid_shape": grid_shape,
                                         "codebook_size": codebook_size})
    return change_manifest(change)


def relabel_as_vae(m):
    """A VQ-VAE's manifest relabelled as a normal-prior VAE."""
    m.pop("codes")
    m.update(family={"name": "vae", "latent_kind": "continuous"}, latent_dim=4,
             prior={"type": "standard_normal"})


def scale_decoder(factor):
    """The decoder's ONNX graph with its output `x` times `factor`; the manifest re-hashed."""
    def apply(folder):
        path = folder / "decoder.onnx"
        model = onnx.load(str(path))
        graph = model.graph
        for node in graph.node:
            node.output[:] = ["x_unscaled" if o == "x" else o for o in node.output]
        graph.initializer.append(numpy_helper.from_array(np.float32(factor), "x_factor"))
        graph.node.append(helper.make_node("Mul", ["x_unscaled", "x_factor"], ["x"]))
        onnx.save_model(model, str(path))

        def rehash(m):
            entry = next(e for e in m["files"] if e["path"] == "decoder.onnx")
            entry.update(size_bytes=recipes.size_of(path), sha256=recipes.sha256_of(path))
        change_manifest(rehash)(folder)
    return apply


MIXTURE = {"type": "mixture", "weights": [0.5, 0.5], "means": [[0.0] * 3, [1.0] * 3],
           "log_vars": [[0.0] * 3, [0.0] * 3]}

# case: (export, change, a part of the reason both consumers give)
CASES = {
    "mixture mean NaN": ("vae", set_prior(**{**MIXTURE, "means": [[float("nan")] * 3,
                                                                   [1.0] * 3]}),
                         "non-finite means"),
    "mixture log_var inf": ("vae", set_prior(**{**MIXTURE, "log_vars": [[float("inf")] * 3,
                                                                         [0.0] * 3]}),
                            "non-finite log_vars"),
    "mixture weight NaN": ("vae", set_prior(**{**MIXTURE, "weights": [float("nan"), 1.0]}),
                           "non-finite weights"),
    "code grid 1000x1000": ("vae", as_codes([1000, 1000], 512), "at most 4096 cells"),
    "code grid negative": ("vae", as_codes([-2, 2], 8), "code grid must be"),
    "codebook 0": ("vae", as_codes([2, 2], 0), "codebook size must be"),
    "codebook -3": ("vae", as_codes([2, 2], -3), "codebook size must be"),
    "VQ relabelled as a VAE": ("vq", change_manifest(relabel_as_vae),
                               "family was relabelled"),
    "VQ family relabelled only": (
        "vq", change_manifest(lambda m: m["family"].update(latent_kind="continuous")),
        "the family and the prior disagree"),
    "value range NaN": ("vae", change_manifest(
        lambda m: m["image"].update(value_range=[0.0, float("nan")])), "'image.value_range'"),
    "anomaly threshold inf": ("vae", change_manifest(
        lambda m: m.update(anomaly={"threshold": float("inf")})), "'anomaly'"),
    "decoder gives 5x its range": ("vae", scale_decoder(5.0),
                                   "outside the range [0, 1] the manifest declares"),
    "decoder gives NaN": ("vae", scale_decoder(float("nan")), "NaN or inf"),
}


def run_sampler(folder, capsys):
    out = folder.parent / "grid.png"
    code = sample_onnx.main([str(folder), "--n", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 or out.exists()
    return code, err


def run_server(folder, capsys):
    """`serve.py`'s start in this process: refused exports return before it listens."""
    code = serve.main([str(folder), "--port", "0"], prog="serve.py")
    return code, capsys.readouterr().err


def one_line_reason(err, prog):
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f"{prog}: error: "), err
    return err.split("error: ", 1)[1].strip()


@pytest.fixture
def copy_of(exports, tmp_path):
    def copy(kind):
        folder = tmp_path / kind
        shutil.copytree(exports[kind], folder)
        return folder
    return copy


def test_both_consumers_take_the_good_exports(copy_of, capsys):
    folder = copy_of("vae")
    assert run_sampler(folder, capsys)[0] == 0
    started = service.Service(folder)
    assert set(started.models) == {"decoder", "encoder", "scorer"}
    assert started.value_range == (0.0, 1.0)
    assert run_sampler(copy_of("vq"), capsys)[0] == 0


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_and_server_refuse_the_same_manifests_alike(copy_of, capsys, case):
    kind, change, message = CASES[case]
    folder = copy_of(kind)
    change(folder)
    code, err = run_sampler(folder, capsys)
    assert code == 2, err
    sampler_reason = one_line_reason(err, "sample_onnx.py")
    code, err = run_server(folder, capsys)
    assert code == 2, err
    server_reason = one_line_reason(err, "serve.py")
    assert message in sampler_reason, sampler_reason
    assert server_reason == sampler_reason
    assert not (folder.parent / "grid.png").exists()


def test_an_out_of_range_decoder_is_named_with_the_values_it_reached(copy_of, capsys):
    folder = copy_of("vae")
    scale_decoder(5.0)(folder)
    with pytest.raises(reader.EdgeError, match=r"decoder.onnx gives values in \[[0-9.]+, "
                                               r"[1-4]\.[0-9]+\], outside the range \[0, 1\]"):
        service.Service(folder)
    # Within the tolerance of the range (rounding of quantized files): taken.
    reader.check_value_range(np.float32([-5e-4, 1.0005]), [0.0, 1.0], "x")
    with pytest.raises(reader.EdgeError, match="outside"):
        reader.check_value_range(np.float32([0.0, 1.002]), [0.0, 1.0], "x")


class LoudVAE(keras_vae.VAE):
    """A VAE whose exported decoder gives 5x the image means it declares in [0, 1]."""

    def export_graphs(self):
        graphs = super().export_graphs()
        decoder = graphs["decoder"]

        def loud(z, label=None):
            return {"x": 5.0 * decoder.fn(z, label)["x"]}

        return {**graphs, "decoder": dataclasses.replace(decoder, fn=loud)}


def test_the_exporter_refuses_a_decoder_outside_its_declared_range(tmp_path):
    model = LoudVAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                    arch_options={"hidden_units": [8]}, seed=0)
    with pytest.raises(ExportError, match=r"Keras output 'x' at batch 1 gives values in "
                                          r"\[.*\], outside the range \[0, 1\]"):
        keras_vae.export.export(model, tmp_path / "loud", formats="onnx", graphs="decoder")
    assert not (tmp_path / "loud").exists()


def test_the_exporter_never_writes_a_manifest_the_readers_refuse(exports, tmp_path):
    manifest = json.loads((exports["vae"] / "manifest.json").read_text())
    manifest["prior"] = {**MIXTURE, "means": [[float("nan")] * 3, [1.0] * 3]}
    with pytest.raises(ExportError, match="device check: manifest.json: .*non-finite means"):
        manifest_lib.write(manifest, tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_code_grid_cost_is_bounded_for_the_largest_n():
    sampler.check_code_cost(recipes.MAX_IMAGES, (7, 7), 64)  # a default VQ-VAE on MNIST
    sampler.check_code_cost(recipes.MAX_IMAGES, (8, 8), 512)
    with pytest.raises(reader.EdgeError, match=r"ask for at most 32 with --n"):
        sampler.check_code_cost(recipes.MAX_IMAGES, (64, 64), 16)
