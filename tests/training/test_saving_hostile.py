"""A model with NaN or Inf weights is refused on load, so evaluate, sample and export exit 2.

TensorFlow's fused graphs can turn a NaN weight into finite, plausible
numbers (before this check, `evaluate` printed them and `sample` wrote a
garbage PNG, both exiting 0): the weights themselves are checked with numpy.
"""

import json
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from keras_vae import cli, saving


@pytest.fixture(scope="module")
def good(saved_vae):
    return saved_vae


def _poisoned(vae, path, value, which):
    """Saves `vae` with one entry of one kernel set to `value`; restores the weight."""
    kernels = [w for w in vae.weights if "kernel" in w.path]
    variable = kernels[which]
    original = variable.numpy()
    poisoned = original.copy()
    poisoned.flat[poisoned.size // 2] = value
    variable.assign(poisoned)
    try:
        return saving.save_model(vae, path), variable.path
    finally:
        variable.assign(original)


@pytest.mark.parametrize("value, which", [(np.nan, 0), (np.inf, -1), (-np.inf, 1)],
                         ids=["nan-encoder", "inf-decoder", "minus-inf"])
def test_non_finite_weights_are_refused(good, tmp_path, capsys, value, which):
    vae, _ = good
    path, name = _poisoned(vae, tmp_path / "bad.keras", value, which)
    with pytest.raises(ValueError, match=rf"weight '{name}' holds 1 NaN/Inf value\(s\)"):
        saving.load_model(path)
    for argv in (["evaluate", str(path), "--split", "train[:32]"],
                 ["sample", str(path), "--out", str(tmp_path / "s.png")],
                 ["export", str(path), "--formats", "onnx", "--out", str(tmp_path / "e")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "NaN/Inf" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.keras"]


def test_check_finite_weights_on_a_live_model(good):
    vae, _ = good
    saving.check_finite_weights(vae)  # no error
    variable = vae.weights[0]
    original = variable.numpy()
    variable.assign(np.full_like(original, np.nan))
    try:
        with pytest.raises(ValueError, match=f"holds {original.size} NaN/Inf"):
            saving.check_finite_weights(vae)
    finally:
        variable.assign(original)


# ------------------------------------------- small files, large resources


def _rewrite(src, dst, config_change=None, weights_change=None, extra=(),
             weights_suffix=b"", weights_compress=zipfile.ZIP_STORED):
    """Copies a .keras zip, editing its config and/or its weights HDF5, adding members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json" and config_change is not None:
                config = json.loads(data)
                config_change(config)
                data = json.dumps(config).encode()
            if item.filename == "model.weights.h5":
                if weights_change is not None:
                    scratch = Path(dst).with_suffix(".h5")
                    scratch.write_bytes(data)
                    with h5py.File(scratch, "r+") as f:
                        weights_change(f)
                    data = scratch.read_bytes()
                    scratch.unlink()
                zout.writestr(item.filename, data + weights_suffix,
                              compress_type=weights_compress)
                continue
            zout.writestr(item, data)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def _refused(path, match, capsys=None):
    """load_model refuses quickly, allocating little, with a short message."""
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ValueError, match=match) as info:
        saving.load_model(path)
    seconds = time.monotonic() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    message = str(info.value)
    assert len(message) < 600, len(message)
    assert seconds < 30 and peak < 32 << 20, (seconds, peak)  # memory is the guard
    return message


def _dense(config, units):
    """Sets the first Dense layer of the encoder to `units` (its build shape unchanged)."""
    layers = config["config"]["encoder"]["config"]["layers"]
    next(layer for layer in layers if layer["class_name"] == "Dense")["config"]["units"] = units


CRAFTED = {
    "assets member": (dict(extra=[("assets/huge.bin", b"\0" * 1000)]),
                      "unexpected or unsafe member 'assets/huge.bin'"),
    "npz weights": (dict(extra=[("model.weights.npz", b"PK")]),
                    "unexpected or unsafe member 'model.weights.npz'"),
    "many members": (dict(extra=[(f"assets/{i}", b"") for i in range(2000)]),
                     "unexpected or unsafe member 'assets/0'"),
    "duplicate member": (dict(extra=[("config.json", b"{}")]), "unexpected or unsafe member"),
    "long member name": (dict(extra=[("x" * 20000, b"")]), "unexpected or unsafe member 'xxx"),
    "deflate bomb": (dict(weights_suffix=b"\0" * (64 << 20),
                          weights_compress=zipfile.ZIP_DEFLATED), r"inflates \d+-fold"),
    "config over 1 MB": (dict(config_change=lambda c: c.update(padding="x" * (2 << 20))),
                         "config.json inflates to .* over the 1048576"),
    "long version": (dict(config_change=lambda c: c["config"]["keras_vae"].update(
        version="9" + "9" * 100_000)), "an incompatible release"),
    "long module": (dict(config_change=lambda c: c["config"].update(likelihood={
        "module": "os" * 50_000, "class_name": "system", "config": {}})), "refers to osos"),
    "huge layer in config": (dict(config_change=lambda c: _dense(c, 10 ** 8)),
                             "declares layers of about 6.5e\\+09 weights"),
    "compressed dataset": (dict(weights_change=lambda f: f.create_dataset(
        "evil", data=np.zeros((2000, 2000), np.float32), compression="gzip")),
        "evil is not stored in full"),
    "unallocated dataset": (dict(weights_change=lambda f: f.create_dataset(
        "evil", shape=(100_000, 100_000), dtype="f4")), "evil is not stored in full"),
    "external link": (dict(weights_change=lambda f: f.__setitem__(
        "evil", h5py.ExternalLink("/etc/passwd", "/"))), "evil is a ExternalLink"),
    "object dtype": (dict(weights_change=lambda f: f.create_dataset(
        "evil", data=np.array([b"abc"], dtype=h5py.string_dtype()))), "evil has dtype"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the duplicate member is the point
@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_archives_are_refused_cheaply(good, tmp_path, case):
    _, path = good
    kwargs, match = CRAFTED[case]
    crafted = _rewrite(path, tmp_path / "crafted.keras", **kwargs)
    assert crafted.stat().st_size < (3 << 20)  # a small file...
    before = set(Path(tempfile.gettempdir()).iterdir())
    _refused(crafted, match)  # ...refused in well under a second and a few MB
    assert set(Path(tempfile.gettempdir()).iterdir()) <= before  # nothing in the temp folder


def test_caps_are_the_named_constants(good, tmp_path, monkeypatch):
    _, path = good
    size = zipfile.ZipFile(path).getinfo("model.weights.h5").file_size
    monkeypatch.setattr(saving, "MAX_WEIGHTS_BYTES", size - 1)
    _refused(path, f"model.weights.h5 inflates to {size} bytes, over the {size - 1}")


def test_declared_weights_match_keras_count(good):
    vae, path = good
    config = saving.inspect_archive(path)
    assert saving._declared_weights(config) == vae.count_params()


# ------------------------------- configs that lie about the sizes they build


def _set_in(config, class_name, key, value):
    """Sets `key` of the first node of `class_name` in a nested config."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("class_name") == class_name and isinstance(node.get("config"), dict):
                node["config"][key] = value
                return
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise KeyError(class_name)


@pytest.fixture(scope="module")
def sized_models(tmp_path_factory):
    """Models whose own keras_vae layers size their weights from their config."""
    import keras_vae
    from keras_vae.models.vqvae import VQVAE

    folder = tmp_path_factory.mktemp("sized")
    vq = VQVAE(image_shape=(8, 8, 1), codebook_size=4, code_dim=2, seed=0)
    mixture = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                            arch_options={"hidden_units": [8]}, prior="mixture", seed=0)
    return {"vq": saving.save_model(vq, folder / "vq.keras"),
            "mixture": saving.save_model(mixture, folder / "mixture.keras")}


# Weight-sizing keys of keras_vae layers: (model, class, key, a lie, the refusal).
_ASKS = "its config asks for a weight .* refused before allocating"
LIES = {
    "codebook size": ("vq", "VQVAE", "codebook_size", 10 ** 8, _ASKS),
    "code dim": ("vq", "VQVAE", "code_dim", 10 ** 8, "code_dim is 100000000"),
    "mixture components": ("mixture", "MixturePrior", "components", 10 ** 8, _ASKS),
}

# Runs in a fresh process: the peak RSS that the load adds, and its seconds.
_MEASURE = """
import resource, sys, time
from keras_vae import saving
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.monotonic()
try:
    saving.load_model(sys.argv[1])
    print("loaded")
except ValueError as e:
    print("refused", " ".join(str(e).split()))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(grown >> 10, time.monotonic() - start)
"""


def _load_in_process(path) -> tuple[str, int, float]:
    """`(message, MB the load added to the peak RSS, seconds)` of loading `path` afresh."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True,
                         text=True, timeout=300, check=True).stdout.strip().splitlines()
    grown, seconds = out[-1].split()
    return out[-2], int(grown), float(seconds)


@pytest.mark.parametrize("case", sorted(LIES))
def test_a_config_lying_about_sizes_is_refused_before_allocating(sized_models, tmp_path, case):
    which, class_name, key, value, match = LIES[case]
    crafted = _rewrite(sized_models[which], tmp_path / "lie.keras",
                       config_change=lambda c: _set_in(c, class_name, key, value))
    assert crafted.stat().st_size < (1 << 20)
    _refused(crafted, match)
    saving.load_model(sized_models[which])  # the honest file still loads


@pytest.mark.slow
def test_a_lying_config_costs_little_memory_in_a_fresh_process(sized_models, tmp_path):
    # 10^8 codes of dimension 2: 800 MB of codebook had it been allocated.
    crafted = _rewrite(sized_models["vq"], tmp_path / "lie.keras",
                       config_change=lambda c: _set_in(c, "VQVAE", "codebook_size", 10 ** 8))
    message, grown_mb, seconds = _load_in_process(crafted)
    assert message.startswith("refused") and "before allocating" in message, message
    assert grown_mb < 100 and seconds < 10, (grown_mb, seconds)


def _lie_in_directory(src, dst, name, field_offset, value):
    """Copies a zip, rewriting one 4-byte field of `name`'s central-directory entry."""
    import struct

    raw = bytearray(Path(src).read_bytes())
    start = 0
    while True:
        start = raw.index(b"PK\x01\x02", start)
        length = struct.unpack_from("<H", raw, start + 28)[0]
        if raw[start + 46:start + 46 + length] == name.encode():
            struct.pack_into("<I", raw, start + field_offset, value)
            break
        start += 4
    Path(dst).write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("field, value", [(24, 3 << 30), (20, 1 << 31)],
                         ids=["uncompressed size", "compressed size"])
def test_a_zip_directory_lying_about_member_sizes_is_refused(good, tmp_path, field, value):
    _, path = good
    crafted = _lie_in_directory(path, tmp_path / "lie.keras", "model.weights.h5", field, value)
    _refused(crafted, "cannot hold|inflates")
