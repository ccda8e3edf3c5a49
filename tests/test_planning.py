"""planning.mQSMPlanner through nnU-Net's own API on a tiny converted phantom (fingerprint and plans
only: seconds, no preprocessing or training): the plans name our networks, their channel roles and
the paper's reconstruction sizes, and a field-maps-only dataset is planned for the reconstruction net."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mqsm_nnunet.conversion import ConversionOptions, convert_cohort
from mqsm_nnunet.io.nnunet_datasets import dataset_folder_name
from mqsm_nnunet.network.reconstruction import PAPER_RECON_BLOCKS, PAPER_RECON_SKIP, PAPER_RECON_WIDTH
from mqsm_nnunet.phantom import write_cohort
from mqsm_nnunet.planning import PLANS_NAME, mQSMPlanner


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return write_cohort(tmp_path_factory.mktemp("planning") / "cohort", 3, (32, 32, 24), (6.0, 6.0, 6.0), seed=4,
                        progress=False).out_dir


def plans_for(cohort, nnunet_folders, dataset_id: int, qsm_only: bool) -> dict:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiment_dataset

    with pytest.warns(UserWarning):   # fewer than 5 training cases
        convert_cohort(cohort, dataset_id, "Plan", options=ConversionOptions(qsm_only=qsm_only), num_processes=1,
                       progress=False)
    # In a fresh process: nnU-Net's fingerprint pool forks, and a fork of this long-lived pytest process
    # (threads left by earlier tests) once hung forever in a fresh-clone CI run.
    subprocess.run([sys.executable, "-c", "from nnunetv2.experiment_planning.plan_and_preprocess_api import "
                    f"extract_fingerprints; extract_fingerprints([{dataset_id}], num_processes=1, "
                    "check_dataset_integrity=False, clean=True, verbose=False, show_progress_bar=False)"],
                   check=True, timeout=600)
    plan_experiment_dataset(dataset_id, mQSMPlanner)
    path = nnunet_folders / "nnUNet_preprocessed" / dataset_folder_name(dataset_id, "Plan") / f"{PLANS_NAME}.json"
    return json.loads(path.read_text())


def test_the_plans_name_mqsm_net_with_its_channel_roles_and_the_papers_sizes(cohort, nnunet_folders):
    plans = plans_for(cohort, nnunet_folders, 611, qsm_only=False)
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    assert architecture["network_class_name"].endswith("MQSMNet")
    kwargs = architecture["arch_kwargs"]
    assert (kwargs["t1_channels"], kwargs["qsm_minus_channel"]) == ([0], 2)
    assert (kwargs["recon_width"], kwargs["recon_blocks"], kwargs["recon_skip_channels"]) == \
        (PAPER_RECON_WIDTH, PAPER_RECON_BLOCKS, PAPER_RECON_SKIP)
    assert (kwargs["fusion"], kwargs["fusion_stages"]) == ("mtrans", [-1])
    assert "2d" not in plans["configurations"] or \
        not plans["configurations"]["2d"]["architecture"]["network_class_name"].endswith("MQSMNet")


def test_a_field_maps_only_dataset_is_planned_for_the_reconstruction_net(cohort, nnunet_folders):
    plans = plans_for(cohort, nnunet_folders, 612, qsm_only=True)
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    assert architecture["network_class_name"].endswith("ReconstructionOnlyNet")
    assert architecture["arch_kwargs"] == {"qsm_minus_channel": 1, "recon_width": PAPER_RECON_WIDTH,
                                           "recon_blocks": PAPER_RECON_BLOCKS, "recon_skip_channels": PAPER_RECON_SKIP}
