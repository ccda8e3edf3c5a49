"""`mqsm_convert`: in-house cohort -> $nnUNet_raw/DatasetXXX_NAME (thin CLI over mqsm_nnunet.conversion)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mqsm_nnunet.command import run_command

PROG = "mqsm_convert"

EXAMPLE = """\
example (cohort/labels.json, cohort/sub-001/{t1,field,mask,labels}.nii.gz, ...):
  export nnUNet_raw=/data/nnUNet_raw
  mqsm_convert -i cohort -d 501 -n mQSM --field-units hz --b0 3 --test-subjects sub-009 sub-010
  -> /data/nnUNet_raw/Dataset501_mQSM/{imagesTr,labelsTr,imagesTs,dataset.json}
channels per case: _0000 T1 (zscore), _0001 local field (ppm), _0002 QSM- (ppm), _0003 brain mask.
Subjects without a label map go to imagesTs. See docs/conversion.md.

field maps only (cohort/sub-001/{field,mask}.nii.gz, no T1, no labels; docs/qsm_only.md):
  mqsm_convert -i cohort -d 502 -n MyFields --qsm-only
  mqsm_plan_and_preprocess -d 502 && nnUNetv2_train 502 3d_fullres all -tr mQSMTrainer_QSM -p mQSMPlans
  mqsm_predict -i cohort -o qsm -d 502 -f all -tr mQSMTrainer_QSM       # <case>_qsm.nii.gz
channels per case: _0000 local field, _0001 QSM-, _0002 brain mask; label map = brain mask.
"""


def build_parser() -> argparse.ArgumentParser:
    from mqsm_nnunet.conversion import FIELD_UNITS, FileNames, default_num_processes

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        description="Convert subjects (T1 + local field map + brain mask [+ labels], or field map + mask alone "
                    "with --qsm-only) into an nnU-Net v2 raw "
                    "dataset for mQSM: computes QSM- on each whole field map and writes dataset.json.")
    parser.add_argument("-i", "--input", dest="cohort", required=True, metavar="COHORT",
                        help="cohort folder: one subfolder per subject (its name is the case id)")
    parser.add_argument("-d", "--dataset-id", required=True, type=int, metavar="ID", help="nnU-Net dataset ID (1-999)")
    parser.add_argument("-n", "--name", required=True, metavar="NAME", help="dataset name (letters, digits, _ -)")
    parser.add_argument("--labels", dest="labels_json", metavar="JSON|LUT",
                        help='labels JSON {"region": id, ...} with 0 = background, or a FreeSurferColorLUT-style '
                             "table (id name R G B A; only the ids found in the label maps become regions) "
                             "(default: COHORT/labels.json). Any ids: nnU-Net trains on 0..N, predictions come "
                             "back in yours")
    parser.add_argument("--field-units", type=str.lower, choices=FIELD_UNITS, default="ppm",
                        help="units of the field maps: ppm (default), hz (needs --b0), rad (local phase; "
                             "needs --b0 and --te)")
    parser.add_argument("--b0", type=float, metavar="T", help="field strength in tesla")
    parser.add_argument("--te", type=float, metavar="S", help="echo time in seconds (for --field-units rad)")
    parser.add_argument("--skip-field-size-check", action="store_true",
                        help="convert a field whose size does not fit its units (robust half-range outside "
                             "0.005-0.075 ppm) with a warning instead of refusing it: only for truly unusual fields "
                             "(hemorrhage, calcification); docs/conversion.md")
    parser.add_argument("--b0-dir", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="B0 direction in voxel axes (i, j, k) for every subject (default: a 'B0_dir' in a "
                             "JSON sidecar next to the field map, field.json or params.json, else from each field "
                             "map's affine, world z)")
    parser.add_argument("--thresholds", type=float, nargs=2, metavar=("T1", "T2"), default=(0.1, 0.2),
                        help="TKD thresholds of QSM- at edges and elsewhere (default: 0.1 0.2, paper Eq. 3)")
    parser.add_argument("--qsm-only", action="store_true",
                        help="field maps and masks alone (no T1, no labels): every subject trains the self-"
                             "supervised reconstruction (-tr mQSMTrainer_QSM); the brain mask is the label map")
    parser.add_argument("--test-subjects", nargs="+", default=[], metavar="SUBJECT",
                        help="subjects to put in imagesTs even if they have labels")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing dataset with this ID (only after the new one is complete)")
    parser.add_argument("-np", "--num-processes", type=int, default=default_num_processes(), metavar="N",
                        help=f"subjects converted in parallel (default: {default_num_processes()})")
    defaults = FileNames()
    roles = {"t1": "T1", "field": "local field map", "mask": "brain mask (0/1)",
             "labels": "label map (training subjects)",
             "chi": "optional reference QSM in ppm (copied to qsmTr/ for validation, never an input)"}
    for role, what in roles.items():
        parser.add_argument(f"--{role}-name", default=getattr(defaults, role), metavar="FILE",
                            help=f"{what} in each subject folder (default: {getattr(defaults, role)})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion; exit status 0 on success, 1 on a user error (one line), 2 on bad flags,
    130 / 143 on Ctrl-C / SIGTERM (no dataset written or replaced, no hidden build folder left).
    The library is imported inside, so an interrupt during start-up is reported the same way."""
    return run_command(PROG, build_parser, _convert, argv)


def _convert(args: argparse.Namespace) -> None:
    from mqsm_nnunet.conversion import ConversionOptions, FileNames, convert_cohort

    options = ConversionOptions(
        field_units=args.field_units, b0=args.b0, te=args.te, b0_dir=tuple(args.b0_dir) if args.b0_dir else None,
        thresholds=tuple(args.thresholds),
        file_names=FileNames(args.t1_name, args.field_name, args.mask_name, args.labels_name, args.chi_name),
        qsm_only=args.qsm_only, skip_field_size_check=args.skip_field_size_check)
    print(convert_cohort(args.cohort, args.dataset_id, args.name, labels_json=args.labels_json, options=options,
                         test_subjects=args.test_subjects, overwrite=args.overwrite, num_processes=args.num_processes))


if __name__ == "__main__":
    sys.exit(main())
