"""The real-anatomy phantom: embedded label maps, iron nuclei where they lie, the simulated subject's
physics and contrast, and `mqsm_phantom --anatomy` on a user's own FreeSurfer label map."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mqsm_nnunet.cli.phantom import main
from mqsm_nnunet.conversion.field_units import TYPICAL_PPM, robust_half_range
from mqsm_nnunet.io.nifti import read_volume
from mqsm_nnunet.phantom.cohort import write_real_cohort
from mqsm_nnunet.phantom.freesurfer import DENTATE, RED_NUCLEUS, REGIONS, SUBSTANTIA_NIGRA, region_table
from mqsm_nnunet.phantom.iron_nuclei import CEREBELLAR_WM, VENTRAL_DC
from mqsm_nnunet.phantom.label_maps import EMBEDDED_DIR, embedded_anatomies, load_anatomy, read_label_map
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.physics import b0_direction_from_affine, forward_field

VOXEL = (3.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def anatomy():
    return load_anatomy(embedded_anatomies()[2])


@pytest.fixture(scope="module")
def subject(anatomy):
    return make_real_subject(anatomy, 1, seed=5, voxel_size=VOXEL)


def test_sixteen_anatomies_ship_with_their_licence_and_origin():
    assert [p.name for p in embedded_anatomies()] == [f"anatomy_{k:02d}.nii.gz" for k in range(1, 17)]
    assert "Apache License" in (EMBEDDED_DIR / "LICENSE.txt").read_text()
    assert "SynthSeg" in (EMBEDDED_DIR / "SOURCE.md").read_text()


def test_iron_nuclei_are_added_inside_their_hosts_at_plausible_volumes(anatomy):
    raw, _ = read_label_map(embedded_anatomies()[2])
    for side in ("L", "R"):
        volumes = {name: int((anatomy.labels == ids[side]).sum())   # 1 mm voxels: mm^3
                   for name, ids in (("nigra", SUBSTANTIA_NIGRA), ("red", RED_NUCLEUS), ("dentate", DENTATE))}
        assert 200 <= volumes["nigra"] <= 450 and 120 <= volumes["red"] <= 260 and 600 <= volumes["dentate"] <= 1300
        assert np.all(raw[anatomy.labels == SUBSTANTIA_NIGRA[side]] == VENTRAL_DC[side])
        assert np.all(raw[anatomy.labels == RED_NUCLEUS[side]] == VENTRAL_DC[side])
        assert np.all(raw[anatomy.labels == DENTATE[side]] == CEREBELLAR_WM[side])
        # the red nucleus lies medial to the nigra, as in every brain
        x = {name: (np.argwhere(anatomy.labels == ids[side]) @ anatomy.affine[:3, :3].T)[:, 0].mean()
             for name, ids in (("nigra", SUBSTANTIA_NIGRA), ("red", RED_NUCLEUS))}
        assert abs(x["red"]) < abs(x["nigra"]) if side == "L" else x["red"] < x["nigra"]
    assert set(np.unique(anatomy.labels[anatomy.brain]).tolist()) == set(REGIONS)


def test_subject_is_reproducible_and_each_seed_draws_another(anatomy, subject):
    again = make_real_subject(anatomy, 1, seed=5, voxel_size=VOXEL)
    np.testing.assert_array_equal(again.labels, subject.labels)
    np.testing.assert_array_equal(again.field, subject.field)
    other = make_real_subject(anatomy, 1, seed=6, voxel_size=VOXEL)
    assert other.labels.shape != subject.labels.shape or np.mean(other.labels != subject.labels) > 0.05


def test_subject_labels_mask_and_chi_agree(subject):
    assert set(np.unique(subject.labels).tolist()) <= {0, *REGIONS}
    np.testing.assert_array_equal(subject.mask > 0, subject.labels > 0)
    assert np.all(subject.chi[subject.mask == 0] == 0) and np.all(subject.field[subject.mask == 0] == 0)
    for ids in (SUBSTANTIA_NIGRA, RED_NUCLEUS, DENTATE):
        assert all((subject.labels == i).sum() >= 3 for i in ids.values())   # present even at 3 mm


def test_field_is_dipolar_but_not_the_grids_own_model(subject):
    """Simulated on a ~1 mm grid and averaged: close to the voxel grid's dipole model of chi (the
    physics), never identical to it (no inverse crime), and in the size range of a real local field."""
    mask = subject.mask > 0
    model = forward_field(subject.chi, subject.voxel_size, subject.b0_dir)
    correlation = np.corrcoef(model[mask], subject.field[mask])[0, 1]
    assert 0.8 < correlation < 0.999
    assert TYPICAL_PPM[0] <= robust_half_range(subject.field, mask) <= TYPICAL_PPM[1]


def test_t1_has_the_measured_contrast_and_the_nuclei_barely_show(anatomy):
    subject = make_real_subject(anatomy, 1, seed=5, voxel_size=VOXEL, t1_noise=0.0)
    median = {name: float(np.median(subject.t1[np.isin(subject.labels, ids)]))
              for name, ids in (("wm", (2, 41)), ("cortex", (3, 42)), ("ventricle", (4, 43)), ("pallidum", (13, 52)),
                                ("putamen", (12, 51)), ("nigra", tuple(SUBSTANTIA_NIGRA.values())),
                                ("dc", tuple(VENTRAL_DC.values())))}
    assert median["wm"] > median["putamen"] > median["cortex"] > median["ventricle"]
    assert median["pallidum"] > median["cortex"]
    assert abs(median["nigra"] / median["dc"] - 1) < 0.08          # T1 nearly blind to the nigra
    chi_nigra = subject.chi[np.isin(subject.labels, tuple(SUBSTANTIA_NIGRA.values()))].mean()
    chi_dc = subject.chi[np.isin(subject.labels, tuple(VENTRAL_DC.values()))].mean()
    assert chi_nigra - chi_dc > 0.04                                # QSM is not


def test_user_label_map_keeps_its_space_and_names(tmp_path, anatomy):
    folder = tmp_path / "asegs"
    folder.mkdir()
    raw, affine = read_label_map(embedded_anatomies()[2])
    nib.save(nib.MGHImage(raw.astype(np.int32), affine), str(folder / "bert_aseg.mgz"))
    out = tmp_path / "cohort"
    assert main(["-o", str(out), "--anatomy", str(folder), "--voxel-size", "3", "3", "3", "--b0-dir", "0", "0.2", "1",
                 "--quiet"]) == 0
    assert [p.name for p in out.iterdir() if p.is_dir()] == ["sub-bert_aseg"]
    assert json.loads((out / "labels.json").read_text()) == region_table()
    assert json.loads((out / "labels.json").read_text())["Left-Red-Nucleus"] == RED_NUCLEUS["L"]
    labels = read_volume(out / "sub-bert_aseg" / "labels.nii.gz", dtype=None)
    thalamus = [(np.argwhere(volume == 10) @ a[:3, :3].T + a[:3, 3]).mean(0)
                for volume, a in ((labels.data, labels.affine), (raw, affine))]
    np.testing.assert_allclose(thalamus[0], thalamus[1], atol=1.5)   # the same place in the world
    sidecar = json.loads((out / "sub-bert_aseg" / "field.json").read_text())
    np.testing.assert_allclose(sidecar["B0_dir"], np.array([0, 0.2, 1]) / np.linalg.norm([0, 0.2, 1]))


def test_bad_anatomy_folders_are_refused_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "a"), "--anatomy", str(empty)])
    assert "no label map" in capsys.readouterr().err
    intensities = tmp_path / "t1s"
    intensities.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32), np.eye(4)),
             str(intensities / "t1.nii.gz"))
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "b"), "--anatomy", str(intensities)])
    assert "t1.nii.gz" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "c"), "--anatomy", str(empty), "-n", "2"])
    assert "either" in capsys.readouterr().err


def test_embedded_cohort_turns_the_affine_for_b0_and_deals_different_brains(tmp_path):
    b0 = np.array([0.0, 0.97, 0.26]) / np.linalg.norm([0.0, 0.97, 0.26])
    summary = write_real_cohort(tmp_path / "cohort", 2, voxel_size=VOXEL, b0_dir=b0, shape=(48, 52, 60), seed=3)
    assert len(set(summary.anatomies.values())) == 2
    for case in ("sub-001", "sub-002"):
        field = read_volume(tmp_path / "cohort" / case / "field.nii.gz")
        assert field.data.shape == (48, 52, 60) and not (tmp_path / "cohort" / case / "field.json").exists()
        assert abs(float(b0_direction_from_affine(field.affine) @ b0)) > 0.9999


def test_several_templates_are_different_anatomies(tmp_path, capsys):
    """`--template` given three times: three atlases from three anatomies (the seed's last three; the
    geometric phantom has one template)."""
    folders = [tmp_path / f"t{k}" for k in (1, 2, 3)]
    assert main(["--template", str(folders[0]), "--template", str(folders[1]), "--template", str(folders[2]),
                 "--voxel-size", "4", "4", "4", "--seed", "3", "--quiet"]) == 0
    labels = [read_volume(folder / "labels.nii.gz", dtype=None).data for folder in folders]
    assert len({label.shape for label in labels}) == 3          # three brains, three sizes
    nuclei = {*SUBSTANTIA_NIGRA.values(), *RED_NUCLEUS.values(), *DENTATE.values()}
    assert all(set(np.unique(label)) >= nuclei for label in labels)
    with pytest.raises(SystemExit):
        main(["--template", str(tmp_path / "g1"), "--template", str(tmp_path / "g2"), "--geometric"])
    assert "once" in capsys.readouterr().err
