"""Latent tools: interpolation paths in closed form, attribute vectors, traversals, grids."""

import numpy as np
import pytest
from scipy.stats import norm

from keras_vae.uses import latent


def _angle(a, b):
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return np.arccos(np.clip(cos, -1.0, 1.0))


# ------------------------------------------------------------------ paths


def test_slerp_endpoints_are_the_inputs_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scales = rng.uniform(0.1, 5, (2, 1))
        a, b = (rng.standard_normal((2, 7)) * scales).astype(np.float32)
        path = latent.slerp(a, b, steps=9)
        assert path.shape == (9, 7) and path.dtype == np.float32
        np.testing.assert_array_equal(path[0], a)
        np.testing.assert_array_equal(path[-1], b)


def test_slerp_keeps_norm_and_moves_at_constant_angular_speed():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 5))
    b *= np.linalg.norm(a) / np.linalg.norm(b)  # equal norms r
    steps = 11
    path = latent.slerp(a, b, steps).astype(np.float64)
    t = np.linspace(0, 1, steps)
    omega = _angle(a, b)
    # closed form: |z(t)| = r and angle(z(t), a) = t * omega
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(a), rtol=1e-5)
    np.testing.assert_allclose([_angle(p, a) for p in path], t * omega, atol=1e-3)
    # every point lies in the plane spanned by a and b
    basis, _ = np.linalg.qr(np.stack([a, b], axis=1))
    np.testing.assert_allclose(basis @ (basis.T @ path.T), path.T, atol=1e-5)


def test_slerp_and_lerp_midpoints_of_orthogonal_unit_vectors():
    a, b = np.eye(4)[0], np.eye(4)[1]
    mid_slerp = latent.slerp(a, b, 3)[1]
    mid_lerp = latent.lerp(a, b, 3)[1]
    # slerp: (sin(pi/4) a + sin(pi/4) b) / sin(pi/2); lerp: (a + b) / 2
    np.testing.assert_allclose(mid_slerp, (a + b) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(mid_slerp), 1.0, atol=1e-6)
    np.testing.assert_allclose(mid_lerp, (a + b) / 2, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(mid_lerp), np.sqrt(0.5), atol=1e-7)


def test_lerp_matches_formula_and_slerp_falls_back_for_parallel_codes():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 3)).astype(np.float32)
    t = np.linspace(0, 1, 5)[:, None]
    np.testing.assert_allclose(latent.lerp(a, b, 5), (1 - t) * a + t * b, rtol=1e-6)
    np.testing.assert_allclose(latent.slerp(a, 3 * a, 5), latent.lerp(a, 3 * a, 5), rtol=1e-6)
    np.testing.assert_array_equal(latent.slerp(np.zeros(3), b, 4)[-1], b)


@pytest.mark.parametrize("bad", [
    lambda: latent.slerp(np.zeros(3), np.zeros(4)),
    lambda: latent.lerp(np.zeros((2, 3)), np.zeros((2, 3))),
    lambda: latent.slerp(np.ones(3), np.ones(3), steps=1),
    lambda: latent.get("cubic"),
])
def test_bad_paths_raise(bad):
    with pytest.raises(ValueError, match="same shape|steps|valid names"):
        bad()


# ------------------------------------------------------------- with a model


def test_interpolate_between_images_decodes_the_path_between_their_codes(make_vae,
                                                                         tiny_images):
    model = make_vae("mlp", latent_dim=3)
    x = tiny_images[0]
    z = model.encode(x[:2])[0].numpy()
    for method, path_fn in (("slerp", latent.slerp), ("linear", latent.lerp)):
        images = latent.interpolate(model, x[0], x[1], steps=6, method=method)
        assert images.shape == (6, 8, 8, 1)
        expected = model.decode(path_fn(z[0], z[1], 6)).numpy()
        np.testing.assert_allclose(images, expected, rtol=1e-5, atol=1e-6)
        # endpoints are the reconstructions of the two images
        np.testing.assert_allclose(images[[0, -1]], model.reconstruct(x[:2]), atol=1e-6)
    # codes work as endpoints, and an image without its channel axis too
    from_codes = latent.interpolate(model, z[0], z[1], steps=6)
    np.testing.assert_allclose(from_codes, latent.interpolate(model, x[0, ..., 0], z[1], 6),
                               atol=1e-6)


def test_interpolate_rejects_images_of_another_shape(make_vae):
    model = make_vae("mlp", latent_dim=3)
    with pytest.raises(ValueError, match=r"shape \(28, 28, 1\).*expected an image of shape "
                                         r"\(8, 8, 1\) or a latent of shape \(3,\)"):
        latent.interpolate(model, np.zeros((28, 28, 1)), np.zeros((8, 8, 1)))
    with pytest.raises(ValueError, match="end of the interpolation has shape \\(4,\\)"):
        latent.interpolate(model, np.zeros(3), np.zeros(4))


def test_attribute_vector_is_the_mean_code_difference(make_vae, tiny_images):
    model = make_vae("mlp", latent_dim=3)
    x = tiny_images[0]
    mask = x.mean(axis=(1, 2, 3)) > np.median(x.mean(axis=(1, 2, 3)))  # "bright" images
    vector = latent.attribute_vector(model, x, mask, batch_size=10)  # several batches
    z = model.encode(x)[0].numpy()
    np.testing.assert_allclose(vector, z[mask].mean(0) - z[~mask].mean(0), rtol=1e-5,
                               atol=1e-6)

    edited = latent.add_attribute(model, x[:5], vector, strength=2.0)
    np.testing.assert_allclose(edited, model.decode(z[:5] + 2.0 * vector).numpy(), atol=1e-6)
    np.testing.assert_allclose(latent.add_attribute(model, x[:5], vector, 0.0),
                               model.reconstruct(x[:5]), atol=1e-6)


@pytest.mark.parametrize("mask, match", [
    (np.zeros(64, bool), "with and without"),
    (np.ones(64, bool), "with and without"),
    (np.zeros(10, bool), "10 entries for 64 images"),
    (np.full(64, 2), "booleans"),
])
def test_attribute_vector_bad_masks(make_vae, tiny_images, mask, match):
    model = make_vae("mlp", latent_dim=3)
    with pytest.raises(ValueError, match=match):
        latent.attribute_vector(model, tiny_images[0], mask)


def test_add_attribute_rejects_a_vector_of_another_size(make_vae, tiny_images):
    model = make_vae("mlp", latent_dim=3)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        latent.add_attribute(model, tiny_images[0][:2], np.ones(5))


def test_traversal_varies_one_dimension_per_row(make_vae):
    model = make_vae("mlp", latent_dim=3)
    base = np.array([0.5, -1.0, 2.0], np.float32)
    values = np.array([-2.0, 0.0, 2.0], np.float32)
    images = latent.traversal(model, base, dims=[2, 0], values=values)
    assert images.shape == (2, 3, 8, 8, 1)
    codes = np.array([[0.5, -1, -2], [0.5, -1, 0], [0.5, -1, 2],
                      [-2, -1, 2], [0, -1, 2], [2, -1, 2]], np.float32)
    np.testing.assert_allclose(images.reshape(6, 8, 8, 1), model.decode(codes).numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="dims must be in"):
        latent.traversal(model, dims=[3])


def test_manifold_latents_are_normal_quantiles():
    codes = latent.manifold_latents(n=5, epsilon=0.05)
    assert codes.shape == (25, 2)
    axis = norm.ppf(np.linspace(0.05, 0.95, 5))
    grid = codes.reshape(5, 5, 2)
    np.testing.assert_allclose(grid[0, :, 0], axis, atol=1e-5)  # columns: z[0] increasing
    np.testing.assert_allclose(grid[:, 0, 1], axis[::-1], atol=1e-5)  # rows: z[1] decreasing
    np.testing.assert_allclose(grid[2, 2], [0.0, 0.0], atol=1e-6)


def test_manifold_grid_and_scatter_need_two_latent_dims(make_vae, tiny_images):
    model2 = make_vae("mlp", latent_dim=2)
    images = latent.manifold_grid(model2, n=4)
    np.testing.assert_allclose(images, model2.decode(latent.manifold_latents(4)).numpy(),
                               atol=1e-6)
    z, labels = latent.latent_scatter_data(model2, *tiny_images)
    np.testing.assert_allclose(z, model2.encode(tiny_images[0])[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(labels, tiny_images[1])

    model3 = make_vae("mlp", latent_dim=3)
    with pytest.raises(ValueError, match="2-D latent space; the model has latent_dim=3"):
        latent.manifold_grid(model3)
    with pytest.raises(ValueError, match="2-D latent space"):
        latent.latent_scatter_data(model3, *tiny_images)


def test_conditional_model_tools_take_labels(make_vae, tiny_images):
    model = make_vae("mlp", latent_dim=2, num_classes=4)
    x, y = tiny_images
    images = latent.interpolate(model, x[0], x[1], steps=4, label=3)
    z = model.encode(x[:2], np.array([3, 3]))[0].numpy()
    expected = model.decode(latent.slerp(z[0], z[1], 4), np.full(4, 3)).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)
    assert latent.manifold_grid(model, n=3, label=1).shape == (9, 8, 8, 1)
    with pytest.raises(ValueError, match="needs labels"):
        latent.manifold_grid(model, n=3)
