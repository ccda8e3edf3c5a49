"""Statistics of the iron analysis (paper Sect. 3.3, Table 2): per subject and region, per cohort,
and the paired test between two sets. Arrays in NIfTI voxel order (i, j, k); maps in ppm, results in ppb.

Conventions (docs/iron.md has the reasons):
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

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage, stats

from mqsm_nnunet.analysis.regions import check_regions, parse_reference
from mqsm_nnunet.analysis.results import (PPB_PER_PPM, CohortRegion, RegionComparison, RegionStats,
                                          SusceptibilityReference)
from mqsm_nnunet.io.cases import pair_cases
from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.io.labels import as_label_map

ZERO_VARIANCE_RTOL = 1e-12
"""Paired differences whose spread is below this fraction of their mean count as constant."""


def check_erode_mm(erode_mm: float) -> float:
    """`erode_mm` as a float; a finite distance >= 0 in mm."""
    if not math.isfinite(erode_mm) or erode_mm < 0:
        raise ValueError(f"`erode_mm` must be a finite number >= 0 (mm), got {erode_mm!r}")
    return float(erode_mm)


def erode_brain_edge(brain_mask: np.ndarray, voxel_size: Sequence[float], erode_mm: float) -> np.ndarray:
    """The brain mask without the voxels whose nearest voxel outside the mask lies within `erode_mm`.

    Distance = Euclidean distance between voxel centres in mm (`distance_transform_edt` with the voxel
    sizes as sampling); the array border counts as outside. So `erode_mm` below the smallest voxel
    size removes nothing, and `erode_mm` = 1 at 1 mm isotropic removes the face-connected outer layer.
    """
    erode_mm = check_erode_mm(erode_mm)
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
                         "segmentation (after erosion); choose another `reference` or a smaller `erode_mm`")
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
    seg = as_label_map(seg, "seg")
    if qsm.ndim != 3 or seg.shape != qsm.shape:
        raise ValueError(f"qsm_ppm and seg must be 3D arrays of one shape, got {qsm.shape} and {seg.shape}")
    if brain_mask is not None and np.shape(brain_mask) != qsm.shape:
        raise ValueError(f"brain_mask has shape {np.shape(brain_mask)}, the QSM {qsm.shape}")
    voxel_size = check_voxel_size(voxel_size)
    regions = check_regions(region_ids)
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
