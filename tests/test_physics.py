"""Tests of mqsm_nnunet.physics against closed forms: the magnetized sphere, hand-computed kernel values,
plane waves, unit conversions, Sobel on a ramp. Small grids, CPU, a few seconds in all."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, special

from mqsm_nnunet import physics


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------
def unit(vector) -> np.ndarray:
    vector = np.asarray(vector, dtype=float)
    return vector / np.linalg.norm(vector)


def voxel_coordinates_mm(shape, voxel_size, center_mm):
    """Per axis, positions (mm) of voxel centres relative to center_mm."""
    return [np.arange(n) * v - c for n, v, c in zip(shape, voxel_size, center_mm)]


def smooth_sphere(shape, voxel_size, center_mm, radius_mm, edge_mm) -> tuple[np.ndarray, float]:
    """Spherically symmetric ball with an erfc edge of width edge_mm, and its equivalent radius (mm).

    Outside its support, the field of any spherically symmetric chi is the dipole field of a uniform
    sphere with the same moment, so the analytic formula holds with a_eq^3 = 3/(4 pi) * integral(chi).
    A smooth edge keeps the spectrum away from Nyquist: with an oblique B0 the periodic extension of
    D(k) is discontinuous across the Nyquist faces, and a sharp (even partial-volume) sphere then
    shows alternating-sign errors of ~8% of dchi/3 inside, against ~0.3% for an axial B0.
    """
    xi, xj, xk = np.meshgrid(*voxel_coordinates_mm(shape, voxel_size, center_mm), indexing="ij")
    r = np.sqrt(xi ** 2 + xj ** 2 + xk ** 2)
    ball = 0.5 * special.erfc((r - radius_mm) / (math.sqrt(2) * edge_mm))
    equivalent_radius = (3 / (4 * math.pi) * ball.sum() * np.prod(voxel_size)) ** (1 / 3)
    return ball, float(equivalent_radius)


def sphere_field(shape, voxel_size, center_mm, radius_mm, b0_dir, delta_chi):
    """Analytic Lorentz-corrected field of a uniformly magnetized sphere at voxel centres, and r (mm).

    Inside: 0. Outside: delta_chi / 3 * (a / r)^3 * (3 cos^2(theta) - 1), theta between r and B0.
    """
    xi, xj, xk = np.meshgrid(*voxel_coordinates_mm(shape, voxel_size, center_mm), indexing="ij")
    r = np.sqrt(xi ** 2 + xj ** 2 + xk ** 2)
    b = unit(b0_dir)
    cos_theta = (xi * b[0] + xj * b[1] + xk * b[2]) / np.maximum(r, 1e-12)
    outside = delta_chi / 3 * (radius_mm / np.maximum(r, 1e-12)) ** 3 * (3 * cos_theta ** 2 - 1)
    return np.where(r > radius_mm, outside, 0.0), r


def ellipsoid(shape, center, semi_axes) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    return sum(((g - c) / s) ** 2 for g, c, s in zip(grid, center, semi_axes)) <= 1.0


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


# ----------------------------------------------------------------------------------------------------
# forward model: uniformly magnetized sphere
# ----------------------------------------------------------------------------------------------------
OBLIQUE_30 = (math.sin(math.radians(30)), 0.0, math.cos(math.radians(30)))


@pytest.mark.parametrize(
    "shape, voxel_size, b0_dir",
    [
        ((64, 64, 64), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0)),
        ((64, 64, 64), (1.0, 1.0, 1.0), OBLIQUE_30),
        ((64, 48, 40), (1.0, 1.5, 2.0), (0.0, 0.0, 1.0)),
        ((64, 48, 40), (1.0, 1.5, 2.0), (0.3, -0.5, 0.8)),
    ],
    ids=["axial", "oblique30", "anisotropic-axial", "anisotropic-oblique"],
)
def test_forward_field_matches_analytic_sphere(shape, voxel_size, b0_dir):
    radius, delta_chi = 12.0, 0.5  # mm, ppm
    edge = max(voxel_size)
    center = [(n - 1) / 2 * v for n, v in zip(shape, voxel_size)]
    chi, equivalent_radius = smooth_sphere(shape, voxel_size, center, radius, edge)
    expected, r = sphere_field(shape, voxel_size, center, equivalent_radius, b0_dir, delta_chi)

    field = physics.forward_field(delta_chi * chi, voxel_size, b0_dir)

    scale = delta_chi / 3  # field scale at the sphere surface
    inside = r <= radius - 3 * edge
    assert np.abs(field[inside]).max() < 0.01 * scale
    # outside, away from the edge: a few percent of the local amplitude 2 * scale * (a/r)^3
    outside = (r >= 1.5 * radius) & (r <= 2.5 * radius)
    local_amplitude = 2 * scale * (equivalent_radius / r[outside]) ** 3
    relative = np.abs(field[outside] - expected[outside]) / local_amplitude
    assert relative.max() < 0.03
    assert np.sqrt(np.mean(relative ** 2)) < 0.01


def test_forward_field_plane_waves_closed_form():
    """A plane wave is an eigenfunction: field = D(k) chi, D = 1/3 across B0 and -2/3 along B0."""
    shape, voxel_size = (16, 12, 10), (1.0, 1.5, 2.0)
    i, _, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    across = np.cos(2 * np.pi * i / shape[0])
    along = np.sin(2 * np.pi * 2 * k / shape[2])
    for chi, d in [(across, 1 / 3), (along, -2 / 3)]:
        field = physics.forward_field(chi, voxel_size, (0.0, 0.0, 1.0), pad_factor=1.0)
        np.testing.assert_allclose(field, d * chi, atol=1e-12)


def test_forward_field_float32_in_float32_out_and_b0_sign():
    rng = np.random.default_rng(0)
    chi = rng.standard_normal((12, 10, 8)).astype(np.float32)
    field = physics.forward_field(chi, (1.0, 1.0, 1.0), (0.2, 0.1, 1.0))
    flipped = physics.forward_field(chi, (1.0, 1.0, 1.0), (-0.2, -0.1, -1.0))
    reference = physics.forward_field(chi.astype(np.float64), (1.0, 1.0, 1.0), (0.2, 0.1, 1.0))
    assert field.dtype == np.float32 and field.shape == chi.shape
    np.testing.assert_allclose(field, flipped, atol=1e-6)
    np.testing.assert_allclose(field, reference, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# dipole kernel
# ----------------------------------------------------------------------------------------------------
def test_dipole_kernel_matches_fftfreq_reference_with_anisotropic_voxels():
    shape, voxel_size, b0_dir = (8, 6, 5), (1.0, 1.5, 2.0), (0.2, -0.3, 1.0)
    ki, kj, kk = np.meshgrid(*[np.fft.fftfreq(n, d=v) for n, v in zip(shape, voxel_size)], indexing="ij")
    b = unit(b0_dir)
    k_squared = ki ** 2 + kj ** 2 + kk ** 2
    k_squared[0, 0, 0] = np.inf
    reference = 1 / 3 - (ki * b[0] + kj * b[1] + kk * b[2]) ** 2 / k_squared
    reference[0, 0, 0] = 0.0

    kernel = physics.dipole_kernel(shape, voxel_size, b0_dir)

    assert kernel.dtype == np.float64 and kernel.shape == shape
    np.testing.assert_allclose(kernel, reference, atol=1e-15)


def test_dipole_kernel_hand_values():
    n = 8
    # k = (1/(n*1), 1/(n*2), 0), b = j: D = 1/3 - (1/4)/(1 + 1/4) = 2/15 (swapping dx, dy would give 1/3 - 4/5)
    kernel = physics.dipole_kernel((n, n, n), (1.0, 2.0, 1.0), (0.0, 1.0, 0.0))
    assert kernel[1, 1, 0] == pytest.approx(2 / 15)
    assert kernel[0, 0, 0] == 0.0  # D(0) choice
    assert kernel[0, 3, 0] == pytest.approx(-2 / 3)  # k along B0
    assert kernel[2, 0, 5] == pytest.approx(1 / 3)  # k perpendicular to B0
    assert kernel.min() >= -2 / 3 - 1e-12 and kernel.max() <= 1 / 3 + 1e-12


def test_dipole_kernel_rfft_half_grid_and_b0_sign_invariance():
    shape, voxel_size, b0_dir = (6, 7, 9), (0.9, 1.1, 1.7), (0.4, 0.5, 0.7)
    full = physics.dipole_kernel(shape, voxel_size, b0_dir)
    half = physics.dipole_kernel(shape, voxel_size, b0_dir, rfft=True)
    assert half.shape == np.fft.rfftn(np.zeros(shape)).shape
    np.testing.assert_array_equal(half, full[:, :, : shape[2] // 2 + 1])
    np.testing.assert_array_equal(physics.dipole_kernel(shape, voxel_size, -np.asarray(b0_dir)), full)
    np.testing.assert_allclose(physics.dipole_kernel(shape, voxel_size, 3 * np.asarray(b0_dir)), full, atol=1e-15)


# ----------------------------------------------------------------------------------------------------
# B0 direction from the affine
# ----------------------------------------------------------------------------------------------------
def test_b0_direction_identity_and_flipped_axis():
    np.testing.assert_allclose(physics.b0_direction_from_affine(np.eye(4)), [0.0, 0.0, 1.0])
    # k running towards -z (e.g. a superior-to-inferior slice order): same physical axis, positive sign
    np.testing.assert_allclose(physics.b0_direction_from_affine(np.diag([1.0, 1.0, -2.0, 1.0])), [0.0, 0.0, 1.0])


def test_b0_direction_rotated_anisotropic_affine():
    rot = rotation("x", 20.0) @ rotation("y", -15.0) @ rotation("z", 40.0)
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 1.2, 2.5])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    expected = rot.T @ np.array([0.0, 0.0, 1.0])
    assert np.argmax(np.abs(expected)) == 2 and expected[2] > 0  # the sign rule keeps it as is
    np.testing.assert_allclose(physics.b0_direction_from_affine(affine), expected, atol=1e-12)


def test_b0_direction_permuted_axes():
    # voxel i along world z, j along world x, k along world y
    affine = np.array([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [1.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(physics.b0_direction_from_affine(affine), [1.0, 0.0, 0.0], atol=1e-15)


def test_b0_direction_sheared_affine_points_along_world_z():
    matrix = np.array([[1.0, 0.3, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 2.0]])
    direction = physics.b0_direction_from_affine(matrix)
    world = (matrix / np.linalg.norm(matrix, axis=0)) @ direction
    assert np.linalg.norm(direction) == pytest.approx(1.0)
    np.testing.assert_allclose(world / np.linalg.norm(world), [0.0, 0.0, 1.0], atol=1e-12)


# ----------------------------------------------------------------------------------------------------
# units
# ----------------------------------------------------------------------------------------------------
def test_unit_conversions_hand_values():
    assert physics.GYROMAGNETIC_RATIO_HZ_PER_T == 42.577478e6
    assert physics.ppm_to_hz(1.0, 3.0) == pytest.approx(127.732434, abs=1e-9)
    assert physics.hz_to_ppm(127.732434, 3.0) == pytest.approx(1.0, rel=1e-12)
    # 1 ppm at 3 T, TE = 20 ms: 2 pi * 127.732434 Hz * 0.02 s
    assert physics.ppm_to_phase(1.0, 0.02, 3.0) == pytest.approx(2 * math.pi * 127.732434 * 0.02, rel=1e-12)
    assert physics.phase_to_ppm(math.pi, 0.02, 3.0) == pytest.approx(math.pi / (2 * math.pi * 127.732434 * 0.02))


def test_unit_conversions_round_trip_arrays():
    values = np.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(physics.phase_to_ppm(physics.ppm_to_phase(values, 0.015, 7.0), 0.015, 7.0), values)
    np.testing.assert_allclose(physics.hz_to_ppm(physics.ppm_to_hz(values, 1.5), 1.5), values)


# ----------------------------------------------------------------------------------------------------
# TKD and QSM-
# ----------------------------------------------------------------------------------------------------
def test_tkd_plane_waves_closed_form():
    """|D| >= t: exact inversion; |D| < t is clamped: along B0 (|D| = 2/3) with t = 0.8, chi_tkd = (2/3) / 0.8 chi."""
    shape, voxel_size = (16, 12, 10), (1.0, 1.5, 2.0)
    i, _, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    across = np.cos(2 * np.pi * i / shape[0])
    along = np.sin(2 * np.pi * 2 * k / shape[2])
    b0 = (0.0, 0.0, 1.0)
    for chi, threshold, gain in [(across, 0.2, 1.0), (along, 0.2, 1.0), (along, 0.8, (2 / 3) / 0.8)]:
        field = physics.forward_field(chi, voxel_size, b0, pad_factor=1.0)
        recovered = physics.tkd(field, voxel_size, b0, threshold, pad_factor=1.0)
        np.testing.assert_allclose(recovered, gain * chi, atol=1e-12)


@pytest.fixture(scope="module")
def ellipsoid_phantom():
    shape, voxel_size, b0_dir = (48, 48, 40), (1.0, 1.0, 1.2), (0.1, 0.2, 1.0)
    mask = ellipsoid(shape, (24, 24, 20), (19, 21, 16))
    chi = np.zeros(shape)
    chi[ellipsoid(shape, (17, 22, 18), (5, 7, 4))] = 0.15
    chi[ellipsoid(shape, (31, 25, 21), (6, 4, 5))] = -0.08
    chi[ellipsoid(shape, (24, 32, 14), (4, 5, 3))] = 0.3
    chi[ellipsoid(shape, (24, 14, 25), (8, 3, 3))] = 0.05
    chi = ndimage.gaussian_filter(chi, 1.0) * mask
    field = physics.forward_field(chi, voxel_size, b0_dir) * mask
    return chi, field, mask, voxel_size, b0_dir


def test_tkd_recovers_ellipsoids(ellipsoid_phantom):
    chi, field, mask, voxel_size, b0_dir = ellipsoid_phantom
    recovered = physics.tkd(field, voxel_size, b0_dir, 0.2, mask=mask)
    assert np.all(recovered[~mask] == 0)
    assert np.corrcoef(recovered[mask], chi[mask])[0, 1] > 0.9


def test_qsm_minus_is_sobel_weighted_mix_of_two_tkds(ellipsoid_phantom):
    _, field, mask, voxel_size, b0_dir = ellipsoid_phantom
    sharp = physics.tkd(field, voxel_size, b0_dir, 0.1, mask=mask)
    smooth = physics.tkd(field, voxel_size, b0_dir, 0.2, mask=mask)
    weight = physics.normalized_sobel_magnitude(field, mask)

    result = physics.qsm_minus(field, voxel_size, b0_dir, mask)

    np.testing.assert_allclose(result, weight * sharp + (1 - weight) * smooth, atol=1e-12)
    assert np.all(result[~mask] == 0)
    low, high = np.minimum(sharp, smooth), np.maximum(sharp, smooth)
    assert np.all((result >= low - 1e-12) & (result <= high + 1e-12))


# ----------------------------------------------------------------------------------------------------
# Sobel
# ----------------------------------------------------------------------------------------------------
def test_sobel_kernel_hand_values():
    kernel = physics.sobel_kernel(0)
    assert kernel.shape == (3, 3, 3)
    assert kernel[2, 1, 1] == 4 and kernel[0, 1, 1] == -4 and kernel[2, 0, 0] == 1 and kernel[0, 2, 0] == -1
    assert np.all(kernel[1] == 0) and kernel.sum() == 0 and np.abs(kernel).sum() == 32
    np.testing.assert_array_equal(physics.sobel_kernel(2), np.moveaxis(kernel, 0, 2))


def test_sobel_gradients_equal_correlation_with_sobel_kernel():
    volume = np.random.default_rng(1).standard_normal((9, 8, 7))
    gradients = physics.sobel_gradients(volume)
    assert gradients.shape == (3, 9, 8, 7)
    for axis in range(3):
        expected = ndimage.correlate(volume, physics.sobel_kernel(axis), mode="nearest")
        np.testing.assert_allclose(gradients[axis], expected, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_sobel_gradients_of_a_ramp(axis):
    slope = 0.7
    shape = (7, 8, 9)
    volume = slope * np.indices(shape)[axis].astype(float)
    gradients = physics.sobel_gradients(volume)
    interior = (slice(1, -1),) * 3
    # [-1, 0, 1] gives 2 * slope, each [1, 2, 1] smoothing multiplies by 4: 32 * slope
    np.testing.assert_allclose(gradients[axis][interior], 32 * slope, atol=1e-12)
    for other in set(range(3)) - {axis}:
        np.testing.assert_allclose(gradients[other], 0.0, atol=1e-12)


def test_normalized_sobel_magnitude_range_and_mask():
    volume = np.random.default_rng(2).standard_normal((10, 9, 8))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[2:8, 2:7, 2:6] = True
    gradients = physics.sobel_gradients(volume)
    magnitude = np.sqrt((gradients ** 2).sum(axis=0))

    normalized = physics.normalized_sobel_magnitude(volume, mask)

    assert normalized.min() >= 0 and normalized.max() <= 1
    assert normalized[mask].max() == pytest.approx(1.0)
    np.testing.assert_allclose(normalized[mask], magnitude[mask] / magnitude[mask].max())
    np.testing.assert_allclose(physics.normalized_sobel_magnitude(volume), magnitude / magnitude.max())
    np.testing.assert_array_equal(physics.normalized_sobel_magnitude(np.ones((5, 5, 5))), 0.0)


# ----------------------------------------------------------------------------------------------------
# argument validation: ValueError naming the argument
# ----------------------------------------------------------------------------------------------------
GOOD = dict(voxel_size=(1.0, 1.0, 1.0), b0_dir=(0.0, 0.0, 1.0))
VOLUME = np.zeros((6, 6, 6))


def with_nan(value):
    array = np.zeros((6, 6, 6))
    array[1, 2, 3] = value
    return array


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: physics.forward_field(np.zeros((6, 6)), **GOOD), "chi"),
        (lambda: physics.forward_field(with_nan(np.nan), **GOOD), "chi"),
        (lambda: physics.forward_field(with_nan(np.inf), **GOOD), "chi"),
        (lambda: physics.forward_field(VOLUME.astype(complex), **GOOD), "chi"),
        (lambda: physics.forward_field(VOLUME, (1.0, 0.0, 1.0), (0, 0, 1)), "voxel_size"),
        (lambda: physics.forward_field(VOLUME, (1.0, -1.0, 1.0), (0, 0, 1)), "voxel_size"),
        (lambda: physics.forward_field(VOLUME, (1.0, np.nan, 1.0), (0, 0, 1)), "voxel_size"),
        (lambda: physics.forward_field(VOLUME, (1.0, np.inf, 1.0), (0, 0, 1)), "voxel_size"),
        (lambda: physics.forward_field(VOLUME, (1.0, 1.0), (0, 0, 1)), "voxel_size"),
        (lambda: physics.forward_field(VOLUME, (1, 1, 1), (0, 0, 0)), "b0_dir"),
        (lambda: physics.forward_field(VOLUME, (1, 1, 1), (0, np.nan, 1)), "b0_dir"),
        (lambda: physics.forward_field(VOLUME, (1, 1, 1), (0, 1)), "b0_dir"),
        (lambda: physics.forward_field(VOLUME, **GOOD, pad_factor=0.5), "pad_factor"),
        (lambda: physics.dipole_kernel((4, 4), (1, 1, 1), (0, 0, 1)), "shape"),
        (lambda: physics.dipole_kernel((4, 0, 4), (1, 1, 1), (0, 0, 1)), "shape"),
        (lambda: physics.dipole_kernel((4, 4.5, 4), (1, 1, 1), (0, 0, 1)), "shape"),
        (lambda: physics.dipole_kernel((4, 4, 4), (1, 1, 1), (0, 0, 0)), "b0_dir"),
        (lambda: physics.tkd(VOLUME, **GOOD, threshold=0.0), "threshold"),
        (lambda: physics.tkd(VOLUME, **GOOD, threshold=1.5), "threshold"),
        (lambda: physics.tkd(VOLUME, **GOOD, threshold=np.nan), "threshold"),
        (lambda: physics.tkd(VOLUME, **GOOD, threshold=None), "threshold"),
        (lambda: physics.tkd(VOLUME, **GOOD, threshold=0.2, mask=np.ones((6, 6, 5))), "mask"),
        (lambda: physics.tkd(with_nan(np.nan), **GOOD, threshold=0.2), "field"),
        (lambda: physics.qsm_minus(VOLUME, **GOOD, mask=np.ones((5, 6, 6))), "mask"),
        (lambda: physics.qsm_minus(np.zeros((6, 6, 6, 1)), **GOOD, mask=np.ones((6, 6, 6))), "field"),
        (lambda: physics.qsm_minus(with_nan(np.inf), **GOOD, mask=np.ones((6, 6, 6))), "field"),
        (lambda: physics.qsm_minus(VOLUME, **GOOD, mask=with_nan(np.nan)), "mask"),
        (lambda: physics.qsm_minus(VOLUME, **GOOD, mask=np.ones((6, 6, 6)), thresholds=(0.1,)), "thresholds"),
        (lambda: physics.qsm_minus(VOLUME, **GOOD, mask=np.ones((6, 6, 6)), thresholds=(0.1, 0.0)), "thresholds"),
        (lambda: physics.b0_direction_from_affine(np.eye(2)), "affine"),
        (lambda: physics.b0_direction_from_affine(np.diag([1.0, 1.0, 0.0, 1.0])), "affine"),
        (lambda: physics.b0_direction_from_affine(np.full((4, 4), np.nan)), "affine"),
        (lambda: physics.b0_direction_from_affine(np.array([[1, 1, 0], [0, 0, 1], [0, 0, 0.0]])), "affine"),
        (lambda: physics.phase_to_ppm(1.0, te=0.0, b0=3.0), "te"),
        (lambda: physics.ppm_to_phase(1.0, te=-0.02, b0=3.0), "te"),
        (lambda: physics.phase_to_ppm(1.0, te=0.02, b0=-3.0), "b0"),
        (lambda: physics.hz_to_ppm(1.0, b0=0.0), "b0"),
        (lambda: physics.ppm_to_hz(1.0, b0=np.nan), "b0"),
        (lambda: physics.sobel_kernel(3), "axis"),
        (lambda: physics.sobel_gradients(np.zeros((4, 4))), "volume"),
        (lambda: physics.normalized_sobel_magnitude(VOLUME, mask=np.ones((6, 6))), "mask"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()
