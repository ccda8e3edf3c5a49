"""What the iron analysis computes: per-subject region statistics, cohort summaries, paired
comparisons and the report that holds them. Susceptibility in ppb (1 ppb = 0.001 ppm) throughout."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PPB_PER_PPM = 1000.0


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
