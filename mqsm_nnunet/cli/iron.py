"""`mqsm_iron`: regional brain-iron statistics from folders of QSM maps and segmentations.

Exit status 0; 1 for a data error (one line naming the file); 2 for bad flags; 130 / 143 when
interrupted (no output folder half-written). The analysis is imported inside `run_command`.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.command import run_command

PROG = "mqsm_iron"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_iron",
        description="Regional brain-iron statistics (ppb) from QSM maps (ppm) and segmentations in native "
                    "space; optional paired comparison against a second set (paper Table 2).")
    parser.add_argument("--qsm", required=True, type=Path, metavar="DIR",
                        help="QSM maps <case>_qsm.nii.gz (or <case>.nii.gz), ppm")
    parser.add_argument("--seg", required=True, type=Path, metavar="DIR", help="segmentations <case>.nii.gz")
    parser.add_argument("--labels", required=True, type=Path, metavar="JSON|LUT",
                        help="the segmentations' label table: a labels JSON (name -> id), an nnU-Net dataset.json "
                             "(your own ids, as mqsm_predict writes them) or a FreeSurferColorLUT-style table "
                             "(id name R G B A; rows for the ids found). A segmentation holding an id the table "
                             "does not list is refused, naming both files")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--reference", nargs="+", default=["none"], metavar="none|brain|LABEL",
                        help="susceptibility reference subtracted per subject: none (default), brain (mean "
                             "over all labelled voxels) or label names/ids (mean over their union)")
    parser.add_argument("--compare-qsm", type=Path, metavar="DIR",
                        help="QSM maps of the reference set (default: --qsm)")
    parser.add_argument("--compare-seg", type=Path, metavar="DIR",
                        help="segmentations of the reference set (default: --seg)")
    parser.add_argument("--compare", nargs=3, action="append", metavar=("NAME", "QSMDIR", "SEGDIR"),
                        help="one more set (e.g. a registration method: the same QSM with its labels) tested "
                             "against the reference set beside this one; repeat it for several: writes the "
                             "paper's Table 2 layout (table2.md, table2.csv, ...; docs/iron.md)")
    parser.add_argument("--set-names", nargs=2, metavar=("THIS", "REFERENCE"), default=("This set", "Reference set"),
                        help="display names of this set and the reference set (default: 'This set' 'Reference set')")
    parser.add_argument("--mask", type=Path, metavar="DIR",
                        help="brain masks <case>_mask.nii.gz or <case>.nii.gz (default: non-zero labels)")
    parser.add_argument("--erode-mm", type=float, default=0.0, metavar="MM",
                        help="leave out voxels within MM of the brain-mask edge (default 0)")
    return parser


def _run(args: argparse.Namespace) -> None:
    from mqsm_nnunet.analysis.pipeline import run_iron_analysis
    from mqsm_nnunet.io.cases import collect_cases, qsm_files_in, segmentation_files_in

    if args.compare:
        _run_table2(args)
        return
    report = run_iron_analysis(
        qsm_files_in(args.qsm),
        segmentation_files_in(args.seg),
        args.labels,
        args.out,
        reference=args.reference,
        compare_qsm_files=qsm_files_in(args.compare_qsm) if args.compare_qsm else None,
        compare_seg_files=segmentation_files_in(args.compare_seg) if args.compare_seg else None,
        mask_files=collect_cases(args.mask) if args.mask else None,
        erode_mm=args.erode_mm,
        set_names=tuple(args.set_names),
    )
    print(f"{PROG}: {len(report.subjects)} subjects, {len(report.summary)} regions, "
          f"reference {report.reference.short_name()}; wrote {', '.join(report.files)} to {report.out_dir}")


def _run_table2(args: argparse.Namespace) -> None:
    """This set, every --compare set and the reference set in one Table 2 (`analysis.table2`)."""
    from mqsm_nnunet.analysis.table2 import run_table2
    from mqsm_nnunet.io.cases import collect_cases, qsm_files_in, segmentation_files_in
    from mqsm_nnunet.command import UsageError

    if args.compare_qsm is None and args.compare_seg is None:
        raise UsageError("--compare sets are tested against the reference set: give `compare_qsm` and/or "
                         "`compare_seg`")
    this_name, reference_name = args.set_names
    names = [this_name, *(name for name, _, _ in args.compare)]
    if len(set(names)) < len(names) or reference_name in names:
        raise UsageError(f"set names must differ from each other and from the reference's: {names}, {reference_name!r}")
    columns = {this_name: (qsm_files_in(args.qsm), segmentation_files_in(args.seg))}
    for name, qsm_dir, seg_dir in args.compare:
        columns[name] = (qsm_files_in(qsm_dir), segmentation_files_in(seg_dir))
    reference_set = (reference_name, qsm_files_in(args.compare_qsm) if args.compare_qsm else None,
                     segmentation_files_in(args.compare_seg) if args.compare_seg else None)
    table = run_table2(columns, reference_set, args.labels, args.out, reference=args.reference,
                       mask_files=collect_cases(args.mask) if args.mask else None, erode_mm=args.erode_mm)
    print(f"{PROG}: {len(table.columns)} sets against {reference_name}, {len(table.groups)} regions; wrote "
          f"{', '.join(table.files)} and each set's report to {table.out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_iron`: returns 0 on success, 1 on a data error (message on stderr), 2 on bad flags."""
    return run_command(PROG, build_parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
