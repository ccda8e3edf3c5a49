"""Where a subject's B0 direction comes from: the `b0_dir` argument, a JSON sidecar, or the affine.

Precedence, first found wins:
1. `b0_dir` (`--b0-dir` of mqsm_convert / mqsm_predict), for every subject;
2. a JSON sidecar next to the field map with a `B0_dir` key, in voxel axes (i, j, k) as QSM-CI's
   `params.json` and QSMxT write it: `<field map name>.json` (e.g. `field.json`), then `params.json`
   in the subject folder;
3. the field map's orientation: `physics.b0_direction_from_affine` (world z in voxel axes).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mqsm_nnunet import physics

SIDECAR_KEY = "B0_dir"
SHARED_SIDECAR = "params.json"


def sidecar_files(field_path: Path) -> list[Path]:
    """The sidecars that may hold the field map's B0 direction, in the order they are read."""
    name = field_path.name
    stem = name[:-len(".nii.gz")] if name.endswith(".nii.gz") else field_path.stem
    return [field_path.with_name(f"{stem}.json"), field_path.with_name(SHARED_SIDECAR)]


def _sidecar_direction(path: Path) -> tuple[float, float, float] | None:
    """The unit `B0_dir` of one sidecar, or None when the file or the key is absent.

    Raises:
        ValueError: not a JSON object, or `B0_dir` not 3 finite numbers, not all zero.
    """
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error}); fix it or remove it") from None
    if not isinstance(content, dict) or SIDECAR_KEY not in content:
        return None
    return physics.unit_b0_direction(content[SIDECAR_KEY], f"{path}: '{SIDECAR_KEY}'")


def b0_direction(field_path: Path, affine: np.ndarray,
                 given: tuple[float, float, float] | None) -> tuple[tuple[float, float, float], str]:
    """(B0 unit vector in the field map's voxel axes, where it came from as dataset.json records it:
    '--b0-dir', 'sidecar <file name>' or 'affine').

    Raises:
        ValueError: a sidecar that is not valid JSON or holds a bad `B0_dir` (naming the file).
    """
    if given is not None:
        return tuple(float(v) for v in given), "--b0-dir"
    for path in sidecar_files(field_path):
        direction = _sidecar_direction(path)
        if direction is not None:
            return direction, f"sidecar {path.name}"
    return tuple(float(v) for v in physics.b0_direction_from_affine(affine)), "affine"
