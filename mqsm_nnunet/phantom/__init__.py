"""Synthetic phantom cohorts: the embedded default data of the demo and the tests.

Real anatomy (the default of `mqsm_phantom` and the demo): 16 real heads' label maps with FreeSurfer
ids (`anatomies/`, SynthSeg's, Apache-2.0) or the user's own, the iron nuclei aseg lacks added,
measured T1 contrast with SynthSeg-style variety, literature susceptibilities, the field simulated at
about 1 mm, random deformations. The geometric phantom (ellipsoid nuclei, a random gyral pattern)
stays for fast physics tests. See docs/phantom.md.

Modules: real anatomy: `freesurfer` (regions, ids, merges), `iron_nuclei`, `label_maps` (embedded and
user maps, `prepare_anatomy`), `tissue_values` (T1w, chi), `real_subject` (`make_real_subject`);
geometric: `anatomy`, `subject` (`make_subject`, `make_template`); both: `random_fields` (smooth
fields in mm), `cohort` (`write_real_cohort`, `write_cohort`, templates); the `mqsm_phantom` command
is `mqsm_nnunet/cli/phantom.py`.
"""
from mqsm_nnunet.phantom.anatomy import LABELS, REGION_TISSUE, SUSCEPTIBILITY_PPB, TISSUES, Tissue
from mqsm_nnunet.phantom.cohort import (TEMPLATE_FILES, CohortSummary, write_cohort, write_real_cohort,
                                        write_real_template, write_template)
from mqsm_nnunet.phantom.freesurfer import REGIONS, region_table
from mqsm_nnunet.phantom.real_subject import DEFAULT_REAL_VOXEL_SIZE, make_real_subject
from mqsm_nnunet.phantom.subject import (DEFAULT_B0_DIR, DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE,
                                         DEFAULT_T1_NOISE, DEFAULT_VOXEL_SIZE, FIELD_SUPERSAMPLING, PhantomSubject,
                                         PhantomTemplate, grid_affine, make_subject, make_template)

__all__ = [
    "LABELS", "REGION_TISSUE", "SUSCEPTIBILITY_PPB", "TISSUES", "Tissue",
    "PhantomSubject", "make_subject", "grid_affine", "CohortSummary", "write_cohort",
    "PhantomTemplate", "make_template", "write_template", "TEMPLATE_FILES",
    "DEFAULT_SHAPE", "DEFAULT_VOXEL_SIZE", "DEFAULT_B0_DIR", "DEFAULT_FIELD_NOISE", "DEFAULT_T1_NOISE",
    "DEFAULT_CHI_VARIATION", "FIELD_SUPERSAMPLING",
    "REGIONS", "region_table", "make_real_subject", "write_real_cohort", "write_real_template",
    "DEFAULT_REAL_VOXEL_SIZE",
]
