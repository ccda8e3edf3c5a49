"""Synthetic phantom: determinism, label table, physics consistency, literature values, T1 contrast,
oblique B0, the cohort layout, the registration template and the `mqsm_phantom` command."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mqsm_nnunet.io.nifti import read_volume
from mqsm_nnunet.cli.phantom import main
from mqsm_nnunet.phantom import (DEFAULT_CHI_VARIATION, LABELS, SUSCEPTIBILITY_PPB, TEMPLATE_FILES, TISSUES,
                                 REGION_TISSUE, make_subject, make_template, write_cohort)
from mqsm_nnunet.phantom import cohort as cohort_module
from mqsm_nnunet.phantom.subject import TEXTURE_PPB, TEXTURE_RELATIVE
from mqsm_nnunet.physics import b0_direction_from_affine, forward_field

TINY = dict(shape=(32, 32, 24), voxel_size=(6.0, 6.0, 6.0))  # same 192 x 192 x 144 mm field of view as the default
FILES = ("t1", "field", "mask", "labels", "chi")


@pytest.fixture(scope="module")
def default_subjects():
    """Two subjects on the default grid (64 x 64 x 48, 3 mm)."""
    return [make_subject(index) for index in (1, 2)]


@pytest.fixture(scope="module")
def tiny():
    return make_subject(1, **TINY)


def region_mean(subject, name: str, volume: np.ndarray) -> float:
    return float(volume[subject.labels == LABELS[name]].mean())


def test_label_table_is_consecutive_with_literature_values():
    assert LABELS["background"] == 0
    assert sorted(LABELS.values()) == list(range(len(LABELS)))
    assert len(LABELS) - 1 >= 16
    assert set(SUSCEPTIBILITY_PPB) == set(LABELS) - {"background"}
    published = {"caudate": 44, "globus_pallidus": 131, "putamen": 38, "red_nucleus": 100, "dentate": 152,
                 "substantia_nigra": 111, "thalamus": 20, "white_matter": -30, "cortex": 20, "csf": 19,
                 "veins": 190}
    for tissue, value in published.items():
        assert TISSUES[tissue].chi_ppb == value
        assert "Marques" in TISSUES[tissue].source and "2021" in TISSUES[tissue].source
    for name, value in SUSCEPTIBILITY_PPB.items():
        assert value == TISSUES[REGION_TISSUE[name]].chi_ppb


def test_same_seed_same_subject_and_seed_matters(tiny):
    again = make_subject(1, **TINY)
    for name in ("t1", "field", "chi", "mask", "labels", "affine"):
        np.testing.assert_array_equal(getattr(tiny, name), getattr(again, name))
    other_seed = make_subject(1, seed=1, **TINY)
    assert np.mean(other_seed.labels != tiny.labels) > 0.02


def test_subjects_differ_in_anatomy_and_values(default_subjects):
    first, second = default_subjects
    assert np.mean(first.labels != second.labels) > 0.05
    assert abs(first.mask.sum() / second.mask.sum() - 1) > 0.003
    differences = [abs(first.region_chi_ppb[n] - second.region_chi_ppb[n]) for n in SUSCEPTIBILITY_PPB]
    assert min(differences) > 0


def test_every_label_present_on_default_grid(default_subjects):
    for subject in default_subjects:
        assert subject.labels.shape == (64, 64, 48)
        assert set(np.unique(subject.labels)) == set(LABELS.values())


def test_mask_chi_and_field_follow_the_labels(default_subjects):
    for subject in default_subjects:
        assert subject.mask.dtype == np.uint8 and set(np.unique(subject.mask)) == {0, 1}
        np.testing.assert_array_equal(subject.mask, subject.labels > 0)
        outside = subject.mask == 0
        assert np.all(subject.chi[outside] == 0) and np.all(subject.field[outside] == 0)
        assert subject.chi.dtype == np.float32 and subject.field.dtype == np.float32
        # the brain does not touch the field of view's edge
        assert not subject.mask[[0, -1]].any() and not subject.mask[:, [0, -1]].any()
        assert not subject.mask[:, :, [0, -1]].any()


def test_regional_susceptibility_near_literature():
    """On voxel-centre samples (supersampling 1); the default voxel means add partial volume."""
    limit = 2.5 * DEFAULT_CHI_VARIATION  # draws are truncated at 2.5 sd
    for subject in [make_subject(index, supersampling=1) for index in (1, 2)]:
        for name, literature in SUSCEPTIBILITY_PPB.items():
            drawn = subject.region_chi_ppb[name]
            assert abs(drawn / literature - 1) <= limit + 1e-9, name
            texture_sd = TEXTURE_RELATIVE * abs(drawn) + TEXTURE_PPB
            assert abs(1000 * region_mean(subject, name, subject.chi) - drawn) < 3 * texture_sd, name
        for side in "LR":
            chi = {n: region_mean(subject, f"{n}_{side}", subject.chi) for n in
                   ("globus_pallidus", "putamen", "caudate", "dentate")}
            assert chi["globus_pallidus"] > chi["putamen"] and chi["dentate"] > chi["caudate"]
        assert region_mean(subject, "white_matter", subject.chi) < 0
        assert region_mean(subject, "veins", subject.chi) > region_mean(subject, "frontal_cortex_L", subject.chi)


def test_field_without_supersampling_is_the_grids_dipole_model_of_chi_plus_noise():
    for subject in [make_subject(index, supersampling=1) for index in (1, 2)]:
        inside = subject.mask > 0
        clean = forward_field(subject.chi, subject.voxel_size, subject.b0_dir)
        assert subject.field_noise_std == pytest.approx(0.02 * clean[inside].std(), rel=1e-5)
        residual = (subject.field - clean)[inside]
        assert residual.std() == pytest.approx(subject.field_noise_std, rel=0.03)
        assert abs(residual.mean()) < 4 * subject.field_noise_std / np.sqrt(inside.sum())
    noiseless = make_subject(1, noise=0.0, supersampling=1, **TINY)
    expected = forward_field(noiseless.chi, noiseless.voxel_size, noiseless.b0_dir) * noiseless.mask
    np.testing.assert_allclose(noiseless.field, expected, atol=1e-7)


def test_supersampled_field_is_not_the_grids_own_model_and_converges():
    """By default chi and field come from a 2x finer grid: the field is close to the voxel grid's
    dipole model of the (voxel-mean) chi, but not equal to it, by more than the noise (no inverse
    crime); a 4x finer simulation moves it less than the 2x one moved the 1x one (convergence)."""
    b0 = (0.0, 0.26, 0.97)
    fields = {s: make_subject(1, b0_dir=b0, noise=0.0, supersampling=s, **TINY) for s in (1, 2, 4)}
    subject = fields[2]
    inside = subject.mask > 0
    norm = np.linalg.norm(subject.field[inside])
    model_error = np.linalg.norm((subject.field - forward_field(subject.chi, subject.voxel_size, b0))[inside]) / norm
    assert 0.05 < model_error < 0.5
    assert model_error > 5 * 0.02      # the default field noise (2 % of the field's sd) is far smaller
    step_2 = np.linalg.norm((fields[2].field - fields[1].field)[inside])
    step_4 = np.linalg.norm((fields[4].field - fields[2].field)[inside])
    assert step_4 < 0.7 * step_2
    assert np.all(subject.chi[~inside] == 0) and np.array_equal(subject.labels, fields[1].labels)
    with pytest.raises(ValueError, match="supersampling"):
        make_subject(1, supersampling=0, **TINY)


def test_large_grids_fall_back_to_the_grids_own_field_model_with_a_warning():
    from mqsm_nnunet.phantom.subject import default_supersampling

    assert default_supersampling((64, 64, 48)) == 2
    with pytest.warns(UserWarning, match="inverse crime"):
        assert default_supersampling((256, 256, 136)) == 1


def test_t1_contrast_ordering(default_subjects):
    for subject in default_subjects:
        t1 = {name: region_mean(subject, name, subject.t1) for name in SUSCEPTIBILITY_PPB}
        cortex = np.mean([t1[f"{lobe}_cortex_{s}"] for lobe in ("frontal", "parietal", "temporal", "occipital")
                          for s in "LR"])
        csf = np.mean([t1["csf"], t1["lateral_ventricle_L"], t1["lateral_ventricle_R"]])
        assert t1["white_matter"] > cortex > csf
        assert t1["globus_pallidus_L"] > t1["putamen_L"] and t1["globus_pallidus_R"] > t1["putamen_R"]
        # scalp and skull exist outside the brain mask, in the T1 only
        assert subject.t1[subject.mask == 0].max() > 0.6 * t1["white_matter"]


def test_same_anatomy_on_any_grid():
    coarse = make_subject(4, shape=(33, 33, 25), voxel_size=(6.0, 6.0, 6.0), supersampling=1)
    fine = make_subject(4, shape=(65, 65, 49), voxel_size=(3.0, 3.0, 3.0), supersampling=1)  # every other centre
    assert np.mean(fine.labels[::2, ::2, ::2] == coarse.labels) > 0.999
    np.testing.assert_allclose(fine.chi[::2, ::2, ::2], coarse.chi, atol=1e-6)


@pytest.mark.parametrize("b0", [(0.3, -0.2, 1.0), (1.0, 0.0, 0.0), (0.0, 0.5, -1.0)])
def test_oblique_b0_is_written_into_the_affine(b0):
    subject = make_subject(1, b0_dir=b0, supersampling=1, **TINY)
    unit = np.asarray(b0) / np.linalg.norm(b0)
    assert abs(b0_direction_from_affine(subject.affine) @ unit) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(subject.voxel_size, TINY["voxel_size"])
    inside = subject.mask > 0
    right = subject.field - forward_field(subject.chi, subject.voxel_size, unit)
    axial = subject.field - forward_field(subject.chi, subject.voxel_size, (0, 0, 1))
    assert right[inside].std() == pytest.approx(subject.field_noise_std, rel=0.1)
    assert axial[inside].std() > 5 * subject.field_noise_std


def test_warns_when_the_brain_leaves_the_field_of_view():
    with pytest.warns(UserWarning, match="field of view"):
        make_subject(1, shape=(24, 24, 16), voxel_size=(6.0, 6.0, 6.0))


def test_cli_writes_layout_and_summary(tmp_path, capsys):
    out = tmp_path / "cohort"
    assert main(["-o", str(out), "-n", "2", "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6",
                 "--b0-dir", "0.2", "0", "1", "--seed", "3", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads((out / "labels.json").read_text()) == LABELS
    assert sorted(p.name for p in out.iterdir()) == ["labels.json", "sub-001", "sub-002"]
    expected = make_subject(2, b0_dir=(0.2, 0, 1), seed=3, **TINY)  # knows nothing of N: subject k is N-independent
    for role in FILES:
        volume = read_volume(out / "sub-002" / f"{role}.nii.gz", dtype=None)
        np.testing.assert_array_equal(volume.data, getattr(expected, role))
        np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-4)  # float32 in the header
    assert read_volume(out / "sub-001" / "field.nii.gz", dtype=None).data.dtype == np.float32
    assert read_volume(out / "sub-001" / "labels.nii.gz", dtype=None).data.dtype == np.uint8

    again = tmp_path / "again"
    assert main(["-o", str(again), "-n", "1", "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6"]) == 0
    printed = capsys.readouterr().out
    for text in ("1 subject", "32 x 32 x 24", "B0 direction", "ppm", "ppb", *SUSCEPTIBILITY_PPB):
        assert text in printed


@pytest.mark.parametrize("arguments, message", [
    (["--voxel-size", "3", "0", "3"], "voxel_size"),
    (["--b0-dir", "0", "0", "0"], "b0_dir"),
    (["--shape", "32", "0", "24"], "shape"),
    (["--noise", "-0.1"], "noise"),
    (["--supersampling", "0"], "supersampling"),
])
def test_cli_rejects_bad_values(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["-o", str(tmp_path / "out"), "-n", "1", "--geometric", *arguments])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_no_subjects_and_non_empty_output(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-o", str(tmp_path / "out"), "-n", "0"])
    assert exit_info.value.code != 0 and "subjects" in capsys.readouterr().err
    with pytest.raises(ValueError, match="n_subjects"):
        write_cohort(tmp_path / "out", 0)

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    (busy / "sub-009").mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["-o", str(busy), "-n", "1", "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6", "--quiet"])
    assert exit_info.value.code != 0 and "--overwrite" in capsys.readouterr().err
    assert main(["-o", str(busy), "-n", "1", "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6", "--quiet",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in busy.iterdir()) == ["labels.json", "notes.txt", "sub-001"]


def test_interrupted_write_leaves_only_complete_subjects(tmp_path, monkeypatch):
    real_write = cohort_module.write_volume
    calls = []

    def failing_write(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == len(FILES) + 3:  # the third file of the second subject
            raise KeyboardInterrupt
        return real_write(path, *args, **kwargs)

    monkeypatch.setattr(cohort_module, "write_volume", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_cohort(tmp_path, 3, **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.json", "sub-001"]
    assert sorted(p.name for p in (tmp_path / "sub-001").iterdir()) == sorted(f"{r}.nii.gz" for r in FILES)


def test_template_is_the_mean_anatomy_with_its_own_folding():
    template = make_template(**TINY)
    again = make_template(**TINY)
    for name in ("t1", "chi", "mask", "labels", "affine"):
        np.testing.assert_array_equal(getattr(template, name), getattr(again, name))
    np.testing.assert_allclose(b0_direction_from_affine(template.affine), (0, 0, 1), atol=1e-12)  # axial, as atlases
    assert set(np.unique(make_template().labels)) == set(LABELS.values())  # every region on the default grid
    for name, value in SUSCEPTIBILITY_PPB.items():  # literature values, no variation, no texture
        inside = template.chi[template.labels == LABELS[name]]
        np.testing.assert_allclose(inside, value / 1000.0, rtol=1e-6)
    assert np.array_equal(template.mask, template.labels > 0) and np.all(template.chi[template.mask == 0] == 0)

    other_seed = make_template(seed=1, **TINY)
    nuclei = np.isin(template.labels, [LABELS[f"{s}_{side}"] for s in ("caudate", "putamen", "thalamus")
                                       for side in "LR"])
    assert np.array_equal(nuclei, np.isin(other_seed.labels, np.unique(template.labels[nuclei])))  # mean nuclei
    cortex = [LABELS[f"{lobe}_cortex_{side}"] for lobe in ("frontal", "parietal") for side in "LR"]
    assert np.mean(np.isin(template.labels, cortex) != np.isin(other_seed.labels, cortex)) > 0.01  # own folding
    for index in (1, 2):  # not any subject of its cohort
        assert np.mean(make_subject(index, **TINY).labels != template.labels) > 0.05


def test_cli_writes_template_alone_or_with_a_cohort(tmp_path, capsys):
    folder = tmp_path / "template"
    assert main(["--template", str(folder), "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6",
                 "--quiet"]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(TEMPLATE_FILES)
    assert json.loads((folder / "labels.json").read_text()) == LABELS
    expected = make_template(**TINY)
    for role in ("t1", "labels", "mask", "chi"):
        volume = read_volume(folder / f"{role}.nii.gz", dtype=None)
        np.testing.assert_array_equal(volume.data, getattr(expected, role))
        np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-4)
    with pytest.raises(SystemExit):
        main(["--template", str(folder), "--geometric", "--shape", "32", "32", "24", "--voxel-size", "6", "6", "6", "--quiet"])
    assert "--overwrite" in capsys.readouterr().err

    assert main(["-o", str(tmp_path / "cohort"), "-n", "1", "--geometric", "--template", str(tmp_path / "t2"), "--shape", "32",
                 "32", "24", "--voxel-size", "6", "6", "6", "--quiet"]) == 0
    assert (tmp_path / "cohort" / "sub-001" / "t1.nii.gz").is_file() and (tmp_path / "t2" / "t1.nii.gz").is_file()
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "other")])
    assert "-n/--subjects" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-o", str(tmp_path / "other"), "-n", "1", "--supersampling", "2"])
    assert "--geometric only" in capsys.readouterr().err
