"""Region labels, one set of rules for every command: the labels JSON and integer label maps.

The labels JSON maps region names to integer ids, `{"background": 0, "caudate_L": 1, ...}`, or is
an nnU-Net dataset.json (its "labels" entry). `mqsm_convert`, `mqsm_iron`, `mqsm_evaluate` and the
demo all read it with `read_labels_json`, so a file one accepts is accepted by all.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    """json object hook: a name given twice is an error (json.load would keep the last silently)."""
    content: dict = {}
    for name, value in pairs:
        if name in content:
            raise ValueError(f"the name {name!r} appears twice; each region name must appear once")
        content[name] = value
    return content


def check_label_ids(labels: Mapping, source: str) -> dict[str, int]:
    """Name -> id sorted by id, after checking: a non-empty mapping, one non-negative integer id per
    name (not nnU-Net's region-based lists), no id used twice.

    Raises:
        ValueError: naming `source` and the offending entries.
    """
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{source}: expected a non-empty JSON object mapping region names to integer ids")
    checked: dict[str, int] = {}
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: label {name!r} is region-based ({value}); give one integer id per region")
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{source}: label {name!r} has id {value!r}; ids must be non-negative integers")
        checked[str(name)] = int(value)
    by_id: dict[int, list[str]] = {}
    for name, label in checked.items():
        by_id.setdefault(label, []).append(name)
    shared = {label: names for label, names in by_id.items() if len(names) > 1}
    if shared:
        raise ValueError(f"{source}: label ids used by more than one name: {shared}; each id must name one region")
    return dict(sorted(checked.items(), key=lambda item: item[1]))


def read_labels_json(path: str | os.PathLike) -> dict[str, int]:
    """Region name -> id (sorted by id, background 0 included) from a labels JSON or a dataset.json.

    Rules: valid JSON; each name once; the `check_label_ids` rules; id 0 present (background: every
    label map has it, and nnU-Net needs it named).

    Raises:
        FileNotFoundError: no such file.
        ValueError: any rule broken, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels JSON ({{\"background\": 0, \"region\": 1, ...}})")
    try:
        content = json.loads(path.read_text(), object_pairs_hook=_unique_names)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except ValueError as error:  # a repeated name
        raise ValueError(f"{path}: {error}") from None
    if isinstance(content, dict) and isinstance(content.get("labels"), dict):
        content = content["labels"]  # an nnU-Net dataset.json
    labels = check_label_ids(content, str(path))
    if 0 not in labels.values():
        raise ValueError(f"{path}: no id 0; label maps need 0 as background (add \"background\": 0)")
    return labels


def as_label_map(data: np.ndarray, source: str) -> np.ndarray:
    """`data` as int64 labels, refusing anything that is not a map of non-negative integers (a
    probability map, a QSM map by mistake, NaN) rather than rounding it.

    Raises:
        ValueError: non-integer, non-finite or negative values, naming `source`.
    """
    data = np.asarray(data)
    if not np.issubdtype(data.dtype, np.integer):
        if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)) \
                or not np.array_equal(data, np.round(data)):
            raise ValueError(f"{source}: not a label map (non-integer values); pass the segmentation, "
                             "not a probability or QSM map")
    labels = data.astype(np.int64, copy=False)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{source}: negative label values (e.g. {int(labels.min())}); labels are ids >= 0")
    return labels
