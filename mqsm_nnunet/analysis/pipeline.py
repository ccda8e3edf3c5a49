"""The whole iron analysis: statistics per subject and region, cohort summary, optional paired
comparison against a second set, and its output files, written all together or not at all."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from mqsm_nnunet.analysis.io import case_map, folder_of, label_ids_in, load_case
from mqsm_nnunet.analysis.regions import parse_reference, regions_of
from mqsm_nnunet.analysis.report import OUTPUT_FILES, write_outputs
from mqsm_nnunet.analysis.results import IronReport, RegionStats, SusceptibilityReference
from mqsm_nnunet.analysis.statistics import check_erode_mm, cohort_summary, paired_comparison, regional_statistics
from mqsm_nnunet.io.cases import pair_cases
from mqsm_nnunet.io.files import atomic_folder, writable_folder
from mqsm_nnunet.io.labels import LabelTable, read_labels


def _analyse_set(qsm_files: Mapping[str, Path], seg_files: Mapping[str, Path], mask_files: Mapping[str, Path] | None,
                 table: LabelTable, reference: SusceptibilityReference,
                 erode_mm: float) -> dict[str, list[RegionStats]]:
    """Per case (sorted) the statistics of every region of `table`."""
    regions = regions_of(table.ids, table.source)
    per_case = {}
    for case in sorted(qsm_files):
        mask_path = mask_files[case] if mask_files else None
        qsm, seg, mask, voxel_size = load_case(qsm_files[case], seg_files[case], mask_path, table)
        try:
            per_case[case] = regional_statistics(qsm, seg, regions, voxel_size, reference, erode_mm, mask)
        except ValueError as error:
            raise ValueError(f"case {case} ({qsm_files[case]}, {seg_files[case]}): {error}") from None
    return per_case


def run_iron_analysis(
    qsm_files: Mapping[str, str | os.PathLike],
    seg_files: Mapping[str, str | os.PathLike],
    labels: str | os.PathLike | Mapping[str, int] | LabelTable,
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
        labels: a labels file (`labels.read_labels`: labels JSON, dataset.json or FreeSurferColorLUT-style
            table; a colour table's regions are the ids found in the segmentations), or the table itself.
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
        ValueError: case lists differ, geometry differs, label values the table does not list, bad arguments.
    """
    out_dir = Path(out_dir)
    writable_folder(out_dir)  # refuse before the work, not after
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder; `out` needs a folder")
    table = LabelTable.of(labels) if isinstance(labels, (Mapping, LabelTable)) else read_labels(labels)
    regions_of(table.ids, table.source)
    erode_mm = check_erode_mm(erode_mm)
    qsm = case_map(qsm_files, "qsm_files")
    seg = case_map(seg_files, "seg_files")
    pair_cases(qsm, seg, (f"QSM ({folder_of(qsm)})", f"segmentations ({folder_of(seg)})"))
    masks = case_map(mask_files, "mask_files") if mask_files is not None else None
    if masks is not None:
        pair_cases(qsm, masks, (f"QSM ({folder_of(qsm)})", f"masks ({folder_of(masks)})"))
    comparing = compare_qsm_files is not None or compare_seg_files is not None
    inputs = {f"{set_names[0]}": f"QSM {folder_of(qsm)}, segmentations {folder_of(seg)}"}
    if comparing:
        other_qsm = case_map(compare_qsm_files, "compare_qsm_files") if compare_qsm_files is not None else qsm
        other_seg = case_map(compare_seg_files, "compare_seg_files") if compare_seg_files is not None else seg
        pair_cases(qsm, other_qsm, (f"QSM ({folder_of(qsm)})", f"comparison QSM ({folder_of(other_qsm)})"))
        pair_cases(seg, other_seg, (f"segmentations ({folder_of(seg)})", f"comparison segmentations ({folder_of(other_seg)})"))
        inputs[set_names[1]] = f"QSM {folder_of(other_qsm)}, segmentations {folder_of(other_seg)}"
    if masks is not None:
        inputs["Brain masks"] = folder_of(masks)
    if table.catalogue:
        table = table.found_in(label_ids_in(seg) | (label_ids_in(other_seg) if comparing else set()))
    susceptibility_reference = parse_reference(reference, regions_of(table.ids, table.source))

    subjects = _analyse_set(qsm, seg, masks, table, susceptibility_reference, erode_mm)
    report = IronReport(out_dir, susceptibility_reference, erode_mm, tuple(set_names), subjects,
                        cohort_summary(subjects), inputs=inputs)
    if comparing:
        report.reference_subjects = _analyse_set(other_qsm, other_seg, masks, table, susceptibility_reference,
                                                 erode_mm)
        report.reference_summary = cohort_summary(report.reference_subjects)
        report.comparison = paired_comparison(subjects, report.reference_subjects)
    with atomic_folder(out_dir, merge=True, owned=OUTPUT_FILES) as build:
        names = write_outputs(report, build)
    report.files = {name: out_dir / name for name in names}
    return report
