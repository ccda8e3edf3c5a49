"""Write the 16 real-anatomy label maps that ship inside the package (`mqsm_nnunet/phantom/anatomies/`).

Why: `mqsm_phantom` builds its default cohort from real heads, and a fresh clone must need nothing
else. The SynthSeg training label maps (256^3 voxels of 1 mm, 26 MB in all) are cropped to the brain's
bounding box plus 8 mm, the brainstem cut 8 mm below the cerebellum (the head tissues inside that margin are kept for the T1's context), stored as
uint16 with their original FreeSurfer / SynthSeg ids and gzip level 9: about 7 MB for the 16. Nothing
is resampled, so the 1 mm anatomy is intact (the cohort's grids are 1.5-3 mm, simulated from 1 mm).

Run from the repository root (the source folder is the workplace's copy of the SynthSeg maps):
    python scripts/embed_anatomies.py ../shared/data/synthseg_label_maps
"""
from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from mqsm_nnunet.phantom.freesurfer import CSF, is_brain_id
from mqsm_nnunet.phantom.label_maps import EMBEDDED_DIR

MARGIN_MM = 8
CEREBELLAR_CORTEX = (8, 47)


def crop_to_brain(labels: np.ndarray, affine: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The label map cut to the bounding box of its brain tissue (CSF aside) plus `margin_mm`, and the
    cut's affine. The brainstem is cut `margin_mm` below the cerebellum, as a brain mask is."""
    tissue = is_brain_id(labels) & (labels != CSF)
    world_z = (affine[2, :3] @ np.indices(labels.shape).reshape(3, -1) + affine[2, 3]).reshape(labels.shape)
    tissue &= world_z >= world_z[np.isin(labels, CEREBELLAR_CORTEX)].min() - margin_mm
    margin = np.ceil(margin_mm / np.linalg.norm(affine[:3, :3], axis=0)).astype(int)
    found = np.nonzero(tissue)
    low = [max(int(axis.min()) - m, 0) for axis, m in zip(found, margin)]
    high = [min(int(axis.max()) + m + 1, n) for axis, m, n in zip(found, margin, labels.shape)]
    cut = labels[tuple(slice(lo, hi) for lo, hi in zip(low, high))].copy()
    below = world_z[tuple(slice(lo, hi) for lo, hi in zip(low, high))] < world_z[tissue].min()
    cut[below & is_brain_id(cut)] = 0   # what lies below the cut (spinal cord, its CSF) is not kept
    moved = affine.copy()
    moved[:3, 3] = affine[:3, :3] @ np.asarray(low, dtype=float) + affine[:3, 3]
    return cut, moved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with training_seg_XX.nii.gz, LICENSE.txt and SOURCE.md")
    args = parser.parse_args()
    EMBEDDED_DIR.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(sorted(args.source.glob("training_seg_*.nii.gz")), start=1):
        image = nib.load(path)
        labels = np.rint(np.asanyarray(image.dataobj)).astype(np.uint16)
        cut, affine = crop_to_brain(labels, image.affine, MARGIN_MM)
        out = nib.Nifti1Image(cut, affine)
        out.set_sform(affine, code=1)
        out.set_qform(affine, code=1)
        target = EMBEDDED_DIR / f"anatomy_{number:02d}.nii.gz"
        target.write_bytes(gzip.compress(out.to_bytes(), compresslevel=9, mtime=0))
        print(f"{path.name} -> {target.name}: {cut.shape}, {target.stat().st_size // 1024} KB")
    shutil.copy(args.source / "LICENSE.txt", EMBEDDED_DIR / "LICENSE.txt")


if __name__ == "__main__":
    main()
