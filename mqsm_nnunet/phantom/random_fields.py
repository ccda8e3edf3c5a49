"""Smooth random fields defined in millimetres, so a subject looks the same on any voxel grid.

A field is drawn as independent N(0, 1) values on a coarse lattice (node spacing = correlation
length), upsampled once with cubic splines to a finer lattice and sampled at arbitrary points by
trilinear interpolation. The lattice lives in a fixed box in mm, independent of the image grid, so
the random draws (and therefore the anatomy) do not depend on the matrix or the voxel size; outside
the box the field keeps its edge value.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class SmoothField:
    """A smooth, zero-mean, unit-variance random field on a box in mm (see the module docstring)."""

    values: np.ndarray
    origin: tuple[float, float, float]
    spacing: float

    @classmethod
    def draw(cls, rng: np.random.Generator, low: Sequence[float], high: Sequence[float],
             correlation_mm: float, upsample: int = 4) -> SmoothField:
        """Draw a field covering [low, high] (mm, 3 axes) with node spacing `correlation_mm`."""
        nodes = [math.ceil((h - lo) / correlation_mm) + 1 for lo, h in zip(low, high)]
        coarse = rng.standard_normal(nodes)
        fine_shape = [(n - 1) * upsample + 1 for n in nodes]
        fine = ndimage.zoom(coarse, [f / n for f, n in zip(fine_shape, nodes)], order=3, mode="nearest")
        fine = (fine - fine.mean()) / fine.std()
        return cls(fine.astype(np.float32), tuple(float(v) for v in low), correlation_mm / upsample)

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Field values (float32) at points given by equally shaped coordinate arrays in mm."""
        index = [(np.asarray(c, dtype=np.float32) - o) / self.spacing for c, o in zip((x, y, z), self.origin)]
        return ndimage.map_coordinates(self.values, index, order=1, mode="nearest", output=np.float32)


def clipped_normal(rng: np.random.Generator, sd: float, limit: float, n: int) -> np.ndarray:
    """n draws of N(0, sd) clipped to [-limit, limit]: random pose and contrast parameters kept plausible."""
    return np.clip(rng.normal(0.0, sd, n), -limit, limit)
