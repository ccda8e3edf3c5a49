"""Registration arm (`mqsm_register`, paper Table 2): label maps land on each subject's own grid in the
right place, whatever the storage orientation; registering a subject to itself is the identity;
the same inputs give the same labels; label-set mismatches and user errors are refused in one line."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.phantom import LABELS, write_cohort, write_template
from mqsm_nnunet.registration.ants import METHODS, load_template, register_labels
from mqsm_nnunet.registration.cohort import register_cohort
from mqsm_nnunet.registration.fusion import fuse_labels, joint_fusion_radii
from mqsm_nnunet.cli.register import main

TINY = dict(shape=(32, 32, 24), voxel_size=(6.0, 6.0, 6.0))
ROLES = ("t1", "field", "mask", "labels")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two oblique 6 mm subjects, a third that is sub-001 stored with its i axis reversed, and the
    template on the default 3 mm grid (atlases are finer than the subjects, as MNI at 1 mm)."""
    root = tmp_path_factory.mktemp("registration")
    cohort = root / "cohort"
    write_cohort(cohort, 2, b0_dir=(0.0, 0.26, 0.97), **TINY)
    for role in ROLES:
        image = nib.load(cohort / "sub-001" / f"{role}.nii.gz")
        flip = np.eye(4)
        flip[0, 0], flip[0, 3] = -1, image.shape[0] - 1
        write_volume(cohort / "sub-003" / f"{role}.nii.gz", np.asarray(image.dataobj)[::-1], image.affine @ flip,
                     image.get_data_dtype())
    write_template(root / "template")
    return root


def dice_per_region(labels: np.ndarray, truth: np.ndarray) -> list[float]:
    return [2 * np.sum((labels == i) & (truth == i)) / (np.sum(labels == i) + np.sum(truth == i))
            for i in np.unique(truth) if i != 0]


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


def test_cli_writes_label_maps_on_each_subject_grid(data, capsys):
    out = data / "registered"
    assert main(["-i", str(data / "cohort"), "--template", str(data / "template"), "-o", str(out),
                 "--method", "affine", "--quiet"]) == 0
    template_ids = set(np.unique(read_volume(data / "template" / "labels.nii.gz", dtype=None).data))
    assert template_ids == set(LABELS.values())
    carried = {}
    for case in ("sub-001", "sub-002", "sub-003"):
        field = nib.load(data / "cohort" / case / "field.nii.gz")
        written = nib.load(out / "affine" / f"{case}.nii.gz")
        assert written.shape == field.shape
        np.testing.assert_array_equal(written.affine, field.affine)  # the subject's own header, exactly
        labels = np.asarray(written.dataobj)
        assert labels.dtype == np.uint8
        assert set(np.unique(labels)) <= template_ids and len(np.unique(labels)) >= len(template_ids) - 2
        truth = read_volume(data / "cohort" / case / "labels.nii.gz", dtype=None).data
        distances = [np.linalg.norm(world_centroid(labels == i, field.affine) - world_centroid(truth == i, field.affine))
                     for i in np.unique(truth) if i and np.any(labels == i)]
        assert np.mean(distances) < 6.0  # regions land within a voxel of where they are, on average
        for name in ("caudate_L", "putamen_L", "thalamus_L"):  # RAS: the subject's left is world x < 0
            assert world_centroid(labels == LABELS[name], field.affine)[0] < -5
            assert world_centroid(labels == LABELS[name.replace("_L", "_R")], field.affine)[0] > 5
        carried[case] = labels
    # sub-003 is sub-001 stored mirrored in voxel order: the labels follow the anatomy, not the index
    assert np.mean(carried["sub-003"][::-1] == carried["sub-001"]) > 0.95
    report = json.loads((out / "affine" / "registration.json").read_text())
    assert set(report["seconds_per_case"]) == {"sub-001", "sub-002", "sub-003"}
    assert report["seed"] == 1 and report["interpolator"] == "genericLabel"
    assert sorted(p.name for p in out.iterdir()) == ["affine"]  # nothing hidden left behind


def test_registering_a_subject_to_itself_is_the_identity(data, tmp_path):
    subject = data / "cohort" / "sub-002"
    for role in ("t1", "labels"):
        (tmp_path / f"{role}.nii.gz").write_bytes((subject / f"{role}.nii.gz").read_bytes())
    template = load_template(tmp_path, LABELS)
    t1 = read_volume(subject / "t1.nii.gz")
    result = register_labels(template, t1, t1.affine, t1.data.shape, "affine")
    truth = read_volume(subject / "labels.nii.gz", dtype=None).data
    assert set(np.unique(result.labels)) == set(np.unique(truth))
    assert np.mean(dice_per_region(result.labels, truth)) > 0.95
    assert result.seconds > 0


def test_same_inputs_give_the_same_labels(data):
    template = load_template(data / "template", LABELS)
    t1 = read_volume(data / "cohort" / "sub-001" / "t1.nii.gz")
    first, second = (register_labels(template, t1, t1.affine, t1.data.shape, "syn").labels for _ in range(2))
    np.testing.assert_array_equal(first, second)


def copy_template(data, folder):
    folder.mkdir()
    for name in ("t1.nii.gz", "labels.nii.gz", "labels.json"):
        (folder / name).write_bytes((data / "template" / name).read_bytes())
    return folder


def test_majority_vote_takes_the_label_most_atlases_give_and_the_first_on_ties():
    first = np.array([[1, 1, 2, 3]])
    second = np.array([[1, 2, 2, 4]])
    third = np.array([[2, 2, 5, 5]])
    np.testing.assert_array_equal(fuse_labels([first, second, third]), [[1, 2, 2, 3]])
    np.testing.assert_array_equal(fuse_labels([first, second]), first)          # two atlases: every tie to the first
    np.testing.assert_array_equal(fuse_labels([third]), third)
    with pytest.raises(ValueError, match="one grid"):
        fuse_labels([first, np.zeros((2, 4), int)])


def test_joint_fusion_keeps_ants_radii_in_millimetres():
    """antsJointFusion's patch 2 / search 3 voxels are meant at 1 mm; coarser grids get fewer voxels."""
    assert joint_fusion_radii((1.0, 1.0, 1.0)) == (2, 3)
    assert joint_fusion_radii((2.0, 2.0, 2.0)) == (1, 1)
    assert joint_fusion_radii((6.0, 6.0, 6.0)) == (1, 0)


def test_multi_atlas_outvotes_a_wrong_atlas(data, tmp_path, capsys):
    """Three templates, one of them labelled wrongly (left and right caudate swapped): the fused labels
    are the two right atlases' labels, while that atlas alone carries its error."""
    wrong = copy_template(data, tmp_path / "wrong")
    (wrong / "labels.json").unlink()
    labels = read_volume(wrong / "labels.nii.gz", dtype=None)
    left, right = LABELS["caudate_L"], LABELS["caudate_R"]
    swapped = np.where(labels.data == left, right, np.where(labels.data == right, left, labels.data))
    write_volume(wrong / "labels.nii.gz", swapped, labels.affine, np.uint8)
    good = [copy_template(data, tmp_path / f"good{k}") for k in (1, 2)]
    args = ["-i", str(data / "cohort"), "--cases", "sub-001", "--method", "affine"]
    assert main([*args, "--template", str(wrong), "--template", str(good[0]), "--template", str(good[1]),
                 "-o", str(tmp_path / "multi")]) == 0
    assert "3 templates fused by majority vote" in capsys.readouterr().out
    assert main([*args, "--template", str(good[0]), "-o", str(tmp_path / "one"), "--quiet"]) == 0
    assert main([*args, "--template", str(wrong), "-o", str(tmp_path / "wrong_only"), "--quiet"]) == 0
    fused, one, wrong_only = (read_volume(tmp_path / name / "affine" / "sub-001.nii.gz", dtype=None).data
                              for name in ("multi", "one", "wrong_only"))
    np.testing.assert_array_equal(fused, one)
    assert np.any((one == left) & (wrong_only == right))
    report = json.loads((tmp_path / "multi" / "affine" / "registration.json").read_text())
    assert len(report["templates"]) == 3 and report["fusion"].startswith("majority vote")

    # joint label fusion: the same atlases, the wrong one outweighed too (its T1 looks like the others')
    assert main([*args, "--template", str(wrong), "--template", str(good[0]), "--template", str(good[1]),
                 "-o", str(tmp_path / "joint"), "--fusion", "joint"]) == 0
    assert "3 templates fused by joint label fusion" in capsys.readouterr().out
    joint = read_volume(tmp_path / "joint" / "affine" / "sub-001.nii.gz", dtype=None).data
    assert np.mean(joint[one == left] == left) > 0.9 and np.mean(joint[one == right] == right) > 0.9
    assert np.mean(dice_per_region(joint, one)) > 0.9
    report = json.loads((tmp_path / "joint" / "affine" / "registration.json").read_text())
    assert report["fusion"].startswith("joint label fusion")


def test_label_set_mismatch_is_refused(data, tmp_path, capsys):
    renamed = copy_template(data, tmp_path / "renamed")
    table = dict(LABELS)
    table["caudate_L"], table["caudate_R"] = table["caudate_R"], table["caudate_L"]
    (renamed / "labels.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match="caudate_L: 2 vs 1"):
        load_template(renamed, LABELS)

    missing = copy_template(data, tmp_path / "missing")
    labels = read_volume(missing / "labels.nii.gz", dtype=None)
    write_volume(missing / "labels.nii.gz", np.where(labels.data == LABELS["dentate_R"], 0, labels.data),
                 labels.affine, np.uint8)
    with pytest.raises(ValueError, match=r"missing from the template: dentate_R \(14\)"):
        load_template(missing, LABELS)

    out = tmp_path / "out"
    assert main(["-i", str(data / "cohort"), "--template", str(missing), "-o", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "dentate_R" in err and "--labels" in err
    assert not out.exists()


def test_cli_user_errors_exit_1_in_one_line(data, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-i", str(data / "cohort"), "--template", str(tmp_path / "nowhere"), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mqsm_register: error: template folder") and "--template" in err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists()

    assert main(["-i", str(data / "cohort"), "--template", str(data / "template"), "-o", str(out),
                 "--cases", "sub-009"]) == 1
    assert "sub-009" in capsys.readouterr().err

    (out / "affine").mkdir(parents=True)
    assert main(["-i", str(data / "cohort"), "--template", str(data / "template"), "-o", str(out),
                 "--method", "affine"]) == 1
    assert "--overwrite" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["-i", str(data / "cohort"), "--template", str(data / "template"), "-o", str(out), "--method", "flirt"])
    assert exit_info.value.code == 2


def test_library_refuses_bad_arguments(data, tmp_path):
    with pytest.raises(ValueError, match="unknown registration method"):
        register_cohort(data / "cohort", data / "template", tmp_path / "out", ["niftyreg"])
    with pytest.raises(ValueError, match="`seed`"):
        register_cohort(data / "cohort", data / "template", tmp_path / "out", ["affine"], seed=0)
    with pytest.raises(FileNotFoundError, match="`grid_name`"):
        register_cohort(data / "cohort", data / "template", tmp_path / "out", ["affine"], grid_name="qsm.nii.gz")
    assert not (tmp_path / "out").exists()
    assert {"affine", "syn"} <= set(METHODS)


def test_demo_registration_arm_writes_table2_and_says_what_it_shows(tmp_path):
    """The demo's arm on a real-anatomy cohort (FreeSurfer ids) with the real template."""
    from mqsm_nnunet.demo.registration import registration_table2
    from mqsm_nnunet.phantom import write_real_cohort

    cohort, cases = tmp_path / "cohort", ["sub-001", "sub-002"]
    write_real_cohort(cohort, 2, voxel_size=(4.0, 4.0, 4.0), seed=2)
    chi = {case: cohort / case / "chi.nii.gz" for case in cases}
    truth = {case: cohort / case / "labels.nii.gz" for case in cases}
    result = registration_table2(cohort, cases, chi, truth, chi, truth, tmp_path / "arm", seed=2,
                                 template_voxel_size=(4.0, 4.0, 4.0))
    multi = "Multi-atlas ANTs SyN (quick) (3, joint label fusion)"
    assert result.table.columns == ("mQSM", "Affine", "ANTs SyN (quick)", multi)
    by_key = {(d.group, d.column): d for d in result.table.group_differences}
    assert by_key[("all", "mQSM")].mean_abs_difference_ppb == 0.0  # the mQSM column here is the truth itself
    assert "cortex: mQSM closer to the truth than Affine" in result.verdict
    assert result.figure.is_file() and "| Region | Ground truth | mQSM | Affine |" in result.markdown
    assert len(result.summary_json["templates"]) == 3 and "Dice of each column's labels" in result.markdown
    for column in ("Affine", "ANTs SyN (quick)", multi):
        for case, path in result.summary_json["registered_labels"][column].items():
            assert nib.load(path).shape == nib.load(cohort / case / "field.nii.gz").shape
        assert result.summary_json["seconds_per_subject"][column] > 0


def test_brains_are_registered_not_heads(data, tmp_path, capsys):
    """A subject that is the template's own anatomy plus a thick bright scalp over its top: registered as
    whole heads, SyN pulls the labels towards the scalp; brain-extracted (both masks, the default), it
    finds the identity. A template mask without subject masks is refused with the fix."""
    from scipy import ndimage

    subject = data / "cohort" / "sub-002"
    template = tmp_path / "template"
    template.mkdir()
    for role in ("t1", "labels", "mask"):
        (template / f"{role}.nii.gz").write_bytes((subject / f"{role}.nii.gz").read_bytes())
    t1, mask = read_volume(subject / "t1.nii.gz"), read_volume(subject / "mask.nii.gz")
    brain = mask.data > 0
    scalp = ndimage.binary_dilation(brain, iterations=3) & ~ndimage.binary_dilation(brain, iterations=1)
    scalp[:, :, :12] = False
    cohort = tmp_path / "cohort"
    (cohort / "sub-head").mkdir(parents=True)
    for role in ("field", "mask", "labels"):
        (cohort / "sub-head" / f"{role}.nii.gz").write_bytes((subject / f"{role}.nii.gz").read_bytes())
    write_volume(cohort / "sub-head" / "t1.nii.gz", np.where(scalp, 2 * t1.data[brain].max(), t1.data), t1.affine)
    truth = read_volume(subject / "labels.nii.gz", dtype=None).data
    args = ["-i", str(cohort), "--template", str(template), "--method", "syn", "--labels",
            str(data / "cohort" / "labels.json"), "--quiet"]
    assert main([*args, "-o", str(tmp_path / "brains")]) == 0
    assert main([*args, "-o", str(tmp_path / "heads"), "--whole-head"]) == 0
    dice = {mode: np.mean(dice_per_region(read_volume(tmp_path / mode / "syn" / "sub-head.nii.gz", dtype=None).data,
                                          truth)) for mode in ("brains", "heads")}
    assert dice["brains"] > 0.95 and dice["heads"] < 0.85, dice
    assert json.loads((tmp_path / "brains" / "syn" / "registration.json").read_text())["brain_extracted"] == [True]
    assert json.loads((tmp_path / "heads" / "syn" / "registration.json").read_text())["brain_extracted"] == [False]

    (cohort / "sub-head" / "mask.nii.gz").unlink()
    assert main([*args, "-o", str(tmp_path / "no_mask")]) == 1
    err = capsys.readouterr().err
    assert "sub-head" in err and "mask.nii.gz: missing" in err and "--whole-head" in err
