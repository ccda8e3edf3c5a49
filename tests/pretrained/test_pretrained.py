"""The model that ships with the package: its plans adopted by a dataset, its labels checked, and on a
real anatomy it never saw (`mqsm_phantom --anatomy`), `mqsm_predict --pretrained` segments the
regions, iron nuclei included, with no training."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from helpers import run_cli, subprocess_env

from mqsm_nnunet.io.nifti import read_volume
from mqsm_nnunet.metrics import overlap_metrics
from mqsm_nnunet.phantom.freesurfer import DENTATE, RED_NUCLEUS, SUBSTANTIA_NIGRA
from mqsm_nnunet.phantom.label_maps import EMBEDDED_DIR
from mqsm_nnunet.pretrained import (ADOPTED_KEYS, adopt_pretrained_plans, check_same_labels, pretrained_file)

HELD_OUT_ANATOMY = "anatomy_03"          # left out of the pretraining (record.json "held_out")
PALLIDUM = {"L": 13, "R": 52}
MIN_MEAN_DICE = 0.75        # the real-brains issue's bar; measured 0.832
MIN_NUCLEUS_DICE = 0.6       # idem; measured 0.70 (left red nucleus) to 0.91


def test_the_record_says_how_the_model_was_made():
    record = json.loads(pretrained_file("record").read_text())
    for key in ("command", "seed", "epochs", "iterations_per_epoch", "machine", "held_out"):
        assert key in record
    assert HELD_OUT_ANATOMY in record["held_out"]


def test_a_dataset_adopts_the_network_only_where_its_data_agree(tmp_path):
    shipped = json.loads(pretrained_file("plans").read_text())
    ours = json.loads(json.dumps(shipped))
    ours["configurations"]["3d_fullres"].update({"patch_size": [32, 32, 32], "architecture": {"other": 1}})
    plans_file = tmp_path / "mQSMPlans.json"
    plans_file.write_text(json.dumps(ours))
    adopt_pretrained_plans(plans_file)
    adopted = json.loads(plans_file.read_text())["configurations"]["3d_fullres"]
    assert all(adopted[key] == shipped["configurations"]["3d_fullres"][key] for key in ADOPTED_KEYS)
    ours["configurations"]["3d_fullres"]["spacing"] = [3.0, 3.0, 3.0]
    plans_file.write_text(json.dumps(ours))
    with pytest.raises(ValueError, match="spacing"):
        adopt_pretrained_plans(plans_file)
    dataset = json.loads(pretrained_file("dataset").read_text())
    check_same_labels(dataset)
    with pytest.raises(ValueError, match="labels"):
        check_same_labels({**dataset, "labels": {"background": 0, "brain": 1}})


@pytest.mark.slow
def test_the_shipped_model_segments_a_brain_it_never_saw_with_its_iron_nuclei(tmp_path):
    anatomies = tmp_path / "asegs"
    anatomies.mkdir()
    shutil.copy(EMBEDDED_DIR / f"{HELD_OUT_ANATOMY}.nii.gz", anatomies / "held_out_aseg.nii.gz")
    cohort = tmp_path / "cohort"
    env = subprocess_env(tmp_path / "nnunet")
    run_cli(["mqsm_phantom", "-o", str(cohort), "--anatomy", str(anatomies), "--seed", "11", "--quiet"], env)
    subject = cohort / "sub-held_out_aseg"
    (subject / "labels.nii.gz").rename(tmp_path / "truth.nii.gz")     # a test subject: no labels given
    run_cli(["mqsm_predict", "-i", str(cohort), "-o", str(tmp_path / "pred"), "--pretrained", "-device", "cpu",
             "--disable_progress_bar"], env)
    predicted = read_volume(tmp_path / "pred" / "sub-held_out_aseg.nii.gz", dtype=None).data
    truth = read_volume(tmp_path / "truth.nii.gz", dtype=None).data
    scores = {int(i): overlap_metrics(predicted == i, truth == i)["dice"] for i in np.unique(truth) if i > 0}
    nuclei = {f"{name} {side}": scores[ids[side]] for name, ids in (("nigra", SUBSTANTIA_NIGRA), ("red", RED_NUCLEUS),
                                                                    ("dentate", DENTATE), ("pallidum", PALLIDUM))
              for side in ("L", "R")}
    print(f"mean Dice {np.mean(list(scores.values())):.3f}; iron nuclei {nuclei}")
    assert np.mean(list(scores.values())) >= MIN_MEAN_DICE
    assert min(nuclei.values()) >= MIN_NUCLEUS_DICE, nuclei
    assert (tmp_path / "pred" / "sub-held_out_aseg_qsm.nii.gz").is_file()
    # the iron table names every nucleus with its FreeSurfer id and has a value for it
    run_cli(["mqsm_iron", "--qsm", str(tmp_path / "pred"), "--seg", str(tmp_path / "pred"), "--labels",
             str(cohort / "labels.json"), "-o", str(tmp_path / "iron")], env)
    with open(tmp_path / "iron" / "regional_stats.csv") as stream:
        rows = {int(row["label"]): row for row in csv.DictReader(stream)}
    for ids in (SUBSTANTIA_NIGRA, RED_NUCLEUS, DENTATE, PALLIDUM):
        for region_id in ids.values():
            assert np.isfinite(float(rows[region_id]["mean_ppb"])), rows[region_id]
