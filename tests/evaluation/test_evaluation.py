"""`mqsm_evaluate` on hand-made folders: its rows equal the metrics called directly; bad inputs fail
cleanly and leave no output."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from mqsm_nnunet.io.cases import segmentation_files_in

from mqsm_nnunet import metrics
from mqsm_nnunet.cli import evaluate as evaluate_cli
from mqsm_nnunet.evaluation import evaluate as evaluation
from mqsm_nnunet.io.labels import read_labels
from mqsm_nnunet.io.nifti import read_volume, write_volume

SHAPE = (14, 12, 10)
AFFINE = np.array([[1.0, 0, 0, -7], [0, 1.5, 0, -9], [0, 0, 2.0, -10], [0, 0, 0, 1]])
VOXEL_SIZE = (1.0, 1.5, 2.0)
CASES = ("sub-001", "sub-002")
LABELS = {"background": 0, "caudate_L": 1, "putamen_L": 4}


@pytest.fixture()
def cohort(tmp_path):
    """pred/ (<case>_qsm + <case> segmentation, as mqsm_predict writes), ref/ (<case>_chi),
    mask/ (<case>_mask), seg_ref/ (<case>) and labels.json."""
    rng = np.random.default_rng(7)
    folders = {name: tmp_path / name for name in ("pred", "ref", "mask", "seg_ref")}
    for case in CASES:
        mask = np.zeros(SHAPE, dtype=np.uint8)
        mask[2:12, 2:10, 1:9] = 1
        chi = (0.05 * rng.standard_normal(SHAPE) + 0.02).astype(np.float32) * mask
        qsm = (chi + 0.01 * rng.standard_normal(SHAPE)).astype(np.float32)
        seg_ref = np.zeros(SHAPE, dtype=np.uint8)
        seg_ref[3:7, 3:8, 2:6] = 1
        seg_ref[8:11, 3:8, 2:7] = 4
        seg_pred = np.roll(seg_ref, 1, axis=int(rng.integers(3)))
        write_volume(folders["pred"] / f"{case}_qsm.nii.gz", qsm, AFFINE)
        write_volume(folders["pred"] / f"{case}.nii.gz", seg_pred, AFFINE)
        write_volume(folders["ref"] / f"{case}_chi.nii.gz", chi, AFFINE)
        write_volume(folders["mask"] / f"{case}_mask.nii.gz", mask, AFFINE)
        write_volume(folders["seg_ref"] / f"{case}.nii.gz", seg_ref, AFFINE)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(LABELS))
    return tmp_path, folders, labels


def _read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _argv(folders, out, mask=True, seg=True, labels=None):
    argv = ["--pred", str(folders["pred"]), "--ref", str(folders["ref"]), "-o", str(out)]
    if mask:
        argv += ["--mask", str(folders["mask"])]
    if seg:
        argv += ["--seg-pred", str(folders["pred"]), "--seg-ref", str(folders["seg_ref"])]
    if labels is not None:
        argv += ["--labels", str(labels)]
    return argv


def test_cli_rows_equal_the_metrics(cohort, capsys):
    root, folders, labels = cohort
    out = root / "out"
    assert evaluate_cli.main(_argv(folders, out, labels=labels)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "qsm_metrics.csv", "qsm_metrics.md", "seg_metrics.md", "seg_metrics_per_region.csv",
    ]

    rows = _read_csv(out / "qsm_metrics.csv")
    assert [row["case"] for row in rows] == [*CASES, "mean"]
    expected = {}
    for case in CASES:
        pred = read_volume(folders["pred"] / f"{case}_qsm.nii.gz").data
        ref = read_volume(folders["ref"] / f"{case}_chi.nii.gz").data
        mask = read_volume(folders["mask"] / f"{case}_mask.nii.gz").data
        expected[case] = {**metrics.qsm_metrics(pred, ref, mask, include_2019=True),
                          **metrics.qsm_ci_metrics(pred, ref, mask)}
    for row in rows[:-1]:
        direct = expected[row["case"]]
        assert {key: float(row[key]) for key in direct} == pytest.approx(direct, rel=1e-12)
    for key in evaluation.QSM_METRICS:
        assert float(rows[-1][key]) == pytest.approx(np.mean([expected[c][key] for c in CASES]), rel=1e-12)
    table = (out / "qsm_metrics.md").read_text()
    assert "| case | SSIM | PSNR (dB) | NRMSE (%) | HFEN (%) |" in table
    assert "| mean |" in table

    seg_rows = _read_csv(out / "seg_metrics_per_region.csv")
    for case in CASES:
        pred = read_volume(folders["pred"] / f"{case}.nii.gz", dtype=None).data
        ref = read_volume(folders["seg_ref"] / f"{case}.nii.gz", dtype=None).data
        direct = metrics.segmentation_metrics(pred, ref, [1, 4], VOXEL_SIZE)
        mine = {int(r["label"]): r for r in seg_rows if r["case"] == case}
        assert sorted(mine) == [1, 4] and mine[4]["region"] == "putamen_L"
        for label in (1, 4):
            assert {k: float(mine[label][k]) for k in direct[label]} == pytest.approx(direct[label], rel=1e-12)
    means = {r["region"]: r for r in seg_rows if r["case"] == "mean"}
    assert set(means) == {"caudate_L", "putamen_L", "mean"}
    dice = [float(r["dice"]) for r in seg_rows if r["case"] != "mean"]
    assert float(means["mean"]["dice"]) == pytest.approx(np.mean(dice), rel=1e-12)  # same case count per region
    summary = (out / "seg_metrics.md").read_text()
    assert "| region | label | cases | Dice | recall | precision | HD95 (mm) | ASD (mm) |" in summary
    assert "wrote" in capsys.readouterr().out


def test_without_mask_the_reference_nonzero_voxels_are_used(cohort):
    root, folders, _ = cohort
    out = root / "out"
    evaluate_cli.main(_argv(folders, out, mask=False, seg=False))
    assert sorted(p.name for p in out.iterdir()) == ["qsm_metrics.csv", "qsm_metrics.md"]
    row = _read_csv(out / "qsm_metrics.csv")[0]
    pred = read_volume(folders["pred"] / f"{row['case']}_qsm.nii.gz").data
    ref = read_volume(folders["ref"] / f"{row['case']}_chi.nii.gz").data
    assert float(row["nrmse"]) == pytest.approx(metrics.nrmse(pred, ref, ref != 0), rel=1e-12)
    assert "nonzero voxels" in (out / "qsm_metrics.md").read_text()


def test_mismatched_case_lists_fail_without_output(cohort, capsys):
    root, folders, _ = cohort
    (folders["ref"] / "sub-002_chi.nii.gz").unlink()
    out = root / "out"
    assert evaluate_cli.main(_argv(folders, out)) == 1  # a data error, not a usage error
    message = capsys.readouterr().err
    assert "sub-002" in message and "case lists differ" in message
    assert not out.exists()


def test_mismatched_geometry_fails_without_output(cohort, capsys):
    root, folders, _ = cohort
    moved = AFFINE.copy()
    moved[0, 3] += 5.0
    mask_file = folders["mask"] / "sub-002_mask.nii.gz"
    write_volume(mask_file, read_volume(mask_file).data, moved)
    out = root / "out"
    assert evaluate_cli.main(_argv(folders, out)) == 1
    message = capsys.readouterr().err
    assert "sub-002_chi.nii.gz" in message and "sub-002_mask.nii.gz" in message and "affine" in message
    assert not out.exists()


def test_mismatched_shape_in_segmentations_fails_without_output(cohort, capsys):
    root, folders, _ = cohort
    write_volume(folders["seg_ref"] / "sub-001.nii.gz", np.zeros((14, 12, 9), dtype=np.uint8), AFFINE)
    out = root / "out"
    assert evaluate_cli.main(_argv(folders, out)) == 1
    assert "shape" in capsys.readouterr().err
    assert not out.exists()


def test_segmentation_without_labels_names_every_found_id(cohort):
    _, folders, _ = cohort
    rows = evaluation.evaluate_segmentation(
        segmentation_files_in(folders["pred"]), segmentation_files_in(folders["seg_ref"])
    )
    assert [(r["case"], r["label"], r["region"]) for r in rows] == [
        (case, label, f"label_{label}") for case in CASES for label in (1, 4)
    ]


def test_collect_segmentations_skips_qsm_maps(cohort):
    _, folders, _ = cohort
    found = segmentation_files_in(folders["pred"])
    assert {case: path.name for case, path in found.items()} == {case: f"{case}.nii.gz" for case in CASES}


def test_labels_that_do_not_fit_a_map_are_refused_naming_both_files(cohort, capsys):
    """Renumbered predictions (ids 1, 2 where the reference has 1, 4) must never be scored against
    the reference's regions: the labels file lists 4, not 2."""
    tmp_path, folders, labels = cohort
    for case in CASES:
        path = folders["pred"] / f"{case}.nii.gz"
        volume = read_volume(path, dtype=None)
        write_volume(path, np.where(volume.data == 4, 2, volume.data).astype(np.uint8), volume.affine)
    out = tmp_path / "out"
    assert evaluate_cli.main(_argv(folders, out, labels=labels)) == 1
    message = capsys.readouterr().err
    assert f"{folders['pred'] / 'sub-001.nii.gz'}: label values [2] are not in {labels}" in message
    assert not out.exists()


def test_a_colour_table_names_the_regions_found(cohort):
    tmp_path, folders, _ = cohort
    lut = tmp_path / "FreeSurferColorLUT.txt"
    lut.write_text("#No. Label Name:  R G B A\n0 Unknown 0 0 0 0\n1 Left-Caudate 1 2 3 0\n"
                   "3 Unused 0 0 0 0\n4 Left-Putamen 4 5 6 0  # comment\n")
    rows = evaluation.evaluate_segmentation(segmentation_files_in(folders["pred"]),
                                            segmentation_files_in(folders["seg_ref"]), read_labels(lut))
    assert {(row["region"], row["label"]) for row in rows} == {("Left-Caudate", 1), ("Left-Putamen", 4)}


def test_markdown_table_formats_nan_and_inf():
    rows = [{"case": "a", "x": math.nan, "y": math.inf}, {"case": "b", "x": 0.123456, "y": 2.0}]
    table = evaluation.markdown_table(rows, [("case", "case", ""), ("x", "X", ".3f"), ("y", "Y (dB)", ".1f")])
    assert table.splitlines() == [
        "| case | X | Y (dB) |", "| --- | --- | --- |", "| a | n/a | inf |", "| b | 0.123 | 2.0 |"
    ]
