"""The systems the benchmarks compare, behind one small interface.

A system is a VAE plus the way it is trained: ours (`keras_vae.VAE` fed by
`keras_vae.data.load`), the keras.io-style conv VAE (numpy arrays into
`fit`), and the PyTorch tutorial MLP (a `DataLoader` and the plain loop).
Each offers the same calls so the benchmarks can interleave them:

- `fit_epochs(n)` / `fit_for(seconds)` -> images trained on;
- `encode(x)` -> posterior `(mean, log_var)` as numpy;
- `decoder()` -> `(kind, fn)`: `fn(z)` gives `"logits"` or `"probs"` per pixel;
- `flops_forward()` -> `{"encoder": ..., "decoder": ...}` per example.
"""

from __future__ import annotations

import math
import time

import numpy as np

from benchmarks import digits, flops, reference_kerasio, reference_torch


def deadline_callback(seconds: float):
    """A Keras callback that stops `fit` once `seconds` of training have passed."""
    import keras

    class Deadline(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.deadline = time.perf_counter() + seconds

        def on_train_batch_end(self, batch, logs=None):
            if time.perf_counter() >= self.deadline:
                self.model.stop_training = True

    return Deadline()


def epoch_clock():
    """A Keras callback adding up the wall time inside epochs (`.seconds`, one per epoch).

    What `fit` spends outside its epochs (setting up, and tearing down the
    input iterator) is left out: the difference to the wall time of the call.
    """
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.start)

    return EpochClock()


def _images_seen(steps: int, n: int, batch_size: int) -> int:
    """Images in `steps` optimizer steps over epochs of `n` images (last batch partial)."""
    per_epoch = math.ceil(n / batch_size)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * n + min(rest * batch_size, n)


class KerasSystem:
    """Shared driving of Keras models (ours and the keras.io reference)."""

    framework = "keras"
    model = None
    n = 0
    batch_size = 128

    def _fit(self, epochs, callbacks=()):
        raise NotImplementedError

    def fit_epochs(self, epochs: int) -> int:
        before = int(self.model.optimizer.iterations)
        clock = epoch_clock()
        self._fit(epochs, [clock])
        self.last_epoch_seconds = sum(clock.seconds)
        return _images_seen(int(self.model.optimizer.iterations) - before, self.n,
                            self.batch_size)

    def fit_for(self, seconds: float) -> int:
        before = int(self.model.optimizer.iterations)
        self._fit(10**6, [deadline_callback(seconds)])
        return _images_seen(int(self.model.optimizer.iterations) - before, self.n,
                            self.batch_size)

    def flops_forward(self) -> dict:
        return {"encoder": flops.keras_flops(self.model.encoder),
                "decoder": flops.keras_flops(self.model.decoder)}


class Ours(KerasSystem):
    """`keras_vae.VAE` trained the library's way: `data.load(..., binarize="dynamic")` into `fit`.

    Args:
        arch: `conv` or `mlp`.
        arch_options: Passed to the architecture builder.
        compile_options: Extra `compile` arguments (`jit_compile`,
            `steps_per_execution`); empty means the library's defaults.
        numpy_input: Feed grayscale numpy arrays to `fit` instead of the
            library's pipeline (an ablation: no binarization, Keras' own adapter).
    """

    def __init__(self, name, source, arch, latent_dim, batch_size=128, seed=0,
                 arch_options=None, compile_options=None, numpy_input=False,
                 dtype_policy=None):
        import keras

        import keras_vae

        self.name = name
        self.batch_size = batch_size
        self.numpy_input = numpy_input
        keras.utils.set_random_seed(seed)
        self.x_gray, _ = digits.training_arrays(source)
        self.n = len(self.x_gray)
        self.dataset = keras_vae.data.load(source, digits.splits(source)[0],
                                           batch_size=batch_size, binarize="dynamic", seed=seed,
                                           with_labels=False)
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(dtype_policy or previous)  # layers keep the policy
        try:
            self.model = keras_vae.VAE(image_shape=self.x_gray.shape[1:], latent_dim=latent_dim,
                                       arch=arch, arch_options=arch_options, seed=seed)
        finally:
            keras.config.set_dtype_policy(previous)
        self.model.compile(**dict(compile_options or {}))
        self.description = " ".join(str(part) for part in (
            "keras_vae", arch, arch_options or "", dtype_policy or "",
            compile_options or "library defaults") if part)

    def _fit(self, epochs, callbacks=()):
        if self.numpy_input:
            self.model.fit(self.x_gray, epochs=epochs, batch_size=self.batch_size,
                           verbose=0, callbacks=list(callbacks))
        else:
            self.model.fit(self.dataset, epochs=epochs, verbose=0, callbacks=list(callbacks))

    def encode(self, x):
        z_mean, z_log_var = self.model.encode(x)
        return np.asarray(z_mean), np.asarray(z_log_var)

    def decoder(self):
        import tensorflow as tf

        fn = tf.function(lambda z: self.model.decode_params(z), reduce_retracing=True)
        return "logits", lambda z: fn(tf.constant(z)).numpy()


class KerasIO(KerasSystem):
    """The keras.io conv VAE (`reference_kerasio.py`), numpy grayscale arrays into `fit`."""

    def __init__(self, name, source, latent_dim, batch_size=128, seed=0):
        import keras

        self.name = name
        self.batch_size = batch_size
        keras.utils.set_random_seed(seed)
        self.x_gray, _ = digits.training_arrays(source)
        self.n = len(self.x_gray)
        self.model = reference_kerasio.build(latent_dim, self.x_gray.shape[1:], seed=seed)
        self.description = "keras.io conv VAE, numpy arrays into fit"

    def _fit(self, epochs, callbacks=()):
        self.model.fit(self.x_gray, epochs=epochs, batch_size=self.batch_size, verbose=0,
                       callbacks=list(callbacks))

    def encode(self, x):
        return reference_kerasio.encode(self.model, x)

    def decoder(self):
        return "probs", reference_kerasio.decoder_function(self.model)


class Torch:
    """The PyTorch tutorial MLP (`reference_torch.py`) with its DataLoader loop."""

    framework = "torch"

    def __init__(self, name, source, latent_dim, batch_size=128, seed=0,
                 hidden_units=(400, 400), threads=None):
        self.name = name
        self.threads = threads  # torch's intra-op threads while this system trains
        self.batch_size = batch_size
        self.x_gray, _ = digits.training_arrays(source)
        self.n = len(self.x_gray)
        self.image_size = int(np.prod(self.x_gray.shape[1:]))
        self.hidden_units = tuple(hidden_units)
        self.model, self.optimizer = reference_torch.build(
            latent_dim, self.image_size, self.hidden_units, seed=seed)
        self.loader = reference_torch.loader(self.x_gray, batch_size, seed=seed)
        self.description = "PyTorch tutorial MLP, DataLoader loop" + (
            f", {threads} thread(s)" if threads else "")

    def _train(self, epochs, deadline=None):
        import torch

        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads or previous)
        try:
            return reference_torch.train(self.model, self.optimizer, self.loader, epochs,
                                         deadline=deadline, clock=time.perf_counter)
        finally:
            torch.set_num_threads(previous)

    def fit_epochs(self, epochs: int) -> int:
        return self._train(epochs)

    def fit_for(self, seconds: float) -> int:
        return self._train(10**6, deadline=time.perf_counter() + seconds)

    def encode(self, x):
        return reference_torch.encode(self.model, x)

    def decoder(self):
        import torch

        decode = reference_torch.decoder_function(self.model)

        def fn(z):
            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads or previous)
            try:
                return decode(z)
            finally:
                torch.set_num_threads(previous)

        return "probs", fn

    def flops_forward(self) -> dict:
        return {"encoder": flops.torch_flops(self.model.enc)
                + flops.torch_flops([self.model.fc21, self.model.fc22]),
                "decoder": flops.torch_flops(self.model.dec)
                + flops.torch_flops([self.model.fc_out])}


# The standard line-up: conv against keras.io (ours as shipped, and ours with
# keras.io's 16-unit dense layer: like with like), mlp against PyTorch.
def standard(source, batch_size=128, seed=0, include=None, torch_ok=None):
    """Builds the compared systems; torch is skipped (with a message) when absent."""
    torch_ok = reference_torch.available() if torch_ok is None else torch_ok
    makers = {
        "ours-conv": lambda: Ours("ours-conv", source, "conv", 16, batch_size, seed),
        "ours-conv-kerasio-shape": lambda: Ours(
            "ours-conv-kerasio-shape", source, "conv", 16, batch_size, seed,
            arch_options={"dense_units": 16}),
        "ours-conv-kerasio-shape-bf16": lambda: Ours(
            "ours-conv-kerasio-shape-bf16", source, "conv", 16, batch_size, seed,
            arch_options={"dense_units": 16}, dtype_policy="mixed_bfloat16"),
        "kerasio-conv": lambda: KerasIO("kerasio-conv", source, 16, batch_size, seed),
        "ours-mlp": lambda: Ours("ours-mlp", source, "mlp", 20, batch_size, seed),
        "ours-mlp-bf16": lambda: Ours("ours-mlp-bf16", source, "mlp", 20, batch_size, seed,
                                      dtype_policy="mixed_bfloat16"),
        "torch-mlp": lambda: Torch("torch-mlp", source, 20, batch_size, seed),
        "torch-mlp-1thread": lambda: Torch("torch-mlp-1thread", source, 20, batch_size, seed,
                                           threads=1),
    }
    systems = {}
    for name in include or DEFAULT:
        if name not in makers:
            raise ValueError(f"Unknown system {name!r}; valid: {sorted(makers)}")
        if name.startswith("torch") and not torch_ok:
            print(f"skipping {name}: torch is not installed (pip install torch==2.13.0 "
                  "for the PyTorch reference)")
            continue
        systems[name] = makers[name]()
    return systems


# The references each of ours is compared with (ratio = ours / reference); the
# tables quote the ratio to the fastest reference of the run.
BASELINES = {"ours-conv": ["kerasio-conv"], "ours-conv-kerasio-shape": ["kerasio-conv"],
             "ours-conv-kerasio-shape-bf16": ["kerasio-conv"],
             "ours-mlp": ["torch-mlp", "torch-mlp-1thread"],
             "ours-mlp-bf16": ["torch-mlp", "torch-mlp-1thread"]}
# The line-up of a plain run.
DEFAULT = ["ours-conv", "ours-conv-kerasio-shape", "ours-conv-kerasio-shape-bf16",
           "kerasio-conv", "ours-mlp", "ours-mlp-bf16", "torch-mlp", "torch-mlp-1thread"]
