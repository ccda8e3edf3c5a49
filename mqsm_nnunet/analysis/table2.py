"""The paper's Table 2 with several compared sets: a reference set ("Ground truth": true
susceptibility + true labels) and one column per compared set (mQSM: its QSM + its segmentation;
each registration method: a QSM + that method's labels), each analysed with `run_iron_analysis`
against the reference.

Per region: the reference's and each column's cohort mean ± std (ppb, each set's own subjects
with the region), with the paired t-test of the column against the reference ('**' p <= 0.01,
'*' p <= 0.05, over subjects with the region in both). Per column and region group (cortex, deep
nuclei, other; `region_group`): the mean absolute difference to the reference over every
(subject, region) pair, and, for every column after the first, the paired t-test of its absolute
differences against the first column's over the pairs both have ("is the first column closer to
the truth?"; pairs within a subject are not independent, so read it as descriptive). A figure
shows those differences per group and column.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mqsm_nnunet.analysis.io import case_map, label_ids_in
from mqsm_nnunet.analysis.pipeline import run_iron_analysis
from mqsm_nnunet.analysis.report import OUTPUT_FILES, _pm, _write_csv
from mqsm_nnunet.analysis.results import IronReport
from mqsm_nnunet.analysis.statistics import _paired_test, significance_mark
from mqsm_nnunet.figures import difference_plot
from mqsm_nnunet.io.files import atomic_folder, writable_folder
from mqsm_nnunet.io.labels import LabelTable, read_labels

__all__ = ["REGION_GROUPS", "TABLE2_FILES", "GroupDifference", "Table2Report", "region_group",
           "paired_differences", "group_differences", "run_table2"]

REGION_GROUPS = ("cortex", "deep nuclei", "other")
_GROUP_WORDS = {
    "cortex": ("cortex", "cortical", "gyrus", "ctx"),
    "deep nuclei": ("caudate", "putamen", "pallid", "thalam", "nigra", "red_nucleus", "red-nucleus", "rednucleus",
                    "dentate",
                    "accumbens", "subthalamic"),
}
TABLE2_FILES = ("table2.md", "table2.csv", "table2_groups.csv", "table2_subjects.csv", "table2_differences.png",
                "sets")
"""What `run_table2` writes besides the first column's `mqsm_iron` outputs (`sets/` holds the other
columns' own reports, one folder each)."""


def region_group(name: str) -> str:
    """'cortex', 'deep nuclei' or 'other' from a region's name (case-insensitive word match:
    cortex/cortical/gyrus/ctx; caudate, putamen, pallidum, thalamus, nigra, red nucleus, dentate,
    accumbens, subthalamic)."""
    lowered = name.lower()
    for group, words in _GROUP_WORDS.items():
        if any(word in lowered for word in words):
            return group
    return "other"


@dataclass(frozen=True)
class GroupDifference:
    """One column's mean |column - reference| (ppb) over the (subject, region) pairs of a group, and
    the paired t-test of its |differences| against the first column's (NaN for the first column)."""

    column: str
    group: str
    n_pairs: int
    mean_abs_difference_ppb: float
    p_vs_first: float
    note: str = ""


@dataclass
class Table2Report:
    """Everything `run_table2` computed: the reference name, the columns in order, each column's
    `IronReport` against the reference, the region groups, the group differences and the files."""

    out_dir: Path
    reference_name: str
    columns: tuple[str, ...]
    reports: dict[str, IronReport]
    groups: dict[str, str]
    group_differences: list[GroupDifference]
    files: dict[str, Path] = field(default_factory=dict)

    def rows(self) -> list[dict]:
        """Per region: `region`, `group`, `reference` (mean, std, n) and per column (mean, std, n,
        mean difference, p, mark); means and stds in ppb."""
        first = self.reports[self.columns[0]]
        reference = {c.region: c for c in first.reference_summary}
        rows = []
        for r, region in enumerate(c.region for c in first.summary):
            ref = reference[region]
            row = {"region": region, "group": self.groups[region],
                   "reference": {"mean": ref.mean_ppb, "std": ref.std_ppb, "n": ref.n_subjects}}
            for column in self.columns:
                report = self.reports[column]
                own, test = report.summary[r], report.comparison[r]
                row[column] = {"mean": own.mean_ppb, "std": own.std_ppb, "n": own.n_subjects,
                               "difference": test.mean_difference_ppb, "p": test.p_value, "mark": test.significance}
            rows.append(row)
        return rows

    def markdown(self) -> str:
        """The table (paper layout), the group differences and how to read them."""
        heading = " | ".join([self.reference_name, *self.columns])
        lines = [f"| Region | {heading} |", "| --- |" + " --- |" * (len(self.columns) + 1)]
        for row in self.rows():
            cells = [_pm(row["reference"]["mean"], row["reference"]["std"])]
            cells += [f"{row[c]['mark']}{_pm(row[c]['mean'], row[c]['std'])}" for c in self.columns]
            lines.append(f"| {row['region']} | " + " | ".join(cells) + " |")
        first = self.columns[0]
        lines += ["", f"Mean ± std over subjects (ppb); \\*\\* p ≤ 0.01, \\* 0.01 < p ≤ 0.05: paired t-test of the "
                  f"column against {self.reference_name} over the subjects with the region in both. n/a: no "
                  "subject has the region in that set.", "",
                  f"Mean |column − {self.reference_name}| (ppb) over (subject, region) pairs; in brackets the p of a "
                  f"paired t-test of |column − {self.reference_name}| against |{first} − {self.reference_name}| "
                  "over the pairs both have:", "",
                  "| Region group | " + " | ".join(self.columns) + " |", "| --- |" + " --- |" * len(self.columns)]
        by_key = {(d.group, d.column): d for d in self.group_differences}
        for group in [*REGION_GROUPS, "all"]:
            cells = []
            for column in self.columns:
                d = by_key[(group, column)]
                value = "n/a" if math.isnan(d.mean_abs_difference_ppb) else f"{d.mean_abs_difference_ppb:.1f}"
                if column != first and not math.isnan(d.p_vs_first):
                    value += f" ({significance_mark(d.p_vs_first)}p = {d.p_vs_first:.2g})"
                cells.append(value)
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def paired_differences(report: IronReport) -> dict[tuple[str, str], float]:
    """(case, region) -> this set's mean minus the reference set's (ppb), where both have the region."""
    differences = {}
    for case, rows in report.subjects.items():
        for own, ref in zip(rows, report.reference_subjects[case]):
            if own.n_voxels and ref.n_voxels:
                differences[(case, own.region)] = own.mean_ppb - ref.mean_ppb
    return differences


def group_differences(reports: Mapping[str, IronReport], groups: Mapping[str, str]) -> list[GroupDifference]:
    """Per group (and 'all') and column: mean |difference| over (subject, region) pairs, and the paired
    t-test of the column's |differences| against the first column's over the pairs both have."""
    per_column = {column: paired_differences(report) for column, report in reports.items()}
    first = next(iter(per_column))
    result = []
    for group in [*REGION_GROUPS, "all"]:
        for column, differences in per_column.items():
            pairs = {key: abs(value) for key, value in differences.items() if group in ("all", groups[key[1]])}
            mean = float(np.mean(list(pairs.values()))) if pairs else math.nan
            p, note = math.nan, ""
            if column != first:
                shared = sorted(set(pairs) & {key for key in per_column[first] if group in ("all", groups[key[1]])})
                _, p, note = _paired_test(np.array([pairs[key] for key in shared]),
                                          np.array([abs(per_column[first][key]) for key in shared]))
            result.append(GroupDifference(column, group, len(pairs), mean, p, note))
    return result


def _folder_name(column: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", column).strip("._") or "set"


def run_table2(
    columns: Mapping[str, tuple[Mapping[str, str | os.PathLike], Mapping[str, str | os.PathLike]]],
    reference_set: tuple[str, Mapping[str, str | os.PathLike] | None, Mapping[str, str | os.PathLike] | None],
    labels: str | os.PathLike | Mapping[str, int] | LabelTable,
    out_dir: str | os.PathLike,
    *,
    reference: str | int | Sequence[str | int] = "none",
    mask_files: Mapping[str, str | os.PathLike] | None = None,
    erode_mm: float = 0.0,
) -> Table2Report:
    """Table 2 over several sets, all written into `out_dir` at once (or nothing, on an error).

    Args:
        columns: column name -> (QSM files, segmentation files), each case id -> file; the first
            column's `mqsm_iron` outputs go to `out_dir` itself, every other column's to
            `out_dir`/sets/<name>/.
        reference_set: (name, QSM files, segmentation files) of the reference, e.g. ("Ground truth",
            true chi, true labels); a None side takes the columns' own files (which must then be
            the same for every column, e.g. one QSM read with several segmentations).
        labels, reference, mask_files, erode_mm: as `run_iron_analysis` (`reference` is the
            susceptibility reference subtracted per subject); a colour table is cut down to the ids
            found in any column or the reference, so every column has the same rows.

    Raises:
        ValueError / FileNotFoundError: as `run_iron_analysis`; no column, a reference set with
            neither side, a None side where the columns differ, or two columns whose names give the
            same folder.
    """
    reference_name, reference_qsm, reference_seg = reference_set
    if not columns:
        raise ValueError("no column to compare (`columns`)")
    if reference_qsm is None and reference_seg is None:
        raise ValueError("the reference set needs QSM files, segmentation files or both (`reference_set`)")
    for side, given in ((0, reference_qsm), (1, reference_seg)):
        if given is None and len({tuple(sorted(map(str, files[side].items()))) for files in columns.values()}) > 1:
            raise ValueError(f"the columns use different {('QSM', 'segmentation')[side]} files: give the reference "
                             f"set's own (`reference_set`), so that every column is tested against the same reference")
    folders = {column: _folder_name(column) for column in list(columns)[1:]}
    if len(set(folders.values())) < len(folders):
        raise ValueError(f"column names {list(columns)} give the same folder name twice; name the columns apart")
    out_dir = writable_folder(out_dir)
    labels = LabelTable.of(labels) if isinstance(labels, (Mapping, LabelTable)) else read_labels(labels)
    if labels.catalogue:
        segmentations = [seg_files for _, seg_files in columns.values()] + ([reference_seg] if reference_seg else [])
        labels = labels.found_in(set().union(*(label_ids_in(case_map(files, "seg_files")) for files in segmentations)))
    reports: dict[str, IronReport] = {}
    with atomic_folder(out_dir, merge=True, owned=OUTPUT_FILES + TABLE2_FILES) as build:
        for column, (qsm_files, seg_files) in columns.items():
            folder = build if column not in folders else build / "sets" / folders[column]
            reports[column] = run_iron_analysis(qsm_files, seg_files, labels, folder, reference=reference,
                                                compare_qsm_files=reference_qsm, compare_seg_files=reference_seg,
                                                mask_files=mask_files, erode_mm=erode_mm,
                                                set_names=(column, reference_name))
        regions = [row.region for row in next(iter(reports.values())).summary]
        groups = {region: region_group(region) for region in regions}
        table = Table2Report(out_dir, reference_name, tuple(columns), reports, groups,
                             group_differences(reports, groups))
        _write_table2(table, build)
    for column, report in reports.items():  # the reports were written in the build folder
        report.out_dir = out_dir if column not in folders else out_dir / "sets" / folders[column]
        report.files = {name: report.out_dir / name for name in report.files}
    table.files = {name: out_dir / name for name in TABLE2_FILES[:-1]}
    return table


def _write_table2(table: Table2Report, folder: Path) -> None:
    rows = table.rows()
    (folder / "table2.md").write_text(f"# Regional susceptibility: {', '.join(table.columns)} against "
                                      f"{table.reference_name} (paper Table 2 layout)\n\n" + table.markdown())
    _write_csv(folder / "table2.csv", ("region", "group", "column", "n_subjects", "mean_ppb", "std_ppb",
                                       "mean_difference_ppb", "p_value", "significance"),
               [(row["region"], row["group"], table.reference_name, row["reference"]["n"], row["reference"]["mean"],
                 row["reference"]["std"], math.nan, math.nan, "") for row in rows]
               + [(row["region"], row["group"], column, row[column]["n"], row[column]["mean"], row[column]["std"],
                   row[column]["difference"], row[column]["p"], row[column]["mark"])
                  for column in table.columns for row in rows])
    _write_csv(folder / "table2_groups.csv", ("group", "column", "n_pairs", "mean_abs_difference_ppb",
                                              "p_vs_first_column", "note"),
               [(d.group, d.column, d.n_pairs, d.mean_abs_difference_ppb, d.p_vs_first, d.note)
                for d in table.group_differences])
    differences = {column: paired_differences(report) for column, report in table.reports.items()}
    _write_csv(folder / "table2_subjects.csv", ("column", "case", "region", "group", "difference_ppb"),
               [(column, case, region, table.groups[region], value) for column, per in differences.items()
                for (case, region), value in sorted(per.items())])
    difference_plot(folder / "table2_differences.png",
                    {group: {column: [v for (_, region), v in per.items() if table.groups[region] == group]
                             for column, per in differences.items()} for group in REGION_GROUPS},
                    title=f"Regional mean minus {table.reference_name}, per subject and region")
