"""A whole cohort into `$nnUNet_raw/DatasetXXX_NAME`: subjects in parallel, dataset.json, atomic install.

The dataset is built in a hidden folder next to the destination and renamed into place only after
every subject succeeded (`files.atomic_folder`), so an error, Ctrl-C or SIGTERM never leaves a
half-written dataset behind; from the rename on, mqsm_convert ignores interrupts
(`command.publishing_result`), so its exit status always says which state it left. nnU-Net wants
consecutive labels 0..N; other ids are remapped and the user's ids recorded in dataset.json's "mqsm"
block (`labels.LabelIdMap`), from which predictions are mapped back.
"""
from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mqsm_nnunet.command import publishing_result, worker_pool
from mqsm_nnunet.conversion.cohort import Subject, discover_subjects
from mqsm_nnunet.conversion.options import ConversionOptions, ConversionWarning
from mqsm_nnunet.conversion.subject import FILE_ENDING, Job, SubjectResult, convert_subject
from mqsm_nnunet.io.dataset_metadata import channel_layout, channel_names
from mqsm_nnunet.io.files import atomic_folder, writable_folder
from mqsm_nnunet.io.labels import LabelIdMap, LabelTable, as_label_map, read_labels
from mqsm_nnunet.io.nifti import read_volume
from mqsm_nnunet.io.nnunet_datasets import dataset_folder_name, existing_datasets, folds_warning, nnunet_raw_folder

MQSM_BLOCK_VERSION = 1
BRAIN_LABELS = {"background": 0, "brain": 1}
"""The labels of a field-maps-only dataset (`qsm_only`): nnU-Net needs a label map, the brain mask is one."""


def _datasets_to_replace(root: Path, dataset_id: int, overwrite: bool) -> list[Path]:
    """The existing datasets with this ID, which only `overwrite` allows to replace.

    Raises:
        FileExistsError: one exists and `overwrite` is false.
    """
    existing = existing_datasets(root, dataset_id)
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(map(str, existing))} already exists (nnU-Net resolves datasets by ID); "
                              "give `overwrite` to replace it, or choose another `dataset_id`")
    return existing


def _stale_nnunet_folders(dataset_id: int, folder_name: str) -> list[str]:
    """Warnings about preprocessed/results folders for this ID that will clash with the new dataset."""
    notes = []
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        value = os.environ.get(variable)
        for path in existing_datasets(Path(value), dataset_id) if value else []:
            if path.name == folder_name:
                notes.append(f"{path} exists from an earlier conversion; rerun planning and preprocessing "
                             "(and retrain) so it matches the new data")
            else:
                notes.append(f"{path} has the same ID under another name; nnU-Net will refuse ID {dataset_id} "
                             f"(more than one dataset name) until it is renamed or removed")
    return notes


def mqsm_block(options: ConversionOptions, labels: LabelIdMap, results: Sequence[SubjectResult]) -> dict:
    """The "mqsm" block of dataset.json: what later steps (training, prediction, iron) need to know."""
    sources = {r.b0_source for r in results}
    block = {
        "version": MQSM_BLOCK_VERSION,
        "channels": channel_layout(options.qsm_only),
        "field_units_input": options.field_units,
        "map_units": "ppm",
        "b0_tesla": options.b0,
        "te_seconds": options.te,
        "qsm_minus_thresholds": list(options.thresholds),
        "b0_direction_source": sources.pop() if len(sources) == 1 else
        {r.case_id: r.b0_source for r in sorted(results, key=lambda r: r.case_id)},
        "b0_direction": {r.case_id: list(r.b0_direction) for r in sorted(results, key=lambda r: r.case_id)},
    }
    if options.qsm_only:
        block["qsm_only"] = True
    if labels.remapped:
        block["label_ids_original"] = dict(labels.user)
    references = sorted(r.case_id for r in results if r.has_reference_qsm)
    if references:
        block["reference_qsm"] = {"folder": "qsmTr", "cases": references}
    return block


def dataset_json(name: str, options: ConversionOptions, labels: LabelIdMap,
                 results: Sequence[SubjectResult]) -> dict:
    """The stock nnU-Net keys plus the "mqsm" block."""
    channels = "" if options.qsm_only else "T1 (zscore), "
    return {
        "channel_names": channel_names(options.qsm_only),
        "labels": dict(labels.nnunet),
        "numTraining": sum(r.training for r in results),
        "file_ending": FILE_ENDING,
        "name": name,
        "description": f"mQSM: {channels}local field (ppm), QSM- (ppm), brain mask (0/1)"
                       + ("; labels = brain mask (field maps only)" if options.qsm_only else "")
                       + "; written by mqsm_convert",
        "mqsm": mqsm_block(options, labels, results),
    }


@contextmanager
def _mapped(function: Callable[[Job], SubjectResult], jobs: Sequence[Job],
            processes: int) -> Iterator[Iterator[SubjectResult]]:
    """Results of `function` over `jobs` in completion order; in-process for one process.

    Leaving the block terminates the pool, so no worker writes after an error, Ctrl-C or SIGTERM.
    """
    if processes == 1:
        yield map(function, jobs)
        return
    with worker_pool(processes) as pool:
        yield pool.imap_unordered(function, jobs)


def _study_table(table: LabelTable, subjects: Sequence[Subject], options: ConversionOptions) -> LabelTable:
    """The study's own table: a colour table (FreeSurferColorLUT) cut down to the ids its training
    label maps hold, a labels JSON as it is."""
    if not table.catalogue:
        return table
    present: set[int] = set()
    for subject in subjects:
        path = subject.folder / options.file_names.labels
        if subject.training:
            try:
                present.update(np.unique(as_label_map(read_volume(path, dtype=None).data, str(path))).tolist())
            except (ValueError, OSError) as error:
                raise ValueError(f"{subject.case_id}: {error}") from None
    return table.found_in(present)


def default_num_processes() -> int:
    """min(4, CPU count): conversion is FFT and I/O bound; more processes mostly cost memory."""
    return max(1, min(4, os.cpu_count() or 1))


def _warn(note: str) -> None:
    warnings.warn(note, ConversionWarning, stacklevel=3)


def convert_cohort(cohort: str | os.PathLike, dataset_id: int, name: str, *,
                   labels_json: str | os.PathLike | None = None,
                   options: ConversionOptions = ConversionOptions(), test_subjects: Sequence[str] = (),
                   overwrite: bool = False, num_processes: int | None = None, progress: bool = True) -> Path:
    """Convert an in-house cohort into `$nnUNet_raw/DatasetXXX_NAME`; returns that folder. With
    `options.qsm_only`: field maps and masks alone (no T1, no labels JSON), every subject a training
    subject with its brain mask as label map, for `mQSMTrainer_QSM`.

    Warnings (`ConversionWarning`): a T1 resampled, a borderline field size, labels remapped to
    consecutive ids, JSON labels absent from every training subject, fewer training subjects than
    nnU-Net's 5 folds, ignored arguments, clashing nnU-Net folders for the same ID.

    Raises:
        ValueError / FileNotFoundError: bad arguments or input (the message names subject and file).
        FileExistsError: a dataset with this ID exists and `overwrite` is false.
        PermissionError: `$nnUNet_raw` is not writable.
    """
    folder_name = dataset_folder_name(dataset_id, name)
    if num_processes is None:
        num_processes = default_num_processes()
    if num_processes < 1:
        raise ValueError(f"`num_processes` must be at least 1; got {num_processes}")
    root = writable_folder(nnunet_raw_folder())
    _datasets_to_replace(root, dataset_id, overwrite)
    cohort = Path(cohort)
    notes = options.unused_arguments() + _stale_nnunet_folders(dataset_id, folder_name)
    if options.qsm_only:
        labels = LabelIdMap.numbered(BRAIN_LABELS, "brain mask")
        if labels_json is not None:
            notes.append("`labels_json` is ignored with `qsm_only` (the brain mask is the label map)")
    else:
        try:
            table = read_labels(cohort / "labels.json" if labels_json is None else labels_json)
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{error}; put it in the cohort folder or give `labels_json`") from None
    subjects = discover_subjects(cohort, options.file_names, test_subjects, qsm_only=options.qsm_only)
    if not options.qsm_only:
        labels = LabelIdMap.numbered(_study_table(table, subjects, options))
    for note in notes:
        _warn(note)
    if not labels.consecutive:
        _warn(f"label ids {sorted(labels.user.values())} are not consecutive: nnU-Net trains on 0..N in id order "
              "(dataset.json mqsm.label_ids_original keeps yours; mqsm_predict writes yours)")
    few_folds = folds_warning(sum(s.training for s in subjects), options.qsm_only)
    if few_folds:
        _warn(few_folds)

    with atomic_folder(root / folder_name, replaces=existing_datasets(root, dataset_id)) as build:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (build / sub).mkdir()  # qsmTr only where a subject has a reference QSM
        jobs = [Job(subject, options, labels, build) for subject in subjects]
        results = []
        with tqdm(total=len(jobs), desc=folder_name, unit="subject", disable=not progress) as bar, \
                _mapped(convert_subject, jobs, min(num_processes, len(jobs))) as done:
            for result in done:
                for note in result.warnings:
                    _warn(note)
                results.append(result)
                bar.update()
        present = set().union(*(r.label_ids_present for r in results if r.training))
        absent = [name for rank, name in enumerate(labels.user) if rank not in present]
        if absent:
            _warn(f"labels {absent} occur in no training subject's label map")
        (build / "dataset.json").write_text(json.dumps(dataset_json(name, options, labels, results), indent=2) + "\n")
        publishing_result()  # mqsm_convert: an interrupt from here on must not undo a finished dataset
    return root / folder_name
