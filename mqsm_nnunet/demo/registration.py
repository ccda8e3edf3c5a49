"""The demo's registration arm (paper Table 2): the phantom's template, its labels carried to the
held-out subjects by each registration method, and Table 2 of mQSM and those methods against the
phantom's truth, with one sentence saying what it shows. One call from `mqsm_nnunet.demo.run`; public
functions of the floors below only."""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mqsm_nnunet.analysis.table2 import Table2Report, run_table2
from mqsm_nnunet.phantom import DEFAULT_REAL_VOXEL_SIZE, write_real_template
from mqsm_nnunet.registration.cohort import register_cohort

MQSM, TRUTH = "mQSM", "Ground truth"
NAMES = {"rigid": "Rigid", "affine": "Affine", "syn": "ANTs SyN", "synquick": "ANTs SyN (quick)"}
DEMO_DEFORMABLE = "synquick"
ATLASES = 3


@dataclass(frozen=True)
class RegistrationTable2:
    """What `registration_table2` produced: the table rows (`Table2Report.rows`), the Markdown section
    for the summary, the figure, the entries for summary.json and the one-line verdict."""

    rows: list[dict]
    markdown: str
    figure: Path
    summary_json: dict
    verdict: str
    table: Table2Report


def verdict(table: Table2Report) -> str:
    """One honest sentence: in cortex and deep nuclei, is the first column (mQSM) closer to the truth
    than each registration column (mean |difference| per subject and region, paired p)?"""
    by_key = {(d.group, d.column): d for d in table.group_differences}
    first = table.columns[0]
    parts = []
    for group in ("cortex", "deep nuclei"):
        ours = by_key[(group, first)].mean_abs_difference_ppb
        for column in table.columns[1:]:
            theirs, p = by_key[(group, column)].mean_abs_difference_ppb, by_key[(group, column)].p_vs_first
            if math.isnan(ours) or math.isnan(theirs):
                parts.append(f"{group}: no comparison with {column} (a set has no voxels there)")
                continue
            word = "closer to" if ours < theirs else "NOT closer to" if ours > theirs else "as close to"
            parts.append(f"{group}: {first} {word} the truth than {column} ({ours:.1f} vs {theirs:.1f} ppb"
                         f"{'' if math.isnan(p) else f', p = {p:.2g}'})")
    return (f"Mean |regional mean - truth| per subject and region: {'; '.join(parts)}; "
            f"{len(next(iter(table.reports.values())).subjects)} held-out subject(s), so p values are indicative.")


def registration_table2(cohort: str | os.PathLike, cases: Sequence[str], predicted_qsm: Mapping[str, Path],
                        predicted_seg: Mapping[str, Path], true_chi: Mapping[str, Path],
                        true_labels: Mapping[str, Path], out_dir: str | os.PathLike, *,
                        deformable: str = DEMO_DEFORMABLE, atlases: int = ATLASES, seed: int = 0,
                        template_shape: Sequence[int] | None = None,
                        template_voxel_size: Sequence[float] | None = None) -> RegistrationTable2:
    """Write `atlases` templates of real-anatomy cohort `seed` (`write_real_template`: anatomies none of
    the first 16 - `atlases` subjects uses) to `out_dir`/template<k>, carry the first one's labels to
    `cases` with an affine and with `deformable` SyN, and all of them with `deformable` fused by joint
    label fusion (multi-atlas; `out_dir`/registered/), and write Table 2 (`out_dir`/table2/): columns mQSM
    (predicted QSM + predicted segmentation) and each registration (predicted QSM + its labels),
    reference = true chi + true labels.

    Raises:
        FileNotFoundError / ValueError: as `register_cohort` and `run_table2`.
    """
    cohort, out_dir = Path(cohort), Path(out_dir)
    templates = [write_real_template(out_dir / f"template{k}", template_voxel_size or DEFAULT_REAL_VOXEL_SIZE, seed,
                                     shape=template_shape, overwrite=True, from_last=k) for k in range(1, atlases + 1)]
    single = register_cohort(cohort, templates[0], out_dir / "registered", ["affine"], cases=cases, overwrite=True)
    multi = register_cohort(cohort, templates, out_dir / "registered", [deformable], cases=cases, overwrite=True,
                            keep_each_template=True, fusion="joint")
    name, multi_name = NAMES[deformable], f"Multi-atlas {NAMES[deformable]} ({atlases}, joint label fusion)"
    columns = {MQSM: (predicted_qsm, predicted_seg), NAMES["affine"]: (predicted_qsm, single.files["affine"]),
               name: (predicted_qsm, multi.each_template[deformable][0]),
               multi_name: (predicted_qsm, multi.files[deformable])}
    seconds = {NAMES["affine"]: single.seconds_per_subject("affine"),
               multi_name: multi.seconds_per_subject(deformable)}
    seconds[name] = seconds[multi_name] / atlases      # its share of the multi-atlas run (fusion included)
    table = run_table2(columns, (TRUTH, true_chi, true_labels), cohort / "labels.json", out_dir / "table2")
    sentence = verdict(table)
    figure = table.files["table2_differences.png"]
    timing = ", ".join(f"{column} {s:.1f} s" for column, s in seconds.items())
    markdown = "\n".join([
        "## Regional susceptibility against registration (paper Table 2: ground truth, mQSM, registration)",
        "",
        "Registration arm: templates (other real brains, undeformed, noise-free T1) registered to each "
        f"held-out T1 with ANTs, brains to brains (T1 x brain mask; {timing} per subject, 1 thread; the single "
        "SyN's time is its share of the multi-atlas run), labels carried by nearest label onto the subject's "
        f"grid, the {atlases} atlases' labels fused by joint label fusion in the multi-atlas column; each "
        "column reads the mQSM QSM with its own labels. Dice of each column's labels against the truth: "
        f"{_dice_line(columns, true_labels, cohort)}. docs/registration.md.",
        "",
        table.markdown(),
        sentence,
        "",
        f"Figure: {figure} (difference to the truth per subject and region, per region group). Files: "
        f"{table.out_dir}/table2.csv, table2_groups.csv, table2_subjects.csv.",
        "",
    ])
    summary_json = {
        "templates": [str(t.absolute()) for t in templates],
        "registered_labels": {column: {case: str(path) for case, path in files.items()}
                              for column, (_, files) in columns.items() if column != MQSM},
        "seconds_per_subject": seconds,
        "table2_files": {name: str(path) for name, path in table.files.items()},
        "rows": table.rows(),
        "group_mean_abs_difference_ppb": {f"{d.column} | {d.group}": {"ppb": d.mean_abs_difference_ppb,
                                                                      "n_pairs": d.n_pairs,
                                                                      "p_vs_mQSM": d.p_vs_first}
                                          for d in table.group_differences},
        "verdict": sentence,
    }
    return RegistrationTable2(table.rows(), markdown, figure, summary_json, sentence, table)


def _dice_line(columns: Mapping[str, tuple], true_labels: Mapping[str, Path], cohort: Path) -> str:
    """'Affine 0.48, ANTs SyN 0.53, ...': mean Dice over regions and cases of each column's label maps."""
    from mqsm_nnunet.evaluation.scoring import segmentation_scores
    from mqsm_nnunet.io.labels import read_labels

    labels = read_labels(cohort / "labels.json").ids
    scores = {column: segmentation_scores(files, true_labels, labels)["mean_dice"]
              for column, (_, files) in columns.items()}
    return ", ".join(f"{column} {dice:.3f}" for column, dice in scores.items())
