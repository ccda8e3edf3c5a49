"""T1-weighted intensity and susceptibility of each region of the real-anatomy cohort.

T1w: measured (median / white-matter median) on the MNI152 2009c T1 with AAL3 and the template's tissue
maps by `scripts/measure_t1_contrast.py` (its docstring gives the rules); the dentate, which no atlas
there labels, is assumed a little darker than cerebellar white matter. An average of 152 heads blurs
small nuclei into their surroundings, so their measured contrast is a lower bound; the substantia
nigra is 2.6 % darker and the red nucleus 3 % brighter than a 2-voxel shell around them: barely
visible on T1, as in vivo.

Susceptibility (ppb): the QSM challenge 2.0 head phantom's values (Marques et al. 2021, the same as the
geometric phantom's `anatomy.TISSUES`) where it has the structure; the rest are assumptions, marked.
"""
from __future__ import annotations

from mqsm_nnunet.phantom.anatomy import TISSUES

T1W_MEASURED = {
    "white_matter": 1.000, "cortex": 0.726, "caudate": 0.812, "putamen": 0.861, "pallidum": 0.897,
    "thalamus": 0.852, "accumbens": 0.753, "hippocampus": 0.722, "amygdala": 0.740, "substantia_nigra": 0.848,
    "red_nucleus": 0.883, "cerebellar_cortex": 0.762, "cerebellar_white_matter": 0.946, "brainstem": 0.839,
    "ventral_dc": 0.857, "csf": 0.318,
}
"""T1w / white matter, median over the structure on the MNI152 2009c T1 (scripts/measure_t1_contrast.py)."""
T1W_ASSUMED = {"dentate": 0.90}

CHI_ASSUMED_PPB = {
    "hippocampus": 20.0, "amygdala": 20.0,           # grey-matter value
    "accumbens": 30.0,                               # between cortex and caudate
    "ventral_dc": 0.0,                               # peduncle (white matter) with hypothalamus and STN
    "cerebellar_white_matter": -30.0,                # white-matter value
}

_CHI_FROM_TISSUE = {
    "white_matter": "white_matter", "cortex": "cortex", "caudate": "caudate", "putamen": "putamen",
    "pallidum": "globus_pallidus", "thalamus": "thalamus", "substantia_nigra": "substantia_nigra",
    "red_nucleus": "red_nucleus", "dentate": "dentate", "cerebellar_cortex": "cerebellar_cortex",
    "brainstem": "brainstem", "csf": "csf",
}
VEIN_CHI_PPB = TISSUES["veins"].chi_ppb

STRUCTURE_OF_REGION: dict[int, str] = {
    2: "white_matter", 41: "white_matter", 3: "cortex", 42: "cortex", 4: "csf", 43: "csf", 14: "csf", 15: "csf",
    24: "csf", 7: "cerebellar_white_matter", 46: "cerebellar_white_matter", 8: "cerebellar_cortex",
    47: "cerebellar_cortex", 10: "thalamus", 49: "thalamus", 11: "caudate", 50: "caudate", 12: "putamen",
    51: "putamen", 13: "pallidum", 52: "pallidum", 16: "brainstem", 17: "hippocampus", 53: "hippocampus",
    18: "amygdala", 54: "amygdala", 26: "accumbens", 58: "accumbens", 28: "ventral_dc", 60: "ventral_dc",
    27: "substantia_nigra", 59: "substantia_nigra", 291: "red_nucleus", 292: "red_nucleus",
    293: "dentate", 294: "dentate",
}
"""FreeSurfer region id -> structure (left and right share one)."""


def t1w(structure: str) -> float:
    """T1-weighted intensity of a structure relative to white matter (measured, else assumed)."""
    return T1W_MEASURED.get(structure, T1W_ASSUMED.get(structure, 0.0))


def chi_ppb(structure: str) -> float:
    """Literature susceptibility of a structure in ppb (challenge 2.0 phantom, else assumed)."""
    if structure in _CHI_FROM_TISSUE:
        return TISSUES[_CHI_FROM_TISSUE[structure]].chi_ppb
    return CHI_ASSUMED_PPB[structure]
