"""Pairing NIfTI files of the same case across folders (predictions, references, masks).

Folders written by different tools name the same case differently: nnU-Net writes `<case>.nii.gz`,
our predictor adds `<case>_qsm.nii.gz`, the phantom writes `chi.nii.gz` inside a subject folder.
Every command that compares two folders goes through `collect_cases` so the rule lives in one place.
"""
from __future__ import annotations

import os
from pathlib import Path

NIFTI_ENDINGS = (".nii.gz", ".nii")
# Suffixes that name a map's role, not the case; stripped to get the case id.
ROLE_SUFFIXES = ("_qsm", "_chi", "_mask", "_seg", "_labels", "_field", "_t1", "_qsm_minus")


def strip_nifti_ending(name: str) -> str | None:
    """`sub-001_qsm.nii.gz` -> `sub-001_qsm`; None for a name that is not a NIfTI file."""
    for ending in NIFTI_ENDINGS:
        if name.endswith(ending):
            return name[: -len(ending)]
    return None


def case_id(name: str, suffix: str | None = None) -> str | None:
    """The case id of a file name: the NIfTI ending and the role suffix removed.

    With `suffix` given, only files carrying that suffix count (others give None); without it, any
    of `ROLE_SUFFIXES` is stripped.
    """
    stem = strip_nifti_ending(name)
    if stem is None:
        return None
    if suffix:
        return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else None
    for role in ROLE_SUFFIXES:
        if stem.endswith(role) and len(stem) > len(role):
            return stem[: -len(role)]
    return stem


def collect_cases(directory: str | os.PathLike, suffix: str | None = None,
                  exclude_suffixes: tuple[str, ...] = ()) -> dict[str, Path]:
    """Map case id -> file for the NIfTI files directly in `directory`.

    Files whose name (without the NIfTI ending) ends with one of `exclude_suffixes` are skipped,
    e.g. the `<case>_qsm.nii.gz` maps beside the `<case>.nii.gz` segmentations of mqsm_predict.

    Raises:
        FileNotFoundError: `directory` does not exist.
        ValueError: two files map to the same case id, or no NIfTI file is there.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such folder")
    cases: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        stem = strip_nifti_ending(path.name) if path.is_file() else None
        if stem is None or any(stem.endswith(excluded) for excluded in exclude_suffixes):
            continue
        cid = case_id(path.name, suffix)
        if cid is None:
            continue
        if cid in cases:
            raise ValueError(
                f"{directory}: both {cases[cid].name} and {path.name} look like case '{cid}'; "
                "keep one file per case in this folder"
            )
        cases[cid] = path
    if not cases:
        wanted = f"*{suffix}.nii.gz" if suffix else "*.nii.gz"
        raise ValueError(f"{directory}: no NIfTI files ({wanted}) found")
    return cases


def pair_cases(first: dict[str, Path], second: dict[str, Path], names: tuple[str, str]) -> list[str]:
    """Case ids present in both mappings, sorted; an error lists what is missing on either side.

    Raises:
        ValueError: the two sets of case ids differ.
    """
    missing_second = sorted(set(first) - set(second))
    missing_first = sorted(set(second) - set(first))
    if missing_first or missing_second:
        parts = []
        if missing_second:
            parts.append(f"in {names[0]} but not in {names[1]}: {', '.join(missing_second)}")
        if missing_first:
            parts.append(f"in {names[1]} but not in {names[0]}: {', '.join(missing_first)}")
        raise ValueError("case lists differ; " + "; ".join(parts))
    return sorted(first)


QSM_SUFFIX = "_qsm"


def qsm_files_in(directory: str | os.PathLike) -> dict[str, Path]:
    """Case -> QSM map: the `<case>_qsm.nii.gz` files if the folder has any (mqsm_predict's output,
    where the `<case>.nii.gz` beside them are segmentations), otherwise every `<case>.nii.gz` (role
    suffixes such as `_chi` stripped).

    Raises:
        FileNotFoundError / ValueError: as `collect_cases`.
    """
    directory = Path(directory)
    has_qsm_maps = directory.is_dir() and any(
        (strip_nifti_ending(p.name) or "").endswith(QSM_SUFFIX) for p in directory.iterdir() if p.is_file())
    return collect_cases(directory, QSM_SUFFIX if has_qsm_maps else None)


def segmentation_files_in(directory: str | os.PathLike) -> dict[str, Path]:
    """Case -> segmentation `<case>.nii.gz`, skipping the `<case>_qsm.nii.gz` maps beside them."""
    return collect_cases(directory, exclude_suffixes=(QSM_SUFFIX,))
