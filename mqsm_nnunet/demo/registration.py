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
from mqsm_nnunet.registration.ants import DEFAULT_METHODS, register_cohort

MQSM, TRUTH = "mQSM", "Ground truth"
NAMES = {"rigid": "Rigid", "affine": "Affine", "syn": "ANTs SyN", "synquick": "ANTs SyN (quick)"}


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
                        methods: Sequence[str] = DEFAULT_METHODS, seed: int = 0,
                        template_shape: Sequence[int] | None = None,
                        template_voxel_size: Sequence[float] | None = None) -> RegistrationTable2:
    """Write the template of real-anatomy cohort `seed` (`write_real_template`: an anatomy none of the
    first 15 subjects uses) to `out_dir`/template, register it to `cases` with
    `methods` (`out_dir`/registered/<method>/), and Table 2 (`out_dir`/table2/): columns mQSM
    (predicted QSM + predicted segmentation) and each method (predicted QSM + registered labels),
    reference = true chi + true labels.

    Raises:
        FileNotFoundError / ValueError: as `register_cohort` and `run_table2`.
    """
    cohort, out_dir = Path(cohort), Path(out_dir)
    template = write_real_template(out_dir / "template", template_voxel_size or DEFAULT_REAL_VOXEL_SIZE, seed,
                                   shape=template_shape, overwrite=True)
    registered = register_cohort(cohort, template, out_dir / "registered", methods, cases=cases, overwrite=True)
    columns = {MQSM: (predicted_qsm, predicted_seg)}
    columns.update({NAMES.get(m, m): (predicted_qsm, registered.files[m]) for m in registered.files})
    table = run_table2(columns, (TRUTH, true_chi, true_labels), cohort / "labels.json", out_dir / "table2")
    sentence = verdict(table)
    seconds = {m: registered.seconds_per_subject(m) for m in registered.files}
    figure = table.files["table2_differences.png"]
    timing = ", ".join(f"{NAMES.get(m, m)} {s:.1f} s" for m, s in seconds.items())
    markdown = "\n".join([
        "## Regional susceptibility against registration (paper Table 2: ground truth, mQSM, registration)",
        "",
        f"Registration arm: a template (another real brain, undeformed, noise-free T1) registered to each "
        f"held-out T1 with ANTs ({timing} per subject, 1 thread), labels carried by nearest label onto the "
        "subject's grid; each column reads the mQSM QSM with its own labels. docs/registration.md.",
        "",
        table.markdown(),
        sentence,
        "",
        f"Figure: {figure} (difference to the truth per subject and region, per region group). Files: "
        f"{table.out_dir}/table2.csv, table2_groups.csv, table2_subjects.csv.",
        "",
    ])
    summary_json = {
        "template": str(template.absolute()),
        "registered_labels": {m: {case: str(path) for case, path in files.items()}
                              for m, files in registered.files.items()},
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
