"""Iron analysis: numbers against direct numpy on hand-made volumes, the paired test, the CLI."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from mqsm_nnunet import analysis as iron
from mqsm_nnunet.cli import iron as iron_cli
from mqsm_nnunet.analysis import RegionStats
from mqsm_nnunet.io.nifti import write_volume

REGIONS = {"caudate": 1, "pallidum": 2, "csf": 3}
VOXEL = (1.0, 2.0, 0.5)  # anisotropic: voxel volume 1 mm^3


def hand_subject(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(qsm ppm, seg) on a (7, 6, 5) grid: caudate 2x4x3, pallidum 2x4x3, csf 1x4x3 voxels."""
    seg = np.zeros((7, 6, 5), dtype=np.int16)
    seg[1:3, 1:5, 1:4] = 1
    seg[3:5, 1:5, 1:4] = 2
    seg[5, 1:5, 1:4] = 3
    qsm = rng.normal(0.0, 0.02, seg.shape) + 0.05 * (seg == 1) + 0.13 * (seg == 2) + 0.01 * (seg == 3)
    return qsm, seg


def by_region(rows: list[RegionStats]) -> dict[str, RegionStats]:
    return {row.region: row for row in rows}


# ----------------------------------------------------------------------------------------------------
# per-subject numbers
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])  # two tiny subjects
def test_regional_statistics_equal_numpy(seed):
    qsm, seg = hand_subject(np.random.default_rng(seed))
    rows = by_region(iron.regional_statistics(qsm, seg, REGIONS, VOXEL))
    assert list(rows) == ["caudate", "pallidum", "csf"]
    for name, label in REGIONS.items():
        values = qsm[seg == label] * 1000.0
        row = rows[name]
        assert row.label == label
        assert row.n_voxels == values.size == {1: 24, 2: 24, 3: 12}[label]
        assert row.volume_mm3 == pytest.approx(values.size * 1.0 * 2.0 * 0.5)
        assert row.mean_ppb == pytest.approx(values.mean(), abs=1e-9)
        assert row.std_ppb == pytest.approx(values.std(ddof=0), abs=1e-9)
        assert row.median_ppb == pytest.approx(np.median(values), abs=1e-9)
        assert row.subtracted_ppb == 0.0


def test_volume_uses_all_three_voxel_sizes():
    seg = np.zeros((4, 4, 4), dtype=int)
    seg[1:3, 1:3, 1:2] = 1  # 4 voxels
    rows = iron.regional_statistics(np.zeros(seg.shape), seg, {"r": 1}, (0.8, 1.5, 3.0))
    assert rows[0].volume_mm3 == pytest.approx(4 * 0.8 * 1.5 * 3.0)


@pytest.mark.parametrize(
    "reference, labels",
    [("brain", [1, 2, 3]), ("csf", [3]), (["csf"], [3]), ([3], [3]), (["3"], [3]), (["pallidum", "csf"], [2, 3])],
)
def test_reference_modes_subtract_the_mean_of_their_voxels(reference, labels):
    qsm, seg = hand_subject(np.random.default_rng(2))
    offset_ppb = qsm[np.isin(seg, labels)].mean() * 1000.0
    rows = by_region(iron.regional_statistics(qsm, seg, REGIONS, VOXEL, reference=reference))
    for name, label in REGIONS.items():
        values = qsm[seg == label] * 1000.0 - offset_ppb
        assert rows[name].subtracted_ppb == pytest.approx(offset_ppb, abs=1e-9)
        assert rows[name].mean_ppb == pytest.approx(values.mean(), abs=1e-9)
        assert rows[name].median_ppb == pytest.approx(np.median(values), abs=1e-9)
        assert rows[name].std_ppb == pytest.approx(values.std(), abs=1e-9)  # a shift leaves std alone


@pytest.mark.parametrize("reference", ["putamen", 7, 0, ["brain", "csf"], []])
def test_unknown_or_mixed_reference_is_an_error(reference):
    qsm, seg = hand_subject(np.random.default_rng(0))
    with pytest.raises(ValueError, match="reference"):
        iron.regional_statistics(qsm, seg, REGIONS, VOXEL, reference=reference)


def box_distance(shape, lo, hi, voxel_size):
    """Closed form: distance (centre to centre, mm) from each voxel of the box [lo, hi) to the nearest
    voxel outside it = min over axes of (steps to the first outside voxel) * voxel size."""
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    steps = [np.minimum(g - lo[a] + 1, hi[a] - g) * voxel_size[a] for a, g in enumerate(grids)]
    return np.min(steps, axis=0)


@pytest.mark.parametrize(
    "voxel_size, erode_mm", [((1, 1, 1), 0.99), ((1, 1, 1), 1.0), ((1, 1, 1), 2.0), ((1, 1, 2), 1.0), ((1, 1, 2), 2.0)]
)
def test_erosion_removes_voxels_within_erode_mm_of_the_edge(voxel_size, erode_mm):
    shape, lo, hi = (9, 9, 9), (2, 2, 2), (7, 7, 7)
    brain = np.zeros(shape, dtype=bool)
    brain[2:7, 2:7, 2:7] = True
    expected = brain & (box_distance(shape, lo, hi, voxel_size) > erode_mm)
    kept = iron.erode_brain_edge(brain, voxel_size, erode_mm)
    np.testing.assert_array_equal(kept, expected)
    if voxel_size == (1, 1, 1) and erode_mm == 1.0:  # one face-connected layer gone: 5^3 -> 3^3
        assert kept.sum() == 27 and kept[3:6, 3:6, 3:6].all()
    if voxel_size == (1, 1, 2) and erode_mm == 1.0:  # k-neighbours are 2 mm away: k layers stay
        assert kept.sum() == 3 * 3 * 5


def test_erosion_treats_the_array_border_as_outside():
    kept = iron.erode_brain_edge(np.ones((5, 5, 5)), (1, 1, 1), 1.0)
    assert kept.sum() == 27 and kept[1:4, 1:4, 1:4].all()


def test_erosion_in_regional_statistics_uses_the_brain_mask():
    qsm, seg = hand_subject(np.random.default_rng(3))
    iso = (1.0, 1.0, 1.0)
    # default brain mask = the labels (i 1..5, j 1..4, k 1..3): 1 mm erosion leaves i 2..4, j 2..3, k 2
    rows = by_region(iron.regional_statistics(qsm, seg, REGIONS, iso, erode_mm=1.0))
    core = np.zeros(seg.shape, dtype=bool)
    core[2:5, 2:4, 2] = True
    for name, label in REGIONS.items():
        values = qsm[core & (seg == label)] * 1000.0
        assert rows[name].n_voxels == values.size
        if values.size:
            assert rows[name].mean_ppb == pytest.approx(values.mean(), abs=1e-9)
    assert rows["csf"].n_voxels == 0 and math.isnan(rows["csf"].mean_ppb)  # csf hugs the edge
    # a brain mask as large as the array: only the array's outer layer is within 1 mm of its edge
    whole = np.ones(seg.shape, dtype=bool)
    rows = by_region(iron.regional_statistics(qsm, seg, REGIONS, iso, erode_mm=1.0, brain_mask=whole))
    assert [rows[n].n_voxels for n in REGIONS] == [24, 24, 12]


def test_regional_statistics_rejects_bad_input():
    qsm, seg = hand_subject(np.random.default_rng(0))
    with pytest.raises(ValueError, match="shape"):
        iron.regional_statistics(qsm[:-1], seg, REGIONS, VOXEL)
    with pytest.raises(ValueError, match="integer"):
        iron.regional_statistics(qsm, seg + 0.5, REGIONS, VOXEL)
    with pytest.raises(ValueError, match="voxel_size"):
        iron.regional_statistics(qsm, seg, REGIONS, (1.0, 1.0))
    with pytest.raises(ValueError, match="erode_mm"):
        iron.regional_statistics(qsm, seg, REGIONS, VOXEL, erode_mm=-1)
    with pytest.raises(ValueError, match="background"):
        iron.regional_statistics(qsm, seg, {"background": 0, **REGIONS}, VOXEL)
    bad = qsm.copy()
    bad[seg == 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        iron.regional_statistics(bad, seg, REGIONS, VOXEL)


# ----------------------------------------------------------------------------------------------------
# cohort and paired comparison
# ----------------------------------------------------------------------------------------------------
def cohort(n_subjects: int, bias_ppm: float = 0.0, seed: int = 0):
    """Per-subject stats of a reference set and of a set with `bias_ppm` added to the pallidum
    (plus 1 ppb voxel noise there); the caudate and csf are exact copies."""
    rng = np.random.default_rng(seed)
    reference, this = {}, {}
    for s in range(n_subjects):
        qsm, seg = hand_subject(rng)
        qsm = qsm + rng.normal(0, 0.005)  # subject-level variation
        shifted = qsm + (seg == 2) * (bias_ppm + rng.normal(0, 0.001, seg.shape))
        reference[f"sub-{s}"] = iron.regional_statistics(qsm, seg, REGIONS, VOXEL)
        this[f"sub-{s}"] = iron.regional_statistics(shifted, seg, REGIONS, VOXEL)
    return this, reference


def test_cohort_summary_is_mean_and_sample_std_of_subject_means():
    this, _ = cohort(4)
    summary = {row.region: row for row in iron.cohort_summary(this)}
    for r, name in enumerate(REGIONS):
        means = np.array([this[case][r].mean_ppb for case in sorted(this)])
        assert summary[name].n_subjects == 4
        assert summary[name].mean_ppb == pytest.approx(means.mean())
        assert summary[name].std_ppb == pytest.approx(means.std(ddof=1))


def test_cohort_summary_leaves_out_empty_regions():
    this, _ = cohort(3)
    empty = RegionStats("csf", 3, 0, 0.0, math.nan, math.nan, math.nan, 0.0)
    this["sub-0"] = this["sub-0"][:2] + [empty]
    csf = iron.cohort_summary(this)[2]
    means = [this[case][2].mean_ppb for case in ("sub-1", "sub-2")]
    assert csf.n_subjects == 2 and csf.mean_ppb == pytest.approx(np.mean(means))


def test_paired_comparison_flags_a_planted_bias_and_not_a_copy():
    this, reference = cohort(6, bias_ppm=0.020)
    rows = {row.region: row for row in iron.paired_comparison(this, reference)}
    pallidum = rows["pallidum"]
    assert pallidum.significance == "**" and pallidum.p_value <= 0.01
    assert pallidum.mean_difference_ppb == pytest.approx(20.0, abs=1.0)
    a = [this[c][1].mean_ppb for c in sorted(this)]
    b = [reference[c][1].mean_ppb for c in sorted(this)]
    assert pallidum.p_value == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert pallidum.this_mean_ppb == pytest.approx(np.mean(a)) and pallidum.reference_std_ppb == pytest.approx(np.std(b, ddof=1))
    for name in ("caudate", "csf"):  # identical in both sets
        assert rows[name].p_value == 1.0 and rows[name].significance == "" and rows[name].mean_difference_ppb == 0.0
        assert "identical" in rows[name].note


def test_paired_comparison_with_one_subject_gives_nan_and_says_why():
    this, reference = cohort(1, bias_ppm=0.02)
    row = iron.paired_comparison(this, reference)[1]
    assert math.isnan(row.p_value) and row.significance == "" and "at least 2" in row.note


def test_constant_shift_has_p_zero():
    def stats_of(mean):
        return [RegionStats("r", 1, 10, 10.0, mean, 1.0, mean, 0.0)]
    this = {f"s{i}": stats_of(10.0 * i + 20.0) for i in range(3)}
    reference = {f"s{i}": stats_of(10.0 * i) for i in range(3)}
    row = iron.paired_comparison(this, reference)[0]
    assert row.p_value == 0.0 and row.t_statistic == math.inf and row.significance == "**"


def test_paired_comparison_needs_the_same_subjects():
    this, reference = cohort(3)
    del reference["sub-2"]
    with pytest.raises(ValueError, match="sub-2"):
        iron.paired_comparison(this, reference)


@pytest.mark.parametrize("p, mark", [(0.001, "**"), (0.01, "**"), (0.0101, "*"), (0.05, "*"), (0.0501, ""), (math.nan, "")])
def test_significance_marks_follow_the_paper(p, mark):
    assert iron.significance_mark(p) == mark


# ----------------------------------------------------------------------------------------------------
# files and the command line
# ----------------------------------------------------------------------------------------------------
AFFINE = np.diag([1.0, 2.0, 0.5, 1.0])


@pytest.fixture
def cohort_dirs(tmp_path):
    """pred/ as mqsm_predict writes it (<case>.nii.gz + <case>_qsm.nii.gz), truth/ with <case>_chi
    (pallidum 20 ppb higher), labels as an nnU-Net dataset.json; returns (tmp_path, arrays)."""
    rng = np.random.default_rng(7)
    arrays = {}
    for s in range(3):
        qsm, seg = hand_subject(rng)
        case = f"sub-{s:03d}"
        write_volume(tmp_path / "pred" / f"{case}.nii.gz", seg, AFFINE, dtype=np.int16)
        write_volume(tmp_path / "pred" / f"{case}_qsm.nii.gz", qsm, AFFINE, dtype=np.float32)
        write_volume(tmp_path / "truth" / f"{case}_chi.nii.gz", qsm + 0.02 * (seg == 2), AFFINE, dtype=np.float32)
        arrays[case] = (qsm.astype(np.float32).astype(float), seg)
    dataset = {"channel_names": {"0": "T1"}, "labels": {"background": 0, **REGIONS}, "file_ending": ".nii.gz"}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    return tmp_path, arrays


def read_csv(path):
    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    with path.open() as stream:
        header = next(csv.reader(stream))
    return header, rows


def cli(tmp_path, out, *extra):
    return iron_cli.main(["--qsm", str(tmp_path / "pred"), "--seg", str(tmp_path / "pred"), "--labels",
                      str(tmp_path / "dataset.json"), "-o", str(out), *extra])


def test_cli_writes_all_outputs_with_their_columns(cohort_dirs):
    tmp_path, arrays = cohort_dirs
    out = tmp_path / "out"
    assert cli(tmp_path, out, "--reference", "csf", "--compare-qsm", str(tmp_path / "truth")) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(iron.OUTPUT_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left

    header, rows = read_csv(out / "regional_stats.csv")
    assert header == ["set", "case", "region", "label", "n_voxels", "volume_mm3", "mean_ppb", "std_ppb",
                      "median_ppb", "subtracted_ppb"]
    assert len(rows) == 2 * 3 * 3  # sets x subjects x regions
    qsm, seg = arrays["sub-001"]
    row = next(r for r in rows if r["set"] == "this" and r["case"] == "sub-001" and r["region"] == "pallidum")
    values = qsm[seg == 2] * 1000.0 - qsm[seg == 3].mean() * 1000.0
    assert int(row["n_voxels"]) == 24 and float(row["volume_mm3"]) == pytest.approx(24.0)
    assert float(row["mean_ppb"]) == pytest.approx(values.mean(), abs=1e-6)
    assert float(row["median_ppb"]) == pytest.approx(np.median(values), abs=1e-6)

    header, rows = read_csv(out / "cohort_summary.csv")
    assert header == ["set", "region", "label", "n_subjects", "mean_ppb", "std_ppb", "mean_volume_mm3"]
    assert len(rows) == 2 * 3
    header, rows = read_csv(out / "comparison.csv")
    assert header == ["region", "label", "n_subjects", "reference_mean_ppb", "reference_std_ppb", "this_mean_ppb",
                      "this_std_ppb", "mean_difference_ppb", "t_statistic", "p_value", "significance", "note"]
    pallidum = next(r for r in rows if r["region"] == "pallidum")
    assert pallidum["significance"] == "**" and float(pallidum["mean_difference_ppb"]) == pytest.approx(-20, abs=0.01)
    assert float(next(r for r in rows if r["region"] == "caudate")["p_value"]) == 1.0

    report = (out / "iron_report.md").read_text()
    assert "ppb" in report and "ppm" in report and "csf (3)" in report
    assert "| Region | Reference set | This set |" in report and "| pallidum |" in report and "| **" in report
    assert (out / "iron_plot.png").stat().st_size > 1000


def test_cli_without_comparison_and_rerun_replaces_outputs(cohort_dirs):
    tmp_path, _ = cohort_dirs
    out = tmp_path / "out"
    assert cli(tmp_path, out, "--compare-qsm", str(tmp_path / "truth")) == 0
    assert cli(tmp_path, out, "--reference", "brain", "--erode-mm", "0.5") == 0
    assert not (out / "comparison.csv").exists()  # stale output of the first run removed
    header, rows = read_csv(out / "regional_stats.csv")
    assert {r["set"] for r in rows} == {"this"} and len(rows) == 9


def test_cli_unknown_label_value_fails_and_writes_nothing(cohort_dirs, capsys):
    tmp_path, arrays = cohort_dirs
    qsm, seg = arrays["sub-002"]
    seg = seg.copy()
    seg[0, 0, 0] = 9
    write_volume(tmp_path / "pred" / "sub-002.nii.gz", seg, AFFINE, dtype=np.int16)
    assert cli(tmp_path, tmp_path / "out") == 1
    message = capsys.readouterr().err
    assert "sub-002.nii.gz" in message and "[9]" in message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_mismatched_geometry_names_both_files(cohort_dirs, capsys):
    tmp_path, arrays = cohort_dirs
    qsm, _ = arrays["sub-000"]
    write_volume(tmp_path / "pred" / "sub-000_qsm.nii.gz", qsm, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert cli(tmp_path, tmp_path / "out") == 1
    message = capsys.readouterr().err
    assert "sub-000_qsm.nii.gz" in message and "sub-000.nii.gz" in message and "affine" in message
    write_volume(tmp_path / "pred" / "sub-000_qsm.nii.gz", qsm[:-1], AFFINE)
    assert cli(tmp_path, tmp_path / "out") == 1
    assert "shape" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_missing_case_leaves_existing_out_unchanged(cohort_dirs, capsys):
    tmp_path, _ = cohort_dirs
    out = tmp_path / "out"
    out.mkdir()
    (out / "regional_stats.csv").write_text("earlier\n")
    (tmp_path / "truth" / "sub-001_chi.nii.gz").unlink()
    assert cli(tmp_path, out, "--compare-qsm", str(tmp_path / "truth")) == 1
    assert "sub-001" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["regional_stats.csv"]
    assert (out / "regional_stats.csv").read_text() == "earlier\n"


def test_cli_bad_reference_and_missing_folder(cohort_dirs, capsys):
    tmp_path, _ = cohort_dirs
    assert cli(tmp_path, tmp_path / "out", "--reference", "putamen") == 1
    assert "putamen" in capsys.readouterr().err
    assert iron_cli.main(["--qsm", str(tmp_path / "nowhere"), "--seg", str(tmp_path / "pred"), "--labels",
                      str(tmp_path / "dataset.json"), "-o", str(tmp_path / "out")]) == 1
    assert "nowhere" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        iron_cli.main(["--qsm", str(tmp_path / "pred")])  # required flags missing
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()


