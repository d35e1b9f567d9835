"""Uploaded images, read as untrusted bytes: PNG files decoded by Pillow into model inputs.

A device module of the server: numpy, Pillow and `protocol` (for `ServeError`).
Pillow parses the file (the library made for it, with its decompression-bomb
check); this module decides what the model may be given:

- only PNG (`formats=["PNG"]`), read whole: `verify()` walks every chunk to
  `IEND` checking CRCs before the pixels are decoded, so a truncated or
  corrupt file is refused instead of decoding to zeros;
- at most `MAX_PIXELS` pixels (`Image.MAX_IMAGE_PIXELS`); Pillow's
  `DecompressionBombWarning` is an error here too;
- greyscale (1-bit, 2-, 4- and 8-bit `L`, 16-bit `I;16`) for one-channel
  models, RGB (and palette images, converted through their palette) for
  three-channel ones, scaled by the depth's maximum (8-bit / 255, 16-bit /
  65535), never clipped;
- an alpha channel (`LA`, `RGBA`, a `tRNS` key) is dropped when every pixel
  is opaque, and refused otherwise: a transparent pixel has no value the
  model could be given;
- the model's image size exactly (no resizing).

Every refusal is a 400 `ServeError` with a one-line message.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

if __package__:
    from .protocol import ServeError
else:  # run from an export folder: the server's modules sit beside this file
    from protocol import ServeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The most pixels an upload may declare (2048 x 2048), checked from its header
# before any pixel is decoded. An upload must have the model's size anyway: this
# bounds the work before that check can run. Pillow's own bomb limit (a process-wide
# setting, left as the process has it) is a refusal here too.
MAX_PIXELS = 1 << 22


def tell_why_unreadable() -> None:
    """Has Pillow say why a file is not a PNG it can open (as a warning that the
    400 quotes) instead of only "cannot identify image file". Process-wide: the
    server calls it at start, never a library that shares its process.
    """
    Image.WARN_POSSIBLE_FORMATS = True

# Pillow mode -> (what the file holds, largest sample value).
_GREY = {"1": 1, "L": 255, "LA": 255, "I;16": 65535, "I;16B": 65535, "I;16L": 65535}
_COLOUR = {"RGB": 255, "RGBA": 255}
_MESSAGE_CHARS = 160


def decode_png(data: bytes, image_shape) -> np.ndarray:
    """Decodes a PNG into `image_shape` float32 pixels in [0, 1], or says why not.

    Args:
        data: The uploaded bytes.
        image_shape: The model's `(height, width, channels)`, channels 1 or 3.

    Returns:
        `image_shape` float32 pixels.

    Raises:
        ServeError: 400 for a file that is not a PNG, is truncated or corrupt,
            has too many pixels, transparent pixels, the wrong size, or
            colour where the model takes greyscale (or the reverse).
    """
    height, width, channels = (tuple(image_shape) + (1,))[:3]
    if not data.startswith(PNG_SIGNATURE):
        raise ServeError(400, "the upload is not a PNG file (no PNG signature)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=["PNG"]) as probe:
                if probe.size[0] * probe.size[1] > MAX_PIXELS:
                    raise ServeError(400, f"the PNG has more pixels than this server opens "
                                          f"({MAX_PIXELS}): {probe.size[0]}x{probe.size[1]}")
                _check_size(probe.size, image_shape)
                probe.verify()  # every chunk to IEND, CRCs included
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            image.load()
        except ServeError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ServeError(400, f"the PNG has more pixels than this server opens "
                                  f"({MAX_PIXELS}): {_one_line(e)}") from None
        except Exception as e:  # Pillow's own types for a file it cannot read
            raise _unreadable(e, caught) from None
    with image:
        return _pixels(image, image_shape, channels)


def _check_size(size, image_shape) -> None:
    width, height = size
    if (height, width) != tuple(image_shape[:2]):
        raise ServeError(400, f"the PNG is {width}x{height} pixels but the model takes "
                              f"{image_shape[1]}x{image_shape[0]} ({list(image_shape)}); "
                              "resize it first")


def _pixels(image: Image.Image, image_shape, channels: int) -> np.ndarray:
    """The image's values over its maximum, as `image_shape` float32, alpha checked."""
    mode = image.mode
    if mode in ("P", "PA"):  # indices into a palette of RGB(A) colours
        kind, image = "palette", image.convert("RGBA")
    else:
        kind = {"1": "1-bit greyscale", "L": "greyscale", "LA": "greyscale + alpha",
                "RGB": "RGB", "RGBA": "RGBA"}.get(mode, "16-bit greyscale"
                                                  if mode.startswith("I;16") else mode)
    if image.mode not in _GREY and image.mode not in _COLOUR:
        raise ServeError(400, f"the PNG is {kind} (Pillow mode {mode}); send greyscale or RGB")
    values = np.asarray(image)
    if values.ndim == 2:
        values = values[..., None]
    if image.mode in ("LA", "RGBA"):
        values, alpha = values[..., :-1], values[..., -1]
        _check_opaque(alpha == 255, kind, channels)
    key = image.info.get("transparency")
    if key is not None and not isinstance(key, bytes):  # tRNS: one grey level or RGB colour
        _check_opaque(~(values == np.reshape(key, -1)).all(axis=-1), kind, channels)
    grey = image.mode in _GREY
    if channels != (1 if grey else 3):
        need = {1: "greyscale", 3: "RGB"}.get(channels, f"{channels}-channel")
        raise ServeError(400, f"the PNG is {kind} but the model takes {need} images "
                              f"{list(image_shape)}; convert it to {need}")
    top = {**_GREY, **_COLOUR}[image.mode]
    return values.astype(np.float32) / np.float32(top)


def _check_opaque(opaque: np.ndarray, kind: str, channels: int) -> None:
    if not opaque.all():
        raise ServeError(400, f"the PNG ({kind}) has {int((~opaque).sum())} transparent "
                              "pixels (alpha channel or tRNS); save it without alpha as "
                              f"{'greyscale' if channels == 1 else 'RGB'}")


def _unreadable(error: Exception, caught) -> ServeError:
    """A 400 for a file Pillow refused, saying why in one line."""
    reasons = [str(w.message).removeprefix("PNG opening failed. ") for w in caught
               if str(w.message).startswith("PNG opening failed")]
    reason = reasons[0] if isinstance(error, Image.UnidentifiedImageError) and reasons \
        else _one_line(error)
    what = "truncated" if "truncated" in reason.lower() or isinstance(error, EOFError) \
        else "corrupt"
    return ServeError(400, f"the PNG file is {what} or not one Pillow reads ({reason})")


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS - 3] + "..."
