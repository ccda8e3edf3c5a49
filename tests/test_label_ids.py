"""The user's own label ids, end to end through the real commands: an aseg-like cohort with sparse
FreeSurfer ids -> mqsm_convert -> mqsm_plan_and_preprocess -> nnUNetv2_train (short) ->
mqsm_predict -> mqsm_evaluate and mqsm_iron. Predictions must come back in the user's ids, large
regions must be found under their own ids, the iron table must name them, and a labels file that
does not fit a segmentation (nnU-Net's consecutive ids, another study's table) must be refused.

The phantom's 30 regions are merged into 10 FreeSurfer-named ones with FreeSurfer's (sparse) ids,
so that a short CPU training finds the large ones; the last subject is held out with its truth.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from helpers import NNUNET_FOLDERS, run_cli, subprocess_env, tiny_phantom

from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.phantom import LABELS as PHANTOM_LABELS
from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

pytestmark = pytest.mark.slow

DATASET_ID, DATASET = 503, "Dataset503_Aseg"
TRAINER, PLANS, CONFIG = "mQSMTrainer_tiny_inputFusionMap", "mQSMPlans", "3d_fullres"
N_SUBJECTS, HELD_OUT = 6, "sub-006"
EPOCHS, ITERATIONS = 25, 6     # 150 iterations: about 2 min on 2 cores
FREESURFER = {  # FreeSurfer name -> (its aseg id, the phantom regions merged into it)
    "Left-Cerebral-White-Matter": (2, ("white_matter", "veins")),
    "Left-Cerebral-Cortex": (3, tuple(f"{lobe}_cortex_{side}" for lobe in ("frontal", "parietal", "temporal",
                                                                           "occipital") for side in "LR")),
    "Left-Lateral-Ventricle": (4, ("lateral_ventricle_L", "lateral_ventricle_R")),
    "Left-Cerebellum-Cortex": (8, ("cerebellar_cortex_L", "cerebellar_cortex_R", "dentate_L", "dentate_R")),
    "Left-Thalamus": (10, ("thalamus_L", "thalamus_R")),
    "Left-Caudate": (11, ("caudate_L", "caudate_R")),
    "Left-Putamen": (12, ("putamen_L", "putamen_R", "globus_pallidus_L", "globus_pallidus_R")),
    "Brain-Stem": (16, ("brainstem", "substantia_nigra_L", "substantia_nigra_R", "red_nucleus_L", "red_nucleus_R")),
    "CSF": (24, ("csf",)),
}
USER_LABELS = {"Unknown": 0, **{name: label for name, (label, _) in FREESURFER.items()}}
LARGE = ("Left-Cerebral-White-Matter", "Left-Cerebral-Cortex")
"""Found after 120-150 iterations (held-out Dice 0.82 and 0.65 in one run; brain stem 0.67 in that run
and 0 in another: not yet reliably, nor the thin CSF and the small nuclei)."""


def aseg_like(phantom_labels: np.ndarray) -> np.ndarray:
    """The phantom's label map in FreeSurfer ids (uint8, as aseg files are stored)."""
    lookup = np.zeros(max(PHANTOM_LABELS.values()) + 1, dtype=np.uint8)
    for label, regions in FREESURFER.values():
        for region in regions:
            lookup[PHANTOM_LABELS[region]] = label
    return lookup[phantom_labels]


@dataclass(frozen=True)
class Study:
    root: Path
    cohort: Path
    env: dict
    prediction: Path       # mqsm_predict's output on the held-out subject
    truth_chi: Path        # <case>.nii.gz: the held-out subject's true susceptibility
    truth_labels: Path     # <case>.nii.gz: its label map in the user's ids
    convert_output: str

    def run(self, *args: str, expect: int = 0) -> str:
        return run_cli(list(args), self.env, expect=expect)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    root = tmp_path_factory.mktemp("label_ids")
    env = subprocess_env(root)
    folders = {name: root / name for name in NNUNET_FOLDERS}
    cohort = tiny_phantom(root / "cohort", N_SUBJECTS, env)
    for subject in sorted(p for p in cohort.iterdir() if p.is_dir()):
        volume = read_volume(subject / "labels.nii.gz", dtype=None)
        write_volume(subject / "labels.nii.gz", aseg_like(volume.data.astype(np.int64)), volume.affine, np.uint8)
    (cohort / "labels.json").write_text(json.dumps(USER_LABELS))
    converted = run_cli(["mqsm_convert", "-i", str(cohort), "-d", str(DATASET_ID), "-n", "Aseg", "-np", "1",
                         "--test-subjects", HELD_OUT], env)   # its warnings are checked below
    run_cli(["mqsm_plan_and_preprocess", "-d", str(DATASET_ID), "-np", "1", "--no_pbar"], env)
    write_short_training(folders["nnUNet_preprocessed"] / DATASET / f"{PLANS}.json", ShortTraining(EPOCHS, ITERATIONS))
    run_cli(["nnUNetv2_train", str(DATASET_ID), CONFIG, "all", "-tr", TRAINER, "-p", PLANS, "-device", "cpu"], env)
    prediction = root / "pred"
    run_cli(["mqsm_predict", "-i", str(folders["nnUNet_raw"] / DATASET / "imagesTs"), "-o", str(prediction),
             "-d", str(DATASET_ID), "-f", "all", "-tr", TRAINER, "-device", "cpu", "-npp", "1", "-nps", "1",
             "--disable_progress_bar"], env)
    truth_chi, truth_labels = root / "truth_chi", root / "truth_labels"
    for folder, name in ((truth_chi, "chi.nii.gz"), (truth_labels, "labels.nii.gz")):
        folder.mkdir()
        (folder / f"{HELD_OUT}.nii.gz").write_bytes((cohort / HELD_OUT / name).read_bytes())
    return Study(root, cohort, env, prediction, truth_chi, truth_labels, converted)


def test_nnunet_trains_on_consecutive_ids_and_the_dataset_keeps_the_users(study):
    assert "not consecutive" in study.convert_output
    description = json.loads((Path(study.env["nnUNet_raw"]) / DATASET / "dataset.json").read_text())
    assert description["labels"] == {("background" if rank == 0 else name): rank  # nnU-Net's name for 0
                                      for rank, name in enumerate(USER_LABELS)}
    assert description["mqsm"]["label_ids_original"] == USER_LABELS


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_come_back_in_the_users_ids_with_large_regions_under_their_own(study):
    predicted = set(np.unique(read_volume(study.prediction / f"{HELD_OUT}.nii.gz", dtype=None).data).tolist())
    assert predicted <= set(USER_LABELS.values()) and {USER_LABELS[name] for name in LARGE} <= predicted
    assert len(predicted) > 2  # more than background and one region: ids were mapped, not collapsed
    out = study.root / "evaluation"
    study.run("mqsm_evaluate", "--pred", str(study.prediction), "--ref", str(study.truth_chi),
              "--seg-pred", str(study.prediction), "--seg-ref", str(study.truth_labels),
              "--labels", str(study.cohort / "labels.json"), "-o", str(out))
    rows = {row["region"]: row for row in read_csv(out / "seg_metrics_per_region.csv") if row["case"] == HELD_OUT}
    assert {name: int(row["label"]) for name, row in rows.items()} == {n: i for n, i in USER_LABELS.items() if i}
    for name in LARGE:
        assert float(rows[name]["dice"]) > 0.5, f"{name} ({USER_LABELS[name]}): Dice {rows[name]['dice']}"


@pytest.mark.parametrize("table", ["labels.json", "FreeSurferColorLUT.txt"])
def test_the_iron_table_names_each_region_by_the_users_id_and_name(study, table):
    """Each row is read under the user's id and carries its name: its voxel count is that id's count
    in the predicted map (this set) and in the true map (reference set). A colour table gives rows
    for the ids found only (its Right-Putamen, found nowhere, has none)."""
    lut = study.root / "FreeSurferColorLUT.txt"
    lut.write_text("#No. Label Name:  R G B A\n" + "".join(f"{label} {name} 0 0 0 0\n" for name, label in
                                                           {**USER_LABELS, "Right-Putamen": 51}.items()))
    labels = study.cohort / "labels.json" if table == "labels.json" else lut
    out = study.root / f"iron_{table}"
    study.run("mqsm_iron", "--qsm", str(study.prediction), "--seg", str(study.prediction), "--labels", str(labels),
              "--compare-qsm", str(study.truth_chi), "--compare-seg", str(study.truth_labels), "-o", str(out))
    rows = read_csv(out / "regional_stats.csv")
    assert {(row["region"], int(row["label"])) for row in rows} <= set(USER_LABELS.items())
    maps = {"this": read_volume(study.prediction / f"{HELD_OUT}.nii.gz", dtype=None).data,
            "reference": read_volume(study.truth_labels / f"{HELD_OUT}.nii.gz", dtype=None).data}
    counts = {(row["set"], row["region"]): int(row["n_voxels"]) for row in rows}
    for name in LARGE:
        for which, label_map in maps.items():
            assert counts[(which, name)] == np.sum(label_map == USER_LABELS[name]) > 0, (which, name)


def test_labels_that_do_not_fit_are_refused_naming_both_files(study):
    nnunet_ids = study.root / "nnunet_ids.json"   # what the dataset trained on: 0..9, not the user's ids
    nnunet_ids.write_text(json.dumps({name: rank for rank, name in enumerate(USER_LABELS)}))
    segmentation = study.prediction / f"{HELD_OUT}.nii.gz"
    for command in (["mqsm_iron", "--qsm", str(study.prediction), "--seg", str(study.prediction), "-o",
                     str(study.root / "refused_iron")],
                    ["mqsm_evaluate", "--pred", str(study.prediction), "--ref", str(study.truth_chi), "--seg-pred",
                     str(study.prediction), "--seg-ref", str(study.truth_labels), "-o", str(study.root / "refused_eval")]):
        output = study.run(*command, "--labels", str(nnunet_ids), expect=1)
        assert f"{segmentation}: label values [" in output and f"are not in {nnunet_ids}" in output
        assert "Traceback" not in output and not Path(command[command.index("-o") + 1]).exists()


def test_stock_nnunet_predictions_in_nnunets_ids_are_refused_not_misread(study):
    stock = study.root / "pred_stock"
    study.run("nnUNetv2_predict", "-i", str(Path(study.env["nnUNet_raw"]) / DATASET / "imagesTs"), "-o", str(stock),
              "-d", str(DATASET_ID), "-c", CONFIG, "-f", "all", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
              "-npp", "0", "-nps", "0", "--disable_progress_bar")
    output = study.run("mqsm_iron", "--qsm", str(study.prediction), "--seg", str(stock), "--labels",
                       str(study.cohort / "labels.json"), "-o", str(study.root / "refused_stock"), expect=1)
    assert "mqsm_predict writes the ids of your own label maps" in output
