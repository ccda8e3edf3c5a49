"""In-house cohort (T1 + local field + brain mask + labels) -> nnU-Net v2 raw dataset for mQSM.

Rooms (docs/conversion.md has the user's view):
- `options`: what a conversion is told (file names, field units, B0, TE, QSM- thresholds);
- `cohort`: the subjects of a cohort folder;
- `field_units`: whether a field map is in the stated units, at any field strength;
- `subject`: one subject validated against its field map and written as four channels
  (T1 z-scored by nnU-Net; local field, QSM- and brain mask as "noNorm", see `dataset_metadata`);
- `dataset`: the whole cohort into `$nnUNet_raw/DatasetXXX_NAME`, built aside and installed at once.
The command line is `mqsm_nnunet/cli/convert.py`; errors here name the data (subject,
file) and, where the fix is an argument, its parameter name in backticks.
"""
from mqsm_nnunet.conversion.cohort import (Subject, check_case_id, discover_inference_subjects,
                                           discover_subjects)
from mqsm_nnunet.conversion.dataset import convert_cohort, dataset_json, default_num_processes, mqsm_block
from mqsm_nnunet.conversion.field_units import field_in_ppm, robust_half_range
from mqsm_nnunet.conversion.options import FIELD_UNITS, ConversionOptions, ConversionWarning, FileNames
from mqsm_nnunet.conversion.subject import convert_for_inference, convert_subject

__all__ = [
    "FIELD_UNITS", "ConversionOptions", "ConversionWarning", "FileNames", "Subject",
    "check_case_id", "discover_subjects", "discover_inference_subjects", "convert_cohort", "convert_subject",
    "convert_for_inference", "dataset_json", "mqsm_block", "default_num_processes", "field_in_ppm",
    "robust_half_range",
]
