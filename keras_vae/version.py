"""The keras_vae release: one leaf module, so any module can read it without a loop."""

__version__ = "0.1.0"
