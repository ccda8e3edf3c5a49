"""What `mqsm_evaluate` (`cli/evaluate.py`) computes: QSM metrics (paper Table 1) and segmentation
metrics (paper Table 3) of a folder of predictions against references.

QSM: every ``<case>_qsm.nii.gz`` in ``--pred`` against ``<case>.nii.gz`` / ``<case>_chi.nii.gz`` in
``--ref``, inside ``<case>.nii.gz`` / ``<case>_mask.nii.gz`` from ``--mask`` (without ``--mask``:
the reference's nonzero voxels). Segmentation: ``<case>.nii.gz`` (or ``_seg``/``_labels``) label
maps in ``--seg-pred`` against ``--seg-ref``, per region, with distances in mm from the reference's
voxel size. Metric definitions: `mqsm_nnunet.metrics` and docs/metrics.md.

Outputs in ``-o OUT``: ``qsm_metrics.csv`` and ``qsm_metrics.md`` (one row per case and a mean
row), and with segmentations ``seg_metrics_per_region.csv`` (one row per case and region, then
per-region means and the mean over regions, with ``case = mean``) and ``seg_metrics.md`` (per-region
means and the mean over regions). All results are computed before anything is written, and the
files are published together (`files.atomic_folder`), so an error leaves no output behind.

Bad input (exit 1, one line naming the file): missing folders or files, case lists that differ,
a pair of files not on one grid (`grid.GRID_TOLERANCE_MM`), a corrupted or unreadable image
(`nifti.read_volume`), a label map with non-integer values, a bad labels file or a label map holding
ids it does not list (`io/labels.py`).
"""
from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mqsm_nnunet.io.cases import pair_cases
from mqsm_nnunet.io.files import atomic_folder
from mqsm_nnunet.io.grid import check_same_grid
from mqsm_nnunet.io.labels import LabelTable, as_label_map, check_label_map_ids
from mqsm_nnunet.io.nifti import Volume, read_volume
from mqsm_nnunet.metrics import QSM_CI_METRICS, SEGMENTATION_METRICS, qsm_ci_metrics, qsm_metrics, segmentation_metrics

QSM_METRICS = ("ssim", "psnr", "nrmse", "hfen", "xsim", "nrmse_demeaned", *QSM_CI_METRICS.values())
"""Keys of a QSM row besides ``case`` (also the CSV header): Table 1, the 2019 variants and QSM-CI's
scorer's (`metrics.qsm_ci_metrics`)."""

Column = tuple[str, str, str]
"""(row key, heading, format spec for floats)."""

QSM_TABLE: tuple[Column, ...] = (
    ("case", "case", ""),
    ("ssim", "SSIM", ".4f"),
    ("psnr", "PSNR (dB)", ".2f"),
    ("nrmse", "NRMSE (%)", ".2f"),
    ("hfen", "HFEN (%)", ".2f"),
    ("qsmci_nrmse", "QSM-CI demeaned NRMSE (%)", ".2f"),
    ("qsmci_nrmse_detrend", "QSM-CI detrended NRMSE (%)", ".2f"),
    ("qsmci_hfen", "QSM-CI HFEN (%)", ".2f"),
    ("qsmci_xsim", "QSM-CI XSIM", ".4f"),
)
"""Paper Table 1 layout, then QSM-CI's scorer's metrics (its leaderboard's)."""

SEG_TABLE: tuple[Column, ...] = (
    ("region", "region", ""),
    ("label", "label", ""),
    ("n", "cases", ""),
    ("dice", "Dice", ".4f"),
    ("recall", "recall", ".4f"),
    ("precision", "precision", ".4f"),
    ("hd95", "HD95 (mm)", ".2f"),
    ("asd", "ASD (mm)", ".2f"),
)
"""Paper Table 3 layout, one row per region and a mean row."""

SEG_CSV_KEYS = ("case", "label", "region", *SEGMENTATION_METRICS)
"""File-name role suffixes accepted for label maps (``_qsm`` maps in the same folder are skipped)."""
MEAN = "mean"
OUTPUT_FILES = ("qsm_metrics.csv", "qsm_metrics.md", "seg_metrics_per_region.csv", "seg_metrics.md")
"""Everything `mqsm_evaluate` writes; outputs of an earlier run that this one does not produce are removed."""


# ----------------------------------------------------------------------------------------------
# files


def _read_matching(path: Path, reference_path: Path, reference: Volume, dtype: type | None = np.float32) -> Volume:
    """Read `path` and check it lies on the grid of the already read `reference`."""
    volume = read_volume(path, dtype=dtype)
    check_same_grid(path, volume.affine, volume.data.shape, reference_path, reference.affine, reference.data.shape)
    return volume


# ----------------------------------------------------------------------------------------------
# evaluation


def evaluate_qsm(
    pred_files: Mapping[str, Path], ref_files: Mapping[str, Path], mask_files: Mapping[str, Path] | None = None
) -> list[dict]:
    """One row per case: ``{"case", "ssim", "psnr" (dB), "nrmse" (%), "hfen" (%), "xsim",
    "nrmse_demeaned" (%), "qsmci_nrmse", "qsmci_nrmse_detrend", "qsmci_hfen" (%), "qsmci_xsim"}``, sorted
    by case; masks from `mask_files` or, if None, the reference's nonzero voxels.

    Raises:
        ValueError: the case lists differ, or a pair of files differs in shape or affine.
        FileNotFoundError: a file is missing.
    """
    cases = pair_cases(dict(pred_files), dict(ref_files), ("predictions", "references"))
    if mask_files is not None:
        pair_cases(dict(pred_files), dict(mask_files), ("predictions", "masks"))
    rows = []
    for case in cases:
        ref_path = Path(ref_files[case])
        ref = read_volume(ref_path)
        pred = _read_matching(Path(pred_files[case]), ref_path, ref)
        mask = None
        if mask_files is not None:
            mask = _read_matching(Path(mask_files[case]), ref_path, ref).data
        try:
            values = {**qsm_metrics(pred.data, ref.data, mask, include_2019=True),
                      **qsm_ci_metrics(pred.data, ref.data, mask)}
        except ValueError as error:
            raise ValueError(f"case '{case}' ({pred_files[case]}): {error}") from error
        rows.append({"case": case, **values})
    return rows


def evaluate_segmentation(
    pred_files: Mapping[str, Path], ref_files: Mapping[str, Path],
    labels: LabelTable | Mapping[str, int] | None = None
) -> list[dict]:
    """One row per case and region: ``{"case", "label", "region", "dice", "recall", "precision",
    "hd95" (mm), "asd" (mm)}``, voxel size from the reference's affine.

    `labels` is the label table (or name -> id) of both maps: every id in either map must be in it,
    so that a prediction in other ids (nnU-Net's consecutive ones, another atlas) is refused rather
    than scored against different regions. Its regions are the rows (a colour table's: the ids found
    in the maps). Without it every nonzero id found in any prediction or reference is scored and named
    ``label_<id>``. A region absent from both maps of a case gets NaN (`metrics.overlap_metrics`).

    Raises:
        ValueError: case lists differ, a pair differs in shape/affine, a map is not integer or holds
            ids `labels` does not list.
    """
    cases = pair_cases(dict(pred_files), dict(ref_files), ("predicted segmentations", "reference segmentations"))
    table = LabelTable.of(labels) if labels is not None else None
    per_case: dict[str, dict[int, dict[str, float]]] = {}
    found: set[int] = set()
    for case in cases:
        pred_path, ref_path = Path(pred_files[case]), Path(ref_files[case])
        ref = read_volume(ref_path, dtype=None)
        pred = _read_matching(pred_path, ref_path, ref, dtype=None)
        pred_labels, ref_labels = as_label_map(pred.data, str(pred_path)), as_label_map(ref.data, str(ref_path))
        pred_ids, ref_ids = set(np.unique(pred_labels).tolist()), set(np.unique(ref_labels).tolist())
        if table is not None:
            check_label_map_ids(pred_ids, table, pred_path)
            check_label_map_ids(ref_ids, table, ref_path)
        found.update((pred_ids | ref_ids) - {0})
        ids = sorted(table.regions.values()) if table is not None and not table.catalogue else \
            sorted((pred_ids | ref_ids) - {0})
        per_case[case] = segmentation_metrics(pred_labels, ref_labels, ids, ref.voxel_size) if ids else {}
    names = table.found_in(found).regions if table is not None else {f"label_{i}": i for i in sorted(found)}
    absent = dict.fromkeys(SEGMENTATION_METRICS, math.nan)
    rows = []
    for case in cases:
        for name, label in sorted(names.items(), key=lambda item: item[1]):
            rows.append({"case": case, "label": label, "region": name, **per_case[case].get(label, absent)})
    return rows


def _mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (NaN if there are none)."""
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


def qsm_mean_row(rows: Sequence[Mapping]) -> dict:
    """The ``case = "mean"`` row: per-metric mean over cases (NaNs skipped)."""
    return {"case": MEAN, **{key: _mean([row[key] for row in rows]) for key in QSM_METRICS}}


def summarize_segmentation(rows: Sequence[Mapping]) -> list[dict]:
    """Per-region means over cases (NaN skipped; ``n`` = cases where the region is in either map),
    then a ``region = "mean"`` row: the mean of the per-region means (paper Table 3)."""
    regions: dict[tuple[int, str], list[Mapping]] = {}
    for row in rows:
        regions.setdefault((row["label"], row["region"]), []).append(row)
    summary = []
    for (label, region), members in sorted(regions.items()):
        summary.append({
            "region": region,
            "label": label,
            "n": sum(not math.isnan(m["dice"]) for m in members),
            **{key: _mean([m[key] for m in members]) for key in SEGMENTATION_METRICS},
        })
    overall = {"region": MEAN, "label": "", "n": len({row["case"] for row in rows})}
    overall.update({key: _mean([s[key] for s in summary]) for key in SEGMENTATION_METRICS})
    return summary + [overall]


# ----------------------------------------------------------------------------------------------
# tables


def _format(value, spec: str) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return format(value, spec)
    return str(value)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[Column]) -> str:
    """A GitHub markdown table of `rows` with `columns` = (key, heading, float format) triples;
    NaN prints as ``n/a``."""
    lines = [
        "| " + " | ".join(heading for _, heading, _ in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_format(row[key], spec) for key, _, spec in columns) + " |")
    return "\n".join(lines) + "\n"


def csv_text(rows: Sequence[Mapping], keys: Sequence[str]) -> str:
    """CSV with header `keys`; floats at full precision (``repr``), so they read back exactly."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow([row[key] for key in keys])
    return buffer.getvalue()


def write_outputs(out_dir: str | os.PathLike, files: Mapping[str, str]) -> list[Path]:
    """Write ``{file name: text}`` into `out_dir` all together (`files.atomic_folder`); earlier
    outputs (`OUTPUT_FILES`) this run does not produce are removed."""
    out_dir = Path(out_dir)
    with atomic_folder(out_dir, merge=True, owned=OUTPUT_FILES) as build:
        for name, text in files.items():
            (build / name).write_text(text)
    return [out_dir / name for name in files]
