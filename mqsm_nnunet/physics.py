"""QSM physics core: dipole kernel, forward field, B0 direction, unit conversions, TKD, QSM- (Eq. 3), Sobel.

Conventions (see docs/physics.md):
- Arrays are 3D in NIfTI voxel order (i, j, k); ``voxel_size`` (mm) and ``b0_dir`` are in the same order.
  ``b0_dir`` is the B0 direction in the voxel frame (the frame of the affine's normalized columns); it is
  normalized internally and its sign does not matter (the kernel depends on (k . b)^2 only).
- The field is the relative field perturbation (B - B0) / B0 in the units of chi (ppm in, ppm out).
- Dipole kernel (paper Eq. 2): ``D(k) = 1/3 - (k . b)^2 / |k|^2`` on ``k_i = m_i / (N_i * voxel_i)``
  (``numpy.fft.fftfreq``), unshifted FFT layout, with ``D(0) = 0``: the mean of a local field is not
  observable after background-field removal, so neither the field nor chi carries a k = 0 component.
- FFT products are circular convolutions: the volume is zero-padded to ``ceil(pad_factor * N_i)`` per
  axis, rounded up to a fast FFT length, before transforming, and cropped back afterwards.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import scipy.fft
from scipy import ndimage

from mqsm_nnunet.io.grid import check_voxel_size

GYROMAGNETIC_RATIO_HZ_PER_T = 42.577478e6
"""gamma / (2 pi) of the proton in Hz/T (CODATA value to 8 significant digits, as the design states)."""

DEFAULT_PAD_FACTOR = 2.0
"""Padded FFT length / volume length per axis. Less padding is faster but lets the periodic images of
large sources leak in (docs/physics.md has the sphere measurements); 2 is the conventional choice."""

__all__ = [
    "GYROMAGNETIC_RATIO_HZ_PER_T",
    "DEFAULT_PAD_FACTOR",
    "dipole_kernel",
    "forward_field",
    "b0_direction_from_affine",
    "phase_to_ppm",
    "ppm_to_phase",
    "hz_to_ppm",
    "ppm_to_hz",
    "tkd",
    "qsm_minus",
    "sobel_kernel",
    "sobel_gradients",
    "normalized_sobel_magnitude",
]


# ----------------------------------------------------------------------------------------------------
# argument checks (user input: ValueError naming the argument, never assert)
# ----------------------------------------------------------------------------------------------------
def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        values = tuple(int(n) for n in shape)
    except TypeError as error:
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}") from error
    if len(values) != 3 or any(n < 1 for n in values) or any(n != s for n, s in zip(values, shape)):
        raise ValueError(f"shape must be 3 positive integers, got {shape!r}")
    return values


def unit_b0_direction(b0_dir: Sequence[float], name: str = "b0_dir") -> tuple[float, float, float]:
    """`b0_dir` as a unit vector, after the one check every reader of a B0 direction applies (flags,
    sidecars, the phantom, the physics, the training frame): 3 finite numbers, not all zero.

    Raises:
        ValueError: naming `name` (a parameter, or a file and its key) and the value given.
    """
    try:
        values = np.asarray(b0_dir, dtype=float)
    except (TypeError, ValueError):
        values = np.empty(0)
    if values.shape != (3,) or not np.all(np.isfinite(values)) or not np.any(values):
        raise ValueError(f"{name} must be 3 numbers in voxel axes (i, j, k), finite, not all zero (the B0 "
                         f"direction); got {b0_dir!r}")
    return tuple(float(v) + 0.0 for v in values / np.linalg.norm(values))


def _check_volume(name: str, volume: np.ndarray) -> np.ndarray:
    """A finite 3D real array; float32 stays float32, anything else becomes float64."""
    array = np.asarray(volume)
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3D array in voxel order (i, j, k); got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
            or array.dtype == bool):
        raise ValueError(f"{name} must be a real numeric array; got dtype {array.dtype}")
    array = array.astype(np.float32 if array.dtype == np.float32 else np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or Inf; replace them (e.g. with 0 outside the brain) first")
    return array


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(mask)
    if array.shape != shape:
        raise ValueError(f"mask shape {array.shape} does not match the volume shape {shape}")
    if array.dtype != bool and not np.all(np.isfinite(array)):
        raise ValueError("mask contains NaN or Inf; use a binary mask (nonzero = inside)")
    return array != 0


def _as_float(name: str, value: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a number; got {value!r}") from error


def _check_positive(name: str, value: float, unit: str) -> float:
    number = _as_float(name, value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a finite positive number in {unit}; got {value!r}")
    return number


def _check_pad_factor(pad_factor: float) -> float:
    number = _as_float("pad_factor", pad_factor)
    if not math.isfinite(number) or number < 1:
        raise ValueError(f"pad_factor must be a finite number >= 1 (1 = fast FFT length only); got {pad_factor!r}")
    return number


def _check_threshold(name: str, threshold: float) -> float:
    number = _as_float(name, threshold)
    if not math.isfinite(number) or not 0 < number <= 1:
        raise ValueError(f"{name} must be a TKD threshold in (0, 1]; got {threshold!r}")
    return number


# ----------------------------------------------------------------------------------------------------
# dipole kernel
# ----------------------------------------------------------------------------------------------------
def _kernel(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
            b0_unit: tuple[float, float, float], rfft: bool) -> np.ndarray:
    """D(k) in float64 from checked arguments (b0_unit already normalized)."""
    freqs = [np.fft.fftfreq(n, d=d) for n, d in zip(shape[:2], voxel_size[:2])]
    freqs.append((np.fft.rfftfreq if rfft else np.fft.fftfreq)(shape[2], d=voxel_size[2]))
    ki, kj, kk = np.meshgrid(*freqs, indexing="ij", sparse=True)
    # Two full-size float64 temporaries at most: large padded grids are hundreds of MB each.
    kernel = (ki * b0_unit[0] + kj * b0_unit[1]) + kk * b0_unit[2]
    kernel *= kernel
    k_squared = (ki * ki + kj * kj) + kk * kk
    k_squared[0, 0, 0] = 1.0  # (k . b)^2 is 0 there too: avoids 0/0, D(0) is set below
    kernel /= k_squared
    del k_squared
    np.subtract(1.0 / 3.0, kernel, out=kernel)
    kernel[0, 0, 0] = 0.0
    return kernel


def dipole_kernel(shape: Sequence[int], voxel_size: Sequence[float], b0_dir: Sequence[float],
                  rfft: bool = False) -> np.ndarray:
    """Unit dipole kernel ``D(k) = 1/3 - (k . b)^2 / |k|^2`` (paper Eq. 2), float64, unshifted FFT layout.

    Args:
        shape: grid size (N_i, N_j, N_k) in voxel order.
        voxel_size: voxel edge lengths in mm, same order; ``k_i = fftfreq(N_i, d=voxel_i)`` (cycles/mm).
        b0_dir: B0 direction in voxel order (normalized here; sign irrelevant).
        rfft: return the half grid matching ``scipy.fft.rfftn`` (last axis ``rfftfreq``, N_k // 2 + 1).

    ``D(0) = 0`` (the k = 0 limit is direction-dependent; the mean local field is not observable).

    Raises:
        ValueError: bad shape, voxel_size or b0_dir.
    """
    return _kernel(_check_shape(shape), check_voxel_size(voxel_size), unit_b0_direction(b0_dir), bool(rfft))


@functools.lru_cache(maxsize=2)
def _cached_half_kernel(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                        b0_unit: tuple[float, float, float], dtype: str) -> np.ndarray:
    """Read-only half-grid D(k) in ``dtype``, reused across calls on the same padded grid."""
    kernel = _kernel(shape, voxel_size, b0_unit, rfft=True).astype(dtype)
    kernel.flags.writeable = False
    return kernel


@functools.lru_cache(maxsize=4)  # the two thresholds of qsm_minus on two grids
def _cached_tkd_filter(shape: tuple[int, int, int], voxel_size: tuple[float, float, float],
                       b0_unit: tuple[float, float, float], threshold: float, dtype: str) -> np.ndarray:
    """Read-only half-grid TKD inverse ``sign(D) / max(|D|, t)`` (sign(0) = 0) in ``dtype``."""
    kernel = _kernel(shape, voxel_size, b0_unit, rfft=True)
    inverse = (np.sign(kernel) / np.maximum(np.abs(kernel), threshold)).astype(dtype)
    inverse.flags.writeable = False
    return inverse


# ----------------------------------------------------------------------------------------------------
# padded real FFT helpers
# ----------------------------------------------------------------------------------------------------
def padded_shape(shape: tuple[int, ...], pad_factor: float = DEFAULT_PAD_FACTOR) -> tuple[int, int, int]:
    """The zero-padded FFT grid used against wrap-around: per axis ceil(pad_factor * N) rounded up to
    a fast FFT length (last axis: real-transform length). Raises ValueError for a bad pad_factor."""
    pad_factor = _check_pad_factor(pad_factor)
    return tuple(
        scipy.fft.next_fast_len(math.ceil(pad_factor * n), real=(axis == 2))
        for axis, n in enumerate(shape)
    )


# Pruned transforms: equal to rfftn(volume, s=padded) / irfftn(...)[:N_i, :N_j, :N_k], but one axis at a
# time so that rows made only of padding zeros are never transformed (forward) and rows that the crop
# discards are never computed (inverse): about 40% fewer operations than the full padded transforms.
def _rfft_padded(volume: np.ndarray, padded: tuple[int, int, int]) -> np.ndarray:
    """Half spectrum (rfftn layout) of the volume zero-padded at the end of each axis to ``padded``."""
    spectrum = scipy.fft.rfft(volume, n=padded[2], axis=2, workers=-1)
    spectrum = scipy.fft.fft(spectrum, n=padded[1], axis=1, workers=-1, overwrite_x=True)
    return scipy.fft.fft(spectrum, n=padded[0], axis=0, workers=-1, overwrite_x=True)


def _irfft_cropped(spectrum: np.ndarray, padded: tuple[int, int, int], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_rfft_padded` cropped to ``shape``; may overwrite ``spectrum``."""
    spectrum = scipy.fft.ifft(spectrum, axis=0, workers=-1, overwrite_x=True)[: shape[0]]
    spectrum = scipy.fft.ifft(spectrum, axis=1, workers=-1, overwrite_x=True)[:, : shape[1]]
    return np.ascontiguousarray(scipy.fft.irfft(spectrum, n=padded[2], axis=2, workers=-1)[..., : shape[2]])


# ----------------------------------------------------------------------------------------------------
# forward model
# ----------------------------------------------------------------------------------------------------
def forward_field(chi: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
                  pad_factor: float = DEFAULT_PAD_FACTOR) -> np.ndarray:
    """Relative field perturbation ``(B - B0) / B0 = IFFT(D * FFT(chi))`` (Lorentz-corrected), units of chi.

    Args:
        chi: 3D susceptibility map (e.g. ppm), voxel order; zero is assumed outside the volume.
        voxel_size: mm, voxel order.
        b0_dir: B0 direction in voxel order.
        pad_factor: each axis is zero-padded to at least ``pad_factor * N`` (then a fast FFT length) so
            the circular convolution's wrap-around is small; 1 only rounds up to a fast length.

    Returns:
        The field, same shape; float32 for float32 chi (float32 transforms), else float64.

    Raises:
        ValueError: bad chi (not 3D, NaN/Inf), voxel_size, b0_dir or pad_factor.
    """
    chi = _check_volume("chi", chi)
    voxel = check_voxel_size(voxel_size)
    b0_unit = unit_b0_direction(b0_dir)
    padded = padded_shape(chi.shape, pad_factor)
    spectrum = _rfft_padded(chi, padded)
    spectrum *= _cached_half_kernel(padded, voxel, b0_unit, chi.dtype.name)
    return _irfft_cropped(spectrum, padded, chi.shape)


def b0_direction_from_affine(affine: np.ndarray) -> np.ndarray:
    """B0 unit vector in voxel coordinates from a NIfTI affine (4x4, or its 3x3 part).

    Scanners put B0 along world z. With ``R`` the affine's 3x3 with each column divided by its norm
    (the voxel size), world = R @ voxel-frame, so B0 in the voxel frame is ``v = R^-1 z`` (solved, so
    sheared affines work), normalized. The sign is physically irrelevant; the component of largest
    magnitude is made positive (first such axis on ties) so the result is deterministic.

    Raises:
        ValueError: wrong shape, NaN/Inf, a zero column or a singular 3x3 part.
    """
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape not in ((4, 4), (3, 3)):
        raise ValueError(f"affine must be a 4x4 (or 3x3) matrix; got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("affine contains NaN or Inf")
    rotation = matrix[:3, :3]
    norms = np.linalg.norm(rotation, axis=0)
    if np.any(norms == 0):
        raise ValueError(f"affine has a zero-length voxel axis (column norms {norms}); fix the image header")
    rotation = rotation / norms
    try:
        direction = np.linalg.solve(rotation, np.array([0.0, 0.0, 1.0]))
    except np.linalg.LinAlgError as error:
        raise ValueError("affine's 3x3 part is singular; fix the image header or pass b0_dir explicitly") from error
    direction /= np.linalg.norm(direction)
    if direction[np.argmax(np.abs(direction))] < 0:
        direction = -direction
    return direction + 0.0  # turn -0.0 into 0.0


# ----------------------------------------------------------------------------------------------------
# unit conversions (elementwise; NaN propagates, only te and b0 are checked)
# ----------------------------------------------------------------------------------------------------
def phase_to_ppm(phase: np.ndarray | float, te: float, b0: float) -> np.ndarray | float:
    """Local phase (rad) at echo time ``te`` (s) and field ``b0`` (T) to ppm: phase / (2 pi gamma B0 TE) * 1e6."""
    scale = 2 * math.pi * GYROMAGNETIC_RATIO_HZ_PER_T * _check_positive("b0", b0, "tesla") \
        * _check_positive("te", te, "seconds")
    return np.asarray(phase) * (1e6 / scale)


def ppm_to_phase(ppm: np.ndarray | float, te: float, b0: float) -> np.ndarray | float:
    """ppm to phase (rad) at echo time ``te`` (s) and field ``b0`` (T); inverse of :func:`phase_to_ppm`."""
    scale = 2 * math.pi * GYROMAGNETIC_RATIO_HZ_PER_T * _check_positive("b0", b0, "tesla") \
        * _check_positive("te", te, "seconds")
    return np.asarray(ppm) * (1e-6 * scale)


def hz_to_ppm(hz: np.ndarray | float, b0: float) -> np.ndarray | float:
    """Frequency offset (Hz) at field ``b0`` (T) to ppm: f / (42.577478 * B0)."""
    scale = GYROMAGNETIC_RATIO_HZ_PER_T * 1e-6 * _check_positive("b0", b0, "tesla")
    return np.asarray(hz) * (1.0 / scale)


def ppm_to_hz(ppm: np.ndarray | float, b0: float) -> np.ndarray | float:
    """ppm at field ``b0`` (T) to frequency offset (Hz); 1 ppm at 3 T is 127.732434 Hz."""
    scale = GYROMAGNETIC_RATIO_HZ_PER_T * 1e-6 * _check_positive("b0", b0, "tesla")
    return np.asarray(ppm) * scale


# ----------------------------------------------------------------------------------------------------
# TKD and QSM- (paper Eq. 3)
# ----------------------------------------------------------------------------------------------------
def tkd(field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float], threshold: float,
        mask: np.ndarray | None = None, pad_factor: float = DEFAULT_PAD_FACTOR) -> np.ndarray:
    """Truncated k-space division: ``chi = IFFT(sign(D) / max(|D|, t) * FFT(field))``, sign(0) = 0.

    Args:
        field: 3D relative field (e.g. ppm), voxel order, zero outside the brain (after background removal).
        voxel_size: mm, voxel order.
        b0_dir: B0 direction in voxel order.
        threshold: t in (0, 1]; |D| below t is clamped to t (the paper uses 0.1 and 0.2).
        mask: optional brain mask, same shape (nonzero = inside); the result is multiplied by it.
        pad_factor: zero padding as in :func:`forward_field` (the inverse kernel is non-local too).

    Returns:
        chi in the field's units (k = 0 is zeroed, so chi has zero mean over the padded grid); float32
        for float32 field, else float64.

    Raises:
        ValueError: bad field, mask shape, voxel_size, b0_dir, threshold or pad_factor.
    """
    return _tkd_many(field, voxel_size, b0_dir, (_check_threshold("threshold", threshold),), mask, pad_factor)[0]


def _tkd_many(field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
              thresholds: tuple[float, ...], mask: np.ndarray | None, pad_factor: float) -> list[np.ndarray]:
    """TKD at several thresholds sharing one forward FFT of the field; each result masked if a mask is given."""
    field = _check_volume("field", field)
    voxel = check_voxel_size(voxel_size)
    b0_unit = unit_b0_direction(b0_dir)
    inside = None if mask is None else _check_mask(mask, field.shape)
    padded = padded_shape(field.shape, pad_factor)
    spectrum = _rfft_padded(field, padded)
    results = []
    for threshold in thresholds:
        chi = _irfft_cropped(spectrum * _cached_tkd_filter(padded, voxel, b0_unit, threshold, field.dtype.name),
                             padded, field.shape)
        if inside is not None:
            chi *= inside
        results.append(chi)
    return results


def qsm_minus(field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float], mask: np.ndarray,
              thresholds: tuple[float, float] = (0.1, 0.2), pad_factor: float = DEFAULT_PAD_FACTOR) -> np.ndarray:
    """Initial QSM of paper Eq. 3: ``QSM- = S * TKD_t1 + (1 - S) * TKD_t2``, masked, on the whole volume.

    ``S = normalized_sobel_magnitude(field, mask)``: the Sobel gradient magnitude of the field divided
    by its maximum inside the mask (clipped to [0, 1]), so edges take the sharper, streakier TKD_t1 and
    flat regions the smoother TKD_t2. The dipole field is non-local: call this on whole volumes, not patches.

    Args:
        field: 3D relative field (e.g. ppm), voxel order, zero outside the brain.
        voxel_size: mm, voxel order.
        b0_dir: B0 direction in voxel order.
        mask: brain mask, same shape (nonzero = inside).
        thresholds: (t1, t2), each in (0, 1]; the paper's (0.1, 0.2).
        pad_factor: zero padding as in :func:`forward_field`.

    Returns:
        QSM- in the field's units, zero outside the mask; float32 for float32 field, else float64.

    Raises:
        ValueError: bad field, mask, voxel_size, b0_dir, thresholds or pad_factor.
    """
    if len(thresholds) != 2:
        raise ValueError(f"thresholds must be two TKD thresholds (t1 at edges, t2 elsewhere); got {thresholds!r}")
    checked = tuple(_check_threshold(f"thresholds[{i}]", t) for i, t in enumerate(thresholds))
    sharp, smooth = _tkd_many(field, voxel_size, b0_dir, checked, mask, pad_factor)
    weight = normalized_sobel_magnitude(field, mask).astype(sharp.dtype, copy=False)
    # S * a + (1 - S) * b written as b + S * (a - b): one temporary less on large volumes.
    sharp -= smooth
    sharp *= weight
    sharp += smooth
    return sharp


# ----------------------------------------------------------------------------------------------------
# Sobel
# ----------------------------------------------------------------------------------------------------
def sobel_kernel(axis: int) -> np.ndarray:
    """3x3x3 Sobel kernel for ``axis`` (0, 1 or 2), to be used by **correlation**.

    The derivative ``[-1, 0, 1]`` runs along ``axis`` and the smoothing ``[1, 2, 1]`` along the other two,
    so ``correlate(volume, sobel_kernel(a))[x] = sum_offsets kernel[o] * volume[x + o]`` is a forward-positive
    derivative (a ramp of slope s per voxel gives 32 s). ``torch.nn.functional.conv3d`` also correlates,
    so it takes this kernel as is; ``scipy.ndimage.convolve`` would need it flipped (sign change).
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2; got {axis!r}")
    profiles = [np.array([1.0, 2.0, 1.0])] * 3
    profiles[axis] = np.array([-1.0, 0.0, 1.0])
    return np.einsum("i,j,k->ijk", *profiles)


def sobel_gradients(volume: np.ndarray) -> np.ndarray:
    """Sobel derivatives along the three voxel axes, shape (3, *volume.shape).

    Equal to correlating with :func:`sobel_kernel` (axis 0, 1, 2) with edge-replicate boundaries
    (scipy mode 'nearest'; torch: ``F.pad(x, (1,) * 6, mode='replicate')`` then ``conv3d``). Per-voxel
    units: no division by the voxel size. float32 stays float32, other input becomes float64.

    Raises:
        ValueError: volume not 3D or containing NaN/Inf.
    """
    volume = _check_volume("volume", volume)
    gradients = np.empty((3, *volume.shape), dtype=volume.dtype)
    for axis in range(3):
        ndimage.sobel(volume, axis=axis, output=gradients[axis], mode="nearest")
    return gradients


def normalized_sobel_magnitude(volume: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Sobel gradient magnitude divided by its maximum inside ``mask`` (whole volume if None), in [0, 1].

    Values outside the mask that exceed the in-mask maximum are clipped to 1; an all-flat volume gives 0.

    Raises:
        ValueError: volume not 3D or not finite, or mask shape mismatch.
    """
    gradients = sobel_gradients(volume)
    magnitude = np.sqrt(np.einsum("a...,a...->...", gradients, gradients))
    inside = None if mask is None else _check_mask(mask, magnitude.shape)
    reference = float(magnitude.max(initial=0.0) if inside is None else magnitude.max(where=inside, initial=0.0))
    if reference == 0.0:
        return np.zeros_like(magnitude)
    magnitude /= reference
    return np.minimum(magnitude, 1.0, out=magnitude)
