"""One synthetic subject: labels, susceptibility, local field, brain mask and T1 on a voxel grid.

Each voxel centre is mapped into the MNI-like anatomy frame through the subject's pose (global and
per-axis size, small rotation and translation) and a smooth random displacement field; the shapes of
`anatomy` are evaluated there (the deformed label map), and chi, mask and T1 are derived from the
labels. All random draws come from `SeedSequence([seed, index])`, in three independent streams
(anatomy, tissue values, acquisition), none of them dependent on the grid: subject k is the same
whatever the cohort size, and the same anatomy on any matrix or voxel size.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.phantom.anatomy import (BRAIN_HIGH, BRAIN_LOW, HEAD_CENTRE, LABELS, REGION_TISSUE,
                                         SUSCEPTIBILITY_PPB, TISSUES, Space, build_anatomy, head_t1w, render)
from mqsm_nnunet.phantom.random_fields import SmoothField, clipped_normal
from mqsm_nnunet.physics import forward_field, unit_b0_direction

DEFAULT_SHAPE = (64, 64, 48)
DEFAULT_VOXEL_SIZE = (3.0, 3.0, 3.0)
DEFAULT_B0_DIR = (0.0, 0.0, 1.0)
DEFAULT_FIELD_NOISE = 0.02   # field noise std / std of the noiseless field inside the brain
DEFAULT_T1_NOISE = 0.02      # T1 Rician noise sigma / white-matter intensity
DEFAULT_CHI_VARIATION = 0.12  # per-subject relative sd of each region's susceptibility
FIELD_SUPERSAMPLING = 2       # chi and field simulated 2x finer per axis, then averaged onto the voxel grid
MAX_SUPERSAMPLED_VOXELS = 2 ** 24  # larger fine grids (a 1 mm head) fall back to 1: memory and time

ANATOMY_SCALE = (1.0, 0.95, 0.9)
"""MNI152 mm -> mean-subject mm per axis (MNI152 is larger than an average adult brain)."""
POSE_SCALE_SD, POSE_SCALE_LIMIT = 0.035, 0.06      # global size, log-normal, clipped
AXIS_SCALE_SD, AXIS_SCALE_LIMIT = 0.012, 0.025     # per-axis size
ROTATION_SD_DEG, ROTATION_LIMIT_DEG = 2.5, 5.0
SHIFT_SD_MM, SHIFT_LIMIT_MM = 1.5, 3.0
WARP_SPACING_MM, WARP_SD_MM, WARP_LIMIT_MM = 24.0, 1.0, 3.0
GYRI_SPACING_MM, TEXTURE_SPACING_MM, BIAS_SPACING_MM = 8.0, 5.0, 60.0
TEXTURE_RELATIVE, TEXTURE_PPB = 0.08, 1.5   # within-region texture sd = 8 % of |chi| + 1.5 ppb
BIAS_AMPLITUDE = 0.12                         # log-sd of the multiplicative T1 bias field
T1_BLUR_VOXELS = 0.5                          # Gaussian PSF of the T1 (sd in voxels)
T1_SCALE = 1000.0                             # white matter ~ 1000 in the written T1
_FIELD_BOX = (-150.0, 150.0)                  # mm box of the image-frame random fields
_ANATOMY_BOX = (np.subtract(BRAIN_LOW, 20.0), np.add(BRAIN_HIGH, 20.0))


@dataclass(frozen=True)
class PhantomSubject:
    """A synthetic subject on one grid (arrays in voxel order (i, j, k)).

    chi and field are in ppm (float32, 0 outside the mask); `region_chi_ppb` holds this subject's drawn
    regional susceptibilities (ppb) before the within-region texture; `field_noise_std` is the std
    (ppm) of the Gaussian noise added to the field inside the mask.
    """

    index: int
    t1: np.ndarray
    field: np.ndarray
    chi: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    affine: np.ndarray
    b0_dir: tuple[float, float, float]
    region_chi_ppb: dict[str, float]
    field_noise_std: float

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))


def check_grid(shape: Sequence[int], voxel_size: Sequence[float],
               b0_dir: Sequence[float] | None) -> tuple[tuple[int, int, int], tuple[float, float, float],
                                                        tuple[float, float, float]]:
    """Validate shape, voxel size and B0 direction; returns them as tuples with b0 normalized.

    Raises:
        ValueError: naming the argument and what a valid value looks like.
    """
    sizes = check_voxel_size(voxel_size)
    b0 = unit_b0_direction(DEFAULT_B0_DIR if b0_dir is None else b0_dir)
    return check_shape(shape), sizes, b0


def check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """`shape` as 3 ints; ValueError unless it is 3 positive integers."""
    if len(shape) != 3 or any(int(n) != n or n < 1 for n in shape):
        raise ValueError(f"shape must be 3 positive integers (voxels along i, j, k); got {tuple(shape)}")
    return tuple(int(n) for n in shape)


def check_levels(noise: float, t1_noise: float, chi_variation: float) -> None:
    """Validate the noise and variation levels (non-negative fractions; chi_variation below 0.4)."""
    for name, value in (("noise", noise), ("t1_noise", t1_noise)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite fraction >= 0; got {value}")
    if not math.isfinite(chi_variation) or not 0 <= chi_variation < 0.4:
        raise ValueError(f"chi_variation must be a relative sd in [0, 0.4); got {chi_variation}")


def rotation_onto_z(b0_dir: Sequence[float]) -> np.ndarray:
    """The smallest rotation R with R b = z (b normalized, its sign chosen so that b . z >= 0).

    An affine with this rotation puts B0 (world z) along b in voxel coordinates: R^T z = b, which
    is what `b0_direction_from_affine` reads back. The sign of b does not change the field.
    """
    b = np.asarray(b0_dir, dtype=float) / np.linalg.norm(b0_dir)
    if b[2] < 0:
        b = -b
    axis = np.cross(b, [0.0, 0.0, 1.0])
    s, c = np.linalg.norm(axis), b[2]
    if s < 1e-12:
        return np.eye(3)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + k + k @ k * ((1 - c) / s**2)


def grid_affine(shape: Sequence[int], voxel_size: Sequence[float], b0_dir: Sequence[float]) -> np.ndarray:
    """Voxel -> world (mm) affine: rotation from `rotation_onto_z`, voxel sizes in the columns,
    grid centre at world (0, 0, 0)."""
    rotation = rotation_onto_z(b0_dir)
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.asarray(voxel_size, dtype=float)
    affine[:3, 3] = -rotation @ ((np.asarray(shape, dtype=float) - 1) / 2 * np.asarray(voxel_size, dtype=float))
    return affine


def check_supersampling(supersampling: int | None) -> None:
    """Raises ValueError unless `supersampling` is None or an integer >= 1."""
    if supersampling is not None and (int(supersampling) != supersampling or supersampling < 1):
        raise ValueError(f"supersampling must be an integer >= 1; got {supersampling!r}")


def default_supersampling(shape: Sequence[int]) -> int:
    """`FIELD_SUPERSAMPLING`, or 1 where the finer grid would exceed `MAX_SUPERSAMPLED_VOXELS` (the
    default 64 x 64 x 48 grid is 1.6 M fine voxels; a 256 x 256 x 136 head at 1 mm would be 71 M,
    several GB for the padded FFT), with a UserWarning that the field is then the grid's own model."""
    if int(np.prod(shape)) * FIELD_SUPERSAMPLING ** 3 <= MAX_SUPERSAMPLED_VOXELS:
        return FIELD_SUPERSAMPLING
    warnings.warn(f"grid {tuple(shape)} is too large to simulate the field {FIELD_SUPERSAMPLING}x finer: the field "
                  "is the grid's own dipole model of chi (an inverse crime for comparing inversions; "
                  "docs/phantom.md); pass supersampling explicitly to force it", UserWarning, stacklevel=3)
    return 1


@dataclass(frozen=True)
class _Pose:
    """A subject's placement of the anatomy in the image: size, rotation, shift (mm) and smooth warp."""

    scale: np.ndarray
    rotation: np.ndarray
    shift: np.ndarray
    warp: list[SmoothField] | None

    @classmethod
    def draw(cls, rng: np.random.Generator | None) -> "_Pose":
        """A random pose; with rng None the mean pose (size 1, no rotation, shift or warp), as for the template."""
        if rng is None:
            return cls(np.ones(3), np.eye(3), np.zeros(3), None)
        scale = np.exp(clipped_normal(rng, POSE_SCALE_SD, POSE_SCALE_LIMIT, 1) + clipped_normal(rng, AXIS_SCALE_SD, AXIS_SCALE_LIMIT, 3))
        rotation = Rotation.from_euler("xyz", clipped_normal(rng, ROTATION_SD_DEG, ROTATION_LIMIT_DEG, 3), degrees=True).as_matrix()
        shift = clipped_normal(rng, SHIFT_SD_MM, SHIFT_LIMIT_MM, 3)
        warp = [SmoothField.draw(rng, (_FIELD_BOX[0],) * 3, (_FIELD_BOX[1],) * 3, WARP_SPACING_MM) for _ in range(3)]
        return cls(scale, rotation, shift, warp)

    def coordinates(self, shape: tuple[int, ...], voxel_size: tuple[float, ...]) -> Space:
        """MNI-like coordinates of every voxel of a grid centred on the head: image mm -> warp -> undo
        pose -> undo size. Continuous in position, so any grid samples the same anatomy."""
        axes = [((np.arange(n, dtype=np.float32) - (n - 1) / 2) * v).astype(np.float32) for n, v in zip(shape, voxel_size)]
        image = np.meshgrid(*axes, indexing="ij")
        if self.warp is not None:
            displacement = [np.clip(w.sample(*image) * WARP_SD_MM, -WARP_LIMIT_MM, WARP_LIMIT_MM) for w in self.warp]
            image = [image[k] + displacement[k] for k in range(3)]
            del displacement
        moved = [image[k] - np.float32(self.shift[k]) for k in range(3)]
        del image
        coords, rotation = [], self.rotation
        for i in range(3):  # head = rotation^T (moved); mni = centre + head / size
            head = (moved[0] * np.float32(rotation[0, i]) + moved[1] * np.float32(rotation[1, i])
                    + moved[2] * np.float32(rotation[2, i]))
            coords.append(head / np.float32(ANATOMY_SCALE[i] * self.scale[i]) + np.float32(HEAD_CENTRE[i]))
        return Space(*coords)


def block_mean(volume: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor^3 blocks: a finer grid's voxels back onto the grid it subdivides."""
    n = [size // factor for size in volume.shape]
    return volume.reshape(n[0], factor, n[1], factor, n[2], factor).mean(axis=(1, 3, 5), dtype=np.float64)


def _regional_chi(rng: np.random.Generator, variation: float) -> np.ndarray:
    """Per-label susceptibility (ppb, index = label id): literature x (1 + e), e shared half by the
    left/right pair of a structure, sd `variation`, truncated at 2.5 sd."""
    structures = sorted({name.removesuffix("_L").removesuffix("_R") for name in SUSCEPTIBILITY_PPB})
    shared = dict(zip(structures, rng.standard_normal(len(structures))))
    values = np.zeros(len(LABELS))
    for name, z in zip(SUSCEPTIBILITY_PPB, rng.standard_normal(len(SUSCEPTIBILITY_PPB))):
        e = variation * (shared[name.removesuffix("_L").removesuffix("_R")] + z) / math.sqrt(2)
        values[LABELS[name]] = SUSCEPTIBILITY_PPB[name] * (1 + np.clip(e, -2.5 * variation, 2.5 * variation))
    return values


def _t1_lookup() -> np.ndarray:
    lut = np.zeros(len(LABELS), dtype=np.float32)
    for name, tissue in REGION_TISSUE.items():
        lut[LABELS[name]] = TISSUES[tissue].t1w
    return lut


def _t1_image(labels: np.ndarray, space: Space, outer: np.ndarray, bias: np.ndarray | float, t1_noise: float,
              rng: np.random.Generator) -> np.ndarray:
    """T1w image (white matter ~ T1_SCALE): tissue intensities, the head outside the brain, PSF blur,
    multiplicative `bias`, Rician noise of sigma `t1_noise` (relative to white matter)."""
    t1 = np.where(labels > 0, _t1_lookup()[labels], head_t1w(space, outer))
    t1 = ndimage.gaussian_filter(t1, T1_BLUR_VOXELS) * bias
    real = t1 + t1_noise * rng.standard_normal(labels.shape, dtype=np.float32)
    imaginary = t1_noise * rng.standard_normal(labels.shape, dtype=np.float32)
    return (np.sqrt(real**2 + imaginary**2) * T1_SCALE).astype(np.float32)


def _warn_if_cut(mask: np.ndarray, voxel_size: Sequence[float], what: str) -> None:
    """UserWarning when the brain touches a face of the grid (part of it is cut off)."""
    faces = (mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1])
    if any(face.any() for face in faces):
        fov = " x ".join(f"{n * v:g}" for n, v in zip(mask.shape, voxel_size))
        warnings.warn(f"{what}: the brain touches the edge of the {fov} mm field of view; "
                      "enlarge the grid (shape x voxel size) to keep the whole brain", UserWarning, stacklevel=3)


def make_subject(index: int, shape: Sequence[int] = DEFAULT_SHAPE, voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
                 b0_dir: Sequence[float] | None = None, seed: int = 0, *, noise: float = DEFAULT_FIELD_NOISE,
                 t1_noise: float = DEFAULT_T1_NOISE, chi_variation: float = DEFAULT_CHI_VARIATION,
                 supersampling: int | None = None) -> PhantomSubject:
    """Generate subject `index` (>= 0; the cohort writes 1..N as sub-001...) of cohort `seed`.

    Args:
        shape, voxel_size: the grid (voxels, mm) in (i, j, k) order; the head is centred in it.
        b0_dir: B0 direction in voxel axes (default (0, 0, 1)); the affine is rotated so that
            `physics.b0_direction_from_affine(affine)` gives it back (an oblique acquisition).
        noise: field noise sd as a fraction of the noiseless field's sd inside the brain.
        t1_noise: T1 Rician noise sigma as a fraction of the white-matter intensity.
        chi_variation: per-subject relative sd of every region's susceptibility.
        supersampling: chi and its field are simulated on a grid this many times finer per axis and
            averaged back onto the voxel grid (chi = the voxel's mean susceptibility), so the field
            is not the voxel grid's own discrete dipole model of chi: an inversion with that kernel
            does not get the data its model made ("inverse crime", docs/phantom.md). 1: it is.
            None: `default_supersampling(shape)`.

    Warns (UserWarning) when the brain touches the edge of the field of view.

    Raises:
        ValueError: a bad index, seed, grid, B0 direction or level.
    """
    if int(index) != index or index < 0 or int(seed) != seed or seed < 0:
        raise ValueError(f"index and seed must be integers >= 0; got index={index}, seed={seed}")
    shape, voxel_size, b0 = check_grid(shape, voxel_size, b0_dir)
    check_levels(noise, t1_noise, chi_variation)
    rng_anatomy, rng_values, rng_scan = (np.random.default_rng(s)
                                         for s in np.random.SeedSequence([int(seed), int(index)]).spawn(3))

    check_supersampling(supersampling)
    supersampling = default_supersampling(shape) if supersampling is None else int(supersampling)
    anatomy = build_anatomy(rng_anatomy)
    pose = _Pose.draw(rng_anatomy)
    space = pose.coordinates(shape, voxel_size)
    gyri = SmoothField.draw(rng_anatomy, *_ANATOMY_BOX, GYRI_SPACING_MM)
    labels, outer = render(space, anatomy, gyri.sample)
    mask = labels > 0

    values = _regional_chi(rng_values, chi_variation)
    texture = SmoothField.draw(rng_values, *_ANATOMY_BOX, TEXTURE_SPACING_MM, upsample=2)
    spread = TEXTURE_RELATIVE * np.abs(values) + TEXTURE_PPB

    def susceptibility(grid_space: Space, grid_labels: np.ndarray) -> np.ndarray:
        """chi (ppm) on a grid from its labels: regional value plus within-region texture."""
        brain = grid_labels > 0
        inside = grid_labels[brain]
        chi = np.zeros(grid_labels.shape, dtype=np.float32)
        chi[brain] = (values[inside] + spread[inside] * texture.sample(*(c[brain] for c in grid_space.coords))) / 1000.0
        return chi

    if supersampling == 1:
        chi = susceptibility(space, labels)
        clean = forward_field(chi, voxel_size, b0)
    else:
        fine_shape = tuple(n * supersampling for n in shape)
        fine_voxel = tuple(v / supersampling for v in voxel_size)
        fine_space = pose.coordinates(fine_shape, fine_voxel)
        fine_chi = susceptibility(fine_space, render(fine_space, anatomy, gyri.sample)[0])
        del fine_space
        clean = block_mean(forward_field(fine_chi, fine_voxel, b0), supersampling).astype(np.float32)
        chi = np.where(mask, block_mean(fine_chi, supersampling), 0.0).astype(np.float32)
        del fine_chi
    noise_std = float(noise * clean[mask].std()) if mask.any() else 0.0
    field = np.zeros(shape, dtype=np.float32)
    field[mask] = clean[mask] + noise_std * rng_scan.standard_normal(int(mask.sum()), dtype=np.float32)

    bias = SmoothField.draw(rng_scan, *_ANATOMY_BOX, BIAS_SPACING_MM)
    t1 = _t1_image(labels, space, outer, np.exp(BIAS_AMPLITUDE * bias.sample(*space.coords)), t1_noise, rng_scan)
    _warn_if_cut(mask, voxel_size, f"subject {index}")
    region_chi = {name: float(values[LABELS[name]]) for name in SUSCEPTIBILITY_PPB}
    return PhantomSubject(int(index), t1, field, chi, mask.astype(np.uint8), labels,
                          grid_affine(shape, voxel_size, b0), b0, region_chi, noise_std)


TEMPLATE_STREAM = (0x74656D70, 0x6C617465)
"""Entropy words after the seed that give the template its own random stream ([seed, *TEMPLATE_STREAM]),
distinct from every subject's [seed, index]."""


@dataclass(frozen=True)
class PhantomTemplate:
    """The registration target of the phantom (arrays in voxel order (i, j, k)): mean anatomy, literature
    susceptibility (ppm, no per-subject variation or texture), T1 without bias field, axial affine."""

    t1: np.ndarray
    chi: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    affine: np.ndarray


def make_template(shape: Sequence[int] = DEFAULT_SHAPE, voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
                  seed: int = 0, *, t1_noise: float = 0.0) -> PhantomTemplate:
    """The phantom's template subject, as an atlas would be: the mean anatomy (no pose, size or warp
    variation, mean nucleus sizes and positions) with its own gyral pattern (drawn from the template
    stream of `seed`, so it is none of the cohort's subjects), literature chi and a noise-free T1
    (`t1_noise` adds Rician noise as in `make_subject`).

    Raises:
        ValueError: a bad seed, grid or noise level.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be an integer >= 0; got {seed}")
    shape, voxel_size, b0 = check_grid(shape, voxel_size, None)
    check_levels(0.0, t1_noise, 0.0)
    rng_anatomy, rng_scan = (np.random.default_rng(s)
                             for s in np.random.SeedSequence([int(seed), *TEMPLATE_STREAM]).spawn(2))
    space = _Pose.draw(None).coordinates(shape, voxel_size)
    gyri = SmoothField.draw(rng_anatomy, *_ANATOMY_BOX, GYRI_SPACING_MM)
    labels, outer = render(space, build_anatomy(None), gyri.sample)
    mask = labels > 0
    literature = np.zeros(len(LABELS), dtype=np.float32)
    for name, value in SUSCEPTIBILITY_PPB.items():
        literature[LABELS[name]] = value / 1000.0
    chi = np.where(mask, literature[labels], 0.0).astype(np.float32)
    t1 = _t1_image(labels, space, outer, 1.0, t1_noise, rng_scan)
    _warn_if_cut(mask, voxel_size, "template")
    return PhantomTemplate(t1, chi, mask.astype(np.uint8), labels, grid_affine(shape, voxel_size, b0))
