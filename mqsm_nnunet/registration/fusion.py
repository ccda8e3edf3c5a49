"""Multi-atlas label fusion: several templates' labels on one subject made into one label map.

Majority vote (`fuse_labels`) counts the atlases; joint label fusion (`register_and_fuse_jointly`,
antsJointFusion through antspyx) weighs them voxel by voxel by how alike each warped atlas T1 looks to
the subject's there, and is the stronger (docs/registration.md, measured on real anatomies).
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from mqsm_nnunet.io.nifti import Volume
from mqsm_nnunet.registration.ants import (DEFAULT_SEED, Method, SubjectRegistration, Template, ants_image,
                                           check_seed, images_to_register, import_ants, registration_transforms,
                                           resolve_method)

__all__ = ["FUSIONS", "JOINT_FUSION_OPTIONS", "fuse_labels", "joint_fusion_radii", "register_and_fuse_jointly"]


JOINT_FUSION_OPTIONS = {"beta": 2.0, "rho": 0.01, "patch_radius_mm": 2.0, "search_radius_mm": 3.0}
"""antsJointFusion's defaults: weight sharpness 2, ridge penalty 0.01, and its patch radius 2 and search
radius 3 voxels, which are made for 1 mm brains, kept in mm (`joint_fusion_radii`): on a 6 mm grid a
search of 1-3 voxels moved labels by 6-18 mm (mean Dice 0.43-0.49 against the three identical atlases'
0.71; no search: 0.70); on 2 mm real anatomies 1 and 1 voxels gave the Dice of 2 and 3 (0.666
against 0.664) in a quarter of the time."""


def joint_fusion_radii(spacing: Sequence[float]) -> tuple[int, int]:
    """(patch radius, search radius) in voxels of a grid with `spacing` (mm) for `JOINT_FUSION_OPTIONS`."""
    voxel = float(min(spacing))
    return (max(1, int(JOINT_FUSION_OPTIONS["patch_radius_mm"] // voxel)),
            int(JOINT_FUSION_OPTIONS["search_radius_mm"] // voxel))


def register_and_fuse_jointly(templates: Sequence[Template], t1: Volume, grid_affine: np.ndarray,
                              grid_shape: Sequence[int], method: str | Method = "syn", seed: int = DEFAULT_SEED,
                              brain_mask: Volume | None = None) -> SubjectRegistration:
    """Multi-atlas registration fused by joint label fusion (Wang et al. 2013, antspyx's
    `joint_label_fusion`): every template registered to the subject as in `register_labels`, its T1
    and labels carried onto the subject's T1 grid, and each voxel labelled by the atlases whose
    local patches look like the subject's there, weighted so that atlases that err alike are not
    counted twice. The fused labels are then carried onto the QSM's grid (nearest label).
    Inside the subject's brain mask (else inside any atlas's labels); 0 outside.

    Raises:
        ValueError / RuntimeError: as `register_labels`.
    """
    method, seed = resolve_method(method), check_seed(seed)
    ants = import_ants()
    start = time.perf_counter()
    warped_t1s, warped_labels, each = [], [], []
    grid = ants_image(ants, np.zeros(tuple(int(n) for n in grid_shape), np.float32), grid_affine)
    with tempfile.TemporaryDirectory(prefix="mqsm_register_") as scratch:
        for number, template in enumerate(templates):
            fixed, moving = images_to_register(ants, template, t1, brain_mask)
            folder = os.path.join(scratch, f"template{number}")
            os.mkdir(folder)
            transforms = registration_transforms(ants, fixed, moving, method, seed, folder)
            labels = ants_image(ants, template.labels.data, template.labels.affine)
            each.append(np.rint(ants.apply_transforms(grid, labels, transforms, interpolator="genericLabel").numpy())
                        .astype(np.int64))
            warped_t1s.append(ants.iMath(ants.apply_transforms(fixed, moving, transforms, interpolator="linear"),
                                         "Normalize"))
            warped_labels.append(ants.apply_transforms(fixed, labels, transforms, interpolator="genericLabel"))
        if brain_mask is not None:
            target_mask = ants.resample_image_to_target(
                ants_image(ants, (brain_mask.data > 0).astype(np.float32), brain_mask.affine), fixed,
                interp_type="nearestNeighbor")
        else:
            target_mask = fixed.new_image_like((sum(w.numpy() for w in warped_labels) > 0).astype(np.float32))
        patch, search = joint_fusion_radii(fixed.spacing)
        fused = ants.joint_label_fusion(ants.iMath(fixed, "Normalize"), target_mask, warped_t1s,
                                        label_list=warped_labels, beta=JOINT_FUSION_OPTIONS["beta"],
                                        rho=JOINT_FUSION_OPTIONS["rho"], rad=patch, r_search=search)["segmentation"]
        on_grid = ants.resample_image_to_target(fused, grid, interp_type="genericLabel")
    return SubjectRegistration(np.rint(on_grid.numpy()).astype(np.int64), time.perf_counter() - start, tuple(each))


FUSIONS = {"majority": "majority vote (ties: the earliest template)",
           "joint": f"joint label fusion (antsJointFusion, {JOINT_FUSION_OPTIONS})"}
"""The label fusions of multi-atlas registration by name, as registration.json describes them."""


def fuse_labels(label_maps: Sequence[np.ndarray]) -> np.ndarray:
    """Majority vote of several atlases' label maps on one grid: each voxel takes the label most of them
    give it; a tie goes to the earliest map among those tied (so one map is returned unchanged, and
    with three atlases the first decides only where all three differ).

    Raises:
        ValueError: no maps, or maps of different shapes.
    """
    if not label_maps:
        raise ValueError("no label maps to fuse")
    shapes = {np.shape(m) for m in label_maps}
    if len(shapes) != 1:
        raise ValueError(f"label maps to fuse must share one grid; got shapes {sorted(shapes)}")
    votes = [sum((other == m).astype(np.int16) for other in label_maps) for m in label_maps]
    best = np.max(votes, axis=0)
    fused = np.asarray(label_maps[-1]).copy()
    for m, count in zip(reversed(label_maps), reversed(votes)):
        fused = np.where(count == best, m, fused)
    return fused
