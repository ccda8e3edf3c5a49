"""The iron analysis's outputs: regional_stats.csv, cohort_summary.csv, comparison.csv (with a
second set), iron_report.md and iron_plot.png, written into one folder."""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.analysis.results import IronReport
from mqsm_nnunet.figures import iron_plot

OUTPUT_FILES = ("regional_stats.csv", "cohort_summary.csv", "comparison.csv", "iron_report.md", "iron_plot.png")

REGIONAL_COLUMNS = ("set", "case", "region", "label", "n_voxels", "volume_mm3", "mean_ppb", "std_ppb",
                    "median_ppb", "subtracted_ppb")
COHORT_COLUMNS = ("set", "region", "label", "n_subjects", "mean_ppb", "std_ppb", "mean_volume_mm3")
COMPARISON_COLUMNS = ("region", "label", "n_subjects", "reference_mean_ppb", "reference_std_ppb",
                      "this_mean_ppb", "this_std_ppb", "mean_difference_ppb", "t_statistic", "p_value",
                      "significance", "note")


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


def write_outputs(report: IronReport, folder: Path) -> list[str]:
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
