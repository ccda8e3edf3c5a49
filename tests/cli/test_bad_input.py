"""Bad input never slips through (issue 12): every class of bad input, and its neighbours, on every
command that reads that kind of file.

Each case asserts the exit status, that the one-line message names the file (or the argument) and
the fix, that no traceback is printed, and that nothing is left behind (no dataset, no output
folder, no hidden build folder). The data are a tiny phantom cohort (3 subjects, 24 x 24 x 20
voxels of 8 mm); commands run in-process through their `main(argv)`, or as subprocesses where a
signal is sent. `mqsm_predict` is refused before any model is loaded, so a model folder with an
empty checkpoint stands in for a trained one.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mqsm_nnunet.cli.convert import main as convert_main
from mqsm_nnunet import physics
from mqsm_nnunet.cli.iron import main as iron_main
from mqsm_nnunet.conversion import robust_half_range
from mqsm_nnunet.cli.evaluate import main as evaluate_main
from mqsm_nnunet.cli.predict import main as predict_main
from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.phantom import write_cohort
from mqsm_nnunet.cli.plan_and_preprocess import main as plan_main

from nifti_faults import (CORRUPTIONS, corrupt, disagreeing, expected_words, no_orientation, patch_pixdim, sheared,
                          singular)

SHAPE, VOXEL = (24, 24, 20), (8.0, 8.0, 8.0)
CASES = ("sub-001", "sub-002", "sub-003")
DATASET = "Dataset007_Phantom"
MODEL = f"{DATASET}/mQSMTrainer__mQSMPlans__3d_fullres"
BIN = Path(sys.executable).parent


@dataclass
class Result:
    status: int
    out: str
    err: str


# ----------------------------------------------------------------------------------------------------
# fixtures and helpers
# ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    return write_cohort(tmp_path_factory.mktemp("phantom") / "cohort", len(CASES), SHAPE, VOXEL, seed=2).out_dir


@pytest.fixture
def cohort(phantom, tmp_path) -> Path:
    """A private copy of the phantom cohort, free to break."""
    return Path(shutil.copytree(phantom, tmp_path / "cohort"))


@pytest.fixture
def nnunet(nnunet_folders) -> Path:
    """nnU-Net's three folders in this process (conftest.py); subprocesses inherit them."""
    return nnunet_folders


@pytest.fixture
def run(capsys):
    """Run a command's main(argv) in this process: Result(status, stdout, stderr)."""
    def call(main, *argv: str) -> Result:
        status = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Result(status, captured.out, captured.err)
    return call


def convert_args(cohort: Path, *extra: str) -> list[str]:
    return ["-i", str(cohort), "-d", "7", "-n", "Phantom", "-np", "1", *extra]


@pytest.fixture
def model(nnunet, cohort, run) -> Path:
    """The phantom converted (Dataset007) and a model folder that passes every check before a model
    is loaded: dataset.json, plans.json, fold_0/checkpoint_final.pth (empty)."""
    assert run(convert_main, *convert_args(cohort)).status == 0
    folder = nnunet / "nnUNet_results" / MODEL
    (folder / "fold_0").mkdir(parents=True)
    shutil.copy(nnunet / "nnUNet_raw" / DATASET / "dataset.json", folder / "dataset.json")
    (folder / "plans.json").write_text("{}")
    (folder / "fold_0" / "checkpoint_final.pth").touch()
    return folder


def predict_args(input_folder: Path, output_folder: Path, *extra: str) -> list[str]:
    return ["-i", str(input_folder), "-o", str(output_folder), "-d", "7", "-f", "0", "-device", "cpu", "-npp", "1",
            "-nps", "1", "--disable_progress_bar", *extra]


def channel_inputs(nnunet: Path, tmp_path: Path, case: str = "sub-001") -> Path:
    """An nnU-Net style input folder with the four channel files of one converted case."""
    folder = tmp_path / "channels"
    folder.mkdir()
    for path in sorted((nnunet / "nnUNet_raw" / DATASET / "imagesTr").glob(f"{case}_*.nii.gz")):
        shutil.copy(path, folder / path.name)
    return folder


def iron_inputs(cohort: Path, tmp_path: Path) -> dict[str, Path]:
    """qsm/<case>_qsm.nii.gz (the true chi), seg/<case>.nii.gz, mask/<case>.nii.gz, labels.json."""
    folders = {name: tmp_path / name for name in ("qsm", "seg", "mask")}
    for folder in folders.values():
        folder.mkdir()
    for case in CASES:
        shutil.copy(cohort / case / "chi.nii.gz", folders["qsm"] / f"{case}_qsm.nii.gz")
        shutil.copy(cohort / case / "labels.nii.gz", folders["seg"] / f"{case}.nii.gz")
        shutil.copy(cohort / case / "mask.nii.gz", folders["mask"] / f"{case}.nii.gz")
    folders["labels"] = cohort / "labels.json"
    return folders


def iron_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["--qsm", str(inputs["qsm"]), "--seg", str(inputs["seg"]), "--labels", str(inputs["labels"]), "-o",
            str(out), *extra]


def evaluate_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """QSM metrics of qsm/ against itself (as references <case>_qsm -> ref/<case>) inside mask/."""
    ref = inputs["qsm"].parent / "ref"
    if not ref.exists():
        ref.mkdir()
        for case in CASES:
            shutil.copy(inputs["qsm"] / f"{case}_qsm.nii.gz", ref / f"{case}.nii.gz")
    return ["--pred", str(inputs["qsm"]), "--ref", str(ref), "--mask", str(inputs["mask"]), "-o", str(out), *extra]


def tree(*folders: Path) -> set[str]:
    """Every path (hidden ones included) below the folders that exist."""
    return {str(p) for folder in folders if folder.exists() for p in [folder, *folder.rglob("*")]}


def assert_refused(result: Result, prog: str, *fragments: str, status: int = 1) -> str:
    """Exit `status`, no traceback, one `prog: error:` line last, holding every fragment; returns it."""
    assert result.status == status, result.err[-2000:]
    assert "Traceback" not in result.err and "Traceback" not in result.out
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(f"{prog}: error: "), result.err[-2000:]
    assert sum(f"{prog}: error:" in line for line in lines) == 1
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    assert ".partial" not in lines[-1]  # users never see hidden build names
    return lines[-1]


def assert_no_dataset(nnunet: Path) -> None:
    raw = nnunet / "nnUNet_raw"
    assert not raw.exists() or not any(raw.iterdir()), sorted(p.name for p in raw.iterdir())


def warnings_of(result: Result, prog: str) -> list[str]:
    lines = [line for line in result.err.splitlines() if line.strip() and not line.startswith("Dataset007")]
    assert all(line.startswith(f"{prog}: ") for line in lines), lines  # no raw Python warning format
    return [line for line in lines if line.startswith(f"{prog}: warning: ")]


def rewrite(path: Path, data: np.ndarray | None = None, affine: np.ndarray | None = None) -> None:
    volume = read_volume(path, dtype=None)
    write_volume(path, volume.data if data is None else data, volume.affine if affine is None else affine)


# ----------------------------------------------------------------------------------------------------
# 1. corrupted files: noticed and named as corrupted, by every command that reads images
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role, how", [("labels", how) for how in CORRUPTIONS]
                         + [(role, "middle") for role in ("field", "t1", "mask", "chi")])
def test_convert_refuses_a_corrupted_file(cohort, nnunet, run, role, how):
    corrupt(cohort / "sub-002" / f"{role}.nii.gz", how)
    result = run(convert_main, *convert_args(cohort))
    assert_refused(result, "mqsm_convert", "sub-002", f"{role}.nii.gz", expected_words(how))
    assert_no_dataset(nnunet)


@pytest.mark.parametrize("command, folder, how", [("iron", "qsm", "middle"), ("iron", "seg", "crc"),
                                                  ("iron", "mask", "truncated"), ("evaluate", "qsm", "early"),
                                                  ("evaluate", "mask", "crc")])
def test_analysis_commands_refuse_a_corrupted_file(cohort, tmp_path, run, command, folder, how):
    inputs = iron_inputs(cohort, tmp_path)
    out = tmp_path / "out"
    main, args = ((iron_main, iron_args(inputs, out, "--mask", str(inputs["mask"]))) if command == "iron"
                  else (evaluate_main, evaluate_args(inputs, out)))
    name = "sub-003_qsm.nii.gz" if folder == "qsm" else "sub-003.nii.gz"
    corrupt(inputs[folder] / name, how)
    result = run(main, *args)
    assert_refused(result, f"mqsm_{command}", name, expected_words(how))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_predict_refuses_a_corrupted_channel_file(model, nnunet, tmp_path, run):
    inputs = channel_inputs(nnunet, tmp_path)
    corrupt(inputs / "sub-001_0001.nii.gz", "crc")
    before = tree(inputs)
    result = run(predict_main, *predict_args(inputs, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "sub-001_0001.nii.gz", "corrupted")
    assert not (tmp_path / "pred").exists() and tree(inputs) == before


# ----------------------------------------------------------------------------------------------------
# 2. field units: Hz, radians and ppm told apart at 1.5, 3 and 7 T; borderline sizes warned
# ----------------------------------------------------------------------------------------------------
def scale_fields(cohort: Path, function) -> None:
    for case in CASES:
        path = cohort / case / "field.nii.gz"
        volume = read_volume(path)
        write_volume(path, function(volume.data.astype(np.float64)), volume.affine, np.float32)


@pytest.mark.parametrize("b0", [1.5, 3.0, 7.0])
def test_hz_field_given_as_ppm_is_refused(cohort, nnunet, run, b0):
    scale_fields(cohort, lambda ppm: physics.ppm_to_hz(ppm, b0))
    line = assert_refused(run(convert_main, *convert_args(cohort)), "mqsm_convert", "field.nii.gz",
                          "implausible", "--field-units hz", "--b0")
    assert "0.01 to 0.06 ppm" in line  # the numbers behind the verdict
    assert_no_dataset(nnunet)


@pytest.mark.parametrize("b0", [1.5, 3.0, 7.0])
def test_ppm_field_given_as_hz_is_refused(cohort, nnunet, run, b0):
    result = run(convert_main, *convert_args(cohort, "--field-units", "hz", "--b0", str(b0)))
    assert_refused(result, "mqsm_convert", "field.nii.gz", "implausible", f"Hz at {b0:g} T", "--b0")
    assert_no_dataset(nnunet)


@pytest.mark.parametrize("b0, te", [(7.0, 0.02), (3.0, 0.005), (3.0, 0.02), (3.0, 0.04)])  # x37, x4, x16, x32
def test_a_local_phase_in_radians_given_as_ppm_is_refused(cohort, nnunet, run, b0, te):
    scale_fields(cohort, lambda ppm: physics.ppm_to_phase(ppm, te, b0))
    assert_refused(run(convert_main, *convert_args(cohort)), "mqsm_convert", "field.nii.gz", "implausible",
                   "--field-units rad")
    assert_no_dataset(nnunet)


def test_a_truly_strong_ppm_field_converts_when_the_size_check_is_skipped(cohort, nnunet, run):
    scale_fields(cohort, lambda ppm: 5 * ppm)  # about 0.15 ppm: a large hemorrhage, say
    assert_refused(run(convert_main, *convert_args(cohort)), "mqsm_convert", "field.nii.gz", "implausible",
                   "--skip-field-size-check")
    result = run(convert_main, *convert_args(cohort, "--skip-field-size-check"))
    assert result.status == 0 and "converted anyway" in result.err


@pytest.mark.parametrize("units", [[], ["--field-units", "rad", "--b0", "3", "--te", "0.02"]])
def test_wrapped_phase_is_refused_whatever_the_units(cohort, nnunet, run, units):
    scale_fields(cohort, lambda ppm: np.angle(np.exp(1j * 400.0 * ppm)))  # a raw, wrapped phase
    assert_refused(run(convert_main, *convert_args(cohort, *units)), "mqsm_convert", "field.nii.gz", "wrapped phase",
                   "unwrap")
    assert_no_dataset(nnunet)


@pytest.mark.parametrize("target_ppm", [0.065, 0.007])  # above and below the typical 0.01-0.06 ppm
def test_borderline_field_size_converts_with_a_warning_naming_the_numbers(cohort, nnunet, run, target_ppm):
    first = read_volume(cohort / "sub-001" / "field.nii.gz")
    spread = robust_half_range(first.data, read_volume(cohort / "sub-001" / "mask.nii.gz").data == 1)
    scale_fields(cohort, lambda ppm: ppm * (target_ppm / spread))
    result = run(convert_main, *convert_args(cohort))
    assert result.status == 0 and "Traceback" not in result.err
    notes = [line for line in warnings_of(result, "mqsm_convert") if "robust half-range" in line]
    assert len(notes) == len(CASES)
    assert "sub-001" in notes[0] and "field.nii.gz" in notes[0] and f"{target_ppm:.3g} ppm" in notes[0]
    assert "0.01 to 0.06 ppm" in notes[0] and "--field-units" in notes[0]


def test_predict_refuses_a_hz_field_in_subject_folders(model, cohort, tmp_path, run):
    subjects = tmp_path / "subjects"
    shutil.copytree(cohort / "sub-001", subjects / "sub-001")
    path = subjects / "sub-001" / "field.nii.gz"
    volume = read_volume(path)
    write_volume(path, physics.ppm_to_hz(volume.data.astype(np.float64), 1.5), volume.affine, np.float32)
    result = run(predict_main, *predict_args(subjects, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "sub-001", "field.nii.gz", "implausible", "--field-units hz")
    assert not (tmp_path / "pred").exists()


# ----------------------------------------------------------------------------------------------------
# 3. unsafe output folders and files that do not fit the input pattern (mqsm_predict)
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same", "inside"])
def test_predict_output_equal_to_or_inside_the_input_is_refused(model, nnunet, tmp_path, run, where):
    inputs = channel_inputs(nnunet, tmp_path)
    out = inputs if where == "same" else inputs / "pred"
    before = tree(inputs)
    assert_refused(run(predict_main, *predict_args(inputs, out)), "mqsm_predict", str(out), "input folder", "-o")
    assert tree(inputs) == before


@pytest.mark.parametrize("stray, fragments", [
    ("notes.nii.gz", ("notes.nii.gz", "<case>_XXXX.nii.gz", "move them out")),
    ("sub-001_0004.nii.gz", ("sub-001_0004.nii.gz", "extra", "4 channels")),
    ("sub-001_0003.nii.gz", ("sub-001_0003.nii.gz", "lacks")),  # removed instead of added
])
def test_predict_refuses_files_that_do_not_fit_the_channel_pattern(model, nnunet, tmp_path, run, stray, fragments):
    inputs = channel_inputs(nnunet, tmp_path)
    if (inputs / stray).exists():
        (inputs / stray).unlink()
    else:
        shutil.copy(inputs / "sub-001_0000.nii.gz", inputs / stray)
    assert_refused(run(predict_main, *predict_args(inputs, tmp_path / "pred")), "mqsm_predict", *fragments)
    assert not (tmp_path / "pred").exists()


def test_predict_refuses_a_stray_file_beside_subject_folders(model, cohort, tmp_path, run):
    subjects = tmp_path / "subjects"
    shutil.copytree(cohort / "sub-001", subjects / "sub-001")
    shutil.copy(cohort / "sub-001" / "t1.nii.gz", subjects / "t1_copy.nii.gz")
    result = run(predict_main, *predict_args(subjects, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "t1_copy.nii.gz", "one kind of input")
    assert not (tmp_path / "pred").exists()


def test_predict_refuses_channels_on_different_grids(model, nnunet, tmp_path, run):
    inputs = channel_inputs(nnunet, tmp_path)
    affine = read_volume(inputs / "sub-001_0003.nii.gz").affine.copy()
    affine[:3, 3] += 4.0  # half a voxel
    rewrite(inputs / "sub-001_0003.nii.gz", affine=affine)
    result = run(predict_main, *predict_args(inputs, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "sub-001_0003.nii.gz", "sub-001_0000.nii.gz", "origin")


def test_predict_refuses_an_unreadable_checkpoint_and_removes_its_output(model, nnunet, tmp_path, run):
    inputs = channel_inputs(nnunet, tmp_path)
    result = run(predict_main, *predict_args(inputs, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "checkpoint_final.pth", "corrupted or unfinished checkpoint", "-tr")
    assert not (tmp_path / "pred").exists()  # it was created for the run, and removed with it


# ----------------------------------------------------------------------------------------------------
# 4. geometry the two readers (SimpleITK for nnU-Net, nibabel for us) do not agree on
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role, change, words, extra", [
    ("field", sheared, "sheared", []),
    ("field", sheared, "sheared", ["--b0-dir", "0", "0", "1"]),  # B0 given: the affine still matters
    ("mask", singular, "singular", []),
    ("labels", disagreeing, "SimpleITK", []),
    ("t1", disagreeing, "qform (code 1) disagree", []),
    ("field", no_orientation, "no orientation", []),
])
def test_convert_refuses_geometry_the_readers_disagree_on(cohort, nnunet, run, role, change, words, extra):
    change(cohort / "sub-002" / f"{role}.nii.gz")
    result = run(convert_main, *convert_args(cohort, *extra))
    assert_refused(result, "mqsm_convert", "sub-002", f"{role}.nii.gz", words)
    assert_no_dataset(nnunet)


@pytest.mark.parametrize("command, folder, change", [("iron", "seg", disagreeing), ("iron", "qsm", sheared),
                                                     ("evaluate", "mask", singular)])
def test_analysis_commands_refuse_geometry_the_readers_disagree_on(cohort, tmp_path, run, command, folder, change):
    inputs = iron_inputs(cohort, tmp_path)
    out = tmp_path / "out"
    main, args = (iron_main, iron_args(inputs, out)) if command == "iron" else (evaluate_main, evaluate_args(inputs, out))
    name = "sub-001_qsm.nii.gz" if folder == "qsm" else "sub-001.nii.gz"
    change(inputs[folder] / name)
    assert_refused(run(main, *args), f"mqsm_{command}", name)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------
# 5. causes nnU-Net would answer with a traceback
# ----------------------------------------------------------------------------------------------------
def test_predict_unknown_dataset_id(nnunet, tmp_path, run):
    result = run(predict_main, *predict_args(tmp_path, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "no dataset with ID 7", "-d", "nnUNet_results")
    assert not (tmp_path / "pred").exists()


def test_plan_unknown_dataset_id(nnunet, run):
    assert_refused(run(plan_main, "-d", "999"), "mqsm_plan_and_preprocess", "no dataset with ID 999", "-d")


@pytest.mark.parametrize("variable, value", [("nnUNet_n_proc_DA", "0"), ("nnUNet_n_proc_DA", "two"),
                                             ("nnUNet_def_n_proc", "0")])
@pytest.mark.parametrize("command", ["plan", "predict"])
def test_bad_process_count_variables(model, nnunet, tmp_path, run, monkeypatch, variable, value, command):
    monkeypatch.setenv(variable, value)
    if command == "plan":
        result = run(plan_main, "-d", "7")
    else:
        result = run(predict_main, *predict_args(channel_inputs(nnunet, tmp_path), tmp_path / "pred"))
    assert_refused(result, f"mqsm_{'plan_and_preprocess' if command == 'plan' else command}", f"{variable}={value!r}",
                   ">= 1")


def test_plan_refuses_a_dataset_not_made_by_mqsm_convert(nnunet, run):
    folder = nnunet / "nnUNet_raw" / "Dataset009_Stock"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    assert_refused(run(plan_main, "-d", "9"), "mqsm_plan_and_preprocess", "dataset.json", "mqsm_convert")


def test_convert_warns_when_there_are_fewer_cases_than_folds(cohort, nnunet, run):
    result = run(convert_main, *convert_args(cohort))
    assert result.status == 0
    notes = [line for line in warnings_of(result, "mqsm_convert") if "folds" in line]
    assert len(notes) == 1 and "3 training case(s)" in notes[0] and "all" in notes[0]


# ----------------------------------------------------------------------------------------------------
# 6. messages that must not mislead: voxel sizes, duplicate names, permissions, warnings, exit codes
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role, value", [("field", 0.0), ("mask", 0.0), ("field", float("nan"))])
def test_broken_voxel_size_is_named_as_such(cohort, nnunet, run, role, value):
    patch_pixdim(cohort / "sub-001" / f"{role}.nii.gz", 3, value)
    result = run(convert_main, *convert_args(cohort))
    line = assert_refused(result, "mqsm_convert", "sub-001", f"{role}.nii.gz", "voxel size", "fix the header")
    assert "RuntimeWarning" not in result.err and "resample" not in line and "setting 0 dims" not in result.err
    assert_no_dataset(nnunet)


DUPLICATE_NAMES = '{"background": 0, "caudate_L": 1, "caudate_L": 2}'


@pytest.mark.parametrize("command", ["convert", "iron", "evaluate"])
def test_duplicate_label_names_are_refused(cohort, nnunet, tmp_path, run, command):
    labels = tmp_path / "labels_dup.json"
    labels.write_text(DUPLICATE_NAMES)
    inputs = iron_inputs(cohort, tmp_path)
    inputs["labels"] = labels
    out = tmp_path / "out"
    if command == "convert":
        result = run(convert_main, *convert_args(cohort, "--labels", str(labels)))
    elif command == "iron":
        result = run(iron_main, *iron_args(inputs, out))
    else:
        result = run(evaluate_main, *evaluate_args(inputs, out, "--seg-pred", str(inputs["seg"]), "--seg-ref",
                                                   str(inputs["seg"]), "--labels", str(labels)))
    assert_refused(result, f"mqsm_{command}", "labels_dup.json", "'caudate_L' appears twice")
    assert_no_dataset(nnunet)
    assert not out.exists()


@pytest.fixture
def locked(tmp_path):
    """A folder nobody may write into, root included (chattr +i; chmod 555 for other users)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode:
            pytest.skip("running as root without chattr: no folder is unwritable")
    else:
        folder.chmod(0o555)
    yield folder
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        folder.chmod(0o755)


@pytest.mark.parametrize("command", ["convert", "iron", "evaluate", "predict"])
def test_permission_errors_name_the_folder_and_the_fix(cohort, nnunet, tmp_path, locked, run, monkeypatch, request,
                                                      command):
    inputs = iron_inputs(cohort, tmp_path)
    out = locked / "out"
    if command == "convert":
        monkeypatch.setenv("nnUNet_raw", str(locked))
        result = run(convert_main, *convert_args(cohort))
    elif command == "iron":
        result = run(iron_main, *iron_args(inputs, out))
    elif command == "evaluate":
        result = run(evaluate_main, *evaluate_args(inputs, out))
    else:
        request.getfixturevalue("model")
        result = run(predict_main, *predict_args(channel_inputs(nnunet, tmp_path), out))
    assert_refused(result, f"mqsm_{command}", str(locked), "permission", "choose another")
    assert list(locked.iterdir()) == []


def test_predict_prints_conversion_warnings_in_the_command_format(model, cohort, tmp_path, run):
    subjects = tmp_path / "subjects"
    shutil.copytree(cohort / "sub-001", subjects / "sub-001")
    t1 = read_volume(subjects / "sub-001" / "t1.nii.gz")
    affine = t1.affine.copy()
    affine[:3, 3] += 2.0  # a T1 on another grid: resampled, with a warning
    write_volume(subjects / "sub-001" / "t1.nii.gz", t1.data, affine)
    result = run(predict_main, *predict_args(subjects, tmp_path / "pred"))
    assert_refused(result, "mqsm_predict", "checkpoint")  # the empty checkpoint ends the run after staging
    notes = [line for line in result.err.splitlines() if "resampled" in line]
    assert len(notes) == 1 and notes[0].startswith("mqsm_predict: warning: sub-001: ")
    assert "ConversionWarning" not in result.err and ".py:" not in result.err


def test_evaluate_exits_1_for_data_errors_and_2_for_flag_errors(cohort, tmp_path, run):
    inputs = iron_inputs(cohort, tmp_path)
    (inputs["mask"] / "sub-002.nii.gz").unlink()
    assert_refused(run(evaluate_main, *evaluate_args(inputs, tmp_path / "out")), "mqsm_evaluate", "sub-002",
                   "case lists differ")
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(evaluate_args(inputs, tmp_path / "out", "--seg-pred", str(inputs["seg"])))
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# 7. interruption: SIGTERM and Ctrl-C alike, workers included, leave nothing behind
# ----------------------------------------------------------------------------------------------------
def interrupt_while_building(cohort: Path, raw: Path, sig: signal.Signals, *extra: str) -> subprocess.CompletedProcess:
    """Start mqsm_convert with 2 worker processes, send `sig` (to the whole process group, as a
    terminal's Ctrl-C does) 0.1 s after its hidden build folder appears, while the workers are
    still importing, and wait for it."""
    args = ["-i", str(cohort), "-d", "7", "-n", "Phantom", "-np", "2", *extra]
    process = subprocess.Popen([str(BIN / "mqsm_convert"), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if raw.is_dir() and any(".partial-" in p.name for p in raw.iterdir()):
            time.sleep(0.1)
            os.killpg(process.pid, sig)
            break
        time.sleep(0.005)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("sig, status, how", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_interrupted_conversion_leaves_nothing_behind(cohort, nnunet, sig, status, how):
    raw = nnunet / "nnUNet_raw"
    result = interrupt_while_building(cohort, raw, sig)
    assert result.returncode == status, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "KeyboardInterrupt" not in result.stderr  # workers included
    assert result.stderr.strip().splitlines()[-1] == f"mqsm_convert: interrupted ({how}); nothing half-written was " \
                                                     "left behind"
    assert sorted(p.name for p in raw.iterdir()) == []


def test_sigterm_during_overwrite_keeps_the_old_dataset(cohort, nnunet, run):
    assert run(convert_main, *convert_args(cohort)).status == 0
    raw = nnunet / "nnUNet_raw"
    before = {p: p.read_bytes() for p in (raw / DATASET).rglob("*") if p.is_file()}
    result = interrupt_while_building(cohort, raw, signal.SIGTERM, "--overwrite")
    assert result.returncode == 143, result.stderr[-3000:]
    assert sorted(p.name for p in raw.iterdir()) == [DATASET]
    assert {p: p.read_bytes() for p in (raw / DATASET).rglob("*") if p.is_file()} == before


def convert_and_signal(cohort: Path, raw: Path, when, *extra: str) -> subprocess.CompletedProcess:
    """Run mqsm_convert (2 workers, own process group, output to files so no pipe fills up) and send
    SIGTERM to the group as soon as `when(seconds since start)` is true, or never if it ends first."""
    args = ["-i", str(cohort), "-d", "7", "-n", "Phantom", "-np", "2", *extra]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([str(BIN / "mqsm_convert"), *args], stdout=out, stderr=err, text=True,
                                   start_new_session=True)
        start = time.monotonic()
        while process.poll() is None and time.monotonic() - start < 60:
            if when(time.monotonic() - start):
                os.killpg(process.pid, signal.SIGTERM)
                break
            time.sleep(0.001)
        process.wait(timeout=60)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(process.args, process.returncode, out.read(), err.read())


def test_sigterm_at_any_moment_leaves_the_old_dataset_or_the_complete_new_one(cohort, nnunet, run):
    """SIGTERM at 30 %, 60 %, 85 % and 97 % of a measured run and the instant the new dataset appears:
    exit 143 with the old dataset untouched, or exit 0 with the new one complete; never a hidden
    folder, never the new dataset behind a failure status."""
    raw = nnunet / "nnUNet_raw"
    assert run(convert_main, *convert_args(cohort)).status == 0
    complete = sorted(str(p.relative_to(raw / DATASET)) for p in (raw / DATASET).rglob("*"))
    old_marker = raw / DATASET / "old_dataset.txt"
    start = time.monotonic()
    assert convert_and_signal(cohort, raw, lambda seconds: False, "--overwrite").returncode == 0
    duration = time.monotonic() - start
    appeared = lambda seconds: (raw / DATASET).is_dir() and not old_marker.exists()  # noqa: E731
    moments = [lambda seconds, f=f: seconds >= f * duration for f in (0.3, 0.6, 0.85, 0.97)] + [appeared]
    outcomes = []
    for when in moments:
        old_marker.write_text("the previous state")
        before = {p: p.read_bytes() for p in (raw / DATASET).rglob("*") if p.is_file()}
        result = convert_and_signal(cohort, raw, when, "--overwrite")
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        assert sorted(p.name for p in raw.iterdir()) == [DATASET]  # no hidden build or parked folder
        if result.returncode == 143:
            assert {p: p.read_bytes() for p in (raw / DATASET).rglob("*") if p.is_file()} == before
        else:
            assert result.returncode == 0, result.stderr[-3000:]
            assert sorted(str(p.relative_to(raw / DATASET)) for p in (raw / DATASET).rglob("*")) == complete
        outcomes.append(result.returncode)
    assert outcomes[0] == 143 and outcomes[-1] == 0  # both sides of the publication were hit
