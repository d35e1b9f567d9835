"""An export folder is a self-contained bundle: copy it and run the sampler inside it."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

import keras_vae
import keras_vae.export
from keras_vae import files, recipes

RECIPES = Path(recipes.__file__)


def test_export_folder_runs_on_its_own_after_a_copy(make_vae, tmp_path):
    vae = make_vae("mlp", latent_dim=3)
    manifest = keras_vae.export.export(vae, tmp_path / "export", formats="onnx",
                                       graphs=("decoder",))
    bundle = {e["path"]: e for e in manifest["bundle"]}
    assert set(bundle) == set(keras_vae.export.DEVICE_FILES)
    for name, entry in bundle.items():
        data = (tmp_path / "export" / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["size_bytes"] == len(data)
    # The bundle's recipes.py is a plain copy of the library's own file, not a link.
    assert not (tmp_path / "export" / "recipes.py").is_symlink()
    assert (tmp_path / "export" / "recipes.py").read_bytes() == RECIPES.read_bytes()
    assert {"recipes.py", "reader.py", "images.py", "sampler.py"} <= set(bundle)
    readme = (tmp_path / "export" / "README.md").read_text()
    assert "python sample_onnx.py . --n 16 --seed 0 --out grid.png" in readme
    assert "decoder.onnx" in readme
    # Somewhere else, with nothing but the folder: run the sampler from inside it.
    device = tmp_path / "device"
    shutil.copytree(tmp_path / "export", device)
    out = subprocess.run([sys.executable, "sample_onnx.py", ".", "--n", "5", "--seed", "3",
                          "--out", "z.npy"], cwd=device, capture_output=True, text=True,
                         timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.load(device / "z.npy"), vae.sample(5, seed=3), atol=1e-5)


def test_overwrite_accepts_every_file_a_bundle_holds():
    """`--overwrite` replaces an export folder only if it knows each entry (`RUN_ENTRIES`)."""
    for name in keras_vae.export.DEVICE_FILES:
        assert files.RUN_ENTRIES.match(name.split("/")[0]), name
    assert files.RUN_ENTRIES.match("edge_io.py")  # the helper in folders of earlier releases
    assert not files.RUN_ENTRIES.match("notes.txt")
