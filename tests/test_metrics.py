"""Metrics against hand-computed values, invariants and an independent brute-force surface distance."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mqsm_nnunet import metrics


@pytest.fixture(scope="module")
def maps():
    """A smooth-ish reference map (ppm) with a mask that stays away from the array border."""
    rng = np.random.default_rng(0)
    shape = (20, 22, 18)
    ref = 0.05 * rng.standard_normal(shape) + 0.02
    mask = np.zeros(shape, dtype=bool)
    mask[3:17, 4:18, 3:15] = True
    return ref, mask


# ---------------------------------------------------------------------------------- QSM metrics


def test_identical_maps_score_perfectly(maps):
    ref, mask = maps
    values = metrics.qsm_metrics(ref, ref, mask, include_2019=True)
    assert values["nrmse"] == 0.0
    assert values["hfen"] == 0.0
    assert values["nrmse_demeaned"] == 0.0
    assert values["psnr"] == math.inf
    assert values["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert values["xsim"] == pytest.approx(1.0, abs=1e-12)


def test_scaled_prediction_has_ten_percent_errors(maps):
    ref, mask = maps
    pred = 1.1 * ref
    assert metrics.nrmse(pred, ref, mask) == pytest.approx(10.0, rel=1e-12)
    # LoG filtering and demeaning are linear: the ratio stays exactly 10 %.
    assert metrics.hfen(pred, ref, mask) == pytest.approx(10.0, rel=1e-12)
    assert metrics.nrmse_demeaned(pred, ref, mask) == pytest.approx(10.0, rel=1e-12)
    r = ref[mask]
    peak = r.max() - r.min()
    expected_psnr = 10 * math.log10(peak**2 / (0.01 * np.mean(r**2)))
    assert metrics.psnr(pred, ref, mask) == pytest.approx(expected_psnr, rel=1e-12)
    assert metrics.ssim(pred, ref, mask) < 1.0


def test_qsm_ci_scorer_invariants_and_agreement_with_our_demeaned_nrmse(maps):
    """QSM-CI's scorer: 0 / 1 for identical maps; its demeaned NRMSE is ours; its detrended NRMSE
    forgives a scale and an offset (a linear fit to the truth) that the demeaned one counts."""
    ref, mask = maps
    same = metrics.qsm_ci_metrics(ref, ref, mask)
    assert same["qsmci_nrmse"] == pytest.approx(0.0, abs=1e-10) and same["qsmci_xsim"] == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    noisy = ref + 0.02 * rng.standard_normal(ref.shape)
    values = metrics.qsm_ci_metrics(noisy, ref, mask)
    assert values["qsmci_nrmse"] == pytest.approx(metrics.nrmse_demeaned(noisy, ref, mask), rel=1e-9)
    scaled = metrics.qsm_ci_metrics(0.5 * ref + 0.1, ref, mask)
    assert scaled["qsmci_nrmse"] == pytest.approx(50.0, rel=1e-9)
    assert scaled["qsmci_nrmse_detrend"] == pytest.approx(0.0, abs=1e-9)
    assert 0 < values["qsmci_hfen"] and values["qsmci_xsim"] < 1


def test_offset_counts_in_nrmse_but_not_in_demeaned_nrmse(maps):
    ref, mask = maps
    pred = ref + 0.3
    r = ref[mask]
    assert metrics.nrmse(pred, ref, mask) == pytest.approx(100 * 0.3 * math.sqrt(r.size) / np.linalg.norm(r), rel=1e-12)
    assert metrics.nrmse_demeaned(pred, ref, mask) == pytest.approx(0.0, abs=1e-10)
    # A constant error e gives PSNR = 20 log10(range / e).
    assert metrics.psnr(pred, ref, mask) == pytest.approx(20 * math.log10((r.max() - r.min()) / 0.3), rel=1e-10)


def test_values_outside_the_mask_are_ignored(maps):
    ref, mask = maps
    pred = 0.9 * ref
    noisy_outside = np.where(mask, pred, np.nan)
    assert metrics.qsm_metrics(noisy_outside, ref, mask, True) == metrics.qsm_metrics(pred, ref, mask, True)


def test_no_mask_means_reference_nonzero(maps):
    ref, mask = maps
    masked_ref = np.where(mask, ref, 0.0)
    pred = 0.8 * ref + 0.01
    assert metrics.qsm_metrics(pred, masked_ref, None) == metrics.qsm_metrics(pred, masked_ref, mask)


def test_ssim_of_single_voxel_maps_matches_the_formula():
    """Pins the rescaling (joint min/max incl. the zero background, to [0, 255]), the Gaussian
    window (sigma 1.5, 7^3, normalised), the constants and the zero padding."""
    shape = (9, 9, 9)
    mask = np.zeros(shape, dtype=bool)
    mask[4, 4, 4] = True
    pred = np.where(mask, 2.0, 0.0)
    ref = np.where(mask, 1.0, 0.0)
    # Rescaled: lo = 0, hi = 2 -> the voxel is 255 in pred and 127.5 in ref, zero elsewhere.
    a, b = 255.0, 127.5
    taps = np.exp(-np.arange(-3, 4) ** 2 / (2 * 1.5**2))
    w0 = 1.0 / taps.sum() ** 3  # weight of the centre voxel in the normalised 3D window
    mu_a, mu_b = w0 * a, w0 * b
    var_a, var_b = w0 * a * a - mu_a**2, w0 * b * b - mu_b**2
    cov = w0 * a * b - mu_a * mu_b
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert metrics.ssim(pred, ref, mask) == pytest.approx(expected, rel=1e-12)
    # XSIM: same window in native ppm, L = 1, K = (0.01, 0.001).
    a, b = 2.0, 1.0
    mu_a, mu_b = w0 * a, w0 * b
    var_a, var_b = w0 * a * a - mu_a**2, w0 * b * b - mu_b**2
    cov = w0 * a * b - mu_a * mu_b
    c1, c2 = 0.01**2, 0.001**2
    expected = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    assert metrics.xsim(pred, ref, mask) == pytest.approx(expected, rel=1e-12)


def test_ssim_is_symmetric_rescaling_invariant_and_falls_with_noise(maps):
    ref, _ = maps
    full = np.ones(ref.shape, dtype=bool)  # no zero background: the rescaling sees only the maps
    rng = np.random.default_rng(1)
    pred = ref + 0.02 * rng.standard_normal(ref.shape)
    value = metrics.ssim(pred, ref, full)
    assert metrics.ssim(ref, pred, full) == pytest.approx(value, rel=1e-12)
    # min/max rescaling removes any common positive affine change of units...
    assert metrics.ssim(3 * pred - 0.4, 3 * ref - 0.4, full) == pytest.approx(value, rel=1e-9)
    # ...which XSIM (native ppm) deliberately does not.
    assert metrics.xsim(3 * pred - 0.4, 3 * ref - 0.4, full) != pytest.approx(metrics.xsim(pred, ref, full), rel=1e-3)
    noisier = ref + 0.05 * rng.standard_normal(ref.shape)
    assert -1.0 < metrics.ssim(noisier, ref, full) < value < 1.0


def test_psnr_equals_scikit_image_with_the_reference_range_as_peak(maps):
    ref, mask = maps
    pred = ref + 0.01 * np.random.default_rng(2).standard_normal(ref.shape)
    expected = peak_signal_noise_ratio(ref[mask], pred[mask], data_range=float(ref[mask].max() - ref[mask].min()))
    assert metrics.psnr(pred, ref, mask) == pytest.approx(expected, rel=1e-12)


def test_ssim_map_equals_scikit_image_where_both_windows_see_the_same_values():
    """Piecewise-constant maps: away from the value edges and the border, every Gaussian window
    (ours 7^3, scikit-image's 11^3) sees constant values, so the SSIM maps must agree exactly
    there: a check of the constants (L, K1, K2) and of the population variances."""
    shape = (30, 30, 30)
    ref = np.full(shape, 0.05)
    ref[15:] = 0.15
    pred = np.where(ref > 0.1, 0.12, 0.07)
    interior = np.zeros(shape, dtype=bool)
    interior[6:9, 6:24, 6:24] = True
    interior[21:24, 6:24, 6:24] = True
    _, reference_map = structural_similarity(pred, ref, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, K1=0.01, K2=0.001, full=True)
    ours = metrics._mean_ssim(pred, ref, interior, metrics.XSIM_RANGE, metrics.XSIM_K)  # the map behind xsim
    assert ours == pytest.approx(float(reference_map[interior].mean()), rel=1e-9)


def test_log_kernel_is_the_15_cube_zero_sum_laplacian_of_gaussian():
    kernel = metrics.log_kernel()
    assert kernel.shape == (15, 15, 15)
    assert kernel.sum() == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(kernel, kernel[::-1]) and np.allclose(kernel, kernel.transpose(1, 2, 0))
    assert kernel.argmin() == np.ravel_multi_index((7, 7, 7), kernel.shape)
    # Radial profile: g(r) (r^2 - 3 sigma^2) changes sign at r = sqrt(3) * 1.5 = 2.6 voxels.
    assert kernel[7, 7, 9] < kernel[7, 7, 7 + 3] and kernel[7, 7, 7 + 3] > kernel[0, 0, 0]


@pytest.mark.parametrize(
    "call",
    [
        lambda r, m: metrics.nrmse(r[:-1], r, m),
        lambda r, m: metrics.ssim(r, r, m[:, :-1]),
        lambda r, m: metrics.hfen(r, r, np.zeros_like(m)),
        lambda r, m: metrics.psnr(np.where(m, np.nan, r), r, m),
        lambda r, m: metrics.nrmse(r, np.zeros_like(r), m),
        lambda r, m: metrics.psnr(r, np.ones_like(r), m),
        lambda r, m: metrics.qsm_metrics(r[0], r[0], m[0]),
    ],
    ids=["shape", "mask-shape", "empty-mask", "nan-in-mask", "zero-reference", "constant-reference", "2d"],
)
def test_qsm_metric_errors(maps, call):
    ref, mask = maps
    with pytest.raises(ValueError):
        call(ref, mask)


# ------------------------------------------------------------------------- segmentation metrics


def _cubes():
    pred = np.zeros((16, 14, 12), dtype=np.int16)
    ref = np.zeros_like(pred)
    pred[2:8, 2:8, 2:8] = 1
    ref[4:10, 2:8, 2:8] = 1
    return pred, ref


def test_dice_recall_precision_of_shifted_cubes():
    pred, ref = _cubes()
    pred[12:14, 0:2, 0:3] = 2  # 12 voxels of label 2 only in the prediction
    result = metrics.segmentation_metrics(pred, ref, [1, 2, 3], (1.0, 1.0, 1.0))
    # 6^3 = 216 voxels each, overlap 4 x 6 x 6 = 144.
    assert result[1]["dice"] == pytest.approx(2 * 144 / 432)
    assert result[1]["recall"] == pytest.approx(144 / 216)
    assert result[1]["precision"] == pytest.approx(144 / 216)
    # Label only in the prediction: Dice 0, precision 0, recall and distances undefined.
    assert result[2]["dice"] == 0.0 and result[2]["precision"] == 0.0
    assert math.isnan(result[2]["recall"]) and math.isnan(result[2]["hd95"]) and math.isnan(result[2]["asd"])
    # Label in neither map: everything NaN.
    assert all(math.isnan(v) for v in result[3].values())


def test_label_missing_from_prediction():
    pred, ref = _cubes()
    result = metrics.segmentation_metrics(np.zeros_like(pred), ref, [1], (1.0, 1.0, 1.0))[1]
    assert result["dice"] == 0.0 and result["recall"] == 0.0
    assert math.isnan(result["precision"]) and math.isnan(result["hd95"]) and math.isnan(result["asd"])


def test_identical_segmentations_are_perfect():
    _, ref = _cubes()
    result = metrics.segmentation_metrics(ref, ref, [1], (0.7, 1.0, 2.5))[1]
    assert result == {"dice": 1.0, "recall": 1.0, "precision": 1.0, "hd95": 0.0, "asd": 0.0}


def test_distances_of_parallel_plates_use_the_voxel_size():
    """One-voxel-thick plates: every voxel is surface and every distance is the plate gap."""
    spacing = (2.0, 1.0, 0.5)
    pred = np.zeros((10, 6, 12), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2, :, 1:7] = 1
    ref[5, :, 1:7] = 1  # 3 voxels apart along axis 0: 6 mm
    result = metrics.segmentation_metrics(pred, ref, [1], spacing)[1]
    assert result["hd95"] == pytest.approx(6.0) and result["asd"] == pytest.approx(6.0)
    pred[:] = 0
    ref[:] = 0
    pred[1:9, 1:5, 1] = 1
    ref[1:9, 1:5, 9] = 1  # 8 voxels apart along axis 2: 4 mm
    result = metrics.segmentation_metrics(pred, ref, [1], spacing)[1]
    assert result["hd95"] == pytest.approx(4.0) and result["asd"] == pytest.approx(4.0)


def test_hd95_and_asd_of_a_line_against_a_voxel():
    """Line of 5 voxels along axis 1 (1.5 mm apart) vs its first voxel.

    Directed distances line -> voxel: 0, 1.5, 3, 4.5, 6 mm; voxel -> line: 0.
    HD95 = max(P95 of [0, 1.5, 3, 4.5, 6] (linear: 4.5 + 0.8 * 1.5 = 5.7), 0) = 5.7 mm.
    ASD = (0 + 1.5 + 3 + 4.5 + 6 + 0) / (5 + 1) = 2.5 mm.
    """
    pred = np.zeros((5, 9, 5), dtype=np.uint8)
    ref = np.zeros_like(pred)
    pred[2, 2:7, 2] = 4
    ref[2, 2, 2] = 4
    result = metrics.segmentation_metrics(pred, ref, [4], (0.8, 1.5, 1.2))[4]
    assert result["hd95"] == pytest.approx(5.7)
    assert result["asd"] == pytest.approx(2.5)


def test_concentric_spheres_are_their_radius_difference_apart():
    """Spheres in mm (ellipsoids in voxels: spacing 1 x 1 x 2 mm) of radius 6 and 10 mm.

    Surface voxels sit within one voxel of the true sphere, so the distances are 4 mm up to the
    discretisation (at most a voxel's largest edge, 2 mm; the mean is much closer)."""
    spacing = np.array([1.0, 1.0, 2.0])
    shape = (31, 31, 17)
    centre = (np.array(shape) - 1) / 2
    coords = (np.indices(shape).T - centre).T * spacing[:, None, None, None]
    radius = np.sqrt((coords**2).sum(axis=0))
    inner = (radius <= 6.0).astype(np.uint8)
    outer = (radius <= 10.0).astype(np.uint8)
    result = metrics.segmentation_metrics(inner, outer, [1], tuple(spacing))[1]
    assert result["hd95"] == pytest.approx(4.0, abs=2.0)
    assert result["asd"] == pytest.approx(4.0, abs=0.75)
    assert result["recall"] == pytest.approx(inner.sum() / outer.sum()) and result["precision"] == 1.0


def _brute_force_surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with at least one of their 6 face neighbours outside (or off the array)."""
    padded = np.pad(mask, 1)
    inner = np.ones_like(mask)
    for axis in range(3):
        for step in (-1, 1):
            inner &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
    return mask & ~inner


def test_distances_match_a_brute_force_computation():
    rng = np.random.default_rng(3)
    spacing = np.array([0.9, 1.3, 2.1])
    shape = (14, 12, 10)
    pred = np.zeros(shape, dtype=np.int32)
    ref = np.zeros(shape, dtype=np.int32)
    # Random blobs, one touching the array border (cropping must not invent a surface there).
    pred[0:6, 2:9, 1:7] = 5
    ref[1:8, 3:10, 0:6] = 5
    pred[rng.random(shape) < 0.05] = 0
    ref[rng.random(shape) < 0.05] = 5
    result = metrics.segmentation_metrics(pred, ref, [5], tuple(spacing))[5]
    sp = np.argwhere(_brute_force_surface(pred == 5)) * spacing
    sr = np.argwhere(_brute_force_surface(ref == 5)) * spacing
    distances = cdist(sp, sr)
    d_pr, d_rp = distances.min(axis=1), distances.min(axis=0)
    assert result["hd95"] == pytest.approx(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)), rel=1e-12)
    assert result["asd"] == pytest.approx((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size), rel=1e-12)


@pytest.mark.parametrize(
    "voxel_size",
    [(0.0, 1.0, 1.0), (-1.0, 1.0, 1.0), (1.0, 1.0), (1.0, math.nan, 1.0)],
    ids=["zero", "negative", "two", "nan"],
)
def test_non_positive_voxel_size_is_an_error(voxel_size):
    pred, ref = _cubes()
    with pytest.raises(ValueError, match="voxel_size"):
        metrics.segmentation_metrics(pred, ref, [1], voxel_size)


def test_segmentation_shape_and_label_errors():
    pred, ref = _cubes()
    with pytest.raises(ValueError, match="shape"):
        metrics.segmentation_metrics(pred[:-1], ref, [1], (1, 1, 1))
    with pytest.raises(ValueError, match="labels"):
        metrics.segmentation_metrics(pred, ref, [], (1, 1, 1))
    with pytest.raises(ValueError, match="labels"):
        metrics.segmentation_metrics(pred, ref, [1.5], (1, 1, 1))
