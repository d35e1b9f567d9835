"""MultiWorkerMirroredStrategy: two `keras-vae train` processes on 127.0.0.1.

Both workers run the real CLI with `--strategy multiworker` and the same
`--out`; a small hook records each worker's final weights. The workers must
end with identical weights, and only the chief writes the run directory.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

WORKER = textwrap.dedent('''
    import sys
    import numpy as np
    from keras_vae import cli
    from keras_vae.training import trainer

    index = sys.argv[1]
    real_train = trainer.train  # what `run` calls

    def recording_train(*args, **kwargs):
        result = real_train(*args, **kwargs)
        np.savez(f"weights-{index}.npz", *result.model.get_weights())
        return result

    trainer.train = recording_train
    sys.exit(cli.main(sys.argv[2:]))
''')


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(2)]}
    args = ["train", "--strategy", "multiworker", "--dataset", "digits", "--split",
            "train[:256]", "--arch", "mlp", "--latent-dim", "2", "--epochs", "2",
            "--batch-size", "32", "--validation-fraction", "0", "--binarize", "static",
            "--seed", "3", "--verbose", "0", "--out", str(tmp_path / "run")]
    procs = []
    for index in range(2):
        scratch = tmp_path / f"tmp-{index}"
        scratch.mkdir()
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(scratch),
               "TF_CONFIG": json.dumps({"cluster": cluster,
                                        "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "worker.py", str(index), *args], cwd=tmp_path, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=240)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-4000:]

    w0 = np.load(tmp_path / "weights-0.npz")
    w1 = np.load(tmp_path / "weights-1.npz")
    assert len(w0.files) == len(w1.files) > 4
    for key in w0.files:
        np.testing.assert_array_equal(w0[key], w1[key])

    # Training moved the weights: the saved model is not the initialization.
    import keras_vae
    from keras_vae import saving

    model = saving.load_model(tmp_path / "run" / "model.keras")
    for saved, recorded in zip(model.get_weights(), (w0[k] for k in w0.files)):
        np.testing.assert_array_equal(saved, recorded)
    fresh = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp", seed=3)
    assert max(np.abs(a - b).max() for a, b in zip(fresh.get_weights(), model.get_weights())) > 0

    # Only the chief wrote: one run folder, no partial or duplicate folders,
    # and the other worker's scratch copy is gone.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "history.json", "model.keras", "reconstructions.png", "samples.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "run", "tmp-0", "tmp-1", "weights-0.npz", "weights-1.npz", "worker.py"]
    assert not any((tmp_path / "tmp-1").iterdir())
    assert "Wrote" in outputs[0] and "Wrote" not in outputs[1]
    history = json.loads((tmp_path / "run" / "history.json").read_text())["history"]
    assert len(history["loss"]) == 2 and all(np.isfinite(history["loss"]))
