"""The procedural shapes dataset: deterministic, with factors that do what they say."""

import numpy as np
import pytest

from keras_vae.data import shapes

SQUARE, ELLIPSE, HEART = 0, 1, 2


def _draw(shape, scale=5, orientation=0, x=16, y=16, size=64):
    return shapes.render(np.array([[shape, scale, orientation, x, y]]), size=size)[0, ..., 0]


def _centroid(mask):
    rows, cols = np.nonzero(mask)
    return cols.mean() + 0.5, rows.mean() + 0.5  # pixel centres are at i + 0.5


def test_same_seed_same_images_and_other_seed_others():
    x1, f1, names = shapes.shapes(300, seed=3)
    x2, f2, _ = shapes.shapes(300, seed=3)
    x3, f3, _ = shapes.shapes(300, seed=4)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(f1, f2)
    assert not np.array_equal(f1, f3)
    assert names == ("shape", "scale", "orientation", "posX", "posY")


def test_factor_ranges_and_image_format():
    x, f, names = shapes.shapes(2000, seed=0)
    assert x.shape == (2000, 64, 64, 1) and x.dtype == np.float32
    assert set(np.unique(x)) == {0.0, 1.0}
    assert f.shape == (2000, 5) and np.issubdtype(f.dtype, np.integer)
    sizes = shapes.factor_sizes()
    assert list(sizes) == list(names) and list(sizes.values()) == [3, 6, 40, 32, 32]
    for j, k in enumerate(sizes.values()):
        # Uniform draws: every value appears, none outside the range.
        assert set(np.unique(f[:, j])) == set(range(k))
    assert (x.reshape(2000, -1).sum(axis=1) > 0).all()  # every image shows its object


def test_rendering_matches_factors_row_by_row():
    x, f, _ = shapes.shapes(50, seed=1)
    np.testing.assert_array_equal(x, shapes.render(f))


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_centroid_follows_pos_x_and_pos_y(shape):
    values = shapes.factor_values(64)
    for i in (0, 7, 16, 31):
        cx, cy = _centroid(_draw(shape, scale=5, orientation=3, x=i, y=31 - i))
        # The heart's centroid is calibrated to 4 decimals; pixels quantize the rest.
        assert cx == pytest.approx(values["posX"][i], abs=0.6)
        assert cy == pytest.approx(values["posY"][31 - i], abs=0.6)
    xs = [_centroid(_draw(shape, x=i))[0] for i in range(32)]
    assert np.all(np.diff(xs) > 0)


@pytest.mark.parametrize("shape", [SQUARE, ELLIPSE, HEART])
def test_area_grows_with_scale(shape):
    areas = np.array([_draw(shape, scale=s).sum() for s in range(6)])
    assert np.all(np.diff(areas) > 0)
    # Area goes with the square of the scale: 0.5 -> 1.0 is 4x.
    assert areas[-1] / areas[0] == pytest.approx(4.0, rel=0.1)


def test_rotation_changes_the_heart_but_respects_the_symmetries():
    heart = [_draw(HEART, orientation=r) for r in range(40)]
    for r in range(1, 40):
        assert (heart[r] != heart[0]).sum() > 10, r
    # A square is unchanged by a quarter turn (10 of 40 steps), an ellipse by a half turn.
    assert (_draw(SQUARE, orientation=10) != _draw(SQUARE, orientation=0)).sum() <= 2
    assert (_draw(SQUARE, orientation=5) != _draw(SQUARE, orientation=0)).sum() > 10
    assert (_draw(ELLIPSE, orientation=20) != _draw(ELLIPSE, orientation=0)).sum() <= 2
    assert (_draw(ELLIPSE, orientation=10) != _draw(ELLIPSE, orientation=0)).sum() > 10
    # Upright at orientation 0: the point (12.8 px from the centroid at this scale) is
    # below the centroid, the lobes (9.3 px) above; after a half turn, the reverse.
    for r, sign in ((0, 1), (20, -1)):
        rows, _ = np.nonzero(heart[r])
        cy = _centroid(heart[r])[1]
        below, above = rows.max() + 1 - cy, cy - rows.min()
        assert sign * (below - above) > 2


def test_objects_stay_inside_the_frame_at_every_extreme():
    for shape in (SQUARE, ELLIPSE, HEART):
        for x, y in ((0, 0), (31, 31), (0, 31)):
            for r in range(0, 40, 5):
                mask = _draw(shape, scale=5, orientation=r, x=x, y=y)
                border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
                assert border.sum() == 0


def test_color_variant_ranges():
    x, f, names = shapes.shapes(400, seed=2, color=True)
    assert x.shape == (400, 64, 64, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert names[5:] == ("object_hue", "background")
    assert f.shape == (400, 7)
    for j, k in enumerate(shapes.factor_sizes(color=True).values()):
        assert f[:, j].min() >= 0 and f[:, j].max() == k - 1
    values = shapes.factor_values()
    masks = shapes.render(f[:, :5])[..., 0] > 0
    for i in range(0, 400, 37):
        grey = values["background"][f[i, 6]]
        np.testing.assert_array_equal(x[i][~masks[i]], np.float32(grey))  # one grey level
        obj = x[i][masks[i]]
        assert np.ptp(obj, axis=0).max() == 0  # object: one colour...
        assert obj[0].max() == 1.0 and obj[0].min() == 0.0  # ...fully saturated


def test_all_factors_is_the_row_major_product():
    grid = shapes.all_factors()
    assert grid.shape == (3 * 6 * 40 * 32 * 32, 5)
    np.testing.assert_array_equal(grid[0], [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(grid[1], [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(grid[32], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(grid[-1], [2, 5, 39, 31, 31])
    # Mixed-radix number of each row: 0, 1, 2, ... means every combination once, in order.
    radix = np.cumprod([1, 32, 32, 40, 6])[::-1]
    np.testing.assert_array_equal(grid @ radix, np.arange(len(grid)))


def test_full_colour_product_is_refused_with_its_size():
    with pytest.raises(ValueError, match="pass n"):
        shapes.shapes(None, color=True)


def test_load_shapes_arrays_for_the_data_layer(monkeypatch):
    monkeypatch.setitem(shapes.SOURCES, "shapes", {"n": 40, "seed": 0, "color": False})
    x, y = shapes.load_shapes_arrays("shapes", "train[:30]")  # the caller slices
    assert x.shape == (40, 64, 64, 1) and y.shape == (40, 5)
    np.testing.assert_array_equal(x, shapes.shapes(40, seed=0)[0])
    with pytest.raises(ValueError, match="valid names"):
        shapes.load_shapes_arrays("sprites")
    with pytest.raises(ValueError, match="one split"):
        shapes.load_shapes_arrays("shapes", "test")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="n must be"):
        shapes.shapes(0)
    with pytest.raises(ValueError, match="size must be"):
        shapes.shapes(5, size=8)
    with pytest.raises(ValueError, match="'orientation' must lie in"):
        shapes.render(np.array([[0, 0, 40, 0, 0]]))
    with pytest.raises(ValueError, match="shape"):
        shapes.render(np.zeros((2, 4), dtype=int))
