"""The iron nuclei aseg lacks, added where they lie: substantia nigra and red nucleus inside the
ventral diencephalon (aseg's VentralDC), dentate nucleus inside the cerebellar white matter.

Each nucleus is an ellipsoid (an oblique plate for the substantia nigra) placed from landmarks of the
host region in world mm, so it follows each brain's own anatomy, and cut to its host. Placement and
sizes follow MNI152-space anatomy (Keuken et al. 2014 and the AAL3 / CIT168 atlases put the red nucleus
at about (+-5, -19, -8) mm, the substantia nigra lateral, anterior and ventral to it at about
(+-11, -16, -12), the dentate at about (+-14, -57, -35)); volumes near published 3 T / 7 T values
(red nucleus ~0.2 cm^3, substantia nigra ~0.3-0.5 cm^3, dentate ~0.6-1 cm^3 per side). The rules
below are ours and are assumptions: docs/phantom.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mqsm_nnunet.phantom.freesurfer import DENTATE, RED_NUCLEUS, SUBSTANTIA_NIGRA

VENTRAL_DC = {"L": 28, "R": 60}
CEREBELLAR_WM = {"L": 7, "R": 46}
BRAINSTEM = 16


@dataclass(frozen=True)
class Ellipsoid:
    """Semi-axes (mm) along world x (left-right), y (posterior-anterior), z (inferior-superior),
    turned by `yaw_deg` about z (positive: the anterior end of the y semi-axis turns lateral)."""

    radii: tuple[float, float, float]
    yaw_deg: float = 0.0

    def inside(self, offset: np.ndarray, lateral_sign: float) -> np.ndarray:
        """Which of the points (n x 3, mm from the centre) lie inside; `lateral_sign` +1 for the right."""
        yaw = np.deg2rad(self.yaw_deg) * lateral_sign
        c, s = np.cos(yaw), np.sin(yaw)
        u = c * offset[:, 0] - s * offset[:, 1]
        v = s * offset[:, 0] + c * offset[:, 1]
        return (u / self.radii[0]) ** 2 + (v / self.radii[1]) ** 2 + (offset[:, 2] / self.radii[2]) ** 2 <= 1.0


RED_NUCLEUS_SHAPE = Ellipsoid((3.2, 3.6, 4.2))
SUBSTANTIA_NIGRA_SHAPE = Ellipsoid((2.6, 8.0, 3.6), yaw_deg=40.0)   # long axis runs anterolateral
DENTATE_SHAPE = Ellipsoid((5.5, 8.0, 5.5))


def _world(indices: tuple[np.ndarray, ...], affine: np.ndarray) -> np.ndarray:
    """World mm (n x 3) of voxel indices."""
    return np.stack(indices, axis=1) @ affine[:3, :3].T + affine[:3, 3]


SEARCH_MM = 3.0
"""A nucleus whose landmark centre leaves part of it outside its host moves by up to this much per axis
to where most of it fits (an aseg host is a few mm thick; landmarks are not that precise)."""


def _paint(labels: np.ndarray, affine: np.ndarray, host: np.ndarray, centre: np.ndarray, shape: Ellipsoid,
           side: str, region_id: int) -> None:
    """Label the host voxels inside `shape` with `region_id`, in place: placed at `centre` (world mm),
    or within `SEARCH_MM` of it where more of the nucleus fits in the host (the nearest such place)."""
    indices = np.nonzero(host)
    points = _world(indices, affine)
    sign = 1.0 if side == "R" else -1.0
    steps = np.linspace(-SEARCH_MM, SEARCH_MM, 5)
    shifts = sorted((np.array(d) for d in np.stack(np.meshgrid(steps, steps, steps), -1).reshape(-1, 3)),
                    key=lambda d: float(np.linalg.norm(d)))
    best = max(shifts, key=lambda d: int(shape.inside(points - centre - d, sign).sum()))  # first maximum: nearest
    inside = shape.inside(points - centre - best, sign)
    labels[tuple(index[inside] for index in indices)] = region_id


def add_iron_nuclei(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """A copy of `labels` with red nucleus, substantia nigra and dentate of both sides painted in.

    A hemisphere whose host region is missing (a cropped map) gets none of that host's nuclei.
    """
    out = labels.copy()
    midline = _midline_x(labels, affine)
    for side in ("L", "R"):
        outward = 1.0 if side == "R" else -1.0
        ventral_dc = labels == VENTRAL_DC[side]
        if ventral_dc.sum() > 50:
            points = _world(np.nonzero(ventral_dc), affine)
            midbrain = points[points[:, 1] <= np.median(points[:, 1])]       # posterior half: the midbrain part
            lateral = np.abs(midbrain[:, 0] - midline)
            red = np.array([midline + outward * max(np.percentile(lateral, 25), 4.0),
                            np.median(midbrain[:, 1]), np.median(midbrain[:, 2]) + 1.0])
            nigra = np.array([midline + outward * np.percentile(lateral, 70),
                              red[1] + 3.0, np.percentile(midbrain[:, 2], 30)])
            _paint(out, affine, ventral_dc, nigra, SUBSTANTIA_NIGRA_SHAPE, side, SUBSTANTIA_NIGRA[side])
            _paint(out, affine, ventral_dc & (out != SUBSTANTIA_NIGRA[side]), red, RED_NUCLEUS_SHAPE, side,
                   RED_NUCLEUS[side])
        cerebellar_wm = labels == CEREBELLAR_WM[side]
        if cerebellar_wm.sum() > 200:
            points = _world(np.nonzero(cerebellar_wm), affine)
            centre = points.mean(axis=0)
            centre[0] = midline + 0.8 * (centre[0] - midline)      # the dentate lies in the medial core
            centre[2] -= 2.0
            _paint(out, affine, cerebellar_wm, centre, DENTATE_SHAPE, side, DENTATE[side])
    return out


def _midline_x(labels: np.ndarray, affine: np.ndarray) -> float:
    """World x of the midline: the brainstem's mean x, else halfway between the ventral DCs' centres."""
    brainstem = labels == BRAINSTEM
    if brainstem.sum() > 50:
        return float(_world(np.nonzero(brainstem), affine)[:, 0].mean())
    centres = [_world(np.nonzero(labels == VENTRAL_DC[s]), affine)[:, 0].mean()
               for s in ("L", "R") if (labels == VENTRAL_DC[s]).any()]
    return float(np.mean(centres)) if centres else 0.0
