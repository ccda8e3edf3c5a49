"""A whole in-house cohort registered (`register_cohort`, what `mqsm_register` runs): every subject, every
method, one template or several fused, written atomically as OUT/<method>/<case>.nii.gz on the grid of
each subject's QSM, with registration.json beside them."""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.command import MQSMWarning
from mqsm_nnunet.conversion.cohort import check_case_id
from mqsm_nnunet.io.files import atomic_folder, writable_folder
from mqsm_nnunet.io.labels import label_dtype, read_labels
from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.registration.ants import (DEFAULT_METHODS, DEFAULT_SEED, LINEAR_OPTIONS, check_seed, import_ants,
                                           load_template, register_labels, resolve_method)
from mqsm_nnunet.registration.fusion import FUSIONS, fuse_labels, register_and_fuse_jointly

__all__ = ["CohortRegistration", "REPORT_NAME", "register_cohort"]

REPORT_NAME = "registration.json"
"""Written into each method folder beside the label maps: method, parameters, seed, seconds per case."""


@dataclass
class CohortRegistration:
    """What `register_cohort` wrote: per method, case -> label map file and case -> seconds (all of
    that case's registrations with this method, one per template)."""

    out_dir: Path
    templates: list[Path]
    seed: int
    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    each_template: dict[str, list[dict[str, Path]]] = field(default_factory=dict)
    """With `keep_each_template`: per method, per template (in order), case -> its own label map."""

    def seconds_per_subject(self, method: str) -> float:
        """Mean wall-clock seconds per subject of `method`."""
        return float(np.mean(list(self.seconds[method].values())))



def _subject_folders(cohort: Path, cases: Sequence[str] | None, names: Sequence[str]) -> dict[str, Path]:
    """Case id -> subject folder (non-hidden subfolders of `cohort`, or the named `cases`), each
    holding the files in `names`."""
    if not cohort.is_dir():
        raise FileNotFoundError(f"cohort folder {cohort} not found (`cohort`)")
    folders = {p.name: p for p in sorted(cohort.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    if cases is not None:
        unknown = sorted(set(cases) - set(folders))
        if unknown:
            raise ValueError(f"`cases` names subjects not in {cohort}: {unknown}; subjects there: {sorted(folders)}")
        folders = {case: folders[case] for case in sorted(set(cases))}
    if not folders:
        raise ValueError(f"no subjects in {cohort}: expected one folder per subject (e.g. {cohort}/sub-001/{names[0]})")
    for case, folder in folders.items():
        check_case_id(case)
        for name, parameter in zip(names, ("t1_name", "grid_name")):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{case}: {folder / name}: missing (set the file name with `{parameter}`)")
    return folders


def register_cohort(cohort: str | os.PathLike, template: str | os.PathLike | Sequence[str | os.PathLike],
                    out_dir: str | os.PathLike, methods: Sequence[str] = DEFAULT_METHODS, *,
                    cases: Sequence[str] | None = None,
                    labels: str | os.PathLike | None = None, t1_name: str = "t1.nii.gz",
                    grid_name: str = "field.nii.gz", mask_name: str | None = "mask.nii.gz", seed: int = DEFAULT_SEED,
                    overwrite: bool = False, progress: bool = False, keep_each_template: bool = False,
                    fusion: str = "majority") -> CohortRegistration:
    """Carry the template's labels onto every subject (or `cases`) of an in-house cohort with each of
    `methods`, writing `out_dir`/<method>/<case>.nii.gz on the grid of the subject's `grid_name`
    (default: its field map, i.e. its QSM's grid) plus `out_dir`/<method>/registration.json.

    Several templates (a sequence of folders): multi-atlas registration, every template registered to
    every subject and the carried label maps fused (`fusion`: "majority", a vote, `fuse_labels`; or
    "joint", joint label fusion, `register_and_fuse_jointly`), in the same layout.

    All method folders are built aside and moved into `out_dir` only when every registration
    succeeded; other entries of `out_dir` are left alone.

    Args:
        labels: the cohort's labels file (default: `cohort`/labels.json; `labels.read_labels`); the
            template must hold exactly its regions (a colour table's: the template's ids must be in it).
        t1_name, grid_name: file names inside each subject folder.
        mask_name: each subject's brain mask: with the templates' masks (`mask.nii.gz`), brains are
            registered, not heads (module docstring); None registers whole heads. Templates without a
            mask are registered as heads, with a warning.
        overwrite: replace existing method folders in `out_dir`.
        keep_each_template: with several templates, also write each template's own label maps to
            `out_dir`/<method>/template<k>/<case>.nii.gz (k = 1, 2, ... in the order given).

    Raises:
        FileNotFoundError: a missing folder or file.
        ValueError: bad arguments, unreadable images, label sets that differ, existing outputs
            without `overwrite`.
        RuntimeError: ANTs failed on a subject (the message names it).
    """
    cohort, out_dir = Path(cohort), Path(out_dir)
    chosen = [resolve_method(name) for name in dict.fromkeys(methods)]
    if not chosen:
        raise ValueError("no registration method given (`methods`)")
    seed = check_seed(seed)
    if fusion not in FUSIONS:
        raise ValueError(f"unknown label fusion {fusion!r} (`fusion`); choose from {', '.join(FUSIONS)}")
    table = read_labels(Path(labels) if labels is not None else cohort / "labels.json")
    folders = _subject_folders(cohort, cases, (t1_name, grid_name))
    writable_folder(out_dir)
    existing = [str(out_dir / m.name) for m in chosen if (out_dir / m.name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{', '.join(existing)} already exist(s); pass `overwrite` to replace, or choose another "
                         "`out_dir`")
    folders_given = [template] if isinstance(template, (str, os.PathLike)) else list(template)
    if not folders_given:
        raise ValueError("no template given (`template`)")
    loaded = [load_template(folder, table) for folder in folders_given]
    brains = mask_name is not None and any(t.mask is not None for t in loaded)
    if brains:
        for t in loaded:
            if t.mask is None:
                warnings.warn(MQSMWarning(f"template {t.folder} has no mask.nii.gz: it is registered as a whole head "
                                          "while the others are brain-extracted; add its brain mask for brains "
                                          "(docs/registration.md)"), stacklevel=2)
        for case, folder in folders.items():
            if not (folder / mask_name).is_file():
                raise FileNotFoundError(f"{case}: {folder / mask_name}: missing; the templates have brain masks, "
                                        "so subjects need theirs (`mask_name`), or register whole heads "
                                        "(`mask_name=None`, mqsm_register --whole-head)")
    dtype = label_dtype(sorted(set().union(*(t.label_ids for t in loaded))))
    report = CohortRegistration(out_dir.absolute(), [t.folder.absolute() for t in loaded], seed)
    ants = import_ants()
    with atomic_folder(out_dir, merge=True) as build, \
            tqdm(total=len(folders) * len(chosen) * len(loaded), desc="mqsm_register", unit="registration",
                 disable=not progress) as bar:
        for case, folder in folders.items():
            t1 = read_volume(folder / t1_name)
            grid = read_volume(folder / grid_name, dtype=None)
            brain_mask = read_volume(folder / mask_name) if brains else None
            for m in chosen:
                if fusion == "joint" and len(loaded) > 1:
                    bar.set_postfix_str(f"{case} {m.name} {len(loaded)} templates, joint label fusion")
                    try:
                        joint = register_and_fuse_jointly(loaded, t1, grid.affine, grid.data.shape, m, seed, brain_mask)
                    except RuntimeError as error:
                        raise RuntimeError(f"{case}: ANTs registration ({m.name}) or joint label fusion failed: "
                                           f"{error}") from None
                    bar.update(len(loaded))
                    fused, each, seconds = joint.labels, joint.each_template, joint.seconds
                else:
                    results = []
                    for number, atlas in enumerate(loaded, 1):
                        bar.set_postfix_str(f"{case} {m.name}" + (f" template {number}" if len(loaded) > 1 else ""))
                        try:
                            results.append(register_labels(atlas, t1, grid.affine, grid.data.shape, m, seed,
                                                           brain_mask))
                        except RuntimeError as error:
                            raise RuntimeError(f"{case}: ANTs registration ({m.name}) of {atlas.folder} failed: "
                                               f"{error}") from None
                        bar.update()
                    each = [r.labels for r in results]
                    fused, seconds = fuse_labels(each), sum(r.seconds for r in results)
                if keep_each_template and len(loaded) > 1:
                    for number, labels_of_one in enumerate(each, 1):
                        name = f"template{number}/{case}.nii.gz"
                        write_volume(build / m.name / name, labels_of_one, grid.affine, dtype)
                        each = report.each_template.setdefault(m.name, [{} for _ in loaded])
                        each[number - 1][case] = report.out_dir / m.name / name
                write_volume(build / m.name / f"{case}.nii.gz", fused, grid.affine, dtype)
                report.files.setdefault(m.name, {})[case] = report.out_dir / m.name / f"{case}.nii.gz"
                report.seconds.setdefault(m.name, {})[case] = seconds
        for m in chosen:
            (build / m.name / REPORT_NAME).write_text(json.dumps({
                "method": m.name, "description": m.description, "ants_linear": m.linear,
                "ants_linear_options": dict(LINEAR_OPTIONS),
                "ants_syn_options": None if m.deformable is None else dict(m.deformable),
                "interpolator": "genericLabel", "antspyx": ants.__version__,
                "brain_extracted": [brains and t.mask is not None for t in loaded],
                "seed": seed, "itk_threads": 1, "templates": [str(t) for t in report.templates],
                "fusion": FUSIONS[fusion] if len(loaded) > 1 else None,
                "cohort": str(cohort.absolute()),
                "grid_file": grid_name, "seconds_per_case": report.seconds[m.name],
                "seconds_per_subject": report.seconds_per_subject(m.name)}, indent=2) + "\n")
    return report
