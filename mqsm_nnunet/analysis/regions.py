"""Which regions to analyse and what to subtract: region ids and the susceptibility reference.

Regions are the non-background entries of the labels table (`io/labels.py` has the rules). The
reference is 'none', 'brain' (all labelled voxels) or one or more labels, subtracted per subject.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mqsm_nnunet.analysis.results import SusceptibilityReference
from mqsm_nnunet.io.labels import check_label_ids


def check_regions(regions: Mapping[str, int], source: str = "region_ids") -> dict[str, int]:
    """Region name -> id, sorted by id: the `labels.check_label_ids` rules, and no background (0).

    Raises:
        ValueError: naming `source`.
    """
    checked = check_label_ids(regions, source)
    if 0 in checked.values():
        raise ValueError(f"{source}: id 0 is background, not a region; leave it out")
    return checked


def regions_of(labels: Mapping[str, int], source: str) -> dict[str, int]:
    """The regions of a labels table: its non-background entries.

    Raises:
        ValueError: the `labels.check_label_ids` rules, or no region besides background.
    """
    regions = {name: label for name, label in check_label_ids(labels, source).items() if label != 0}
    if not regions:
        raise ValueError(f"{source}: the labels hold no region besides background (0)")
    return regions


def parse_reference(
    reference: str | int | Sequence[str | int] | SusceptibilityReference, region_ids: Mapping[str, int]
) -> SusceptibilityReference:
    """Resolve 'none', 'brain', or label names / ids (a single one or a list) against `region_ids`.

    The keywords win over a region that happens to be called 'none' or 'brain'. Digit strings that
    are not region names are read as ids.

    Raises:
        ValueError: an unknown name or id, background (0), or a keyword mixed with labels.
    """
    if isinstance(reference, SusceptibilityReference):
        return reference
    items = [reference] if isinstance(reference, (str, int, np.integer)) else list(reference)
    if not items:
        raise ValueError("`reference` is empty: use 'none', 'brain' or one or more label names")
    keywords = [item for item in items if isinstance(item, str) and item in ("none", "brain")]
    if keywords:
        if len(items) > 1:
            raise ValueError(f"`reference` {items}: '{keywords[0]}' cannot be combined with other entries")
        return SusceptibilityReference(keywords[0])
    names_by_id = {i: n for n, i in region_ids.items()}
    ids: list[int] = []
    for item in items:
        if isinstance(item, str) and item in region_ids:
            label = region_ids[item]
        elif isinstance(item, (int, np.integer)) or (isinstance(item, str) and item.isdigit()):
            label = int(item)
            if label == 0:
                raise ValueError("`reference`: label 0 is background; use 'brain' for the whole labelled brain")
            if label not in names_by_id:
                raise ValueError(f"`reference`: label id {label} is not in the labels "
                                 f"(known ids: {sorted(names_by_id)})")
        else:
            raise ValueError(f"`reference`: unknown label {item!r}; use 'none', 'brain' or names from the "
                             f"labels: {', '.join(region_ids)}")
        if label not in ids:
            ids.append(label)
    return SusceptibilityReference("labels", tuple(ids), tuple(names_by_id[i] for i in ids))
