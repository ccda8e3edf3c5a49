"""Image-quality metrics for QSM maps and overlap/surface metrics for region segmentations.

QSM metrics follow the **2016 QSM reconstruction challenge** (Langkammer et al., MRM 2018;
doi:10.1002/mrm.26830), the definitions behind the paper's Table 1, all evaluated inside a mask:

- ``nrmse``: ``100 * ||x - r|| / ||r||`` over the mask voxels (percent).
- ``hfen``: the same ratio on Laplacian-of-Gaussian filtered maps (15^3 kernel, sigma 1.5 voxels,
  built by `log_kernel`), percent.
- ``ssim``: 3D SSIM on maps rescaled to [0, 255] (see `ssim` for the exact rescaling, window and
  constants), averaged over the mask.
- ``psnr``: no challenge defines it; ours is ``20 log10(peak / RMSE)`` with the reference's range
  inside the mask as the peak (dB).

The 2019 challenge / QSM-CI variants are separate functions: ``nrmse_demeaned`` (means inside the
mask removed first) and ``xsim`` (SSIM in native ppm, L = 1, K = (0.01, 0.001); Milovic et al.,
MRM 2024, doi:10.1002/mrm.30271).

Segmentation metrics (per label; paper Table 3): Dice, recall, precision, HD95 and ASD in mm from
surfaces (``mask & ~erosion(mask)``, 6-connected) and Euclidean distance transforms with the voxel
size as sampling. See docs/metrics.md for every convention (empty labels, percentiles).

Arrays are 3D in NIfTI voxel order (i, j, k); QSM maps in ppm; ``voxel_size`` in mm, same order.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage, signal

from mqsm_nnunet.io.grid import check_voxel_size

# 2016 challenge HFEN filter (Langkammer et al. 2018, after Ravishankar & Bresler 2011).
HFEN_KERNEL_SIZE = 15
HFEN_SIGMA = 1.5
# SSIM window: Gaussian, sigma 1.5 voxels, truncated to a 7^3 cube (radius 3), normalised to sum 1.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 3
# 2016 challenge SSIM: maps rescaled to [0, 255], Wang et al. (2004) constants.
SSIM_2016_RANGE = 255.0
SSIM_2016_K = (0.01, 0.03)
# XSIM (2019 challenge / QSM-CI): native ppm, L = 1 ppm, K2 lowered to catch streaking.
XSIM_RANGE = 1.0
XSIM_K = (0.01, 0.001)


# ----------------------------------------------------------------------------------------------
# input checks shared by the QSM metrics


def _check_qsm_inputs(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None):
    """Float64 copies of pred/ref with zeros outside the mask, and the boolean mask.

    A mask of None means the reference's nonzero voxels. Non-finite values inside the mask are
    an error (they would silently poison every norm).
    """
    pred = np.asarray(pred, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if pred.ndim != 3 or ref.ndim != 3:
        raise ValueError(f"pred and ref must be 3D arrays; got shapes {pred.shape} and {ref.shape}")
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref differ in shape: {pred.shape} vs {ref.shape}")
    if mask is None:
        mask = ref != 0
    else:
        mask = np.asarray(mask)
        if mask.shape != ref.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the maps' shape {ref.shape}")
        mask = mask != 0
    if not mask.any():
        raise ValueError("mask is empty: no voxel to evaluate (pass the brain mask, or a nonzero reference)")
    for name, array in (("pred", pred), ("ref", ref)):
        if not np.isfinite(array[mask]).all():
            raise ValueError(f"{name} has NaN or infinite values inside the mask")
    return np.where(mask, pred, 0.0), np.where(mask, ref, 0.0), mask


def _relative_error_percent(x: np.ndarray, r: np.ndarray, what: str) -> float:
    """``100 * ||x - r|| / ||r||`` for two 1D vectors of mask voxels."""
    norm_ref = float(np.linalg.norm(r))
    if norm_ref == 0.0:
        raise ValueError(f"the reference {what} is zero everywhere in the mask; the relative error is undefined")
    return 100.0 * float(np.linalg.norm(x - r)) / norm_ref


# ----------------------------------------------------------------------------------------------
# QSM metrics


def _nrmse(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    return _relative_error_percent(x[m], r[m], "map")


def nrmse(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Normalised RMSE in percent (2016 challenge): ``100 * ||pred - ref|| / ||ref||`` in the mask.

    Args:
        pred, ref: 3D maps (ppm), voxel order (i, j, k).
        mask: evaluation region (nonzero = inside); None uses the reference's nonzero voxels.

    Raises:
        ValueError: shapes differ, the mask is empty, non-finite values in the mask, or the
            reference is zero in the mask.
    """
    return _nrmse(*_check_qsm_inputs(pred, ref, mask))


def _nrmse_demeaned(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    xm, rm = x[m], r[m]
    return _relative_error_percent(xm - xm.mean(), rm - rm.mean(), "map (demeaned)")


def nrmse_demeaned(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Demeaned NRMSE in percent (2019 challenge / QSM-CI style).

    Each map's mean inside the mask is subtracted first, so a constant offset (the unknown
    susceptibility reference) is not counted as error. No detrending. Errors as `nrmse`.
    """
    return _nrmse_demeaned(*_check_qsm_inputs(pred, ref, mask))


def log_kernel(size: int = HFEN_KERNEL_SIZE, sigma: float = HFEN_SIGMA) -> np.ndarray:
    """3D Laplacian-of-Gaussian kernel of shape (size,)*3, the 3D analogue of MATLAB's
    ``fspecial('log', size, sigma)``.

    ``g = exp(-r^2 / 2 sigma^2) / sum``, ``h = g * (r^2 - 3 sigma^2) / sigma^4``, then the mean is
    subtracted so the kernel sums to zero (a constant map gives no high-frequency response).
    Distances in voxels.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    offsets = np.arange(size, dtype=np.float64) - size // 2
    x, y, z = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    r2 = x * x + y * y + z * z
    gauss = np.exp(-r2 / (2.0 * sigma * sigma))
    gauss /= gauss.sum()
    kernel = gauss * (r2 - 3.0 * sigma * sigma) / sigma**4
    return kernel - kernel.mean()


def _hfen(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    kernel = log_kernel()
    log_x = signal.fftconvolve(x, kernel, mode="same")
    log_r = signal.fftconvolve(r, kernel, mode="same")
    return _relative_error_percent(log_x[m], log_r[m], "LoG-filtered map")


def hfen(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """High-frequency error norm in percent (2016 challenge).

    Both masked maps (zero outside the mask) are convolved with `log_kernel` (15^3, sigma 1.5
    voxels; zero padding at the volume border, FFT convolution), then
    ``100 * ||LoG(pred) - LoG(ref)|| / ||LoG(ref)||`` over the mask voxels. Errors as `nrmse`.
    """
    return _hfen(*_check_qsm_inputs(pred, ref, mask))


def _mean_ssim(x: np.ndarray, y: np.ndarray, mask: np.ndarray, data_range: float, k: tuple[float, float]) -> float:
    """Mean over `mask` of the SSIM map (Wang et al. 2004) with a Gaussian window.

    Window: Gaussian, sigma `SSIM_SIGMA`, radius `SSIM_RADIUS` (7^3 voxels), normalised; zero
    padding at the volume border (MATLAB ``convn(..., 'same')``); population (not sample)
    variances; ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``.
    """

    def window(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, sigma=SSIM_SIGMA, radius=SSIM_RADIUS, mode="constant", cval=0.0)

    c1 = (k[0] * data_range) ** 2
    c2 = (k[1] * data_range) ** 2
    mu_x, mu_y = window(x), window(y)
    var_x = window(x * x) - mu_x * mu_x
    var_y = window(y * y) - mu_y * mu_y
    cov = window(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2))
    return float(ssim_map[mask].mean())


def _ssim(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    lo = min(x.min(), r.min())
    hi = max(x.max(), r.max())
    scale = SSIM_2016_RANGE / (hi - lo) if hi > lo else 0.0
    return _mean_ssim((x - lo) * scale, (r - lo) * scale, m, SSIM_2016_RANGE, SSIM_2016_K)


def ssim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """3D SSIM as in the 2016 challenge: masked maps rescaled to [0, 255] before SSIM.

    Rescaling: both maps are set to zero outside the mask, then mapped with one common linear
    map ``255 * (v - lo) / (hi - lo)`` where ``lo``/``hi`` are the minimum/maximum over *both*
    masked volumes (the zero background included). SSIM then uses ``L = 255``,
    ``K = (0.01, 0.03)``, a Gaussian window of sigma 1.5 voxels on a 7^3 support, and is averaged
    over the mask voxels. 1 for identical maps. Errors as `nrmse` (a zero reference is allowed).
    """
    return _ssim(*_check_qsm_inputs(pred, ref, mask))


def _xsim(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    return _mean_ssim(x, r, m, XSIM_RANGE, XSIM_K)


def xsim(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """XSIM (2019 challenge / QSM-CI; Milovic et al. 2024): SSIM on the masked maps in native
    ppm, no rescaling, ``L = 1`` ppm, ``K = (0.01, 0.001)``, same window as `ssim`, mean over mask.
    """
    return _xsim(*_check_qsm_inputs(pred, ref, mask))


def _psnr(x: np.ndarray, r: np.ndarray, m: np.ndarray) -> float:
    peak = float(r[m].max() - r[m].min())
    if peak == 0.0:
        raise ValueError("the reference is constant inside the mask; PSNR (peak = reference range) is undefined")
    mse = float(np.mean((x[m] - r[m]) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


def psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB inside the mask: ``20 log10(peak / RMSE)``.

    No QSM challenge defines PSNR; the peak used here is the reference's range inside the mask,
    ``max(ref[mask]) - min(ref[mask])`` (the ``data_range`` convention of scikit-image), and
    RMSE is over the mask voxels. ``inf`` for identical maps.

    Raises:
        ValueError: as `nrmse`, or the reference is constant inside the mask (no peak).
    """
    return _psnr(*_check_qsm_inputs(pred, ref, mask))


_TABLE_1 = {"ssim": _ssim, "psnr": _psnr, "nrmse": _nrmse, "hfen": _hfen}
_CHALLENGE_2019 = {"xsim": _xsim, "nrmse_demeaned": _nrmse_demeaned}


QSM_CI_METRICS = {"nrmse": "qsmci_nrmse", "nrmse_detrend": "qsmci_nrmse_detrend", "hfen": "qsmci_hfen",
                  "xsim": "qsmci_xsim"}
"""The QSM-CI scorer's keys -> ours (prefixed: its HFEN and XSIM windows differ from the 2016 ones above)."""


def qsm_ci_metrics(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """QSM-CI's headline metrics, computed by its own scorer (`qsm_ci.qsm_eval.score_arrays`, the
    function its leaderboard publishes with), so our numbers can stand beside its board:
    ``qsmci_nrmse`` (demeaned, %), ``qsmci_nrmse_detrend`` (after a linear fit to the truth, %),
    ``qsmci_hfen`` (%) and ``qsmci_xsim``. Inputs checked as for the other metrics.
    """
    from qsm_ci.qsm_eval import score_arrays

    pred, ref, inside = _check_qsm_inputs(pred, ref, mask)
    scores, _ = score_arrays(pred, ref, inside.astype(np.uint8), kind="chi")
    return {ours: float(scores[theirs]) for theirs, ours in QSM_CI_METRICS.items()}


def qsm_metrics(
    pred: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, include_2019: bool = False
) -> dict[str, float]:
    """All Table 1 metrics of one map: ``{"ssim", "psnr" (dB), "nrmse" (%), "hfen" (%)}``.

    With ``include_2019`` also ``"xsim"`` and ``"nrmse_demeaned"`` (%). Inputs are checked and
    masked once. Definitions: module docstring and docs/metrics.md; errors as the single metrics.
    """
    prepared = _check_qsm_inputs(pred, ref, mask)
    chosen = {**_TABLE_1, **_CHALLENGE_2019} if include_2019 else _TABLE_1
    return {name: function(*prepared) for name, function in chosen.items()}


# ----------------------------------------------------------------------------------------------
# segmentation metrics

SEGMENTATION_METRICS = ("dice", "recall", "precision", "hd95", "asd")


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def overlap_metrics(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice, recall (sensitivity) and precision of two binary masks.

    ``dice = 2 |P & R| / (|P| + |R|)``, ``recall = |P & R| / |R|``, ``precision = |P & R| / |P|``.
    A ratio with a zero denominator is NaN: a label absent from both masks gets NaN for all
    three (nothing to score; nnU-Net's convention for Dice), a label missing from the prediction
    gets Dice 0, recall 0, precision NaN, and a label only in the prediction gets Dice 0,
    recall NaN, precision 0.
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref differ in shape: {pred.shape} vs {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    n_pred = int(np.count_nonzero(pred))
    n_ref = int(np.count_nonzero(ref))
    return {
        "dice": _ratio(2 * tp, n_pred + n_ref),
        "recall": _ratio(tp, n_ref),
        "precision": _ratio(tp, n_pred),
    }


def surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a binary mask: ``mask & ~erosion(mask)`` with the 6-connected (face)
    structuring element; voxels on the array border count as boundary (outside is background)."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(3, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(pred: np.ndarray, ref: np.ndarray, voxel_size: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Distances in mm from each surface voxel of `pred` to the nearest surface voxel of `ref`,
    and from each surface voxel of `ref` to the nearest of `pred` (voxel centres, Euclidean,
    anisotropic voxels via ``distance_transform_edt(sampling=voxel_size)``).

    Both masks must be non-empty.
    """
    sampling = check_voxel_size(voxel_size)
    surf_pred, surf_ref = surface(pred), surface(ref)
    if not surf_pred.any() or not surf_ref.any():
        raise ValueError("surface distances need two non-empty masks")
    to_ref = ndimage.distance_transform_edt(~surf_ref, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling)
    return to_ref[surf_pred], to_pred[surf_ref]


def distance_metrics(pred: np.ndarray, ref: np.ndarray, voxel_size: Sequence[float]) -> dict[str, float]:
    """HD95 and ASD in mm of two binary masks; both NaN when either mask is empty.

    ``hd95 = max(P95(d(P->R)), P95(d(R->P)))`` (the 95th percentile of each directed set of
    surface distances, linear interpolation, then the larger; as MedPy/MONAI).
    ``asd`` = average symmetric surface distance: the mean of all distances of both directions
    pooled, ``(sum d(P->R) + sum d(R->P)) / (|S_P| + |S_R|)`` (Heimann et al., IEEE TMI 2009).
    """
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"pred and ref differ in shape: {pred.shape} vs {ref.shape}")
    check_voxel_size(voxel_size)
    if not pred.any() or not ref.any():
        return {"hd95": math.nan, "asd": math.nan}
    d_pred_ref, d_ref_pred = surface_distances(pred, ref, voxel_size)
    return {
        "hd95": float(max(np.percentile(d_pred_ref, 95), np.percentile(d_ref_pred, 95))),
        "asd": float((d_pred_ref.sum() + d_ref_pred.sum()) / (d_pred_ref.size + d_ref_pred.size)),
    }


def _union_box(
    first: tuple[slice, ...] | None, second: tuple[slice, ...] | None, shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """Bounding box covering both boxes, grown by one voxel (clipped to the array) so that
    erosion inside the crop sees the same background as in the full array."""
    boxes = [b for b in (first, second) if b is not None]
    return tuple(
        slice(max(min(b[axis].start for b in boxes) - 1, 0), min(max(b[axis].stop for b in boxes) + 1, shape[axis]))
        for axis in range(len(shape))
    )


def segmentation_metrics(
    pred: np.ndarray, ref: np.ndarray, labels: Iterable[int], voxel_size: Sequence[float]
) -> dict[int, dict[str, float]]:
    """Per-label ``{"dice", "recall", "precision", "hd95" (mm), "asd" (mm)}`` of two label maps.

    Args:
        pred, ref: integer label maps of the same 3D shape, voxel order (i, j, k).
        labels: label values to score (typically all but background 0).
        voxel_size: voxel edge lengths in mm, (i, j, k) order.

    Empty-label conventions: `overlap_metrics` (0/0 is NaN) and `distance_metrics` (NaN when
    either side is empty). Each label is scored on the bounding box of its voxels in both maps.

    Raises:
        ValueError: shapes differ, no labels given, a label is not an integer, or voxel_size is
            not 3 positive numbers.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.ndim != 3 or pred.shape != ref.shape:
        raise ValueError(f"pred and ref must be 3D label maps of one shape; got {pred.shape} and {ref.shape}")
    check_voxel_size(voxel_size)
    labels = list(labels)
    if not labels:
        raise ValueError("labels is empty: give the label values to score")
    for label in labels:
        if isinstance(label, bool) or int(label) != label or label < 0:
            raise ValueError(f"labels must be non-negative integers, got {label!r}")
    labels = [int(label) for label in labels]
    pred = pred.astype(np.int64, copy=False)
    ref = ref.astype(np.int64, copy=False)
    # find_objects needs positive labels; background (0) gets the whole array as its box.
    top = max(labels)
    boxes_pred = ndimage.find_objects(np.clip(pred, 0, None), max_label=top) if top > 0 else []
    boxes_ref = ndimage.find_objects(np.clip(ref, 0, None), max_label=top) if top > 0 else []
    whole = tuple(slice(0, n) for n in pred.shape)
    results: dict[int, dict[str, float]] = {}
    for label in labels:
        if label == 0:
            box = whole
        else:
            bp, br = boxes_pred[label - 1], boxes_ref[label - 1]
            box = whole if bp is None and br is None else _union_box(bp, br, pred.shape)
        p = pred[box] == label
        r = ref[box] == label
        results[label] = {**overlap_metrics(p, r), **distance_metrics(p, r, voxel_size)}
    return results
