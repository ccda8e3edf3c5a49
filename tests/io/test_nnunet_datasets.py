"""nnunet_datasets: dataset names, nnU-Net's ID lookup with a fix in its message, process counts."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mqsm_nnunet.io.nnunet_datasets import (check_process_counts, dataset_folder_name, folds_warning, resolve_dataset)


@pytest.fixture
def folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


def test_folder_name_pads_the_id():
    assert dataset_folder_name(7, "Phantom") == "Dataset007_Phantom"
    for dataset_id, name in ((0, "A"), (1000, "A"), (True, "A"), (7, "a b"), (7, "")):
        with pytest.raises(ValueError):
            dataset_folder_name(dataset_id, name)


def test_resolve_finds_the_one_name_in_any_folder(folders):
    (folders / "nnUNet_results" / "Dataset007_Phantom").mkdir()
    assert resolve_dataset("7") == resolve_dataset(7) == "Dataset007_Phantom"
    assert resolve_dataset("Dataset042_Other") == "Dataset042_Other"


def test_resolve_explains_what_nnunet_would_raise(folders):
    with pytest.raises(ValueError, match="no dataset with ID 7 .*nnUNet_raw=.*`dataset_id`"):
        resolve_dataset(7)
    (folders / "nnUNet_raw" / "Dataset007_A").mkdir()
    (folders / "nnUNet_preprocessed" / "Dataset007_B").mkdir()
    with pytest.raises(ValueError, match="more than one dataset name for ID 7: Dataset007_A, Dataset007_B"):
        resolve_dataset(7)
    with pytest.raises(ValueError, match="dataset ID"):
        resolve_dataset("seven")


@pytest.mark.parametrize("value, ok", [("1", True), ("8", True), ("0", False), ("-2", False), ("two", False), ("", False)])
@pytest.mark.parametrize("variable", ["nnUNet_n_proc_DA", "nnUNet_def_n_proc"])
def test_process_counts(monkeypatch, variable, value, ok):
    monkeypatch.setenv(variable, value)
    if ok:
        check_process_counts()
    else:
        with pytest.raises(ValueError, match=f"{variable}={value!r}"):
            check_process_counts()


def test_folds_warning_below_five_cases():
    assert folds_warning(5) is None
    assert "4 training case(s)" in folds_warning(4) and "all" in folds_warning(4)
    assert "add labelled subjects" in folds_warning(4)
    assert "add subjects" in folds_warning(4, qsm_only=True)      # field maps need no labels


def test_the_trainer_folder_is_found_outside_the_checkout_without_an_installed_trainers_package(tmp_path):
    """The console scripts run from anywhere: the demo must find trainers/ with no `trainers` package
    importable (it is not installed) and no nnUNet_extTrainer set, and honour it when set."""
    script = "from mqsm_nnunet.io.nnunet_datasets import trainer_folders; print(trainer_folders())"
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", "PYTHONPATH")}
    found = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == Path(__file__).resolve().parents[2] / "trainers"
    unimportable = subprocess.run([sys.executable, "-c", "import trainers"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True)
    assert unimportable.returncode != 0   # not installed as a generic top-level package
    given = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           env={**env, "nnUNet_extTrainer": "/a:/b"})
    assert given.stdout.strip() == "/a:/b"
