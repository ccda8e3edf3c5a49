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
    parser.add_argument("--labels", required=True, type=Path, metavar="JSON",
                        help="name -> label id, or an nnU-Net dataset.json")
    parser.add_argument("-o", "--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--reference", nargs="+", default=["none"], metavar="none|brain|LABEL",
                        help="susceptibility reference subtracted per subject: none (default), brain (mean "
                             "over all labelled voxels) or label names/ids (mean over their union)")
    parser.add_argument("--compare-qsm", type=Path, metavar="DIR",
                        help="QSM maps of the reference set (default: --qsm)")
    parser.add_argument("--compare-seg", type=Path, metavar="DIR",
                        help="segmentations of the reference set (default: --seg)")
    parser.add_argument("--mask", type=Path, metavar="DIR",
                        help="brain masks <case>_mask.nii.gz or <case>.nii.gz (default: non-zero labels)")
    parser.add_argument("--erode-mm", type=float, default=0.0, metavar="MM",
                        help="leave out voxels within MM of the brain-mask edge (default 0)")
    return parser


def _run(args: argparse.Namespace) -> None:
    from mqsm_nnunet.analysis.pipeline import run_iron_analysis
    from mqsm_nnunet.cases import collect_cases, qsm_files_in, segmentation_files_in

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
    )
    print(f"{PROG}: {len(report.subjects)} subjects, {len(report.summary)} regions, "
          f"reference {report.reference.short_name()}; wrote {', '.join(report.files)} to {report.out_dir}")


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_iron`: returns 0 on success, 1 on a data error (message on stderr), 2 on bad flags."""
    return run_command(PROG, build_parser, _run, argv)


if __name__ == "__main__":
    sys.exit(main())
