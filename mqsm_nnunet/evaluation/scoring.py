"""Held-out scores of a trained model, as the demo and bench_learning report them.

Segmentation: Dice per region, its mean over regions (paper Table 3) and over the region groups
where QSM should matter most (deep grey nuclei: iron-rich, low T1 contrast) against cortex and the
rest. QSM: the 2016-challenge metrics against the true susceptibility (docs/metrics.md). Both read
the files a user would have: predictions, references and masks on disk.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mqsm_nnunet.analysis.table2 import REGION_GROUPS, region_group
from mqsm_nnunet.evaluation.evaluate import evaluate_qsm, evaluate_segmentation, qsm_mean_row, summarize_segmentation


def segmentation_scores(pred_files: Mapping[str, Path], ref_files: Mapping[str, Path],
                        labels: Mapping[str, int]) -> dict:
    """{"mean_dice", "groups": {group: mean Dice}, "regions": {region: Dice}} over held-out cases.

    A region's Dice is its mean over the cases (evaluation.summarize_segmentation); a group's is the
    mean of its regions' Dice; the mean is over all labelled regions (background excluded).
    """
    labels = {name: value for name, value in labels.items() if value != 0}
    summary = summarize_segmentation(evaluate_segmentation(pred_files, ref_files, labels))
    regions = {row["region"]: float(row["dice"]) for row in summary if row["region"] in labels}
    groups = {}
    for group in REGION_GROUPS:
        values = [d for region, d in regions.items() if region_group(region) == group and not math.isnan(d)]
        groups[group] = float(np.mean(values)) if values else math.nan
    return {"mean_dice": float(np.nanmean(list(regions.values()))), "groups": groups, "regions": regions}


def qsm_scores(pred_files: Mapping[str, Path], chi_files: Mapping[str, Path],
               mask_files: Mapping[str, Path]) -> dict[str, float]:
    """Mean over cases of SSIM, PSNR, NRMSE (%), HFEN (%), XSIM, demeaned NRMSE against the truth."""
    row = qsm_mean_row(evaluate_qsm(pred_files, chi_files, mask_files))
    return {key: float(value) for key, value in row.items() if key != "case"}
