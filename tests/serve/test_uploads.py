"""Uploaded PNGs (`export/uploads.py`): Pillow decodes them, hostile files get a clear 400.

The decoder is held to the PNG spec's formulas and to Pillow's own reading;
every hostile file (bad IHDR, bad bit depth, truncated, corrupt, a bomb,
transparency) must be a 400 `ServeError` with a one-line message, never
an exception of another type and never pixels.
"""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def uploads(server_module):
    from PIL import Image

    before = Image.WARN_POSSIBLE_FORMATS
    module = server_module("uploads")
    module.tell_why_unreadable()  # as serve.py's main does
    yield module
    Image.WARN_POSSIBLE_FORMATS = before


def chunk(tag, body):
    """One PNG chunk with its CRC."""
    return struct.pack(">I", len(body)) + tag + body + struct.pack(
        ">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def raw_png(header, rows=None, end=True):
    """A PNG of an IHDR body `header` and filtered `rows` bytes (8x8 8-bit grey by default)."""
    rows = (b"\0" + b"\x80" * 8) * 8 if rows is None else rows
    return (SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + (chunk(b"IEND", b"") if end else b""))


def ihdr(width=8, height=8, depth=8, colour=0, interlace=0):
    return struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)


def _png(pixels, **options):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", **options)
    return buf.getvalue()


def test_png_decoder_matches_pillow(uploads):
    rng = np.random.default_rng(0)
    for shape in [(8, 8), (28, 28), (5, 13)]:
        smooth = np.add.outer(np.arange(shape[0]), np.arange(shape[1])) * 7 % 256
        for pixels in (rng.integers(0, 256, shape, dtype=np.uint8),
                       smooth.astype(np.uint8), np.zeros(shape, np.uint8)):
            got = uploads.decode_png(_png(pixels), (*shape, 1))
            np.testing.assert_array_equal(got[..., 0], pixels / np.float32(255))
        deep = rng.integers(0, 65536, shape, dtype=np.uint16)
        got = uploads.decode_png(_png(deep), (*shape, 1))
        np.testing.assert_array_equal(got[..., 0], deep / np.float32(65535))
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        np.testing.assert_array_equal(uploads.decode_png(_png(rgb), (*shape, 3)),
                                      rgb / np.float32(255))
        bits = rng.integers(0, 2, shape).astype(bool)
        got = uploads.decode_png(_png(bits), (*shape, 1))
        np.testing.assert_array_equal(got[..., 0], bits.astype(np.float32))
    # Every PNG row filter (None, Sub, Up, Average, Paeth), each against numpy.
    for kind in range(5):
        pixels = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
        data = _png_with_filter(pixels, kind)
        np.testing.assert_array_equal(uploads.decode_png(data, (6, 9, 3)),
                                      pixels / np.float32(255))
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), pixels)


def test_png_encoder_round_trips_through_pillow(server_module):
    encode_png = server_module("routes").encode_png
    rng = np.random.default_rng(1)
    for pixels in (rng.integers(0, 256, (17, 23), dtype=np.uint8),
                   rng.integers(0, 256, (9, 4, 3), dtype=np.uint8)):
        decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))
        np.testing.assert_array_equal(decoded, pixels)


def _png_with_filter(pixels, kind):
    """An RGB PNG whose rows all use filter `kind`, filtered here by the PNG spec's formulas."""
    h, w, c = pixels.shape
    rows = pixels.reshape(h, w * c).astype(np.int64)
    out = []
    prev = np.zeros(w * c, np.int64)
    for row in rows:
        left = np.concatenate([np.zeros(c, np.int64), row[:-c]])
        upleft = np.concatenate([np.zeros(c, np.int64), prev[:-c]])
        if kind == 0:
            pred = np.zeros_like(row)
        elif kind == 1:
            pred = left
        elif kind == 2:
            pred = prev
        elif kind == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prev), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        out.append(bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes())
        prev = row

    return (SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b""))


# ------------------------------------------------------------- hostile files


def _refused(uploads, data, shape=(8, 8, 1)):
    """The 400 message for `data`; fails if it decodes or raises anything else."""
    with pytest.raises(uploads.ServeError) as caught:
        uploads.decode_png(data, shape)
    error = caught.value
    assert error.status == 400, error.message
    assert "\n" not in error.message and "Traceback" not in error.message
    return error.message


def test_hostile_headers_are_refused_in_one_line(uploads):
    good = _png(np.zeros((8, 8), np.uint8))
    cases = {
        "bit depth 3": (raw_png(ihdr(depth=3)), "not one Pillow reads"),
        "bit depth 16 for a palette": (raw_png(ihdr(depth=16, colour=3)), "not one Pillow reads"),
        "colour type 5": (raw_png(ihdr(colour=5)), "not one Pillow reads"),
        "0-byte IHDR": (raw_png(b""), "Truncated IHDR"),
        "6-byte IHDR": (raw_png(b"\0" * 6), "Truncated IHDR"),
        "0x0 image": (raw_png(ihdr(0, 0)), "not one Pillow reads"),
        "no IEND": (good[:-12], "truncated"),
        "cut in the IDAT": (good[:-20], "truncated"),
        "cut in the IDAT header": (good[:-30], "not one Pillow reads"),
        "signature only": (SIGNATURE, "not one Pillow reads"),
        "IDAT too short": (raw_png(ihdr(), b"\0" * 20), "truncated"),
        "unknown row filter": (raw_png(ihdr(), (b"\x09" + b"\0" * 8) * 8), "not one Pillow reads"),
        "bad IDAT CRC": (good[:-16] + bytes([good[-16] ^ 1]) + good[-15:], "corrupt"),
        "not a PNG": (b"GIF89a" + b"\0" * 40, "not a PNG file"),
        "empty": (b"", "not a PNG file"),
    }
    for what, (data, message) in cases.items():
        got = _refused(uploads, data)
        assert message in got, (what, got)


def test_decompression_bombs_are_refused_before_decoding(uploads):
    side = int(uploads.MAX_PIXELS ** 0.5)
    # Above the bound, and far above Pillow's own bomb limit (its error): only the header
    # is read, the image data is 8 rows.
    for width in (side + 64, 3 * side, 100_000):
        data = raw_png(ihdr(width, side))
        assert "more pixels than this server opens" in _refused(uploads, data, (side, width, 1))
    from PIL import Image as pil

    # The server's bound is its own: importing it leaves Pillow's process-wide limit alone
    # (the library's image-folder loader in the same process has its own).
    assert pil.MAX_IMAGE_PIXELS != uploads.MAX_PIXELS


def test_modes_are_scaled_and_alpha_dropped_only_when_opaque(uploads):
    rng = np.random.default_rng(2)
    # 16-bit greyscale (Pillow's I;16): over 65535, never clipped at 255.
    deep = rng.integers(0, 65536, (8, 8), dtype=np.uint16)
    deep[0, 0] = 65535
    got = uploads.decode_png(_png(deep), (8, 8, 1))
    assert got.max() == 1.0 and got.dtype == np.float32
    np.testing.assert_array_equal(got[..., 0], deep / np.float32(65535))
    # 2- and 4-bit greyscale: over 2**depth - 1.
    for depth, values in ((2, [0, 1, 2, 3]), (4, [0, 5, 10, 15])):
        packed = np.packbits(np.unpackbits(np.array(values * 2, np.uint8)[:, None], axis=1)
                             [:, 8 - depth:].reshape(-1))
        rows = b"".join(b"\0" + packed.tobytes() for _ in range(8))
        got = uploads.decode_png(raw_png(ihdr(depth=depth), rows), (8, 8, 1))
        np.testing.assert_array_equal(got[0, :, 0],
                                      np.float32(values * 2) / np.float32(2**depth - 1))
    # Opaque alpha is dropped: LA, RGBA, and a tRNS key no pixel has.
    grey = rng.integers(0, 256, (8, 8), dtype=np.uint8)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    opaque = np.full((8, 8), 255, np.uint8)
    got = uploads.decode_png(_png(np.dstack([grey, opaque])), (8, 8, 1))
    np.testing.assert_array_equal(got[..., 0], grey / np.float32(255))
    got = uploads.decode_png(_png(np.dstack([rgb, opaque])), (8, 8, 3))
    np.testing.assert_array_equal(got, rgb / np.float32(255))
    unused = int(np.setdiff1d(np.arange(256), grey)[0])
    got = uploads.decode_png(_png(grey, transparency=unused), (8, 8, 1))
    np.testing.assert_array_equal(got[..., 0], grey / np.float32(255))
    # One transparent pixel anywhere: refused, whatever carries the alpha.
    half = opaque.copy()
    half[3, 4] = 128
    assert "1 transparent pixels" in _refused(uploads, _png(np.dstack([grey, half])))
    assert "1 transparent pixels" in _refused(uploads, _png(np.dstack([rgb, half])),
                                              (8, 8, 3))
    assert "transparent pixels" in _refused(uploads, _png(grey, transparency=int(grey[0, 0])))
    # A palette image is its palette's colours (not its indices): RGB for an RGB model.
    palette = Image.fromarray(rgb).quantize(colors=16)
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    want = np.asarray(palette.convert("RGB")) / np.float32(255)
    np.testing.assert_array_equal(uploads.decode_png(buf.getvalue(), (8, 8, 3)), want)
    assert "palette but the model takes greyscale" in _refused(uploads, buf.getvalue())
