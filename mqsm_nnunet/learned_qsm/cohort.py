"""`mqsm_qsm` behind its flags: the learned QSM for a folder of field maps, written as `<case>_qsm.nii.gz`.

Inputs, found in this order:
- in-house subject folders (`sub-001/field.nii.gz` + `mask.nii.gz`, as mqsm_convert and mqsm_predict read
  them; the B0 direction from `--b0-dir`, a sidecar or the affine: `conversion.b0`);
- an nnU-Net style folder as mqsm_convert writes it: `<case>_0001` field and `_0003` mask (with a T1),
  or `<case>_0000` field and `_0002` mask (`--qsm-only`), B0 from `--b0-dir` or the affine.
Each QSM lies on its field map's grid (same affine), in ppm, 0 outside the mask. The output folder is
built hidden and published whole (`io.files.atomic_folder`): an interrupted run leaves nothing behind.
`qsm.json` records per case the B0 direction's source, the seconds and, with fine-tuning, whether the
guard kept the fine-tuned map.
"""
from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.conversion.b0 import b0_direction
from mqsm_nnunet.conversion.field_units import field_in_ppm
from mqsm_nnunet.conversion.options import ConversionWarning
from mqsm_nnunet.io.dataset_metadata import DEFAULT_CHANNELS, QSM_ONLY_CHANNELS
from mqsm_nnunet.io.files import atomic_folder
from mqsm_nnunet.io.grid import check_same_grid
from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.physics import b0_direction_from_affine, unit_b0_direction
from mqsm_nnunet.learned_qsm import finetuning, inference

REPORT_NAME = "qsm.json"


@dataclass(frozen=True)
class FieldCase:
    """One case's field-map and mask files, and where the B0 direction is read."""

    case_id: str
    field_path: Path
    mask_path: Path
    sidecars: bool   # in-house folders may carry B0 in a JSON sidecar; nnU-Net files do not


def find_cases(folder: str | os.PathLike, field_name: str = "field.nii.gz", mask_name: str = "mask.nii.gz"
               ) -> list[FieldCase]:
    """The cases of `folder` (see the module docstring).

    Raises:
        FileNotFoundError: no such folder; a subject folder without its field map or mask.
        ValueError: neither subject folders nor nnU-Net style files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} not found (`input_folder`)")
    subjects = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subjects:
        cases = []
        for subject in subjects:
            for name in (field_name, mask_name):
                if not (subject / name).is_file():
                    raise FileNotFoundError(f"{subject / name}: missing; every subject folder needs {field_name} "
                                            f"and {mask_name} (the local field map in ppm and its brain mask)")
            cases.append(FieldCase(subject.name, subject / field_name, subject / mask_name, True))
        return cases
    for layout in (DEFAULT_CHANNELS, QSM_ONLY_CHANNELS):
        field_suffix, mask_suffix = f"_{layout['field']:04d}.nii.gz", f"_{layout['mask']:04d}.nii.gz"
        masks = sorted(p for p in folder.iterdir() if p.name.endswith(mask_suffix))
        cases = [FieldCase(p.name[:-len(mask_suffix)], p.with_name(p.name[:-len(mask_suffix)] + field_suffix), p, False)
                 for p in masks]
        if cases and all(c.field_path.is_file() for c in cases):
            return cases
    raise ValueError(f"{folder}: found no field maps: expected subject folders (sub-001/{field_name} + "
                     f"{mask_name}) or nnU-Net style files as mqsm_convert writes them (<case>_0001.nii.gz field + "
                     "_0003.nii.gz mask, or with --qsm-only _0000 + _0002)")


def read_field_map(case: FieldCase, b0_dir: Sequence[float] | None, field_units: str, b0: float | None,
                   te: float | None) -> tuple[inference.FieldMap, np.ndarray, str]:
    """(the case's field in ppm with mask and geometry, its affine, where B0 came from)."""
    field = read_volume(case.field_path)
    mask = read_volume(case.mask_path, dtype=None)
    check_same_grid(case.mask_path, mask.affine, mask.data.shape, case.field_path, field.affine, field.data.shape)
    inside = mask.data != 0
    if not inside.any():
        raise ValueError(f"{case.mask_path}: the brain mask is empty")
    try:
        ppm, warning = field_in_ppm(field.data, inside, field_units, b0, te)
    except ValueError as error:
        raise ValueError(f"{case.field_path}: {error}") from None
    if warning:
        warnings.warn(f"{case.field_path}: {warning}", ConversionWarning, stacklevel=2)
    if case.sidecars:
        direction, source = b0_direction(case.field_path, field.affine, b0_dir)
    elif b0_dir is not None:
        direction, source = unit_b0_direction(b0_dir, "`b0_dir`"), "--b0-dir"
    else:
        direction, source = tuple(float(v) for v in b0_direction_from_affine(field.affine)), "affine"
    return inference.FieldMap(np.where(inside, ppm, 0.0).astype(np.float32), inside, field.voxel_size,
                            tuple(float(v) for v in direction)), field.affine, source


def reconstruct_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike, *,
                       b0_dir: Sequence[float] | None = None, field_units: str = "ppm", b0: float | None = None,
                       te: float | None = None, finetune: int = 0, weights: str | os.PathLike = inference.PRETRAINED_DIR,
                       device: str = "cpu", overwrite: bool = False, progress: bool = True) -> dict:
    """Write `<case>_qsm.nii.gz` for every case of `input_folder` into `output_folder`; returns the report.

    Every case is read and checked before anything is written. Without fine-tuning the cases are then
    reconstructed one at a time (memory: one case); fine-tuning holds all of them.

    Raises:
        FileExistsError: `output_folder` exists and `overwrite` is false.
        ValueError / FileNotFoundError: bad inputs (naming the file and the fix), before anything is written.
    """
    if int(finetune) != finetune or finetune < 0:
        raise ValueError(f"`finetune` must be a number of steps >= 0, got {finetune!r}")
    output_folder, input_folder = Path(output_folder), Path(input_folder)
    if output_folder.resolve() == input_folder.resolve() or input_folder.resolve() in output_folder.resolve().parents:
        raise ValueError(f"`output_folder` {output_folder} is the input folder or inside it: choose a folder outside "
                         f"{input_folder}")
    if output_folder.exists() and not overwrite:
        raise FileExistsError(f"{output_folder} exists; choose another `output_folder` or give `overwrite`")
    cases = find_cases(input_folder)
    net = inference.load_pretrained(weights)

    def read(case: FieldCase):
        return read_field_map(case, b0_dir, field_units, b0, te)

    # Every case is read (and refused if bad) before anything is computed or written; fine-tuning keeps
    # them all, otherwise each is read again when its turn comes.
    held = {case.case_id: read(case) for case in cases} if finetune else {}
    if not finetune:
        for case in cases:
            read(case)
    tuned, kept = net, {case.case_id: False for case in cases}
    starts: dict[str, np.ndarray] = {}
    if finetune:
        subjects = [held[case.case_id][0] for case in cases]
        starts = {case.case_id: inference.tv_start(s) for case, s in
                  zip(cases, tqdm(subjects, desc="TV-ADMM start", unit="case", disable=not progress))}
        with tqdm(total=int(finetune), desc="fine-tuning", unit="step", disable=not progress) as bar:
            tuned, accepted = finetuning.finetune(net, subjects, int(finetune), device, starts=list(starts.values()),
                                                  progress=bar.update)
        kept = {case.case_id: keep for case, keep in zip(cases, accepted)}
    report = {"weights": str(weights), "finetune_steps": int(finetune), "cases": {}}
    with atomic_folder(output_folder, replaces=[output_folder] if overwrite else ()) as build:
        for case in tqdm(cases, desc="learned QSM", unit="case", disable=not progress):
            began = time.perf_counter()
            subject, affine, source = held.pop(case.case_id, None) or read(case)
            start = starts.pop(case.case_id, None)
            chi = inference.reconstruct(tuned if kept[case.case_id] else net, subject.field, subject.mask,
                                        subject.voxel_size, subject.b0_dir, start, device)
            write_volume(build / f"{case.case_id}_qsm.nii.gz", chi, affine, np.float32)
            report["cases"][case.case_id] = {
                "field": str(case.field_path), "b0_dir": list(subject.b0_dir), "b0_source": source,
                "seconds": round(time.perf_counter() - began, 2),
                **({"finetuned_map_kept": bool(kept[case.case_id])} if finetune else {})}
        (build / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return report
