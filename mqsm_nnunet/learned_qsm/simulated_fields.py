"""Varied simulated subjects with known susceptibility: what the learned QSM is pretrained on.

A learned inversion is only as general as what it saw. Each example is a real-anatomy phantom subject
(`phantom.real_subject`) drawn with its own anatomy (the embedded label maps minus the held-out ones),
deformation, regional contrast, voxel size (whole brains at about 2 mm and 96^3 crops at 1.0-1.3 mm,
the in-vivo resolution), B0 direction (tilted up to `MAX_TILT_DEG` from the head axis), field noise and,
for half of them, the imperfections of real local fields (residual background field, non-dipolar phase
at the brain's edge). Every draw comes from `SeedSequence([seed, index, EXAMPLE_STREAM])`, so example k is
the same whatever the pool size, and the pool is cached as one `.npz` per example (written whole, then
renamed: an interrupted run leaves no half-written example behind).

Each example carries the TV-ADMM map of its field with the rule's alpha (`parameter_rules`): the learned
QSM starts from what a user already has and learns what TV gets wrong.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.label_maps import Anatomy, embedded_anatomies, label_map_stem, load_anatomy
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.physics import b0_direction_from_affine
from mqsm_nnunet.qsm import baselines, parameter_rules

HELD_OUT_ANATOMIES = ("anatomy_03", "anatomy_06", "anatomy_16")
"""Never drawn for pretraining: the demo, the demo model and the QSM benchmarks evaluate on them."""

EXAMPLE_STREAM = 77
MAX_TILT_DEG = 30.0
COARSE_VOXEL_MM = (1.7, 2.4)
FINE_VOXEL_MM, FINE_SHAPE = (1.0, 1.3), (96, 96, 96)
FINE_FRACTION = 0.35
NOISE_RANGE = (0.005, 0.06)           # field noise sd / clean field sd
CHI_VARIATION_RANGE = (0.08, 0.2)
IMPERFECT_FRACTION = 0.5
BACKGROUND_RANGE, EDGE_RANGE = (0.0, 0.25), (0.0, 0.3)


@dataclass(frozen=True)
class FieldExample:
    """One simulated local field with its truth, arrays in voxel order, ppm; mask boolean."""

    field: np.ndarray
    mask: np.ndarray
    chi: np.ndarray
    tv: np.ndarray
    voxel_size: tuple[float, float, float]
    b0_dir: tuple[float, float, float]
    anatomy: str

    def save(self, path: Path) -> None:
        partial = path.with_name(path.name + ".partial.npz")
        np.savez_compressed(partial, field=self.field, mask=self.mask, chi=self.chi, tv=self.tv,
                            voxel_size=np.asarray(self.voxel_size), b0_dir=np.asarray(self.b0_dir),
                            anatomy=np.asarray(self.anatomy))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: Path) -> FieldExample:
        with np.load(path) as data:
            return cls(data["field"], data["mask"].astype(bool), data["chi"], data["tv"],
                       tuple(float(v) for v in data["voxel_size"]), tuple(float(v) for v in data["b0_dir"]),
                       str(data["anatomy"]))


def tilted(direction: Sequence[float], rng: np.random.Generator, max_tilt_deg: float) -> tuple[float, float, float]:
    """`direction` turned by an angle uniform in [0, max_tilt_deg] about a random perpendicular axis."""
    direction = np.asarray(direction, dtype=float) / np.linalg.norm(direction)
    axis = np.cross(direction, rng.standard_normal(3))
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(0.0, max_tilt_deg))
    return tuple(float(v) for v in Rotation.from_rotvec(axis * angle).apply(direction))


def training_anatomies() -> list[Path]:
    return [p for p in embedded_anatomies() if label_map_stem(p) not in HELD_OUT_ANATOMIES]


def draw_example(anatomy: Anatomy, index: int, seed: int) -> FieldExample:
    """Example `index` of pool `seed` from `anatomy` (see the module docstring for what is drawn)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), EXAMPLE_STREAM]))
    if rng.uniform() < FINE_FRACTION:
        voxel_size, shape = (float(rng.uniform(*FINE_VOXEL_MM)),) * 3, FINE_SHAPE
    else:
        voxel_size, shape = tuple(float(v) for v in rng.uniform(*COARSE_VOXEL_MM) * rng.uniform(0.92, 1.08, 3)), None
    b0 = tilted(b0_direction_from_affine(anatomy.affine), rng, MAX_TILT_DEG)
    imperfections = FieldImperfections(float(rng.uniform(*BACKGROUND_RANGE)), float(rng.uniform(*EDGE_RANGE))) \
        if rng.uniform() < IMPERFECT_FRACTION else FieldImperfections()
    subject = make_real_subject(anatomy, index, seed, voxel_size=voxel_size, shape=shape, b0_dir=b0,
                                noise=float(rng.uniform(*NOISE_RANGE)),
                                chi_variation=float(rng.uniform(*CHI_VARIATION_RANGE)), imperfections=imperfections)
    mask = subject.mask > 0
    alpha = parameter_rules.tuned_parameters(subject.field, voxel_size, b0, mask, ["tv_admm"])["tv_admm"]
    tv = baselines.tv_admm(subject.field, voxel_size, b0, mask, **alpha).astype(np.float32)
    return FieldExample(subject.field, mask, subject.chi, tv, voxel_size, b0, anatomy.name)


def example_path(folder: Path, index: int) -> Path:
    return folder / f"example_{index:04d}.npz"


def build_pool(folder: str | os.PathLike, n_examples: int, seed: int, progress: bool = True) -> list[Path]:
    """Examples 0..n_examples-1 of pool `seed` under `folder`, drawing only those not cached yet
    (about 12 s each on one CPU core)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    anatomies = training_anatomies()
    loaded: dict[Path, Anatomy] = {}
    paths = []
    for index in tqdm(range(n_examples), desc="simulated fields", unit="subject", disable=not progress):
        path = example_path(folder, index)
        if not path.is_file():
            source = anatomies[index % len(anatomies)]
            anatomy = loaded.setdefault(source, load_anatomy(source))
            draw_example(anatomy, index, seed).save(path)
        paths.append(path)
    return paths


def iterate_pool(paths: Sequence[Path], rng: np.random.Generator) -> Iterator[FieldExample]:
    """Examples from `paths` in a fresh random order per pass, forever."""
    while True:
        for i in rng.permutation(len(paths)):
            yield FieldExample.load(paths[i])
