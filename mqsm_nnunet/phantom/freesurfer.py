"""The real-anatomy cohort's regions: FreeSurfer aseg ids and names, what is merged, what is head.

A FreeSurfer / SynthSeg label map holds brain structures with aseg ids (2 ... 60) and, in whole-head
maps, tissues outside the brain (skull, scalp, eyes, extra-cerebral CSF: SynthSeg's 85, 136, 137,
163, 164 and 5xx). The cohort keeps the aseg regions users know, adds the three iron nuclei aseg
lacks (`iron_nuclei`), folds tiny or ambiguous aseg labels into their neighbours, and treats every
other id as head: outside the brain mask, seen only by the T1. docs/phantom.md has the table.
"""
from __future__ import annotations

import numpy as np

BACKGROUND = 0
CSF = 24

ASEG_REGIONS: dict[int, str] = {
    2: "Left-Cerebral-White-Matter", 3: "Left-Cerebral-Cortex", 4: "Left-Lateral-Ventricle",
    7: "Left-Cerebellum-White-Matter", 8: "Left-Cerebellum-Cortex", 10: "Left-Thalamus", 11: "Left-Caudate",
    12: "Left-Putamen", 13: "Left-Pallidum", 14: "3rd-Ventricle", 15: "4th-Ventricle", 16: "Brain-Stem",
    17: "Left-Hippocampus", 18: "Left-Amygdala", 24: "CSF", 26: "Left-Accumbens-area", 28: "Left-VentralDC",
    41: "Right-Cerebral-White-Matter", 42: "Right-Cerebral-Cortex", 43: "Right-Lateral-Ventricle",
    46: "Right-Cerebellum-White-Matter", 47: "Right-Cerebellum-Cortex", 49: "Right-Thalamus", 50: "Right-Caudate",
    51: "Right-Putamen", 52: "Right-Pallidum", 53: "Right-Hippocampus", 54: "Right-Amygdala",
    58: "Right-Accumbens-area", 60: "Right-VentralDC",
}
"""The aseg regions kept, with FreeSurferColorLUT's names (FreeSurfer 6's 10/49 "Thalamus-Proper" are 10/49)."""

SUBSTANTIA_NIGRA = {"L": 27, "R": 59}   # FreeSurferColorLUT: Left/Right-Substancia-Nigra
RED_NUCLEUS = {"L": 291, "R": 292}      # not in FreeSurferColorLUT: ids of our own, in an unused gap (265-330)
DENTATE = {"L": 293, "R": 294}          # idem
IRON_NUCLEI_REGIONS: dict[int, str] = {
    27: "Left-Substancia-Nigra", 59: "Right-Substancia-Nigra",
    291: "Left-Red-Nucleus", 292: "Right-Red-Nucleus",
    293: "Left-Dentate", 294: "Right-Dentate",
}
REGIONS: dict[int, str] = dict(sorted({**ASEG_REGIONS, **IRON_NUCLEI_REGIONS}.items()))
"""Every region of the real-anatomy cohort: FreeSurfer id -> name (background 0 not included)."""

MERGED_INTO: dict[int, int] = {5: 4, 44: 43, 25: 2, 57: 41, 77: 2, 78: 2, 79: 41, 31: 4, 63: 43}
"""aseg ids folded into a kept region: inferior lateral ventricle -> lateral ventricle; lesions and
WM hypointensities -> cerebral white matter; choroid plexus -> lateral ventricle. Other aseg brain
ids (vessel 30/62, 5th ventricle 72, optic chiasm 85 and the like) take their nearest kept region."""

_ASEG_BRAIN_RANGE = (1, 99)
"""aseg ids of brain structures lie in 1..99; SynthSeg's head tissues use 85 (optic chiasm, at the
brain's base) and 100 and above."""
_HEAD_IDS_BELOW_100 = frozenset({85})

EXTRA_CEREBRAL_CSF = 257
"""FreeSurferColorLUT's CSF-ExtraCerebral: what CSF (24) outside the brain mask becomes (head, not a region)."""


def is_brain_id(labels: np.ndarray) -> np.ndarray:
    """Boolean map of the voxels whose id is an aseg brain structure (CSF 24 included)."""
    labels = np.asarray(labels)
    brain = (labels >= _ASEG_BRAIN_RANGE[0]) & (labels <= _ASEG_BRAIN_RANGE[1])
    return brain & ~np.isin(labels, list(_HEAD_IDS_BELOW_100))


def region_table() -> dict[str, int]:
    """The cohort's labels.json: {"background": 0, FreeSurfer name: id, ...} in id order."""
    return {"background": BACKGROUND, **{name: region_id for region_id, name in REGIONS.items()}}

