"""Benchmark mqsm_nnunet.physics.forward_field and qsm_minus against a straightforward implementation.

The straightforward version (written below) is what one would type first: complex128 numpy FFTs on a
2x zero-padded grid, the dipole kernel rebuilt on every call, one forward FFT per TKD. Both are checked
against the analytic field of a magnetized sphere (relative error at r >= 1.5 a) so that speed is
compared at equal accuracy. Times are the minimum over --repeats runs (the machine may be shared).

    .venv/bin/python benchmarks/bench_physics.py [--shape 256 256 136] [--repeats 3]
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import scipy
from scipy import special

from mqsm_nnunet import physics


# ----------------------------------------------------------------------------------------------------
# the straightforward implementation
# ----------------------------------------------------------------------------------------------------
def naive_kernel(shape, voxel_size, b0_dir) -> np.ndarray:
    k = np.meshgrid(*[np.fft.fftfreq(n, d=d) for n, d in zip(shape, voxel_size)], indexing="ij", sparse=True)
    b = np.asarray(b0_dir, dtype=float) / np.linalg.norm(b0_dir)
    k_squared = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = 1 / 3 - (k[0] * b[0] + k[1] * b[1] + k[2] * b[2]) ** 2 / k_squared
    kernel[0, 0, 0] = 0.0
    return kernel


def naive_filter(volume, voxel_size, b0_dir, make_filter) -> np.ndarray:
    padded_shape = tuple(2 * n for n in volume.shape)
    padded = np.zeros(padded_shape, dtype=np.complex128)
    padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
    kernel = make_filter(naive_kernel(padded_shape, voxel_size, b0_dir))
    result = np.fft.ifftn(kernel * np.fft.fftn(padded)).real
    return result[: volume.shape[0], : volume.shape[1], : volume.shape[2]]


def naive_forward_field(chi, voxel_size, b0_dir) -> np.ndarray:
    return naive_filter(chi, voxel_size, b0_dir, lambda d: d)


def naive_tkd(field, voxel_size, b0_dir, threshold, mask) -> np.ndarray:
    chi = naive_filter(field, voxel_size, b0_dir, lambda d: np.sign(d) / np.maximum(np.abs(d), threshold))
    return chi * mask


def naive_qsm_minus(field, voxel_size, b0_dir, mask, thresholds=(0.1, 0.2)) -> np.ndarray:
    sharp = naive_tkd(field, voxel_size, b0_dir, thresholds[0], mask)
    smooth = naive_tkd(field, voxel_size, b0_dir, thresholds[1], mask)
    weight = physics.normalized_sobel_magnitude(field, mask)
    return (weight * sharp + (1 - weight) * smooth) * mask


# ----------------------------------------------------------------------------------------------------
# analytic sphere
# ----------------------------------------------------------------------------------------------------
def sphere_case(shape, voxel_size, b0_dir, radius_mm):
    """A smooth-edged ball (erfc edge one voxel wide) at the centre, its analytic field, and r >= 1.5 a.

    Outside a spherically symmetric chi the field is that of a uniform sphere of equal moment:
    chi/3 * (a_eq / r)^3 * (3 cos^2 theta - 1). The smooth edge keeps the spectrum off Nyquist, where
    the k-space kernel is discontinuous for oblique B0 (see docs/physics.md).
    """
    center = [(n - 1) / 2 * v for n, v in zip(shape, voxel_size)]
    axes = [np.arange(n) * v - c for n, v, c in zip(shape, voxel_size, center)]
    x = np.meshgrid(*axes, indexing="ij", sparse=True)
    r = np.sqrt(x[0] ** 2 + x[1] ** 2 + x[2] ** 2)
    chi = (0.5 * special.erfc((r - radius_mm) / (math.sqrt(2) * max(voxel_size)))).astype(np.float32)
    a_eq = (3 / (4 * math.pi) * chi.sum(dtype=np.float64) * np.prod(voxel_size)) ** (1 / 3)
    far = r >= 1.5 * radius_mm
    b = np.asarray(b0_dir, dtype=float) / np.linalg.norm(b0_dir)
    r_far = r[far]
    cos_theta = (np.broadcast_to(x[0], r.shape)[far] * b[0] + np.broadcast_to(x[1], r.shape)[far] * b[1]
                 + np.broadcast_to(x[2], r.shape)[far] * b[2]) / r_far
    expected = (a_eq / r_far) ** 3 * (3 * cos_theta ** 2 - 1) / 3
    return chi, far, expected


def relative_error(field, far, expected) -> float:
    return float(np.linalg.norm(field[far] - expected) / np.linalg.norm(expected))


# ----------------------------------------------------------------------------------------------------
def best_time(function, repeats: int, before=None) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        if before is not None:
            before()
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def clear_kernel_caches() -> None:
    physics._cached_half_kernel.cache_clear()
    physics._cached_tkd_filter.cache_clear()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 256, 136), metavar=("NI", "NJ", "NK"))
    parser.add_argument("--voxel-size", type=float, nargs=3, default=(1.0, 1.0, 1.0), metavar=("DI", "DJ", "DK"))
    parser.add_argument("--b0-tilt", type=float, default=15.0, help="B0 tilt from the k axis, degrees (in i-k)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    shape, voxel_size = tuple(args.shape), tuple(args.voxel_size)
    tilt = math.radians(args.b0_tilt)
    b0_dir = (math.sin(tilt), 0.0, math.cos(tilt))

    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "n/a"
    print(f"machine: {platform.platform()} | {platform.processor() or platform.machine()} | "
          f"os.cpu_count()={os.cpu_count()} (usable {affinity}) | python {platform.python_version()} | "
          f"numpy {np.__version__} | scipy {scipy.__version__}")
    print(f"volume {shape}, voxel {voxel_size} mm, b0_dir {tuple(round(v, 4) for v in b0_dir)}, "
          f"pad_factor {physics.DEFAULT_PAD_FACTOR}, padded grid "
          f"{physics.padded_shape(shape, physics.DEFAULT_PAD_FACTOR)} vs naive {tuple(2 * n for n in shape)}; "
          f"min over {args.repeats} repeats\n")

    min_extent = min(n * v for n, v in zip(shape, voxel_size))
    print("accuracy against the analytic sphere (relative RMS error at r >= 1.5 a):")
    for radius in (0.15 * min_extent, 0.3 * min_extent):
        chi, far, expected = sphere_case(shape, voxel_size, b0_dir, radius)
        naive = naive_forward_field(chi, voxel_size, b0_dir)
        ours = physics.forward_field(chi, voxel_size, b0_dir)
        ours64 = physics.forward_field(chi.astype(np.float64), voxel_size, b0_dir)
        print(f"  a = {radius:5.1f} mm: naive {relative_error(naive, far, expected):.5f}  "
              f"forward_field float32 {relative_error(ours, far, expected):.5f}  "
              f"float64 {relative_error(ours64, far, expected):.5f}  "
              f"| max |ours - naive| / max |naive| = {np.abs(ours - naive).max() / np.abs(naive).max():.2e}")
    del naive, ours, ours64

    chi, _, _ = sphere_case(shape, voxel_size, b0_dir, 0.15 * min_extent)
    print("\nforward_field:")
    t_naive, _ = best_time(lambda: naive_forward_field(chi, voxel_size, b0_dir), args.repeats)
    t_cold, _ = best_time(lambda: physics.forward_field(chi, voxel_size, b0_dir), args.repeats,
                          before=clear_kernel_caches)
    t_warm, _ = best_time(lambda: physics.forward_field(chi, voxel_size, b0_dir), args.repeats)
    chi64 = chi.astype(np.float64)
    t_warm64, _ = best_time(lambda: physics.forward_field(chi64, voxel_size, b0_dir), args.repeats)
    print(f"  naive (complex128, 2x pad, kernel each call) {t_naive:7.3f} s")
    print(f"  ours float32, kernel cache cold               {t_cold:7.3f} s   speed-up {t_naive / t_cold:5.1f}x")
    print(f"  ours float32, kernel cached                   {t_warm:7.3f} s   speed-up {t_naive / t_warm:5.1f}x")
    print(f"  ours float64, kernel cached                   {t_warm64:7.3f} s   speed-up {t_naive / t_warm64:5.1f}x")
    del chi64

    field = physics.forward_field(chi, voxel_size, b0_dir)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
    mask = (grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2) <= 0.9
    field *= mask
    print("\nqsm_minus (Eq. 3, thresholds 0.1/0.2):")
    t_naive, naive = best_time(lambda: naive_qsm_minus(field, voxel_size, b0_dir, mask), args.repeats)
    t_cold, _ = best_time(lambda: physics.qsm_minus(field, voxel_size, b0_dir, mask), args.repeats,
                          before=clear_kernel_caches)
    t_warm, ours = best_time(lambda: physics.qsm_minus(field, voxel_size, b0_dir, mask), args.repeats)
    print(f"  naive (two TKDs, complex128, 2x pad)          {t_naive:7.3f} s")
    print(f"  ours float32, filter cache cold               {t_cold:7.3f} s   speed-up {t_naive / t_cold:5.1f}x")
    print(f"  ours float32, filters cached                  {t_warm:7.3f} s   speed-up {t_naive / t_warm:5.1f}x")
    print(f"  max |ours - naive| / max |naive| = {np.abs(ours - naive).max() / np.abs(naive).max():.2e}")


if __name__ == "__main__":
    main()
