"""Table 2 over several sets (`mqsm_iron --compare`): region groups, every number against a hand
computation on hand-made volumes, the files, the figure and the command-line checks."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import stats

from mqsm_nnunet.cli import iron as iron_cli
from mqsm_nnunet.analysis.table2 import TABLE2_FILES, region_group, run_table2
from mqsm_nnunet.figures import difference_plot
from mqsm_nnunet.io.nifti import write_volume
from mqsm_nnunet.phantom import LABELS

REGIONS = {"background": 0, "frontal_cortex_L": 1, "caudate_L": 2, "white_matter": 3}
TRUE_PPB = {1: 20.0, 2: 44.0, 3: -30.0}
CASES = ("sub-001", "sub-002", "sub-003")


def test_region_groups_of_the_phantom_labels():
    groups = {name: region_group(name) for name in LABELS if name != "background"}
    assert {n for n, g in groups.items() if g == "cortex"} == {n for n in LABELS if "cortex" in n}
    assert {n for n, g in groups.items() if g == "deep nuclei"} == {
        f"{s}_{side}" for s in ("caudate", "globus_pallidus", "putamen", "thalamus", "substantia_nigra",
                                "red_nucleus", "dentate") for side in "LR"}
    assert {n for n, g in groups.items() if g == "other"} == {"lateral_ventricle_L", "lateral_ventricle_R", "csf",
                                                               "veins", "brainstem", "white_matter"}
    assert region_group("ctx-lh-precentral") == "cortex" and region_group("Left-Pallidum") == "deep nuclei"


def truth_maps(index: int) -> tuple[np.ndarray, np.ndarray]:
    """(chi ppm, labels) on a (6, 4, 3) grid: cortex x 0-1, caudate x 2-3, white matter x 4-5;
    each region constant, subject k adds k ppb everywhere."""
    labels = np.repeat(np.array([1, 1, 2, 2, 3, 3]), 12).reshape(6, 4, 3).astype(np.uint8)
    chi = np.vectorize(TRUE_PPB.get)(labels) + float(index)
    return chi / 1000.0, labels


@pytest.fixture()
def sets(tmp_path):
    """Folders chi/, truth/ (labels), exact/ (= truth) and shifted/ (the caudate's first slab of
    voxels, x = 2, labelled cortex: cortex takes in caudate values, caudate keeps its own)."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for index, case in enumerate(CASES, start=1):
        chi, labels = truth_maps(index)
        shifted = labels.copy()
        shifted[2] = 1
        if index == 3:
            shifted[2:4] = 1  # the third subject loses its caudate entirely
        for folder, data in (("chi", chi), ("truth", labels), ("exact", labels), ("shifted", shifted)):
            write_volume(tmp_path / folder / f"{case}.nii.gz", data, affine, np.float32 if folder == "chi" else np.uint8)
    (tmp_path / "labels.json").write_text(json.dumps(REGIONS))
    files = {folder: {case: tmp_path / folder / f"{case}.nii.gz" for case in CASES}
             for folder in ("chi", "truth", "exact", "shifted")}
    return tmp_path, files


def test_table2_numbers_against_hand_computation(sets):
    root, files = sets
    table = run_table2({"exact": (files["chi"], files["exact"]), "shifted": (files["chi"], files["shifted"])},
                       ("Ground truth", files["chi"], files["truth"]), root / "labels.json", root / "out")
    rows = {row["region"]: row for row in table.rows()}
    # cortex in 'shifted': 24 own voxels + 12 caudate voxels -> (2 * 20 + 44) / 3 + k; subject 3: (20 + 44) / 2 + k
    expected = np.array([(2 * 20 + 44) / 3 + 1, (2 * 20 + 44) / 3 + 2, (20 + 44) / 2 + 3])
    truth = np.array([21.0, 22.0, 23.0])
    cortex = rows["frontal_cortex_L"]
    assert cortex["reference"]["mean"] == pytest.approx(22.0) and cortex["reference"]["std"] == pytest.approx(1.0)
    assert cortex["exact"]["mean"] == pytest.approx(22.0) and cortex["exact"]["p"] == 1.0
    assert cortex["shifted"]["mean"] == pytest.approx(expected.mean())
    assert cortex["shifted"]["std"] == pytest.approx(expected.std(ddof=1))
    assert cortex["shifted"]["p"] == pytest.approx(stats.ttest_rel(expected, truth).pvalue)
    assert cortex["shifted"]["mark"] == ("*" if cortex["shifted"]["p"] <= 0.05 else "")
    caudate = rows["caudate_L"]  # subjects 1-2 keep pure caudate voxels: no difference; subject 3 has none
    assert caudate["shifted"]["n"] == 2 and caudate["shifted"]["difference"] == pytest.approx(0.0, abs=1e-9)
    assert {row["group"] for row in rows.values()} == {"cortex", "deep nuclei", "other"}

    by_key = {(d.group, d.column): d for d in table.group_differences}
    assert by_key[("cortex", "exact")].mean_abs_difference_ppb == pytest.approx(0.0, abs=1e-9)
    assert by_key[("cortex", "shifted")].mean_abs_difference_ppb == pytest.approx(np.mean(np.abs(expected - truth)))
    assert by_key[("cortex", "shifted")].n_pairs == 3 and by_key[("deep nuclei", "shifted")].n_pairs == 2
    all_shifted = np.r_[np.abs(expected - truth), 0.0, 0.0, 0.0, 0.0, 0.0]  # + caudate (2) + white matter (3)
    assert by_key[("all", "shifted")].mean_abs_difference_ppb == pytest.approx(all_shifted.mean())
    assert by_key[("cortex", "shifted")].p_vs_first == pytest.approx(
        stats.ttest_rel(np.abs(expected - truth), np.zeros(3)).pvalue)

    for name in TABLE2_FILES:
        assert (root / "out" / name).exists()
    assert (root / "out" / "comparison.csv").is_file() and (root / "out" / "sets" / "shifted" / "comparison.csv").is_file()
    with open(root / "out" / "table2_subjects.csv") as stream:
        subject_rows = list(csv.DictReader(stream))
    cortex_rows = [r for r in subject_rows if r["column"] == "shifted" and r["region"] == "frontal_cortex_L"]
    np.testing.assert_allclose([float(r["difference_ppb"]) for r in cortex_rows], expected - truth)
    markdown = (root / "out" / "table2.md").read_text()
    assert "| Region | Ground truth | exact | shifted |" in markdown and "| cortex |" in markdown
    assert table.files["table2.md"] == root / "out" / "table2.md"
    assert table.reports["shifted"].out_dir == root / "out" / "sets" / "shifted"
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_table2_refuses_ambiguous_references_and_names(sets):
    root, files = sets
    with pytest.raises(ValueError, match="different segmentation files"):
        run_table2({"a": (files["chi"], files["exact"]), "b": (files["chi"], files["shifted"])},
                   ("Truth", files["chi"], None), root / "labels.json", root / "out")
    with pytest.raises(ValueError, match="same folder name"):
        run_table2({"first": (files["chi"], files["exact"]), "a b": (files["chi"], files["exact"]),
                    "a/b": (files["chi"], files["shifted"])},
                   ("Truth", files["chi"], files["truth"]), root / "labels.json", root / "out")
    assert not (root / "out").exists()


def test_cli_compare_writes_table2_and_keeps_old_flags(sets, capsys):
    root, _ = sets
    common = ["--qsm", str(root / "chi"), "--seg", str(root / "exact"), "--labels", str(root / "labels.json")]
    assert iron_cli.main([*common, "-o", str(root / "t2"), "--compare-qsm", str(root / "chi"), "--compare-seg",
                      str(root / "truth"), "--compare", "shifted", str(root / "chi"), str(root / "shifted"),
                      "--set-names", "mQSM", "Ground truth"]) == 0
    assert "2 sets against Ground truth" in capsys.readouterr().out
    assert "| Region | Ground truth | mQSM | shifted |" in (root / "t2" / "table2.md").read_text()

    assert iron_cli.main([*common, "-o", str(root / "plain"), "--compare-seg", str(root / "truth")]) == 0
    assert (root / "plain" / "comparison.csv").is_file() and not (root / "plain" / "table2.md").exists()

    with pytest.raises(SystemExit) as exit_info:
        iron_cli.main([*common, "-o", str(root / "bad"), "--compare", "shifted", str(root / "chi"), str(root / "shifted")])
    assert exit_info.value.code == 2 and "--compare-qsm" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        iron_cli.main([*common, "-o", str(root / "bad"), "--compare-seg", str(root / "truth"), "--compare",
                   "This set", str(root / "chi"), str(root / "shifted")])
    assert "set names must differ" in capsys.readouterr().err
    assert not (root / "bad").exists()


def test_difference_plot(tmp_path):
    path = difference_plot(tmp_path / "d.png", {"cortex": {"a": [1.0, -2.0, 0.5], "b": [3.0]},
                                               "deep nuclei": {"a": [], "b": [np.nan, 2.0]}})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="same methods"):
        difference_plot(tmp_path / "e.png", {"cortex": {"a": [1.0]}, "other": {"b": [1.0]}})
    assert not (tmp_path / "e.png").exists()
