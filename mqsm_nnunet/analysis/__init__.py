"""Regional brain-iron analysis in native space (paper Sect. 3.3, Table 2).

From a QSM map (ppm) and a segmentation of the same subject on the same grid, no atlas registration:
per subject and region the voxel count, volume and the mean / std / median susceptibility in ppb
after subtracting a susceptibility reference; a cohort summary per region; and, given a second set
(ground-truth labels and/or true susceptibility, or another method), a paired t-test per region laid
out like the paper's Table 2.

Rooms: `results` (what is computed), `regions` (regions and the susceptibility reference),
`statistics` (the numbers; conventions in its docstring and docs/iron.md), `io` (reading and
checking the inputs), `report` (CSV, Markdown, plot), `pipeline` (`run_iron_analysis`), `table2`;
the command `mqsm_iron` is `mqsm_nnunet/cli/iron.py`.
"""
from mqsm_nnunet.analysis.pipeline import run_iron_analysis
from mqsm_nnunet.analysis.regions import parse_reference
from mqsm_nnunet.analysis.report import OUTPUT_FILES
from mqsm_nnunet.analysis.results import (PPB_PER_PPM, CohortRegion, IronReport, RegionComparison, RegionStats,
                                          SusceptibilityReference)
from mqsm_nnunet.analysis.statistics import (cohort_summary, erode_brain_edge, paired_comparison, regional_statistics,
                                             significance_mark)

__all__ = [
    "PPB_PER_PPM", "OUTPUT_FILES", "SusceptibilityReference", "RegionStats", "CohortRegion", "RegionComparison",
    "IronReport", "parse_reference", "erode_brain_edge", "regional_statistics", "cohort_summary",
    "paired_comparison", "significance_mark", "run_iron_analysis",
]
