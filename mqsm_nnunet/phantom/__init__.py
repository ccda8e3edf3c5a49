"""Synthetic phantom cohort: the embedded default data of the demo and the tests.

A head-shaped brain with lobar cortex, white matter, ventricles and CSF, deep grey nuclei and veins,
literature susceptibilities (QSM challenge 2.0 head phantom), T1 contrast, per-subject anatomical and
susceptibility variation, field noise and optional oblique B0. See docs/phantom.md.

Modules: `anatomy` (label table, tissue values, shapes), `random_fields` (smooth fields in mm),
`subject` (`make_subject`, `make_template`), `cohort` (`write_cohort`, `write_template`); the
`mqsm_phantom` command is `mqsm_nnunet/cli/phantom.py`.
"""
from mqsm_nnunet.phantom.anatomy import LABELS, REGION_TISSUE, SUSCEPTIBILITY_PPB, TISSUES, Tissue
from mqsm_nnunet.phantom.cohort import TEMPLATE_FILES, CohortSummary, write_cohort, write_template
from mqsm_nnunet.phantom.subject import (DEFAULT_B0_DIR, DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE,
                                         DEFAULT_T1_NOISE, DEFAULT_VOXEL_SIZE, FIELD_SUPERSAMPLING, PhantomSubject,
                                         PhantomTemplate, grid_affine, make_subject, make_template)

__all__ = [
    "LABELS", "REGION_TISSUE", "SUSCEPTIBILITY_PPB", "TISSUES", "Tissue",
    "PhantomSubject", "make_subject", "grid_affine", "CohortSummary", "write_cohort",
    "PhantomTemplate", "make_template", "write_template", "TEMPLATE_FILES",
    "DEFAULT_SHAPE", "DEFAULT_VOXEL_SIZE", "DEFAULT_B0_DIR", "DEFAULT_FIELD_NOISE", "DEFAULT_T1_NOISE",
    "DEFAULT_CHI_VARIATION", "FIELD_SUPERSAMPLING",
]
