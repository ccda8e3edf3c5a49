"""What a cohort folder holds: its subjects, one folder each.

Every non-hidden subfolder is a subject; its name is the nnU-Net case id. A subject with a label
map is a training subject unless named a test subject.
"""
from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


from mqsm_nnunet.conversion.options import FileNames

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Subject:
    """One subject folder of the cohort; `training` subjects go to imagesTr/labelsTr, others to imagesTs."""

    case_id: str
    folder: Path
    training: bool


def check_case_id(case_id: str) -> str:
    """A case id nnU-Net and file systems take safely: letters, digits, '-', '_', '.', not '.' or '..'."""
    if not _SAFE_ID.fullmatch(case_id) or case_id in (".", ".."):
        raise ValueError(f"subject folder {case_id!r}: its name is the case id and may only hold letters, "
                         "digits, '-', '_' and '.'; rename the folder")
    return case_id


def _subject_folders(cohort: Path, file_names: FileNames,
                     roles: Sequence[str] = ("t1", "field", "mask")) -> list[Path]:
    """Non-hidden subfolders of `cohort`, each with a safe name and a file for each of `roles`."""
    if not cohort.is_dir():
        raise FileNotFoundError(f"cohort folder {cohort} not found (`cohort`)")
    folders = sorted(p for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"no subjects found in {cohort}: expected one folder per subject "
                         f"(e.g. {cohort}/sub-001/{file_names.field})")
    for folder in folders:
        check_case_id(folder.name)
        for role in roles:
            path = folder / getattr(file_names, role)
            if not path.is_file():
                raise FileNotFoundError(f"{folder.name}: {path}: missing {role} file (set its name with `{role}_name`)")
    return folders


def discover_subjects(cohort: str | os.PathLike, file_names: FileNames = FileNames(),
                      test_subjects: Sequence[str] = (), qsm_only: bool = False) -> list[Subject]:
    """Every non-hidden subfolder of `cohort` is a subject; it needs T1, field and mask, labels are optional.

    Subjects with a label map go to training unless named in `test_subjects`. With `qsm_only` a
    subject needs only field and mask, and every subject not named in `test_subjects` trains (the
    self-supervised reconstruction needs no labels).

    Raises:
        FileNotFoundError: no cohort folder, or a subject lacks a required file.
        ValueError: no subjects, an unsafe folder name, unknown test subjects, or no training subject.
    """
    cohort = Path(cohort)
    folders = _subject_folders(cohort, file_names, ("field", "mask") if qsm_only else ("t1", "field", "mask"))
    unknown = sorted(set(test_subjects) - {folder.name for folder in folders})
    if unknown:
        raise ValueError(f"`test_subjects` names unknown subjects {unknown}; subjects in {cohort}: "
                         f"{[folder.name for folder in folders]}")
    subjects = [Subject(folder.name, folder, (qsm_only or (folder / file_names.labels).is_file())
                        and folder.name not in test_subjects) for folder in folders]
    if not any(s.training for s in subjects):
        if qsm_only:
            raise ValueError(f"no training subjects in {cohort}: all are named in `test_subjects`")
        raise ValueError(f"no training subjects in {cohort}: no subject folder has {file_names.labels} "
                         "(or all are named in `test_subjects`); check `labels_name`, or convert field maps "
                         "alone with `qsm_only`")
    return subjects


def discover_inference_subjects(folder: str | os.PathLike, file_names: FileNames = FileNames()) -> list[Subject]:
    """Subject folders to predict on: the checks of `discover_subjects`, label maps ignored and the T1
    optional (the QSM needs only field and mask; the segmentation needs the T1).

    Raises:
        FileNotFoundError / ValueError: as `discover_subjects`, except that no training subject is needed.
    """
    return [Subject(folder.name, folder, training=False)
            for folder in _subject_folders(Path(folder), file_names, ("field", "mask"))]
