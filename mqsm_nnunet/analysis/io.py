"""Reading the iron analysis's inputs: per case a QSM map, a segmentation and optionally a brain
mask, through `nifti.read_volume`, on one grid (`grid.GRID_TOLERANCE_MM`), with labels the table knows."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mqsm_nnunet.io.grid import check_same_grid
from mqsm_nnunet.io.labels import LabelTable, as_label_map, check_label_map_ids
from mqsm_nnunet.io.nifti import read_volume


def load_case(qsm_path: Path, seg_path: Path, mask_path: Path | None,
              table: LabelTable) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """(QSM in ppm, labels, brain mask or None, voxel size) of one case.

    Raises:
        FileNotFoundError / ValueError: a file is missing or unreadable, not on the segmentation's
            grid, or the segmentation holds labels the table does not list (naming both files).
    """
    seg_volume = read_volume(seg_path, dtype=None)
    seg = as_label_map(seg_volume.data, str(seg_path))
    check_label_map_ids(np.unique(seg).tolist(), table, seg_path)
    qsm_volume = read_volume(qsm_path, dtype=np.float64)
    check_same_grid(qsm_path, qsm_volume.affine, qsm_volume.data.shape, seg_path, seg_volume.affine, seg.shape)
    mask = None
    if mask_path is not None:
        mask_volume = read_volume(mask_path, dtype=None)
        check_same_grid(mask_path, mask_volume.affine, mask_volume.data.shape, seg_path, seg_volume.affine, seg.shape)
        mask = mask_volume.data != 0
    return qsm_volume.data, seg, mask, seg_volume.voxel_size


def label_ids_in(seg_files: Mapping[str, Path]) -> set[int]:
    """Every id found in the segmentations (what a colour table is cut down to)."""
    found: set[int] = set()
    for path in seg_files.values():
        found.update(np.unique(as_label_map(read_volume(path, dtype=None).data, str(path))).tolist())
    return found


def case_map(files: Mapping[str, str | os.PathLike], what: str) -> dict[str, Path]:
    """Case id -> Path of a non-empty mapping (what `cases.qsm_files_in` and friends return)."""
    if not isinstance(files, Mapping) or not files:
        raise ValueError(f"{what}: expected a non-empty mapping case id -> file "
                         "(mqsm_nnunet.io.cases.qsm_files_in / segmentation_files_in build one from a folder)")
    return {str(case): Path(path) for case, path in files.items()}


def folder_of(files: Mapping[str, Path]) -> str:
    """The folder (or folders, joined) the files lie in, for the report."""
    folders = sorted({str(path.parent) for path in files.values()})
    return folders[0] if len(folders) == 1 else ", ".join(folders)
