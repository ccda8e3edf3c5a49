"""`mqsm_evaluate`: QSM metrics (paper Table 1) and segmentation metrics (paper Table 3) of a folder of
predictions against references; the tables and the rules are `mqsm_nnunet.evaluation.evaluate`'s."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.command import UsageError, run_command
from mqsm_nnunet.evaluation.evaluate import (QSM_METRICS, QSM_TABLE, SEG_CSV_KEYS, SEG_TABLE, MEAN, csv_text,
                                             evaluate_qsm, evaluate_segmentation, markdown_table, qsm_mean_row,
                                             summarize_segmentation, write_outputs)
from mqsm_nnunet.io.cases import collect_cases, segmentation_files_in
from mqsm_nnunet.io.files import writable_folder
from mqsm_nnunet.io.labels import LabelTable, read_labels


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_evaluate",
        description="QSM metrics (SSIM, PSNR, NRMSE, HFEN; 2016 QSM challenge definitions) and segmentation "
        "metrics (Dice, recall, precision, HD95, ASD) of predictions against references. See docs/metrics.md.",
    )
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted QSM maps <case>_qsm.nii.gz (ppm)")
    parser.add_argument(
        "--ref", required=True, type=Path, help="folder of reference maps <case>.nii.gz or <case>_chi.nii.gz (ppm)"
    )
    parser.add_argument("--mask", type=Path, help="folder of evaluation masks <case>.nii.gz or <case>_mask.nii.gz "
                        "(default: the reference's nonzero voxels)")
    parser.add_argument("--seg-pred", type=Path, help="folder of predicted label maps <case>.nii.gz (may be --pred)")
    parser.add_argument("--seg-ref", type=Path, help="folder of reference label maps <case>.nii.gz")
    parser.add_argument("--labels", type=Path, metavar="JSON|LUT",
                        help="labels JSON {region: id}, an nnU-Net dataset.json (your ids) or a FreeSurferColorLUT-"
                             "style table; both label maps must use its ids, or the command refuses (default: every "
                             "nonzero id found, named label_<id>)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    return parser


def _regions_table(path: Path) -> LabelTable:
    """`--labels` read by `labels.read_labels`; a table naming nothing but background is refused."""
    table = read_labels(path)
    if not table.regions:
        raise ValueError(f"{path}: no foreground label (only background 0)")
    return table


def run(args: argparse.Namespace) -> dict[str, str]:
    """Compute every table for parsed arguments; returns ``{file name: text}`` (nothing written)."""
    pred_files = collect_cases(args.pred, suffix="_qsm")
    ref_files = collect_cases(args.ref)
    mask_files = collect_cases(args.mask) if args.mask is not None else None
    rows = evaluate_qsm(pred_files, ref_files, mask_files)
    rows.append(qsm_mean_row(rows))
    region = f"masks from {args.mask}" if args.mask is not None else "the reference's nonzero voxels (no --mask given)"
    outputs = {
        "qsm_metrics.csv": csv_text(rows, ("case", *QSM_METRICS)),
        "qsm_metrics.md": (
            f"# QSM metrics\n\nPredictions {args.pred} vs references {args.ref}, inside {region}. "
            "2016 QSM challenge definitions (docs/metrics.md); PSNR peak = reference range in the mask.\n\n"
            + markdown_table(rows, QSM_TABLE)
        ),
    }
    if args.seg_pred is not None:
        labels = _regions_table(args.labels) if args.labels is not None else None
        seg_rows = evaluate_segmentation(
            segmentation_files_in(args.seg_pred), segmentation_files_in(args.seg_ref), labels
        )
        summary = summarize_segmentation(seg_rows)
        means = [{"case": MEAN, **row} for row in summary]
        outputs["seg_metrics_per_region.csv"] = csv_text(seg_rows + means, SEG_CSV_KEYS)
        outputs["seg_metrics.md"] = (
            f"# Segmentation metrics\n\nPredictions {args.seg_pred} vs references {args.seg_ref}: per-region means "
            "over cases (NaN skipped; 'cases' = cases where the region is in either map), then the mean over "
            "regions. HD95 and ASD in mm.\n\n" + markdown_table(summary, SEG_TABLE)
        )
    return outputs


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `mqsm_evaluate`: exit 0, 1 for a data error (one line), 2 for bad flags."""
    return run_command("mqsm_evaluate", _parser, _evaluate, argv)


def _evaluate(args: argparse.Namespace) -> None:
    if (args.seg_pred is None) != (args.seg_ref is None):
        raise UsageError("`seg_pred` and `seg_ref` go together")
    if args.labels is not None and args.seg_pred is None:
        raise UsageError("`labels` needs `seg_pred` and `seg_ref`")
    writable_folder(args.output)  # refuse before the work, not after
    outputs = run(args)
    for path in write_outputs(args.output, outputs):
        print(f"wrote {path}")
    print()
    print(outputs["qsm_metrics.md"])
    if "seg_metrics.md" in outputs:
        print(outputs["seg_metrics.md"])


if __name__ == "__main__":
    sys.exit(main())
