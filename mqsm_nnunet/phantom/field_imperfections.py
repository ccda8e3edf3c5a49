"""What a real local field map carries besides the dipole field of the brain's own susceptibility.

The phantom's field is otherwise exactly dipolar plus white noise, which flatters any method that
trusts data consistency: on a real field, background-field removal (V-SHARP, PDF, LBV) leaves a
smooth residual of the sources outside the brain, and near the brain's edge (eroded or unreliable
phase, air-tissue interfaces, flow) the phase is not the dipole field of anything inside. A QSM
method has to survive both, so the phantom can add them (`mqsm_phantom --background-residual
--edge-phase`), each sized as a root mean square over the brain relative to the clean field's
standard deviation there:

- **residual background field**: a random harmonic polynomial of degree <= 2 over the brain (the
  field of sources outside it is harmonic inside: x, y, z, xy, yz, zx, x^2 - y^2, 2z^2 - x^2 - y^2),
  a smooth offset no dipole inside the mask can explain exactly;
- **non-dipolar edge phase**: a smooth random field (correlation `EDGE_CORRELATION_MM`) weighted by
  exp(-depth / `EDGE_DEPTH_MM`), depth being the distance from the mask's boundary, so it lives in
  the outer millimetres of the brain.

Both are assumptions with orders of magnitude, not measurements: residuals of a few to 20 % of the
local field and edge errors concentrated within about a centimetre of the boundary are what the
background-removal literature reports; the defaults are 0 (off).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mqsm_nnunet.phantom.random_fields import SmoothField

EDGE_DEPTH_MM = 4.0
EDGE_CORRELATION_MM = 12.0
HARMONIC_SCALE_MM = 80.0       # coordinates are divided by this, so the terms have comparable sizes


@dataclass(frozen=True)
class FieldImperfections:
    """Root mean squares over the brain of the residual background field and of the edge phase, as
    fractions of the clean (dipolar) field's standard deviation there; 0 leaves it out."""

    background: float = 0.0
    edge: float = 0.0

    def __post_init__(self):
        for name, value in (("background", self.background), ("edge", self.edge)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"field imperfection `{name}` must be a finite fraction >= 0, got {value!r}")

    @property
    def any(self) -> bool:
        return self.background > 0 or self.edge > 0


def _harmonic_terms(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> list[np.ndarray]:
    """The harmonic polynomials of degree 1 and 2 (each has zero Laplacian)."""
    return [x, y, z, x * y, y * z, z * x, x * x - y * y, 2 * z * z - x * x - y * y]


def _scaled(values: np.ndarray, mask: np.ndarray, sd: float) -> np.ndarray:
    """`values` shifted to mean 0 and scaled to standard deviation `sd` over the mask; 0 outside."""
    inside = values[mask]
    spread = float(inside.std())
    if spread == 0 or sd == 0:
        return np.zeros(mask.shape, np.float32)
    return np.where(mask, (values - inside.mean()) * (sd / spread), 0.0).astype(np.float32)


def imperfection_field(mask: np.ndarray, affine: np.ndarray, field_sd: float, imperfections: FieldImperfections,
                       rng: np.random.Generator) -> np.ndarray:
    """The field (ppm, float32, 0 outside `mask`) to add to a clean local field whose standard deviation
    over the brain is `field_sd`, on the grid of `affine` (NIfTI, mm)."""
    mask = np.asarray(mask, bool)
    total = np.zeros(mask.shape, np.float32)
    if not imperfections.any or not mask.any():
        return total
    world = np.einsum("ij,j...->i...", affine[:3, :3], np.indices(mask.shape, dtype=np.float32)) \
        + affine[:3, 3].reshape(3, 1, 1, 1)
    centre = np.array([w[mask].mean() for w in world])
    coefficients = rng.standard_normal(8)
    edge_noise = SmoothField.draw(rng, world.reshape(3, -1).min(1), world.reshape(3, -1).max(1), EDGE_CORRELATION_MM)
    if imperfections.background > 0:
        x, y, z = ((w - c) / HARMONIC_SCALE_MM for w, c in zip(world, centre))
        residual = sum(c * term for c, term in zip(coefficients, _harmonic_terms(x, y, z)))
        total += _scaled(residual, mask, imperfections.background * field_sd)
    if imperfections.edge > 0:
        depth = ndimage.distance_transform_edt(mask, sampling=np.linalg.norm(affine[:3, :3], axis=0))
        edge = np.exp(-depth / EDGE_DEPTH_MM) * edge_noise.sample(*world)
        total += np.where(mask, edge * (imperfections.edge * field_sd / float(np.sqrt(np.mean(edge[mask] ** 2)))),
                          0.0).astype(np.float32)
    return total
