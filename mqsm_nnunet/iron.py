"""Regional brain-iron analysis in native space (paper Sect. 3.3, Table 2), and the `mqsm_iron` command.

From a QSM map (ppm) and a segmentation of the same subject on the same grid, no atlas registration:
per subject and region the voxel count, volume and the mean / std / median susceptibility in ppb
after subtracting a susceptibility reference; a cohort summary per region; and, given a second set
(ground-truth labels and/or true susceptibility, or another method), a paired t-test per region laid
out like the paper's Table 2.

Conventions (docs/iron.md has the reasons):
- Units: maps in ppm, every table in ppb (ppb = 1000 * ppm).
- Susceptibility reference, subtracted per subject before all statistics: 'none'; 'brain' = mean
  over all labelled (non-zero) voxels; or label names / ids = mean over the union of those labels.
  It is computed over the same (eroded) voxels as the regions.
- Per-subject std over a region's voxels uses ddof=0 (the spread of those voxels); the cohort std of
  per-subject means uses ddof=1 (a sample estimate, as the paired t-test uses).
- Edge erosion: a voxel is dropped when the nearest voxel outside the brain mask lies within
  `erode_mm` (Euclidean distance between voxel centres, in mm); voxels outside the mask are dropped too.
- Paired test: scipy.stats.ttest_rel(this, reference) over subjects with the region in both sets;
  '**' p <= 0.01, '*' 0.01 < p <= 0.05. When the differences have zero variance the test statistic is
  undefined: identical sets give p = 1 (t = 0), a constant non-zero shift gives p = 0 (t = +-inf).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage, stats

from mqsm_nnunet.cases import collect_cases, pair_cases, qsm_files_in, segmentation_files_in
from mqsm_nnunet.figures import iron_plot
from mqsm_nnunet.grid import check_voxel_size
from mqsm_nnunet.nifti import Volume, read_volume

__all__ = [
    "PPB_PER_PPM",
    "OUTPUT_FILES",
    "SusceptibilityReference",
    "RegionStats",
    "CohortRegion",
    "RegionComparison",
    "IronReport",
    "load_labels",
    "parse_reference",
    "erode_brain_edge",
    "regional_statistics",
    "cohort_summary",
    "paired_comparison",
    "significance_mark",
    "run_iron_analysis",
    "main",
]

PPB_PER_PPM = 1000.0
AFFINE_TOLERANCE_MM = 1e-3
"""Largest allowed difference between two files' affines (NIfTI stores them as float32)."""
ZERO_VARIANCE_RTOL = 1e-12
"""Paired differences whose spread is below this fraction of their mean count as constant."""
OUTPUT_FILES = ("regional_stats.csv", "cohort_summary.csv", "comparison.csv", "iron_report.md", "iron_plot.png")

REGIONAL_COLUMNS = ("set", "case", "region", "label", "n_voxels", "volume_mm3", "mean_ppb", "std_ppb",
                    "median_ppb", "subtracted_ppb")
COHORT_COLUMNS = ("set", "region", "label", "n_subjects", "mean_ppb", "std_ppb", "mean_volume_mm3")
COMPARISON_COLUMNS = ("region", "label", "n_subjects", "reference_mean_ppb", "reference_std_ppb",
                      "this_mean_ppb", "this_std_ppb", "mean_difference_ppb", "t_statistic", "p_value",
                      "significance", "note")


# ----------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SusceptibilityReference:
    """What is subtracted from every susceptibility value: kind 'none', 'brain' or 'labels'."""

    kind: str
    label_ids: tuple[int, ...] = ()
    label_names: tuple[str, ...] = ()

    def short_name(self) -> str:
        """'none', 'brain' or the label names joined by '+' (for titles)."""
        return "+".join(self.label_names) if self.kind == "labels" else self.kind

    def describe(self) -> str:
        if self.kind == "none":
            return "none (absolute susceptibility as in the QSM maps)"
        if self.kind == "brain":
            return "'brain': mean over all labelled (non-background) voxels, per subject"
        names = ", ".join(f"{n} ({i})" for n, i in zip(self.label_names, self.label_ids))
        return f"mean over the union of labels {names}, per subject"


@dataclass(frozen=True)
class RegionStats:
    """One region of one subject; susceptibility in ppb after subtracting `subtracted_ppb`.

    std is over the region's voxels with ddof=0. An empty region (absent, or eroded away) has
    n_voxels 0 and NaN statistics.
    """

    region: str
    label: int
    n_voxels: int
    volume_mm3: float
    mean_ppb: float
    std_ppb: float
    median_ppb: float
    subtracted_ppb: float


@dataclass(frozen=True)
class CohortRegion:
    """Mean and std (ddof=1; NaN below 2 subjects) across subjects of the per-subject means, in ppb."""

    region: str
    label: int
    n_subjects: int
    mean_ppb: float
    std_ppb: float
    mean_volume_mm3: float


@dataclass(frozen=True)
class RegionComparison:
    """Paired comparison of one region across subjects: this set vs the reference set (ppb).

    `mean_difference_ppb` = mean of (this - reference); `note` says why p is NaN, or that the
    differences had zero variance.
    """

    region: str
    label: int
    n_subjects: int
    reference_mean_ppb: float
    reference_std_ppb: float
    this_mean_ppb: float
    this_std_ppb: float
    mean_difference_ppb: float
    t_statistic: float
    p_value: float
    significance: str
    note: str = ""


@dataclass
class IronReport:
    """Everything `run_iron_analysis` computed and where it wrote it."""

    out_dir: Path
    reference: SusceptibilityReference
    erode_mm: float
    set_names: tuple[str, str]
    subjects: dict[str, list[RegionStats]]
    summary: list[CohortRegion]
    reference_subjects: dict[str, list[RegionStats]] | None = None
    reference_summary: list[CohortRegion] | None = None
    comparison: list[RegionComparison] | None = None
    inputs: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------
# labels and reference
# ----------------------------------------------------------------------------------------------------
def _validate_labels(labels: Mapping, source: str) -> dict[str, int]:
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{source}: expected a non-empty JSON object name -> label id")
    checked: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: label {name!r} is region-based ({value}); mqsm_iron needs one "
                             "integer id per region")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{source}: label {name!r} has id {value!r}; ids must be non-negative integers")
        checked[str(name)] = int(value)
    ids = list(checked.values())
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{source}: label ids {duplicates} are used by more than one name")
    return dict(sorted(checked.items(), key=lambda item: item[1]))


def load_labels(path: str | os.PathLike) -> dict[str, int]:
    """Region name -> label id from a JSON file: either that mapping itself or an nnU-Net
    dataset.json (its "labels" entry). Id 0 is background whether listed or not.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not JSON, region-based labels, ids not non-negative integers, or duplicated ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels JSON (--labels)")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if isinstance(content, dict) and isinstance(content.get("labels"), dict):
        content = content["labels"]  # an nnU-Net dataset.json
    return _validate_labels(content, str(path))


def _region_ids(region_ids: Mapping[str, int]) -> dict[str, int]:
    regions = _validate_labels(region_ids, "region_ids")
    if 0 in regions.values():
        raise ValueError("region_ids: id 0 is background, not a region; leave it out")
    return regions


def parse_reference(
    reference: str | int | Sequence[str | int] | SusceptibilityReference, region_ids: Mapping[str, int]
) -> SusceptibilityReference:
    """Resolve 'none', 'brain', or label names / ids (a single one or a list) against `region_ids`.

    The keywords win over a region that happens to be called 'none' or 'brain'. Digit strings that
    are not region names are read as ids.

    Raises:
        ValueError: an unknown name or id, background (0), or a keyword mixed with labels.
    """
    if isinstance(reference, SusceptibilityReference):
        return reference
    items = [reference] if isinstance(reference, (str, int, np.integer)) else list(reference)
    if not items:
        raise ValueError("reference is empty: use 'none', 'brain' or one or more label names")
    keywords = [item for item in items if isinstance(item, str) and item in ("none", "brain")]
    if keywords:
        if len(items) > 1:
            raise ValueError(f"reference {items}: '{keywords[0]}' cannot be combined with other entries")
        return SusceptibilityReference(keywords[0])
    names_by_id = {i: n for n, i in region_ids.items()}
    ids: list[int] = []
    for item in items:
        if isinstance(item, str) and item in region_ids:
            label = region_ids[item]
        elif isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit()):
            label = int(item)
            if label == 0:
                raise ValueError("reference: label 0 is background; use 'brain' for the whole labelled brain")
            if label not in names_by_id:
                raise ValueError(f"reference: label id {label} is not in the labels "
                                 f"(known ids: {sorted(names_by_id)})")
        else:
            raise ValueError(f"reference: unknown label {item!r}; use 'none', 'brain' or names from the "
                             f"labels: {', '.join(region_ids)}")
        if label not in ids:
            ids.append(label)
    return SusceptibilityReference("labels", tuple(ids), tuple(names_by_id[i] for i in ids))


# ----------------------------------------------------------------------------------------------------
# per-subject statistics
# ----------------------------------------------------------------------------------------------------
def _check_erode_mm(erode_mm: float) -> float:
    if not math.isfinite(erode_mm) or erode_mm < 0:
        raise ValueError(f"erode_mm must be a finite number >= 0 (mm), got {erode_mm!r}")
    return float(erode_mm)


def _label_array(seg: np.ndarray, source: str) -> np.ndarray:
    seg = np.asarray(seg)
    if not np.issubdtype(seg.dtype, np.integer):
        if not np.all(np.isfinite(seg)) or not np.array_equal(seg, np.round(seg)):
            raise ValueError(f"{source}: a segmentation must hold integer labels, found non-integer values")
    return seg.astype(np.int64, copy=False)


def erode_brain_edge(brain_mask: np.ndarray, voxel_size: Sequence[float], erode_mm: float) -> np.ndarray:
    """The brain mask without the voxels whose nearest voxel outside the mask lies within `erode_mm`.

    Distance = Euclidean distance between voxel centres in mm (`distance_transform_edt` with the voxel
    sizes as sampling); the array border counts as outside. So `erode_mm` below the smallest voxel
    size removes nothing, and `erode_mm` = 1 at 1 mm isotropic removes the face-connected outer layer.
    """
    erode_mm = _check_erode_mm(erode_mm)
    brain = np.asarray(brain_mask) != 0
    if erode_mm == 0:
        return brain
    distance = ndimage.distance_transform_edt(np.pad(brain, 1), sampling=check_voxel_size(voxel_size))
    return brain & (distance[1:-1, 1:-1, 1:-1] > erode_mm)


def _reference_ppm(qsm: np.ndarray, seg: np.ndarray, keep: np.ndarray, reference: SusceptibilityReference) -> float:
    if reference.kind == "none":
        return 0.0
    if reference.kind == "brain":
        voxels = keep & (seg != 0)
    else:
        voxels = keep & np.isin(seg, reference.label_ids)
    if not np.any(voxels):
        raise ValueError(f"the susceptibility reference ({reference.describe()}) has no voxels in this "
                         "segmentation (after erosion); choose another --reference or a smaller --erode-mm")
    return float(qsm[voxels].mean())


def regional_statistics(
    qsm_ppm: np.ndarray,
    seg: np.ndarray,
    region_ids: Mapping[str, int],
    voxel_size: Sequence[float],
    reference: str | int | Sequence[str | int] | SusceptibilityReference = "none",
    erode_mm: float = 0.0,
    brain_mask: np.ndarray | None = None,
) -> list[RegionStats]:
    """Statistics of every region of one subject, in ppb, in `region_ids` order.

    Args:
        qsm_ppm: susceptibility map (ppm), 3D voxel order (i, j, k).
        seg: integer label map on the same grid (0 = background).
        region_ids: region name -> label id (non-zero).
        voxel_size: mm, (i, j, k) order (volume = n_voxels * product).
        reference: 'none', 'brain' or label names / ids (see `parse_reference`).
        erode_mm: drop voxels within this distance of the brain-mask edge (`erode_brain_edge`).
        brain_mask: brain mask for the erosion; default: the non-zero segmentation. Voxels outside
            it are left out of every region.

    Raises:
        ValueError: shapes differ, non-integer labels, non-finite QSM in labelled voxels, bad
            voxel_size / erode_mm / reference, or a reference without voxels.
    """
    qsm = np.asarray(qsm_ppm, dtype=np.float64)
    seg = _label_array(seg, "seg")
    if qsm.ndim != 3 or seg.shape != qsm.shape:
        raise ValueError(f"qsm_ppm and seg must be 3D arrays of one shape, got {qsm.shape} and {seg.shape}")
    if brain_mask is not None and np.shape(brain_mask) != qsm.shape:
        raise ValueError(f"brain_mask has shape {np.shape(brain_mask)}, the QSM {qsm.shape}")
    voxel_size = check_voxel_size(voxel_size)
    regions = _region_ids(region_ids)
    reference = parse_reference(reference, regions)

    keep = erode_brain_edge(seg != 0 if brain_mask is None else brain_mask, voxel_size, erode_mm)
    labelled = keep & (seg != 0)
    if not np.all(np.isfinite(qsm[labelled])):
        raise ValueError("qsm_ppm holds NaN or infinite values inside labelled voxels")
    subtracted_ppb = _reference_ppm(qsm, seg, keep, reference) * PPB_PER_PPM

    # one sort groups all regions' voxels (faster than one full-volume pass per region)
    labels = seg[labelled]
    order = np.argsort(labels, kind="stable")
    labels = labels[order]
    values = qsm[labelled][order] * PPB_PER_PPM - subtracted_ppb
    voxel_volume = float(np.prod(voxel_size))
    result = []
    for name, label in regions.items():
        start, stop = np.searchsorted(labels, label, "left"), np.searchsorted(labels, label, "right")
        region = values[start:stop]
        if region.size:
            mean, std, median = float(region.mean()), float(region.std()), float(np.median(region))
        else:
            mean = std = median = math.nan
        result.append(RegionStats(name, label, int(region.size), region.size * voxel_volume, mean, std,
                                  median, subtracted_ppb))
    return result


# ----------------------------------------------------------------------------------------------------
# cohort statistics
# ----------------------------------------------------------------------------------------------------
def _region_table(per_case: Mapping[str, Sequence[RegionStats]], what: str) -> tuple[list[tuple[str, int]], list[str]]:
    """The (region, label) list shared by all cases, and the sorted cases."""
    if not per_case:
        raise ValueError(f"{what}: no subjects")
    cases = sorted(per_case)
    regions = [(s.region, s.label) for s in per_case[cases[0]]]
    for case in cases[1:]:
        if [(s.region, s.label) for s in per_case[case]] != regions:
            raise ValueError(f"{what}: subject {case} has other regions than {cases[0]}; analyse all "
                             "subjects with one labels table")
    return regions, cases


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof=1) without warnings: NaN where undefined."""
    mean = float(values.mean()) if values.size else math.nan
    std = float(values.std(ddof=1)) if values.size > 1 else math.nan
    return mean, std


def cohort_summary(per_case: Mapping[str, Sequence[RegionStats]]) -> list[CohortRegion]:
    """Per region: mean and std (ddof=1) over subjects of the per-subject means, and the mean volume.

    Subjects where the region is empty are left out of that region (n_subjects counts the rest).
    """
    regions, cases = _region_table(per_case, "cohort_summary")
    summary = []
    for r, (name, label) in enumerate(regions):
        rows = [per_case[case][r] for case in cases]
        means = np.array([row.mean_ppb for row in rows if row.n_voxels])
        volumes = np.array([row.volume_mm3 for row in rows if row.n_voxels])
        mean, std = _mean_std(means)
        summary.append(CohortRegion(name, label, int(means.size), mean, std, _mean_std(volumes)[0]))
    return summary


def significance_mark(p_value: float) -> str:
    """'**' for p <= 0.01, '*' for 0.01 < p <= 0.05, '' otherwise (also for NaN)."""
    if p_value <= 0.01:
        return "**"
    if p_value <= 0.05:
        return "*"
    return ""


def _paired_test(this: np.ndarray, reference: np.ndarray) -> tuple[float, float, str]:
    """(t, p, note) of the paired t-test this vs reference."""
    if this.size < 2:
        return math.nan, math.nan, (f"no paired test: {this.size} subject(s) with this region in both sets, "
                                    "at least 2 needed")
    differences = this - reference
    mean = float(differences.mean())
    spread = float(np.max(np.abs(differences - mean)))
    if spread == 0 or spread <= ZERO_VARIANCE_RTOL * abs(mean):
        if mean == 0:
            return 0.0, 1.0, "the two sets are identical in this region (p = 1 by convention)"
        return math.copysign(math.inf, mean), 0.0, "constant non-zero difference (zero variance; p = 0 by convention)"
    result = stats.ttest_rel(this, reference)
    return float(result.statistic), float(result.pvalue), ""


def paired_comparison(
    this: Mapping[str, Sequence[RegionStats]], reference: Mapping[str, Sequence[RegionStats]]
) -> list[RegionComparison]:
    """Per region, a paired t-test (scipy.stats.ttest_rel) across subjects of this set's per-subject
    means against the reference set's, over the subjects with the region non-empty in both sets.

    Raises:
        ValueError: the two sets have different subjects or regions.
    """
    regions, cases = _region_table(this, "this set")
    other_regions, _ = _region_table(reference, "reference set")
    pair_cases(dict(this), dict(reference), ("this set", "reference set"))
    if regions != other_regions:
        raise ValueError("this set and the reference set have different regions; use one labels table")
    comparisons = []
    for r, (name, label) in enumerate(regions):
        pairs = [(this[case][r].mean_ppb, reference[case][r].mean_ppb) for case in cases
                 if this[case][r].n_voxels and reference[case][r].n_voxels]
        values = np.array(pairs, dtype=float).reshape(-1, 2)
        this_mean, this_std = _mean_std(values[:, 0])
        reference_mean, reference_std = _mean_std(values[:, 1])
        t, p, note = _paired_test(values[:, 0], values[:, 1])
        difference = float((values[:, 0] - values[:, 1]).mean()) if len(values) else math.nan
        comparisons.append(RegionComparison(name, label, len(values), reference_mean, reference_std, this_mean,
                                            this_std, difference, t, p, significance_mark(p), note))
    return comparisons


# ----------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------


def _check_same_grid(first: Volume, first_path: Path, second: Volume, second_path: Path) -> None:
    if first.data.shape != second.data.shape:
        raise ValueError(f"{first_path} has shape {first.data.shape} but {second_path} has shape "
                         f"{second.data.shape}; both must be on the same grid (resample one onto the other)")
    deviation = float(np.max(np.abs(first.affine - second.affine)))
    if deviation > AFFINE_TOLERANCE_MM:
        raise ValueError(f"{first_path} and {second_path} have different affines (up to {deviation:.4g} mm "
                         "apart); both must be in the same native space on the same grid")


def _load_case(qsm_path: Path, seg_path: Path, mask_path: Path | None, known_ids: set[int]):
    """(qsm ppm, labels, mask or None, voxel size) of one case, geometry and label values checked."""
    seg_volume = read_volume(seg_path, dtype=None)
    seg = _label_array(seg_volume.data, str(seg_path))
    unknown = sorted(set(np.unique(seg).tolist()) - known_ids - {0})
    if unknown:
        raise ValueError(f"{seg_path}: label values {unknown} are not in the labels JSON; add them there "
                         "or pass the labels file this segmentation was made with")
    qsm_volume = read_volume(qsm_path, dtype=np.float64)
    _check_same_grid(qsm_volume, qsm_path, seg_volume, seg_path)
    mask = None
    if mask_path is not None:
        mask_volume = read_volume(mask_path, dtype=None)
        _check_same_grid(mask_volume, mask_path, seg_volume, seg_path)
        mask = mask_volume.data != 0
    return qsm_volume.data, seg, mask, seg_volume.voxel_size


def _analyse_set(qsm_files, seg_files, mask_files, regions, reference, erode_mm) -> dict[str, list[RegionStats]]:
    known_ids = set(regions.values())
    per_case = {}
    for case in sorted(qsm_files):
        mask_path = mask_files[case] if mask_files else None
        qsm, seg, mask, voxel_size = _load_case(qsm_files[case], seg_files[case], mask_path, known_ids)
        try:
            per_case[case] = regional_statistics(qsm, seg, regions, voxel_size, reference, erode_mm, mask)
        except ValueError as error:
            raise ValueError(f"case {case} ({qsm_files[case]}, {seg_files[case]}): {error}") from None
    return per_case


def _case_map(files: Mapping[str, str | os.PathLike], what: str) -> dict[str, Path]:
    if not isinstance(files, Mapping) or not files:
        raise ValueError(f"{what}: expected a non-empty mapping case id -> file "
                         "(mqsm_nnunet.cases.qsm_files_in / segmentation_files_in build one from a folder)")
    return {str(case): Path(path) for case, path in files.items()}


def _folder(files: Mapping[str, Path]) -> str:
    folders = sorted({str(path.parent) for path in files.values()})
    return folders[0] if len(folders) == 1 else ", ".join(folders)


# ----------------------------------------------------------------------------------------------------
# outputs
# ----------------------------------------------------------------------------------------------------
def _text(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.10g}"
    return str(value)


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(columns)
        writer.writerows([[_text(value) for value in row] for row in rows])


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.1f}" if math.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _report_markdown(report: IronReport) -> str:
    this_name, reference_name = report.set_names
    cases = sorted(report.subjects)
    erosion = (f"voxels whose nearest voxel outside the brain mask lies within {report.erode_mm:g} mm "
               "(centre-to-centre) are left out of every region and of the reference"
               if report.erode_mm else "no edge erosion")
    lines = [
        "# Regional brain iron",
        "",
        f"- Subjects: {len(cases)} ({', '.join(cases)})",
        "- Units: susceptibility in **ppb** in every table (1 ppb = 0.001 ppm); the QSM maps are in ppm.",
        f"- Susceptibility reference subtracted per subject: {report.reference.describe()}; its value per "
        "subject is the column `subtracted_ppb` of regional_stats.csv.",
        f"- Region masks: {erosion}.",
        "- Per subject: mean, std (ddof=0, over the region's voxels) and median of the voxels; per cohort: "
        "mean ± std (ddof=1) across subjects of the per-subject means.",
    ]
    lines += [f"- {key}: {value}" for key, value in report.inputs.items()]
    sections = [(this_name, report.summary)]
    if report.reference_summary is not None:
        sections.append((reference_name, report.reference_summary))
    for name, summary in sections:
        lines += ["", f"## Cohort summary: {name}", "", "| Region | n | mean ± std (ppb) | mean volume (mm³) |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {row.region} | {row.n_subjects} | {_pm(row.mean_ppb, row.std_ppb)} | "
                  f"{'n/a' if math.isnan(row.mean_volume_mm3) else f'{row.mean_volume_mm3:.1f}'} |" for row in summary]
        if any(row.n_subjects < 2 for row in summary):
            lines += ["", "A region with fewer than 2 subjects shows its mean only: the std across subjects "
                      "needs at least 2."]
    if report.comparison is not None:
        lines += ["", f"## Paired comparison: {this_name} vs {reference_name} (layout of the paper's Table 2)", "",
                  f"| Region | {reference_name} | {this_name} | mean difference (ppb) | p |",
                  "| --- | --- | --- | --- | --- |"]
        for row in report.comparison:
            p = "n/a" if math.isnan(row.p_value) else f"{row.p_value:.3g}"
            difference = "n/a" if math.isnan(row.mean_difference_ppb) else f"{row.mean_difference_ppb:+.1f}"
            lines.append(f"| {row.region} | {_pm(row.reference_mean_ppb, row.reference_std_ppb)} | "
                         f"{row.significance}{_pm(row.this_mean_ppb, row.this_std_ppb)} | {difference} | {p} |")
        lines += ["", f"\\*\\* p ≤ 0.01 and \\* 0.01 < p ≤ 0.05, paired t-test (scipy.stats.ttest_rel) of "
                  f"{this_name} against {reference_name} over subjects; mean difference = {this_name} − "
                  f"{reference_name}."]
        notes = [f"- {row.region}: {row.note}" for row in report.comparison if row.note]
        if notes:
            lines += ["", "Notes:", ""] + notes
    empty = [f"{case}: {s.region}" for case in cases for s in report.subjects[case] if not s.n_voxels]
    if empty:
        lines += ["", f"Empty regions in {this_name} (left out of the cohort statistics): " + "; ".join(empty) + "."]
    return "\n".join(lines) + "\n"


def _write_outputs(report: IronReport, folder: Path) -> list[str]:
    """Write every output of `report` into `folder`; returns the file names written."""
    this_name, reference_name = report.set_names
    sets = [("this", report.subjects, report.summary)]
    if report.reference_subjects is not None:
        sets.append(("reference", report.reference_subjects, report.reference_summary))
    _write_csv(folder / "regional_stats.csv", REGIONAL_COLUMNS,
               [(key, case, s.region, s.label, s.n_voxels, s.volume_mm3, s.mean_ppb, s.std_ppb, s.median_ppb,
                 s.subtracted_ppb) for key, per_case, _ in sets for case in sorted(per_case) for s in per_case[case]])
    _write_csv(folder / "cohort_summary.csv", COHORT_COLUMNS,
               [(key, c.region, c.label, c.n_subjects, c.mean_ppb, c.std_ppb, c.mean_volume_mm3)
                for key, _, summary in sets for c in summary])
    written = ["regional_stats.csv", "cohort_summary.csv"]
    if report.comparison is not None:
        _write_csv(folder / "comparison.csv", COMPARISON_COLUMNS,
                   [(c.region, c.label, c.n_subjects, c.reference_mean_ppb, c.reference_std_ppb, c.this_mean_ppb,
                     c.this_std_ppb, c.mean_difference_ppb, c.t_statistic, c.p_value, c.significance, c.note)
                    for c in report.comparison])
        written.append("comparison.csv")
    (folder / "iron_report.md").write_text(_report_markdown(report))
    regions = [c.region for c in report.summary]
    plotted = {this_name: ([c.mean_ppb for c in report.summary], [c.std_ppb for c in report.summary])}
    marks = None
    if report.comparison is not None:
        plotted = {reference_name: ([c.mean_ppb for c in report.reference_summary],
                                    [c.std_ppb for c in report.reference_summary]), **plotted}
        marks = [c.significance for c in report.comparison]
    iron_plot(folder / "iron_plot.png", regions, plotted, marks=marks,
              title=f"Regional susceptibility (reference: {report.reference.short_name()})")
    return written + ["iron_report.md", "iron_plot.png"]


def _publish(out_dir: Path, write) -> dict[str, Path]:
    """Run `write(folder) -> names` in a fresh folder beside `out_dir`, then move the files in.

    A new `out_dir` appears by one rename; into an existing one the files are moved one by one, and
    outputs of an earlier run that this run does not produce (e.g. comparison.csv) are removed. On
    any error the temporary folder is deleted and `out_dir` is left as it was.
    """
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        names = write(staging)
        if out_dir.exists():
            for name in names:
                os.replace(staging / name, out_dir / name)
            for name in set(OUTPUT_FILES) - set(names):
                (out_dir / name).unlink(missing_ok=True)
            staging.rmdir()
        else:
            os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {name: out_dir / name for name in names}


def run_iron_analysis(
    qsm_files: Mapping[str, str | os.PathLike],
    seg_files: Mapping[str, str | os.PathLike],
    labels: str | os.PathLike | Mapping[str, int],
    out_dir: str | os.PathLike,
    reference: str | int | Sequence[str | int] = "none",
    compare_qsm_files: Mapping[str, str | os.PathLike] | None = None,
    compare_seg_files: Mapping[str, str | os.PathLike] | None = None,
    mask_files: Mapping[str, str | os.PathLike] | None = None,
    erode_mm: float = 0.0,
    set_names: tuple[str, str] = ("This set", "Reference set"),
) -> IronReport:
    """The whole analysis: statistics per subject and region, cohort summary, optional paired
    comparison, and the files regional_stats.csv, cohort_summary.csv, [comparison.csv],
    iron_report.md, iron_plot.png in `out_dir` (written all together or not at all).

    Args:
        qsm_files, seg_files: case id -> QSM (ppm) / segmentation file; same cases in both.
        labels: labels JSON path (name -> id, or an nnU-Net dataset.json) or the mapping itself.
        reference: 'none', 'brain' or label names / ids (`parse_reference`).
        compare_qsm_files, compare_seg_files: the reference set (e.g. true susceptibility and/or
            ground-truth labels); giving one compares, the other defaults to this set's files.
        mask_files: optional case id -> brain mask, used for the erosion (default: non-zero labels)
            and applied to both sets.
        erode_mm: edge erosion in mm (`erode_brain_edge`).
        set_names: display names (report, plot) of this set and the reference set; the CSVs say
            'this' / 'reference'.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: case lists differ, geometry differs, unknown label values, bad arguments.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder; -o needs a folder")
    labels = load_labels(labels) if not isinstance(labels, Mapping) else _validate_labels(labels, "labels")
    regions = {name: label for name, label in labels.items() if label != 0}
    if not regions:
        raise ValueError("the labels hold no region besides background (0)")
    susceptibility_reference = parse_reference(reference, regions)
    erode_mm = _check_erode_mm(erode_mm)
    qsm = _case_map(qsm_files, "qsm_files")
    seg = _case_map(seg_files, "seg_files")
    pair_cases(qsm, seg, (f"QSM ({_folder(qsm)})", f"segmentations ({_folder(seg)})"))
    masks = _case_map(mask_files, "mask_files") if mask_files is not None else None
    if masks is not None:
        pair_cases(qsm, masks, (f"QSM ({_folder(qsm)})", f"masks ({_folder(masks)})"))
    comparing = compare_qsm_files is not None or compare_seg_files is not None
    inputs = {f"{set_names[0]}": f"QSM {_folder(qsm)}, segmentations {_folder(seg)}"}
    if comparing:
        other_qsm = _case_map(compare_qsm_files, "compare_qsm_files") if compare_qsm_files is not None else qsm
        other_seg = _case_map(compare_seg_files, "compare_seg_files") if compare_seg_files is not None else seg
        pair_cases(qsm, other_qsm, (f"QSM ({_folder(qsm)})", f"comparison QSM ({_folder(other_qsm)})"))
        pair_cases(seg, other_seg, (f"segmentations ({_folder(seg)})", f"comparison segmentations ({_folder(other_seg)})"))
        inputs[set_names[1]] = f"QSM {_folder(other_qsm)}, segmentations {_folder(other_seg)}"
    if masks is not None:
        inputs["Brain masks"] = _folder(masks)

    subjects = _analyse_set(qsm, seg, masks, regions, susceptibility_reference, erode_mm)
    report = IronReport(out_dir, susceptibility_reference, erode_mm, tuple(set_names), subjects,
                        cohort_summary(subjects), inputs=inputs)
    if comparing:
        report.reference_subjects = _analyse_set(other_qsm, other_seg, masks, regions, susceptibility_reference,
                                                 erode_mm)
        report.reference_summary = cohort_summary(report.reference_subjects)
        report.comparison = paired_comparison(subjects, report.reference_subjects)
    report.files = _publish(out_dir, lambda folder: _write_outputs(report, folder))
    return report


# ----------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
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


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_iron`: returns 0 on success, 1 on a data error (message on stderr), 2 on bad flags."""
    args = _parser().parse_args(argv)
    try:
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
    except (ValueError, FileNotFoundError) as error:
        print(f"mqsm_iron: error: {error}", file=sys.stderr)
        return 1
    print(f"mqsm_iron: {len(report.subjects)} subjects, {len(report.summary)} regions, "
          f"reference {report.reference.short_name()}; wrote {', '.join(report.files)} to {report.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
