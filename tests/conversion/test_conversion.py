"""mqsm_convert: phantom cohort -> nnU-Net raw dataset; validation errors; atomic build.

Files are read back with SimpleITK, as nnU-Net reads them (array (k, j, i), transposed to (i, j, k)).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mqsm_nnunet.cli.convert import main
from mqsm_nnunet import conversion, physics
from mqsm_nnunet.cli import phantom as phantom_cli
from mqsm_nnunet.io.nifti import read_volume, write_volume

SHAPE = ("32", "32", "24")
VOXEL = ("6", "6", "6")
OBLIQUE_B0 = (0.0, np.sin(np.radians(25)), np.cos(np.radians(25)))
DATASET = "Dataset007_Phantom"
NNUNET_BIN = Path(sys.executable).parent


def _make_phantom(out: Path, *extra: str) -> Path:
    phantom_cli.main(["-o", str(out), "-n", "3", "--geometric", "--shape", *SHAPE, "--voxel-size", *VOXEL, "--seed", "3", "--quiet",
                  *extra])
    return out


@pytest.fixture(scope="session")
def axial_phantom(tmp_path_factory) -> Path:
    return _make_phantom(tmp_path_factory.mktemp("axial") / "cohort")


@pytest.fixture(scope="session")
def oblique_phantom(tmp_path_factory) -> Path:
    return _make_phantom(tmp_path_factory.mktemp("oblique") / "cohort", "--b0-dir", *map(str, OBLIQUE_B0))


@pytest.fixture
def cohort(axial_phantom, tmp_path) -> Path:
    """A private copy of the phantom cohort, free to break."""
    return Path(shutil.copytree(axial_phantom, tmp_path / "cohort"))


@pytest.fixture
def raw(nnunet_folders) -> Path:
    """$nnUNet_raw of the private nnU-Net installation in this process (conftest.py)."""
    return nnunet_folders / "nnUNet_raw"


@pytest.fixture
def convert(capsys, raw):
    """Run the CLI in-process: (exit status, stdout, stderr)."""
    def run(cohort: Path, *args: str, dataset: tuple[str, str] = ("7", "Phantom")) -> tuple[int, str, str]:
        status = main(["-i", str(cohort), "-d", dataset[0], "-n", dataset[1], "-np", "1", *args])
        out, err = capsys.readouterr()
        return status, out, err
    return run


def read_like_nnunet(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)


def channel(raw: Path, case: str, index: int, split: str = "imagesTr") -> np.ndarray:
    return read_like_nnunet(raw / DATASET / split / f"{case}_{index:04d}.nii.gz")


def dataset_json(raw: Path) -> dict:
    return json.loads((raw / DATASET / "dataset.json").read_text())


def rewrite(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
    volume = read_volume(path, dtype=None)
    write_volume(path, volume.data if data is None else data, volume.affine if affine is None else affine)


def assert_nothing_written(raw: Path) -> None:
    """No dataset and no partial build folder in nnUNet_raw."""
    assert not raw.exists() or sorted(p.name for p in raw.iterdir()) == []


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    assert status == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mqsm_convert: error: ")
    for fragment in fragments:
        assert fragment in last, (fragment, last)


# ----------------------------------------------------------------------------------------------------
# end to end through nnU-Net
# ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_phantom_dataset_passes_nnunet_plan_and_preprocess(cohort, raw, convert):
    status, out, _ = convert(cohort, "--test-subjects", "sub-002", "sub-003")  # one training case: fast
    assert status == 0 and out.strip() == str(raw / DATASET)
    result = subprocess.run(
        [str(NNUNET_BIN / "nnUNetv2_plan_and_preprocess"), "-d", "7", "-c", "3d_fullres",
         "--verify_dataset_integrity", "-np", "1", "-npfp", "1", "--no_pbar"],
        capture_output=True, text=True, env=os.environ.copy(), timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "verify_dataset_integrity Done" in result.stdout
    plans = json.loads((raw.parent / "nnUNet_preprocessed" / DATASET / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["normalization_schemes"] == [
        "ZScoreNormalization", "NoNormalization", "NoNormalization", "NoNormalization"]


# ----------------------------------------------------------------------------------------------------
# what is written
# ----------------------------------------------------------------------------------------------------
def test_layout_dataset_json_and_channels(cohort, raw, convert):
    (cohort / "sub-003" / "labels.nii.gz").unlink()  # no labels: a test subject
    status, _, _ = convert(cohort)
    assert status == 0
    folder = raw / DATASET
    assert sorted(p.name for p in folder.iterdir()) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "qsmTr"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [f"sub-003_000{c}.nii.gz" for c in range(4)]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["sub-001.nii.gz", "sub-002.nii.gz"]
    assert sorted(p.name for p in (folder / "qsmTr").iterdir()) == ["sub-001.nii.gz", "sub-002.nii.gz"]
    np.testing.assert_array_equal(read_like_nnunet(folder / "qsmTr" / "sub-001.nii.gz"),
                                  read_volume(cohort / "sub-001" / "chi.nii.gz").data)
    assert len(list((folder / "imagesTr").iterdir())) == 8
    assert sorted(p.name for p in raw.iterdir()) == [DATASET]  # no partial folder left

    description = dataset_json(raw)
    assert description["channel_names"] == {"0": "zscore", "1": "noNorm", "2": "noNorm", "3": "noNorm"}
    assert description["numTraining"] == 2 and description["file_ending"] == ".nii.gz"
    assert sorted(description["labels"].values()) == list(range(len(description["labels"])))
    block = description["mqsm"]
    assert block["version"] == 1
    assert block["channels"] == {"t1": 0, "field": 1, "qsm_minus": 2, "mask": 3}
    assert (block["field_units_input"], block["map_units"], block["b0_tesla"], block["te_seconds"]) == (
        "ppm", "ppm", None, None)
    assert block["qsm_minus_thresholds"] == [0.1, 0.2]
    assert block["b0_direction_source"] == "affine"
    assert sorted(block["b0_direction"]) == ["sub-001", "sub-002", "sub-003"]
    assert block["reference_qsm"] == {"folder": "qsmTr", "cases": ["sub-001", "sub-002"]}
    assert "label_ids_original" not in block  # the phantom's ids are consecutive

    for case, split in (("sub-001", "imagesTr"), ("sub-003", "imagesTs")):
        field = read_volume(cohort / case / "field.nii.gz")
        mask = read_volume(cohort / case / "mask.nii.gz").data
        np.testing.assert_array_equal(channel(raw, case, 0, split), read_volume(cohort / case / "t1.nii.gz").data)
        np.testing.assert_array_equal(channel(raw, case, 1, split), field.data)
        np.testing.assert_array_equal(channel(raw, case, 3, split), mask)
        qsm = channel(raw, case, 2, split)
        expected = physics.qsm_minus(field.data, field.voxel_size, physics.b0_direction_from_affine(field.affine),
                                     mask, thresholds=(0.1, 0.2))
        np.testing.assert_allclose(qsm, expected, rtol=1e-5, atol=1e-7)
        assert np.all(qsm[mask == 0] == 0) and np.abs(qsm[mask == 1]).max() > 0


def test_oblique_acquisition_geometry_and_b0_direction(oblique_phantom, tmp_path, raw, convert):
    cohort = Path(shutil.copytree(oblique_phantom, tmp_path / "cohort"))
    status, _, _ = convert(cohort)
    assert status == 0
    block = dataset_json(raw)["mqsm"]
    for case in ("sub-001", "sub-002"):
        recorded = np.asarray(block["b0_direction"][case])
        assert abs(float(recorded @ np.asarray(OBLIQUE_B0))) == pytest.approx(1.0, abs=1e-6)

        source = cohort / case / "field.nii.gz"
        reference = sitk.ReadImage(str(source))
        written = [*sorted((raw / DATASET / "imagesTr").glob(f"{case}_*.nii.gz")),
                   raw / DATASET / "labelsTr" / f"{case}.nii.gz"]
        for path in written:
            image = sitk.ReadImage(str(path))
            np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
            np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-4)
            np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
            np.testing.assert_allclose(read_volume(path).affine, read_volume(source).affine, atol=1e-5)

        field = read_volume(source)
        mask = read_volume(cohort / case / "mask.nii.gz").data
        qsm = channel(raw, case, 2)
        np.testing.assert_allclose(qsm, physics.qsm_minus(field.data, field.voxel_size, OBLIQUE_B0, mask),
                                   rtol=1e-4, atol=1e-6)
        axial = physics.qsm_minus(field.data, field.voxel_size, (0, 0, 1), mask)
        assert np.abs(qsm - axial).max() > 0.1 * np.abs(qsm).max()


def test_b0_dir_and_thresholds_override(cohort, raw, convert):
    status, _, _ = convert(cohort, "--b0-dir", "0", "0", "2", "--thresholds", "0.15", "0.3")
    assert status == 0
    block = dataset_json(raw)["mqsm"]
    assert block["b0_direction_source"] == "--b0-dir"
    assert block["b0_direction"]["sub-002"] == [0.0, 0.0, 1.0]
    assert block["qsm_minus_thresholds"] == [0.15, 0.3]
    field = read_volume(cohort / "sub-002" / "field.nii.gz")
    mask = read_volume(cohort / "sub-002" / "mask.nii.gz").data
    np.testing.assert_allclose(channel(raw, "sub-002", 2),
                               physics.qsm_minus(field.data, field.voxel_size, (0, 0, 1), mask, (0.15, 0.3)),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("units, flags, to_units", [
    ("hz", ["--b0", "3"], lambda ppm: physics.ppm_to_hz(ppm, 3.0)),
    ("rad", ["--b0", "7", "--te", "0.02"], lambda ppm: physics.ppm_to_phase(ppm, 0.02, 7.0)),
])
def test_hz_and_radian_fields_give_the_ppm_channels(cohort, raw, convert, units, flags, to_units):
    ppm = {case: read_volume(cohort / case / "field.nii.gz") for case in ("sub-001", "sub-002", "sub-003")}
    for case, volume in ppm.items():
        write_volume(cohort / case / "field.nii.gz", to_units(volume.data.astype(np.float64)), volume.affine,
                     np.float32)
    status, _, _ = convert(cohort, "--field-units", units, *flags)
    assert status == 0
    block = dataset_json(raw)["mqsm"]
    assert block["field_units_input"] == units and block["map_units"] == "ppm"
    assert block["b0_tesla"] == float(flags[1])
    assert block["te_seconds"] == (0.02 if units == "rad" else None)
    for case, volume in ppm.items():
        scale = np.abs(volume.data).max()
        np.testing.assert_allclose(channel(raw, case, 1), volume.data, rtol=1e-5, atol=1e-6 * scale)


def test_t1_on_another_grid_is_resampled_with_a_warning(cohort, raw, convert):
    field = read_volume(cohort / "sub-001" / "field.nii.gz")
    # An oblique 4 mm T1 grid around the field map's centre, large enough to cover it; its intensity is
    # linear in world coordinates, which trilinear interpolation reproduces exactly.
    angle = np.radians(10)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    size = np.array([72, 72, 64])
    centre = field.affine[:3, :3] @ ((np.asarray(field.data.shape) - 1) / 2) + field.affine[:3, 3]
    t1_affine = np.eye(4)
    t1_affine[:3, :3] = rotation * 4.0
    t1_affine[:3, 3] = centre - t1_affine[:3, :3] @ ((size - 1) / 2)

    def intensity(affine, shape):
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
        world = ijk @ affine[:3, :3].T + affine[:3, 3]
        return 500 + world @ np.array([0.5, 0.2, -0.3])

    write_volume(cohort / "sub-001" / "t1.nii.gz", intensity(t1_affine, size), t1_affine, np.float32)
    status, _, err = convert(cohort)
    assert status == 0
    warning = [line for line in err.splitlines() if "warning" in line and "resampled" in line]
    assert len(warning) == 1 and "sub-001" in warning[0] and "t1.nii.gz" in warning[0]
    np.testing.assert_allclose(channel(raw, "sub-001", 0), intensity(field.affine, field.data.shape), atol=1e-2)


def test_a_freesurfer_colour_table_gives_the_regions_of_the_training_maps(cohort, raw, convert, tmp_path):
    """`--labels FreeSurferColorLUT.txt`: the table's entries whose ids occur in the training label
    maps become the dataset's regions, under their names; the rest of the catalogue is left out."""
    names = json.loads((cohort / "labels.json").read_text())
    (cohort / "labels.json").unlink()
    lut = tmp_path / "FreeSurferColorLUT.txt"
    catalogue = {**{("Unknown" if i == 0 else f"FS-{name}"): i for name, i in names.items()}, "Unused-Region": 77}
    lut.write_text("#No. Label Name: R G B A\n" + "".join(f"{i} {name} 1 2 3 0\n" for name, i in catalogue.items()))
    present = set()
    for case in ("sub-001", "sub-002", "sub-003"):
        present |= set(np.unique(read_volume(cohort / case / "labels.nii.gz", dtype=None).data).tolist())
    status, _, err = convert(cohort, "--labels", str(lut))
    assert status == 0, err
    description = dataset_json(raw)
    expected = {name: i for name, i in catalogue.items() if i in present}
    assert description["labels"] == {("background" if i == 0 else name): i for name, i in expected.items()}
    assert description["mqsm"]["label_ids_original"] == expected


def test_non_consecutive_labels_are_remapped(cohort, raw, convert):
    names = json.loads((cohort / "labels.json").read_text())
    sparse = {name: 3 * label for name, label in names.items()}  # 0, 3, 6, ...: never consecutive
    (cohort / "labels.json").write_text(json.dumps(sparse))
    originals = {}
    for case in ("sub-001", "sub-002", "sub-003"):
        path = cohort / case / "labels.nii.gz"
        originals[case] = read_volume(path, dtype=None).data.astype(np.int64)
        rewrite(path, (3 * originals[case]).astype(np.uint16))
    status, _, err = convert(cohort)
    assert status == 0 and "not consecutive" in err
    description = dataset_json(raw)
    assert description["mqsm"]["label_ids_original"] == dict(sorted(sparse.items(), key=lambda item: item[1]))
    assert description["labels"] == {name: rank for rank, (name, _) in
                                      enumerate(sorted(sparse.items(), key=lambda item: item[1]))}
    sorted_ids = np.array(sorted(sparse.values()))
    for case, original in originals.items():
        expected = np.searchsorted(sorted_ids, 3 * original)
        np.testing.assert_array_equal(read_like_nnunet(raw / DATASET / "labelsTr" / f"{case}.nii.gz"), expected)


def test_test_subjects_go_to_imagesTs(cohort, raw, convert):
    status, _, _ = convert(cohort, "--test-subjects", "sub-001", "sub-003")
    assert status == 0
    folder = raw / DATASET
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["sub-002.nii.gz"]
    assert {p.name[:7] for p in (folder / "imagesTs").iterdir()} == {"sub-001", "sub-003"}
    assert dataset_json(raw)["numTraining"] == 1


def test_inference_conversion_writes_the_same_channels(cohort, raw, convert, tmp_path):
    status, _, _ = convert(cohort, "--test-subjects", "sub-002")
    assert status == 0
    for path in cohort.glob("*/labels.nii.gz"):
        path.unlink()  # prediction needs no labels
    subjects = conversion.discover_inference_subjects(cohort)
    assert [(s.case_id, s.training) for s in subjects] == [("sub-001", False), ("sub-002", False), ("sub-003", False)]
    staged = tmp_path / "staged"
    conversion.convert_for_inference(subjects[1], conversion.ConversionOptions(), staged)
    assert sorted(p.name for p in staged.iterdir()) == [f"sub-002_000{c}.nii.gz" for c in range(4)]
    for c in range(4):
        np.testing.assert_array_equal(read_like_nnunet(staged / f"sub-002_000{c}.nii.gz"),
                                      channel(raw, "sub-002", c, "imagesTs"))


def test_parallel_conversion_matches_serial(cohort, raw, convert, tmp_path):
    assert convert(cohort)[0] == 0
    serial = tmp_path / "serial"
    shutil.move(raw / DATASET, serial)
    status = main(["-i", str(cohort), "-d", "7", "-n", "Phantom", "-np", "2"])
    assert status == 0
    written = sorted(p.relative_to(serial) for p in serial.rglob("*.nii.gz"))
    assert written == sorted(p.relative_to(raw / DATASET) for p in (raw / DATASET).rglob("*.nii.gz"))
    for path in written:
        np.testing.assert_array_equal(read_like_nnunet(raw / DATASET / path), read_like_nnunet(serial / path))
    assert (serial / "dataset.json").read_text() == (raw / DATASET / "dataset.json").read_text()


# ----------------------------------------------------------------------------------------------------
# bad input: one-line error naming subject and file, nothing written
# ----------------------------------------------------------------------------------------------------
def _volume(cohort: Path, case: str, name: str):
    return read_volume(cohort / case / name, dtype=None)


def _missing_field(cohort):
    (cohort / "sub-002" / "field.nii.gz").unlink()


def _mask_shape(cohort):
    volume = _volume(cohort, "sub-002", "mask.nii.gz")
    rewrite(cohort / "sub-002" / "mask.nii.gz", volume.data[:, :, :-2])


def _mask_spacing(cohort):
    volume = _volume(cohort, "sub-002", "mask.nii.gz")
    affine = volume.affine.copy()
    affine[:3, :3] *= 1.01
    rewrite(cohort / "sub-002" / "mask.nii.gz", affine=affine)


def _labels_origin(cohort):
    volume = _volume(cohort, "sub-002", "labels.nii.gz")
    affine = volume.affine.copy()
    affine[:3, 3] += 0.5
    rewrite(cohort / "sub-002" / "labels.nii.gz", affine=affine)


def _labels_orientation(cohort):
    volume = _volume(cohort, "sub-002", "labels.nii.gz")
    affine = volume.affine.copy()
    affine[:3, 0] *= -1
    rewrite(cohort / "sub-002" / "labels.nii.gz", affine=affine)


def _field_value(value):
    def mutate(cohort):
        volume = _volume(cohort, "sub-002", "field.nii.gz")
        data = volume.data.astype(np.float32)
        data[3, 4, 5] = value
        rewrite(cohort / "sub-002" / "field.nii.gz", data)
    return mutate


def _field_times(factor):
    def mutate(cohort):
        rewrite(cohort / "sub-002" / "field.nii.gz", _volume(cohort, "sub-002", "field.nii.gz").data * factor)
    return mutate


def _unknown_label(cohort):
    data = _volume(cohort, "sub-002", "labels.nii.gz").data.astype(np.int16)
    data[0, 0, 0] = 999
    rewrite(cohort / "sub-002" / "labels.nii.gz", data)


def _mask_times(factor):
    def mutate(cohort):
        rewrite(cohort / "sub-002" / "mask.nii.gz", _volume(cohort, "sub-002", "mask.nii.gz").data * factor)
    return mutate


def _unsafe_case_id(cohort):
    (cohort / "sub-002").rename(cohort / "sub 002")


def _t1_elsewhere(cohort):
    volume = _volume(cohort, "sub-002", "t1.nii.gz")
    affine = volume.affine.copy()
    affine[:3, 3] += 5000.0
    rewrite(cohort / "sub-002" / "t1.nii.gz", affine=affine)


BAD_INPUTS = {
    "missing field": (_missing_field, [], ("sub-002", "field.nii.gz", "missing")),
    "mask shape": (_mask_shape, [], ("sub-002", "mask.nii.gz", "shape")),
    "mask spacing": (_mask_spacing, [], ("sub-002", "mask.nii.gz", "spacing")),
    "labels origin": (_labels_origin, [], ("sub-002", "labels.nii.gz", "origin")),
    "labels orientation": (_labels_orientation, [], ("sub-002", "labels.nii.gz", "orientation")),
    "field NaN": (_field_value(np.nan), [], ("sub-002", "field.nii.gz", "NaN")),
    "field Inf": (_field_value(np.inf), [], ("sub-002", "field.nii.gz", "Inf")),
    "Hz field read as ppm": (_field_times(128.0), [], ("sub-002", "field.nii.gz", "implausible", "--field-units")),
    "ppm field read as Hz": (lambda cohort: None, ["--field-units", "hz", "--b0", "3"],
                             ("sub-001", "field.nii.gz", "implausible")),
    "label value not in JSON": (_unknown_label, [], ("sub-002", "labels.nii.gz", "[999]", "labels.json")),
    "empty mask": (_mask_times(0), [], ("sub-002", "mask.nii.gz", "empty")),
    "mask not 0/1": (_mask_times(255), [], ("sub-002", "mask.nii.gz", "0 and 1")),
    "unsafe case id": (_unsafe_case_id, [], ("'sub 002'", "rename")),
    "T1 not co-registered": (_t1_elsewhere, [], ("sub-002", "t1.nii.gz", "not co-registered?")),
    "reference QSM off grid": (lambda cohort: rewrite(cohort / "sub-002" / "chi.nii.gz", affine=np.diag([2, 2, 2, 1])),
                               [], ("sub-002", "chi.nii.gz", "reference QSM", "spacing")),
    "corrupt T1": (lambda cohort: (cohort / "sub-002" / "t1.nii.gz").write_bytes(b"not a NIfTI"), [],
                   ("sub-002", "t1.nii.gz", "not a NIfTI image")),
}


@pytest.mark.parametrize("mutate, args, fragments", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_refused_and_nothing_is_written(cohort, raw, convert, mutate, args, fragments):
    mutate(cohort)
    status, out, err = convert(cohort, *args)
    assert_one_line_error(status, err, *fragments)
    assert out == ""
    assert_nothing_written(raw)


def test_worker_error_in_a_process_pool_cleans_up(cohort, raw):
    _field_value(np.nan)(cohort)
    with pytest.raises(ValueError, match="sub-002: .*field.nii.gz: field map contains 1 NaN"):
        conversion.convert_cohort(cohort, 7, "Phantom", num_processes=2, progress=False)
    assert_nothing_written(raw)


@pytest.mark.parametrize("prepare, args, fragments", [
    (lambda c: [shutil.rmtree(p) for p in c.iterdir() if p.is_dir()], [], ("no subjects found",)),
    (lambda c: None, ["--test-subjects", "sub-009"], ("--test-subjects", "sub-009")),
    (lambda c: [p.unlink() for p in c.glob("*/labels.nii.gz")], [], ("no training subjects", "--labels-name")),
    (lambda c: (c / "labels.json").unlink(), [], ("labels.json", "--labels")),
    (lambda c: None, ["--field-units", "hz"], ("--b0",)),
    (lambda c: None, ["--field-units", "rad", "--b0", "3"], ("--te",)),
    (lambda c: None, ["--b0-dir", "0", "0", "0"], ("--b0-dir",)),
    (lambda c: None, ["--thresholds", "0", "0.2"], ("--thresholds",)),
], ids=["no subjects", "unknown test subject", "no training subjects", "no labels JSON", "hz without --b0",
        "rad without --te", "zero --b0-dir", "zero threshold"])
def test_bad_cohort_or_arguments(cohort, raw, convert, prepare, args, fragments):
    prepare(cohort)
    status, _, err = convert(cohort, *args)
    assert_one_line_error(status, err, *fragments)
    assert_nothing_written(raw)


def test_nnunet_raw_must_be_set(cohort, raw, convert, monkeypatch):
    monkeypatch.delenv("nnUNet_raw")
    status, _, err = convert(cohort)
    assert_one_line_error(status, err, "nnUNet_raw is not set")


def test_console_script_exits_with_one_line_error(cohort, raw):
    (cohort / "sub-001" / "mask.nii.gz").unlink()
    result = subprocess.run([str(NNUNET_BIN / "mqsm_convert"), "-i", str(cohort), "-d", "7", "-n", "Phantom"],
                            capture_output=True, text=True, timeout=120)
    assert_one_line_error(result.returncode, result.stderr, "sub-001", "mask.nii.gz", "missing")
    assert_nothing_written(raw)


# ----------------------------------------------------------------------------------------------------
# overwrite and interruption
# ----------------------------------------------------------------------------------------------------
def test_existing_dataset_id_needs_overwrite_and_is_replaced_only_after_success(cohort, raw, convert):
    assert convert(cohort)[0] == 0
    original = (raw / DATASET / "dataset.json").read_text()

    status, _, err = convert(cohort, dataset=("7", "Other"))  # same ID, another name
    assert_one_line_error(status, err, DATASET, "--overwrite")

    _field_value(np.nan)(cohort)  # a failing run with --overwrite leaves the old dataset alone
    status, _, err = convert(cohort, "--overwrite", dataset=("7", "Other"))
    assert_one_line_error(status, err, "sub-002", "NaN")
    assert sorted(p.name for p in raw.iterdir()) == [DATASET]
    assert (raw / DATASET / "dataset.json").read_text() == original

    shutil.copy(cohort / "sub-001" / "field.nii.gz", cohort / "sub-002" / "field.nii.gz")
    status, out, _ = convert(cohort, "--overwrite", dataset=("7", "Other"))
    assert status == 0 and out.strip() == str(raw / "Dataset007_Other")
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset007_Other"]
    assert json.loads((raw / "Dataset007_Other" / "dataset.json").read_text())["name"] == "Other"


def test_interrupt_leaves_previous_dataset_and_no_partial_folder(cohort, raw, convert, monkeypatch):
    assert convert(cohort)[0] == 0
    before = sorted(str(p.relative_to(raw)) for p in raw.rglob("*"))
    calls = []

    def interrupted(job):
        calls.append(job.subject.case_id)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    real = conversion.dataset.convert_subject
    monkeypatch.setattr(conversion.dataset, "convert_subject", interrupted)
    status, _, err = convert(cohort, "--overwrite")
    assert status == 130 and "interrupted" in err
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*")) == before


def test_warnings_for_ignored_flags_and_stale_nnunet_folders(cohort, raw, convert):
    assert convert(cohort)[0] == 0
    preprocessed = raw.parent / "nnUNet_preprocessed"
    (preprocessed / DATASET).mkdir(parents=True)
    (preprocessed / "Dataset007_Old").mkdir()
    status, _, err = convert(cohort, "--overwrite", "--te", "0.02")
    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("mqsm_convert: warning: ")]
    assert any("--te is ignored" in line for line in warnings)
    assert any(str(preprocessed / DATASET) in line and "rerun planning" in line for line in warnings)
    assert any(str(preprocessed / "Dataset007_Old") in line and "refuse" in line for line in warnings)


def test_help_shows_an_example(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "mqsm_convert -i cohort -d 501" in text and "--num-processes" in text and "--field-units" in text
