"""One subject simulated from a real label map: labels, susceptibility, local field, brain mask and T1.

The label map (1 mm, FreeSurfer ids, `label_maps.Anatomy`) is sampled onto the subject's grid through
an optional random deformation (rotation, size, shift and a smooth displacement: more subjects than
label maps), by nearest neighbour. chi and the T1 are painted on a grid `supersampling` times finer
(about 1 mm) and averaged onto the voxel grid (partial volume); the field is the dipole model of the
fine chi averaged the same way, so no inversion on the voxel grid sees its own forward model (no
inverse crime). The T1 gets SynthSeg-style variety: per-subject contrast around the measured values
(`tissue_values`), random head-tissue intensities, gamma, bias field, blur and Rician noise.
Random draws come from `SeedSequence([seed, index])` in three streams (anatomy, tissue values,
acquisition), so subject k is the same whatever the cohort size; the field's imperfections, when asked
for (`field_imperfections`), from a fourth, so they change nothing else.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.phantom.freesurfer import CSF, EXTRA_CEREBRAL_CSF, REGIONS
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections, imperfection_field
from mqsm_nnunet.phantom.label_maps import Anatomy
from mqsm_nnunet.phantom.random_fields import SmoothField, clipped_normal
from mqsm_nnunet.phantom.subject import PhantomSubject, block_mean, check_levels, check_shape, rotation_onto_z
from mqsm_nnunet.phantom.tissue_values import STRUCTURE_OF_REGION, VEIN_CHI_PPB, chi_ppb, t1w
from mqsm_nnunet.physics import b0_direction_from_affine, forward_field, unit_b0_direction

DEFAULT_REAL_VOXEL_SIZE = (2.0, 2.0, 2.0)
FINE_VOXEL_MM = 1.0            # chi, T1 and field are painted at about this size, then averaged
GRID_MARGIN_MM = 6.0           # around the (deformed) brain
ROTATION_SD_DEG, ROTATION_LIMIT_DEG = 4.0, 8.0
SCALE_SD, SCALE_LIMIT = 0.05, 0.12              # global size, log-normal
AXIS_SCALE_SD, AXIS_SCALE_LIMIT = 0.02, 0.05    # per axis
SHIFT_SD_MM, SHIFT_LIMIT_MM = 2.0, 4.0
WARP_SPACING_MM, WARP_SD_MM, WARP_LIMIT_MM = 20.0, 1.5, 4.0
TEXTURE_SPACING_MM, TEXTURE_RELATIVE, TEXTURE_PPB = 5.0, 0.08, 1.5
VEIN_SPACING_MM, VEIN_THRESHOLD = 4.0, 1.6      # veins: sulcal CSF where a smooth field exceeds this
T1_CONTRAST_SD = 0.04          # per structure, log-normal, shared by left and right
T1_GAMMA_SD = 0.08             # log of the gamma exponent
HEAD_T1W_RANGE = (0.05, 1.25)  # head tissues (skull, scalp, eyes, ...): uniform per tissue id
BIAS_SPACING_MM, BIAS_SD = 60.0, 0.12
T1_BLUR_VOXELS = (0.3, 0.7)    # Gaussian PSF sd, uniform
IMPERFECTION_STREAM = 4        # the fourth random stream of a subject: its field's imperfections
T1_NOISE_SPREAD = (0.5, 1.5)   # the subject's T1 noise = t1_noise x uniform(this)
T1_SCALE = 1000.0
_LOOKUP_SIZE = 1024            # ids of FreeSurfer's aseg and SynthSeg's head tissues lie below this


@dataclass(frozen=True)
class _Deformation:
    """Subject world mm -> label-map world mm: x_s = c + A (x - c) + d(x), A = rotation x size, d smooth."""

    centre: np.ndarray
    matrix: np.ndarray
    warp: list[SmoothField] | None

    @classmethod
    def identity(cls, centre: np.ndarray) -> _Deformation:
        return cls(centre, np.eye(3), None)

    @classmethod
    def draw(cls, rng: np.random.Generator, centre: np.ndarray) -> _Deformation:
        rotation = Rotation.from_euler("xyz", clipped_normal(rng, ROTATION_SD_DEG, ROTATION_LIMIT_DEG, 3), degrees=True)
        size = np.exp(clipped_normal(rng, SCALE_SD, SCALE_LIMIT, 1) + clipped_normal(rng, AXIS_SCALE_SD, AXIS_SCALE_LIMIT, 3))
        shift = clipped_normal(rng, SHIFT_SD_MM, SHIFT_LIMIT_MM, 3)
        low, high = centre - 130.0, centre + 130.0
        warp = [SmoothField.draw(rng, low, high, WARP_SPACING_MM) for _ in range(3)]
        return cls(centre + shift, rotation.as_matrix() * size, warp)

    def inverse_points(self, points: np.ndarray) -> np.ndarray:
        """Approximate subject positions (n x 3) of label-map points, the warp left out (it is bounded)."""
        return (points - self.centre) @ np.linalg.inv(self.matrix).T + self.centre

    def __call__(self, world: list[np.ndarray]) -> list[np.ndarray]:
        moved = [world[k] - np.float32(self.centre[k]) for k in range(3)]
        out = [sum(np.float32(self.matrix[i, k]) * moved[k] for k in range(3)) + np.float32(self.centre[i])
               for i in range(3)]
        if self.warp is not None:
            out = [out[i] + np.clip(self.warp[i].sample(*world) * WARP_SD_MM, -WARP_LIMIT_MM, WARP_LIMIT_MM)
                   for i in range(3)]
        return out


@dataclass(frozen=True)
class _Grid:
    """The subject's voxel grid: the label map's axes at `voxel_size`, `shape` voxels, `affine`."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def around(cls, anatomy: Anatomy, deformation: _Deformation, voxel_size: tuple[float, float, float],
               shape: tuple[int, int, int] | None) -> _Grid:
        """The brain's bounding box plus the margin, or `shape` voxels centred on that box."""
        directions = anatomy.affine[:3, :3] / np.linalg.norm(anatomy.affine[:3, :3], axis=0)
        found = np.nonzero(anatomy.brain)
        points = np.stack(found, 1)[::7] @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]
        along_axes = deformation.inverse_points(points) @ directions   # mm along the map's axes
        margin = GRID_MARGIN_MM + (WARP_LIMIT_MM if deformation.warp is not None else 0.0)
        low, high = along_axes.min(axis=0) - margin, along_axes.max(axis=0) + margin
        if shape is None:
            shape = tuple(int(n) for n in np.ceil((high - low) / voxel_size) + 1)
        else:
            low = (low + high) / 2 - (np.asarray(shape) - 1) / 2 * np.asarray(voxel_size)
        affine = np.eye(4)
        affine[:3, :3] = directions * np.asarray(voxel_size)
        affine[:3, 3] = directions @ low
        return cls(shape, affine)

    def world(self, factor: int) -> list[np.ndarray]:
        """World mm of the centres of a grid `factor` times finer per axis (nested in this one's voxels)."""
        axes = [((np.arange(n * factor, dtype=np.float32) + 0.5) / factor - 0.5) for n in self.shape]
        index = np.meshgrid(*axes, indexing="ij")
        return [sum(np.float32(self.affine[i, k]) * index[k] for k in range(3)) + np.float32(self.affine[i, 3])
                for i in range(3)]


def _sample_labels(anatomy: Anatomy, source_world: list[np.ndarray]) -> np.ndarray:
    """The label map's id at each point (nearest voxel; 0 outside the map)."""
    inverse = np.linalg.inv(anatomy.affine)
    index = [sum(np.float32(inverse[i, k]) * source_world[k] for k in range(3)) + np.float32(inverse[i, 3])
             for i in range(3)]
    return ndimage.map_coordinates(anatomy.labels, index, order=0, mode="constant", cval=0)


def _regional_chi(rng: np.random.Generator, variation: float) -> np.ndarray:
    """Per-id susceptibility (ppb): literature x (1 + e), e shared half by left and right, truncated at 2.5 sd."""
    structures = sorted(set(STRUCTURE_OF_REGION.values()))
    shared = dict(zip(structures, rng.standard_normal(len(structures))))
    values = np.zeros(_LOOKUP_SIZE)
    for region_id, z in zip(REGIONS, rng.standard_normal(len(REGIONS))):
        structure = STRUCTURE_OF_REGION[region_id]
        e = variation * (shared[structure] + z) / math.sqrt(2)
        values[region_id] = chi_ppb(structure) * (1 + np.clip(e, -2.5 * variation, 2.5 * variation))
    return values


def _t1_lookup(rng: np.random.Generator) -> np.ndarray:
    """Per-id T1w (white matter 1): measured contrast x a per-structure jitter; head ids uniform at random."""
    structures = sorted(set(STRUCTURE_OF_REGION.values()))
    jitter = dict(zip(structures, np.exp(clipped_normal(rng, T1_CONTRAST_SD, 3 * T1_CONTRAST_SD, len(structures)))))
    jitter["white_matter"] = 1.0
    lookup = rng.uniform(*HEAD_T1W_RANGE, _LOOKUP_SIZE).astype(np.float32)
    lookup[0] = 0.0
    for region_id, structure in STRUCTURE_OF_REGION.items():
        lookup[region_id] = t1w(structure) * jitter[structure]
    lookup[EXTRA_CEREBRAL_CSF] = lookup[CSF]
    return lookup


def make_real_subject(anatomy: Anatomy, index: int, seed: int = 0, *,
                      voxel_size: Sequence[float] = DEFAULT_REAL_VOXEL_SIZE, shape: Sequence[int] | None = None,
                      b0_dir: Sequence[float] | None = None, b0_in_affine: bool = False, deform: bool = True, noise: float = 0.02, t1_noise: float = 0.02,
                      chi_variation: float = 0.12,
                      imperfections: FieldImperfections = FieldImperfections()) -> PhantomSubject:
    """Simulate subject `index` of cohort `seed` from `anatomy`.

    Args:
        voxel_size: the subject's grid (mm); its axes are the label map's, its extent the brain plus
            `GRID_MARGIN_MM`, so the subject stays in the label map's physical space (deformed when `deform`).
        shape: a fixed grid of this many voxels centred on the brain instead (parts may be cut off).
        b0_dir: B0 in the subject's voxel axes; None: the affine's (world z, the head as in the label map).
        b0_in_affine: turn the affine about the brain's centre so that `b0_direction_from_affine` gives
            `b0_dir` back (an oblique acquisition; the files alone carry it). False: the affine stays the
            label map's and the caller records `b0_dir` elsewhere (field.json).
        deform: draw a random rotation, size, shift and smooth displacement (False: the label map as it is).
        noise, t1_noise, chi_variation: as for the geometric phantom (`subject.make_subject`).
        imperfections: a residual background field and non-dipolar phase at the brain's edge added to
            the field (`field_imperfections`; none by default).

    Raises:
        ValueError: a bad index, seed, voxel size, B0 direction or level.
    """
    if int(index) != index or index < 0 or int(seed) != seed or seed < 0:
        raise ValueError(f"index and seed must be integers >= 0; got index={index}, seed={seed}")
    voxel_size = check_voxel_size(voxel_size)
    check_levels(noise, t1_noise, chi_variation)
    rng_anatomy, rng_values, rng_scan = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence([int(seed), int(index)]).spawn(3))
    brain_points = np.stack(np.nonzero(anatomy.brain), 1) @ anatomy.affine[:3, :3].T + anatomy.affine[:3, 3]
    centre = brain_points.mean(axis=0)
    deformation = _Deformation.draw(rng_anatomy, centre) if deform else _Deformation.identity(centre)
    grid = _Grid.around(anatomy, deformation, voxel_size, None if shape is None else check_shape(shape))
    b0 = unit_b0_direction(b0_direction_from_affine(grid.affine) if b0_dir is None else b0_dir)
    affine = _turned_towards(grid.affine, centre, b0) if b0_in_affine and b0_dir is not None else grid.affine
    factor = max(2, math.ceil(max(voxel_size) / FINE_VOXEL_MM - 1e-6))

    labels = _sample_labels(anatomy, deformation(grid.world(1)))   # head tissue ids outside the brain, for now
    fine_source = deformation(grid.world(factor))
    fine_labels = _sample_labels(anatomy, fine_source)
    brain_ids = np.zeros(_LOOKUP_SIZE, dtype=bool)
    brain_ids[list(REGIONS)] = True
    fine_brain = brain_ids[fine_labels]
    mask = brain_ids[labels]

    values = _regional_chi(rng_values, chi_variation)
    spread = TEXTURE_RELATIVE * np.abs(values) + TEXTURE_PPB
    low, high = centre - 130.0, centre + 130.0
    texture = SmoothField.draw(rng_values, low, high, TEXTURE_SPACING_MM, upsample=2)
    veins = SmoothField.draw(rng_values, low, high, VEIN_SPACING_MM, upsample=2)
    inside = fine_labels[fine_brain]
    points = [c[fine_brain] for c in fine_source]
    chi_ppb_inside = values[inside] + spread[inside] * texture.sample(*points)
    is_vein = (inside == CSF) & (veins.sample(*points) > VEIN_THRESHOLD)
    chi_ppb_inside[is_vein] = VEIN_CHI_PPB
    fine_chi = np.zeros(fine_labels.shape, dtype=np.float32)
    fine_chi[fine_brain] = chi_ppb_inside / 1000.0
    del points, chi_ppb_inside, inside

    fine_voxel = tuple(v / factor for v in voxel_size)
    clean = block_mean(forward_field(fine_chi, fine_voxel, b0), factor).astype(np.float32)
    chi = np.where(mask, block_mean(fine_chi, factor), 0.0).astype(np.float32)
    del fine_chi
    noise_std = float(noise * clean[mask].std()) if mask.any() else 0.0
    field = np.zeros(grid.shape, dtype=np.float32)
    field[mask] = clean[mask] + noise_std * rng_scan.standard_normal(int(mask.sum()), dtype=np.float32)
    if imperfections.any:
        rng_imperfections = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), IMPERFECTION_STREAM]))
        field += imperfection_field(mask, affine, float(clean[mask].std()), imperfections, rng_imperfections)

    t1 = _t1_image(block_mean(_t1_lookup(rng_values)[fine_labels], factor).astype(np.float32), grid, rng_scan,
                   t1_noise)
    region_chi = {REGIONS[i]: float(values[i]) for i in REGIONS}
    return PhantomSubject(int(index), t1, field, chi, mask.astype(np.uint8), np.where(mask, labels, 0).astype(np.uint16),
                          affine, b0, region_chi, noise_std)


def _turned_towards(affine: np.ndarray, centre: np.ndarray, b0_voxel: tuple[float, float, float]) -> np.ndarray:
    """`affine` turned about world point `centre` so that world z runs along `b0_voxel` in voxel axes."""
    directions = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    turn = np.eye(4)
    turn[:3, :3] = rotation_onto_z(directions @ np.asarray(b0_voxel))
    turn[:3, 3] = centre - turn[:3, :3] @ centre
    return turn @ affine


def _t1_image(t1w_map: np.ndarray, grid: _Grid, rng: np.random.Generator, t1_noise: float) -> np.ndarray:
    """The acquired T1 from the partial-volume T1w map: gamma, bias field, PSF blur, Rician noise."""
    gamma = float(np.exp(clipped_normal(rng, T1_GAMMA_SD, 3 * T1_GAMMA_SD, 1)[0]))
    world = grid.world(1)
    centre = [float(c.mean()) for c in world]
    bias = SmoothField.draw(rng, [c - 130.0 for c in centre], [c + 130.0 for c in centre], BIAS_SPACING_MM)
    image = np.power(np.clip(t1w_map, 0.0, None), gamma) * np.exp(BIAS_SD * bias.sample(*world))
    image = ndimage.gaussian_filter(image, rng.uniform(*T1_BLUR_VOXELS))
    sigma = t1_noise * rng.uniform(*T1_NOISE_SPREAD)
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return (np.sqrt(real ** 2 + imaginary ** 2) * T1_SCALE).astype(np.float32)
