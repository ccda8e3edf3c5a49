"""Region labels, one set of rules for every command: label tables, label maps and label ids.

A label table names the user's regions by id. It is read by `read_labels` from
- a labels JSON, `{"background": 0, "caudate_L": 1, ...}`;
- an nnU-Net dataset.json: the user's own ids where mqsm_convert renumbered them for nnU-Net (its
  `mqsm.label_ids_original`), else its "labels";
- a FreeSurferColorLUT-style text table (`id name R G B [A]` per line, `#` comments): a catalogue
  that names far more ids than one study uses, so only the ids found in the label maps become regions.

The user's ids are the ids everywhere a user sees them. nnU-Net needs consecutive ids 0..N, so a
dataset stores both (`LabelIdMap`, built from dataset.json): conversion translates the user's label
maps into nnU-Net's ids and prediction translates them back, through this one map. A label map
holding an id its table does not list is refused, naming both files (`check_label_map_ids`).
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMATS = 'a labels JSON ({"background": 0, "region": 1, ...}), an nnU-Net dataset.json or a ' \
          "FreeSurferColorLUT-style table (lines 'id name R G B A')"
_LUT_LINE = re.compile(r"(?P<id>\d+)\s+(?P<name>\S+)(\s+-?\d+){3,4}")


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


@dataclass(frozen=True)
class LabelTable:
    """The user's region names and ids, as one labels file gives them.

    Attributes:
        ids: name -> id, sorted by id, background (0) included.
        source: the file, named in error messages.
        catalogue: a colour table naming many more ids than a study uses (FreeSurferColorLUT): its
            regions are the ids found in the label maps (`found_in`), not all of its entries.
    """

    ids: dict[str, int]
    source: str = "labels"
    catalogue: bool = False

    @classmethod
    def of(cls, labels: LabelTable | Mapping[str, int], source: str = "labels") -> LabelTable:
        """`labels` as a table: a table unchanged, a name -> id mapping checked (`check_label_ids`)."""
        if isinstance(labels, LabelTable):
            return labels
        return cls(check_label_ids(labels, source), source)

    @property
    def regions(self) -> dict[str, int]:
        """Name -> id without background."""
        return {name: label for name, label in self.ids.items() if label != 0}

    def found_in(self, present: Iterable[int]) -> LabelTable:
        """A catalogue cut down to background and the ids in `present`; a study's own table unchanged."""
        if not self.catalogue:
            return self
        keep = {int(label) for label in present} | {0}
        return LabelTable({name: label for name, label in self.ids.items() if label in keep}, self.source)


def check_label_map_ids(present: Iterable[int], table: LabelTable, label_map: str | os.PathLike) -> None:
    """Refuse a label map holding ids its table does not list (background 0 is always allowed): a
    table that does not fit the map would name the wrong regions, or pair different regions when two
    maps are compared.

    Raises:
        ValueError: naming `label_map`, the table's file and the ids.
    """
    unknown = sorted(set(int(label) for label in present) - set(table.ids.values()) - {0})
    if not unknown:
        return
    shown = ", ".join(map(str, unknown[:12])) + (", ..." if len(unknown) > 12 else "")
    raise ValueError(f"{label_map}: label values [{shown}] are not in {table.source}; this labels file does not "
                     "fit this segmentation: pass the labels file it was made with (nnUNetv2_predict writes "
                     "nnU-Net's consecutive ids; mqsm_predict writes the ids of your own label maps)")


def _read_json_table(path: Path, text: str) -> LabelTable:
    try:
        content = json.loads(text, object_pairs_hook=_unique_names)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    except ValueError as error:  # a repeated name
        raise ValueError(f"{path}: {error}") from None
    if isinstance(content, dict) and isinstance(content.get("labels"), dict):  # an nnU-Net dataset.json
        user_ids = (content.get("mqsm") or {}).get("label_ids_original")
        content = user_ids if isinstance(user_ids, dict) else content["labels"]
    return LabelTable(check_label_ids(content, str(path)), str(path))


def _read_colour_table(path: Path, text: str) -> LabelTable:
    names: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LUT_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"{path}, line {number}: {line[:60]!r} is not 'id name R G B A'; expected {FORMATS}")
        name, label = match["name"], int(match["id"])
        if name in names:
            raise ValueError(f"{path}, line {number}: the name {name!r} appears twice; each region name must "
                             "appear once")
        names[name] = label
    if not names:
        raise ValueError(f"{path}: no entries; expected {FORMATS}")
    return LabelTable(check_label_ids(names, str(path)), str(path), catalogue=True)


def read_labels(path: str | os.PathLike) -> LabelTable:
    """The label table of a labels JSON, an nnU-Net dataset.json or a FreeSurferColorLUT-style table
    (told apart by content: JSON starts with '{' or '[').

    Rules: each name once; the `check_label_ids` rules; id 0 present (background: every label map
    has it, and nnU-Net needs it named).

    Raises:
        FileNotFoundError: no such file.
        ValueError: any rule broken, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file (expected {FORMATS})")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file; expected {FORMATS}") from None
    is_json = text.lstrip()[:1] in ("{", "[") or path.suffix.lower() == ".json"
    table = _read_json_table(path, text) if is_json else _read_colour_table(path, text)
    if 0 not in table.ids.values():
        raise ValueError(f"{path}: no id 0; label maps need 0 as background (add \"background\": 0)")
    return table


NNUNET_BACKGROUND = "background"
"""nnU-Net's name for id 0, whatever the user calls it (FreeSurfer: "Unknown"); nnU-Net refuses others."""


@dataclass(frozen=True)
class LabelIdMap:
    """One dataset's label ids: the user's, and nnU-Net's consecutive 0..N in the same order (the
    k-th smallest user id is nnU-Net's k). The one place where ids are translated (conversion:
    `to_nnunet`; prediction: `to_user`).

    Attributes:
        user: name -> the user's id, sorted by id (background included).
        source: where the user's ids came from, named in error messages.
    """

    user: dict[str, int]
    source: str = "labels"

    def __post_init__(self) -> None:
        if 0 not in self.user.values():
            raise ValueError(f"{self.source}: no id 0; label maps need 0 as background")
        clash = self.user.get(NNUNET_BACKGROUND)
        if clash not in (None, 0):
            raise ValueError(f"{self.source}: the name {NNUNET_BACKGROUND!r} has id {clash}; nnU-Net reserves it for "
                             "id 0: rename that region")

    @classmethod
    def numbered(cls, table: LabelTable | Mapping[str, int], source: str | None = None) -> LabelIdMap:
        """The user's table, to be numbered 0..N in id order for nnU-Net."""
        table = LabelTable.of(table, source or "labels")
        return cls(dict(table.ids), source or table.source)

    @classmethod
    def from_dataset_json(cls, dataset_json: Mapping, source: str = "dataset.json") -> LabelIdMap:
        """The map mqsm_convert recorded: `mqsm.label_ids_original` (the user's, written where they
        differ from nnU-Net's "labels"; without it nnU-Net's ids are the user's).

        Raises:
            ValueError: the two tables do not pair up (a dataset.json edited by hand).
        """
        nnunet = check_label_ids(dataset_json["labels"], f"{source} labels")
        user = (dataset_json.get("mqsm") or {}).get("label_ids_original")
        if user is None:
            return cls(nnunet, source)
        ids = cls(check_label_ids(user, f"{source} mqsm.label_ids_original"), source)
        if ids.nnunet != nnunet:
            raise ValueError(f"{source}: mqsm.label_ids_original does not pair up with labels; convert the dataset "
                             "again with mqsm_convert")
        return ids

    @property
    def nnunet(self) -> dict[str, int]:
        """name -> consecutive id, id 0 named as nnU-Net requires: dataset.json's "labels"."""
        return {(NNUNET_BACKGROUND if label == 0 else name): rank for rank, (name, label) in enumerate(self.user.items())}

    @property
    def remapped(self) -> bool:
        """Whether dataset.json's "labels" alone would not give the user's names and ids back."""
        return self.user != self.nnunet

    @property
    def consecutive(self) -> bool:
        """Whether the user's ids are 0..N already (nnU-Net trains on them as they are)."""
        return list(self.user.values()) == list(range(len(self.user)))

    def to_nnunet(self, label_map: np.ndarray) -> np.ndarray:
        """The user's ids -> nnU-Net's (int64). Raises ValueError for ids the table does not list."""
        label_map = np.asarray(label_map)
        lookup = np.full(max(self.user.values()) + 1, -1, dtype=np.int64)
        lookup[list(self.user.values())] = np.arange(len(self.user))
        clipped = np.clip(label_map, 0, len(lookup) - 1)
        translated = lookup[clipped]
        bad = (label_map != clipped) | (translated < 0)
        if bad.any():
            unknown = sorted(set(np.unique(label_map[bad]).tolist()))
            raise ValueError(f"label values {unknown} are not in {self.source}; add them there or fix the label map")
        return translated

    def to_user(self, label_map: np.ndarray) -> np.ndarray:
        """nnU-Net's ids -> the user's (int64). Raises ValueError for ids beyond nnU-Net's 0..N."""
        label_map = np.asarray(label_map)
        if label_map.size and (label_map.min() < 0 or label_map.max() >= len(self.user)):
            raise ValueError(f"nnU-Net label values beyond 0..{len(self.user) - 1} in a prediction of a model "
                             f"trained on {self.source}")
        return np.asarray(list(self.user.values()), dtype=np.int64)[label_map]

    def user_dtype(self) -> type:
        """The smallest integer type of the user's ids (what label maps are written as)."""
        return label_dtype(self.user.values())


def label_dtype(ids: Iterable[int]) -> type:
    """uint8, uint16 or int32: the smallest type that holds every id (NIfTI label maps)."""
    top = max(ids)
    return np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32


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
