"""Classical dipole inversions to compare mQSM with, run on the same local field maps.

Every baseline has the signature ``f(field, voxel_size, b0_dir, mask, **params) -> chi`` with the
field and chi in ppm, arrays in NIfTI voxel order (i, j, k), ``voxel_size`` in mm and ``b0_dir`` the
B0 direction in voxel coordinates. Each one multiplies the field by the mask first (values outside
the brain are not data), inverts on a zero-padded grid (``pad_factor``, as `physics.tkd`; FFT
products are circular) and returns chi multiplied by the mask.

| name | method | default parameters |
| --- | --- | --- |
| ``tkd`` | truncated k-space division, `physics.tkd` | t = 0.2 |
| ``tikhonov`` | closed-form L2: ``chi = IFFT(D F / (D^2 + lambda))`` | lambda = 0.01 |
| ``tv_admm`` | TV-regularised inversion, ADMM (linear FANSI split) | alpha = 3e-4, rho = 3e-2, <= 100 iterations |
| ``qsm_minus`` | paper Eq. 3, `physics.qsm_minus` | t = (0.1, 0.2) |

TV-ADMM runs on the mask's bounding box (see its docstring). Parameter choices and measurements:
docs/baselines.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import scipy.fft

from mqsm_nnunet import physics

TKD_THRESHOLD = 0.2
TIKHONOV_LAMBDA = 1e-2
TV_ALPHA = 3e-4
TV_RHO_PER_ALPHA = 100.0
TV_ITERATIONS = 100
TV_TOLERANCE = 1e-3


def _prepare(field: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The field as float64 with zeros outside the mask, and the boolean mask."""
    field = np.asarray(field, dtype=np.float64)
    mask = np.asarray(mask)
    if field.ndim != 3:
        raise ValueError(f"field must be a 3D array in voxel order (i, j, k); got shape {field.shape}")
    if mask.shape != field.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the field shape {field.shape}")
    inside = mask != 0
    if not inside.any():
        raise ValueError("mask is empty: the inversion needs the brain mask of the field map")
    if not np.isfinite(field[inside]).all():
        raise ValueError("field contains NaN or Inf inside the mask")
    return np.where(inside, field, 0.0), inside


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number; got {value!r}")
    return value


def tkd(
    field: np.ndarray,
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    mask: np.ndarray,
    threshold: float = TKD_THRESHOLD,
    pad_factor: float = physics.DEFAULT_PAD_FACTOR,
) -> np.ndarray:
    """Truncated k-space division at ``threshold`` (default 0.2), `physics.tkd` on the masked field."""
    field, inside = _prepare(field, mask)
    return physics.tkd(field, voxel_size, b0_dir, threshold, mask=inside, pad_factor=pad_factor)


def qsm_minus(
    field: np.ndarray,
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    mask: np.ndarray,
    thresholds: tuple[float, float] = (0.1, 0.2),
    pad_factor: float = physics.DEFAULT_PAD_FACTOR,
) -> np.ndarray:
    """The network's input map (paper Eq. 3), `physics.qsm_minus` on the masked field."""
    field, inside = _prepare(field, mask)
    return physics.qsm_minus(field, voxel_size, b0_dir, inside, thresholds=thresholds, pad_factor=pad_factor)


def tikhonov(
    field: np.ndarray,
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    mask: np.ndarray,
    lam: float = TIKHONOV_LAMBDA,
    pad_factor: float = physics.DEFAULT_PAD_FACTOR,
) -> np.ndarray:
    """Closed-form Tikhonov (L2, identity regulariser): ``chi = IFFT(D F / (D^2 + lam))``.

    The minimiser of ``||D chi - f||^2 + lam ||chi||^2`` (D real). The gain ``D / (D^2 + lam)`` peaks
    at ``1 / (2 sqrt(lam))`` where ``|D| = sqrt(lam)``: lam = 0.01 caps it at 5, as TKD with t = 0.2
    does, but goes smoothly to 0 on the magic-angle cone instead of staying at 5.
    """
    lam = _check_positive("lam", lam)
    field, inside = _prepare(field, mask)
    padded = physics.padded_shape(field.shape, pad_factor)
    kernel = physics.dipole_kernel(padded, voxel_size, b0_dir, rfft=True)
    spectrum = scipy.fft.rfftn(field, s=padded, workers=-1)
    spectrum *= kernel / (kernel * kernel + lam)
    chi = scipy.fft.irfftn(spectrum, s=padded, workers=-1)[tuple(slice(0, n) for n in field.shape)]
    return np.where(inside, chi, 0.0)


def _axis_slices(axis: int, piece: slice) -> tuple[slice, ...]:
    """`piece` along `axis`, everything along the other two."""
    return tuple(piece if a == axis else slice(None) for a in range(3))


def _forward_differences(volume: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Periodic forward differences ``v[n + e_a] - v[n]`` along the 3 axes into `out` (3, *volume.shape).

    Slices instead of ``np.roll``: no temporary copies of the (padded, large) volume.
    """
    for axis in range(3):
        body, last = slice(None, -1), slice(-1, None)
        np.subtract(volume[_axis_slices(axis, slice(1, None))], volume[_axis_slices(axis, body)],
                    out=out[axis][_axis_slices(axis, body)])
        np.subtract(volume[_axis_slices(axis, slice(0, 1))], volume[_axis_slices(axis, last)],
                    out=out[axis][_axis_slices(axis, last)])
    return out


def _adjoint_differences(gradients: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Adjoint of `_forward_differences` into `out`: ``sum_a g_a[n - e_a] - g_a[n]`` (minus the divergence)."""
    np.negative(gradients[0], out=out)
    out -= gradients[1]
    out -= gradients[2]
    for axis in range(3):
        out[_axis_slices(axis, slice(1, None))] += gradients[axis][_axis_slices(axis, slice(None, -1))]
        out[_axis_slices(axis, slice(0, 1))] += gradients[axis][_axis_slices(axis, slice(-1, None))]
    return out


def _mask_box(inside: np.ndarray) -> tuple[slice, slice, slice]:
    """The bounding box of the mask's voxels."""
    corners = np.argwhere(inside)
    return tuple(slice(int(lo), int(hi) + 1) for lo, hi in zip(corners.min(axis=0), corners.max(axis=0)))


def tv_admm(
    field: np.ndarray,
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    mask: np.ndarray,
    alpha: float = TV_ALPHA,
    rho: float | None = None,
    iterations: int = TV_ITERATIONS,
    tolerance: float = TV_TOLERANCE,
    pad_factor: float = physics.DEFAULT_PAD_FACTOR,
) -> np.ndarray:
    """Total-variation regularised dipole inversion by ADMM (the linear FANSI split).

    Solves ``min_chi 1/2 ||D chi - f||^2 + alpha ||G chi||_1`` with G the periodic forward
    differences per voxel (no division by the voxel size; anisotropic L1 over the 3 components),
    on the padded grid, with the split ``z = G chi`` and scaled dual ``u``:

    - chi-step, exact in k-space: ``(D^2 + rho |E|^2) X = D F + rho FFT(G^T (z - u))`` with
      ``|E|^2 = sum_a (2 - 2 cos(2 pi m_a / N_a))`` (k = 0, where both sides vanish, gives X = 0);
    - z-step: soft-thresholding of ``G chi + u`` at ``alpha / rho``;
    - ``u += G chi - z``.

    ``rho`` defaults to ``TV_RHO_PER_ALPHA * alpha`` (a fixed soft-threshold alpha / rho, so that
    the convergence per iteration does not depend on alpha). Stops after `iterations` or when
    ``||chi_new - chi|| / ||chi_new|| < tolerance``. The data term
    covers the whole padded grid (the field is zero outside the mask), not only the mask.

    The padded grid is that of the mask's bounding box (times `pad_factor`), not of the whole field
    of view: every source lies in the mask, so padding relative to the brain is what keeps the
    circular convolution from wrapping around, and a 1 mm in-vivo volume then costs about a third
    of the voxels. The iterations run in float32 without temporary volumes (docs/baselines.md has
    the speed and the difference to the float64 full-field-of-view version: about 1e-3 ppm at most).
    """
    alpha = _check_positive("alpha", alpha)
    rho = _check_positive("rho", TV_RHO_PER_ALPHA * alpha if rho is None else rho)
    if int(iterations) != iterations or iterations < 1:
        raise ValueError(f"iterations must be a positive integer; got {iterations!r}")
    field, inside = _prepare(field, mask)
    box = _mask_box(inside)
    cropped = field[box].astype(np.float32)
    padded = physics.padded_shape(cropped.shape, pad_factor)
    kernel = physics.dipole_kernel(padded, voxel_size, b0_dir, rfft=True)
    # |E_a|^2 of the forward difference on the padded grid, laid out like the rfft half grid.
    angles = [2 * np.pi * np.fft.fftfreq(n) for n in padded[:2]] + [2 * np.pi * np.fft.rfftfreq(padded[2])]
    grids = np.meshgrid(*angles, indexing="ij", sparse=True)
    laplacian = sum(2.0 - 2.0 * np.cos(angle) for angle in grids)
    denominator = kernel * kernel + rho * laplacian
    denominator[0, 0, 0] = 1.0
    # X = data_term + rho_over_denominator * FFT(G^T (z - u)), both factors computed once.
    data_term = (kernel / denominator * scipy.fft.rfftn(cropped, s=padded, workers=-1)).astype(np.complex64)
    rho_over_denominator = (rho / denominator).astype(np.float32)
    del kernel, laplacian, denominator

    chi = np.zeros(padded, dtype=np.float32)
    z = np.zeros((3, *padded), dtype=np.float32)
    u = np.zeros((3, *padded), dtype=np.float32)
    work = np.empty((3, *padded), dtype=np.float32)    # z - u, then G chi
    scratch = np.empty(padded, dtype=np.float32)       # G^T (z - u), then chi_new - chi
    threshold = np.float32(alpha / rho)
    for _ in range(int(iterations)):
        np.subtract(z, u, out=work)
        spectrum = scipy.fft.rfftn(_adjoint_differences(work, scratch), workers=-1, overwrite_x=True)
        spectrum *= rho_over_denominator
        spectrum += data_term
        chi_new = scipy.fft.irfftn(spectrum, s=padded, workers=-1, overwrite_x=True)
        u += _forward_differences(chi_new, work)
        np.clip(u, -threshold, threshold, out=z)
        np.subtract(u, z, out=z)                        # soft-thresholding of G chi + u
        u -= z
        np.subtract(chi_new, chi, out=scratch)
        change = np.linalg.norm(scratch.ravel()) / max(float(np.linalg.norm(chi_new.ravel())), np.finfo(float).tiny)
        chi = chi_new
        if change < tolerance:
            break
    result = np.zeros(field.shape)
    result[box] = chi[tuple(slice(0, n) for n in cropped.shape)]
    return np.where(inside, result, 0.0)


Baseline = Callable[..., np.ndarray]
BASELINES: dict[str, Baseline] = {
    "tkd": tkd,
    "tikhonov": tikhonov,
    "tv_admm": tv_admm,
    "qsm_minus": qsm_minus,
}
"""Name -> inversion ``f(field, voxel_size, b0_dir, mask) -> chi`` with its documented defaults."""


def run_baselines(
    field: np.ndarray,
    voxel_size: Sequence[float],
    b0_dir: Sequence[float],
    mask: np.ndarray,
    names: Sequence[str] | None = None,
    parameters: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, np.ndarray]:
    """Run the named baselines (all of `BASELINES` by default), each with `parameters[name]` (keyword
    arguments; e.g. `parameter_rules.tuned_parameters`) or else its documented defaults.

    Returns ``{name: chi}`` in ppm, float64, zero outside the mask.

    Raises:
        ValueError: an unknown name, or bad inputs (see each baseline).
    """
    names = list(BASELINES) if names is None else list(names)
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    parameters = parameters or {}
    return {name: np.asarray(BASELINES[name](field, voxel_size, b0_dir, mask, **parameters.get(name, {})),
                             dtype=np.float64) for name in names}
