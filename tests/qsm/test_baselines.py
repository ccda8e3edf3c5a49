"""Classical dipole inversions on a noiseless and a noisy ellipsoid phantom (forward model from physics).

Inversions cannot recover the mean susceptibility (D(0) = 0), so accuracy is compared with the
Pearson correlation and the demeaned NRMSE (2019 challenge) inside the mask.
"""
from __future__ import annotations

import numpy as np
import pytest

from mqsm_nnunet import metrics, physics
from mqsm_nnunet.qsm import baselines
from helpers import QSM_B0_DIR as B0_DIR, QSM_SHAPE as SHAPE, QSM_VOXEL_SIZE as VOXEL_SIZE, ellipsoid_qsm_phantom

NOISE_RELATIVE = 0.5  # noise std / field std in the mask, for the noisy comparison


@pytest.fixture(scope="module")
def phantom():
    return ellipsoid_qsm_phantom()


@pytest.fixture(scope="module")
def noiseless(phantom):
    chi, mask, field = phantom
    return baselines.run_baselines(field, VOXEL_SIZE, B0_DIR, mask)


def _pearson(x, y, mask):
    return np.corrcoef(x[mask], y[mask])[0, 1]


@pytest.mark.parametrize("name,bound", [("tkd", 0.9), ("tikhonov", 0.9), ("tv_admm", 0.99), ("qsm_minus", 0.9)])
def test_every_baseline_correlates_with_the_truth(phantom, noiseless, name, bound):
    chi, mask, _ = phantom
    result = noiseless[name]
    assert result.shape == SHAPE and result.dtype == np.float64
    assert np.all(result[~mask] == 0)
    assert _pearson(result, chi, mask) > bound


def test_regularised_inversions_beat_tkd_on_a_noisy_field(phantom):
    chi, mask, field = phantom
    rng = np.random.default_rng(0)
    noisy = field + NOISE_RELATIVE * field[mask].std() * rng.standard_normal(SHAPE)
    results = baselines.run_baselines(noisy, VOXEL_SIZE, B0_DIR, mask, ["tkd", "tikhonov", "tv_admm"])
    errors = {name: metrics.nrmse_demeaned(result, chi, mask) for name, result in results.items()}
    assert errors["tikhonov"] < errors["tkd"]
    assert errors["tv_admm"] < errors["tkd"]


@pytest.mark.parametrize(
    "shape,pad_factor,grid",
    [((15, 27, 25), 1.0, (15, 27, 25)), ((17, 30, 17), 1.5, (27, 45, 27))],
    ids=["unpadded", "padded"],
)
def test_tikhonov_is_its_closed_form(shape, pad_factor, grid):
    """Against the full complex FFT written out on the zero-padded grid.

    `grid` is physics.padded_shape (ceil(pad_factor * N) rounded up to a fast FFT length); grid sizes chosen odd
    because on an even axis the Nyquist frequency is its own negative and, with an oblique B0,
    D(k) != D(-k) there, so 'real part of a full FFT' and an rfft route are two conventions on
    those planes. Everywhere else both must agree to rounding.
    """
    assert physics.padded_shape(shape, pad_factor) == grid
    rng = np.random.default_rng(2)
    field = rng.standard_normal(shape)
    mask = np.zeros(shape, dtype=bool)
    mask[2:-2, 3:-3, 2:-2] = True
    lam = 0.02
    padded = np.zeros(grid)
    padded[: shape[0], : shape[1], : shape[2]] = field * mask
    kernel = physics.dipole_kernel(grid, VOXEL_SIZE, B0_DIR)
    full = np.real(np.fft.ifftn(kernel * np.fft.fftn(padded) / (kernel**2 + lam)))
    expected = full[: shape[0], : shape[1], : shape[2]] * mask
    result = baselines.tikhonov(field, VOXEL_SIZE, B0_DIR, mask, lam=lam, pad_factor=pad_factor)
    assert np.allclose(result, expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_tkd_and_qsm_minus_are_the_physics_functions_on_the_masked_field(phantom, noiseless):
    _, mask, field = phantom
    assert np.array_equal(noiseless["tkd"], physics.tkd(field * mask, VOXEL_SIZE, B0_DIR, 0.2, mask=mask))
    assert np.array_equal(noiseless["qsm_minus"], physics.qsm_minus(field * mask, VOXEL_SIZE, B0_DIR, mask))


def test_tv_admm_reduces_its_objective_below_the_other_inversions(phantom):
    """ADMM minimises 1/2 ||D chi - f||^2 + alpha ||G chi||_1; evaluated on the unpadded grid
    (32 x 32 x 24 are fast FFT lengths) with a full mask so no output is cut."""
    _, mask, field = phantom
    f = field * mask
    kernel = physics.dipole_kernel(SHAPE, VOXEL_SIZE, B0_DIR)

    def objective(chi):
        residual = np.real(np.fft.ifftn(kernel * np.fft.fftn(chi))) - f
        tv = sum(np.abs(np.roll(chi, -1, axis=a) - chi).sum() for a in range(3))
        return 0.5 * np.sum(residual**2) + baselines.TV_ALPHA * tv

    everywhere = np.ones(SHAPE, dtype=bool)
    values = {
        name: objective(baselines.BASELINES[name](f, VOXEL_SIZE, B0_DIR, everywhere, pad_factor=1.0))
        for name in ("tkd", "tikhonov", "tv_admm")
    }
    assert values["tv_admm"] < min(values["tkd"], values["tikhonov"])


def test_bad_arguments_are_value_errors(phantom):
    _, mask, field = phantom
    with pytest.raises(ValueError, match="unknown baseline"):
        baselines.run_baselines(field, VOXEL_SIZE, B0_DIR, mask, ["ilsqr"])
    with pytest.raises(ValueError, match="lam"):
        baselines.tikhonov(field, VOXEL_SIZE, B0_DIR, mask, lam=0.0)
    with pytest.raises(ValueError, match="pad_factor"):
        baselines.tikhonov(field, VOXEL_SIZE, B0_DIR, mask, pad_factor=0.5)
    with pytest.raises(ValueError, match="iterations"):
        baselines.tv_admm(field, VOXEL_SIZE, B0_DIR, mask, iterations=0)
    with pytest.raises(ValueError, match="mask"):
        baselines.tv_admm(field, VOXEL_SIZE, B0_DIR, np.zeros(SHAPE))
    with pytest.raises(ValueError, match="mask shape"):
        baselines.tkd(field, VOXEL_SIZE, B0_DIR, mask[:-1])
