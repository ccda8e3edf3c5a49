"""The README's first command at its smallest size: the whole pipeline runs and writes its results."""
import json
import math
from pathlib import Path

import pytest

from mqsm_nnunet.cli.demo import main


@pytest.mark.slow
def test_demo_smallest_size_writes_tables_figures_and_summary(tmp_path):
    out = tmp_path / "demo"
    assert main(["-o", str(out), "--subjects", "6", "--test-subjects", "1", "--epochs", "2",
                 "--iterations", "1", "--curve-points", "1", "--device", "cpu"]) == 0
    results = out / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert set(summary["qsm_metrics"]) == {"mQSM", "mqsm_qsm", "qsm_minus", "tkd", "tikhonov", "tv_admm", "tv_admm_oracle"}
    for metrics in summary["qsm_metrics"].values():
        assert all(math.isfinite(metrics[k]) for k in ("ssim", "psnr", "nrmse", "hfen", "qsmci_nrmse",
                                                       "qsmci_nrmse_detrend", "qsmci_xsim"))
    oracle = summary["qsm_metrics"]["tv_admm_oracle"]["qsmci_nrmse"]
    assert oracle <= summary["qsm_metrics"]["tv_admm"]["qsmci_nrmse"]      # the rule's alpha is among those tried
    (alpha,) = summary["baseline_parameters"]["tv_admm"].values()
    assert alpha > 0 and summary["baseline_seconds_per_subject"]["tv_admm"] > 0
    learned = summary["qsm_metrics"]["mqsm_qsm"]["qsmci_nrmse"]     # the shipped learned QSM, no training
    assert learned < summary["qsm_metrics"]["tv_admm"]["qsmci_nrmse"]
    assert summary["baseline_seconds_per_subject"]["mqsm_qsm"] > 0
    assert 0.0 <= summary["segmentation_mean_dice"] <= 1.0
    assert {"Left-Red-Nucleus", "Right-Dentate", "Left-Substancia-Nigra"} <= set(summary["segmentation_dice_per_region"])
    assert summary["training"]["fold"] == "all"
    assert summary["training"]["start"].startswith("fine-tuned from the shipped model")
    logs = list((out / "nnUNet_results").rglob("training_log_*.txt"))
    assert any("Initial weights from" in log.read_text() for log in logs)     # all tensors, outputs included
    assert "registration_table2" in summary
    curve = summary["learning_curve"]
    assert curve["iterations"] == [0, 1, 2]       # the shipped model, the epoch-1 checkpoint, the final model
    assert all(0.0 <= d <= 1.0 for d in curve["dice"]) and all(n > 0 for n in curve["nrmse"])
    (case, files), = summary["cases"].items()
    for key in ("predicted_qsm", "predicted_segmentation", "true_susceptibility", "true_labels", "field", "mask"):
        assert Path(files[key]).is_file(), key
    markdown = (results / "summary.md").read_text()
    assert "| mQSM |" in markdown and "Ground truth" in markdown
    for png in ("figures/qc_" + case + ".png", "figures/methods_" + case + ".png", "figures/learning_curve.png"):
        assert (results / png).stat().st_size > 10_000
    # the demo's network fuses T1 and QSM at the input: no mutual attention to draw (test_pipeline draws one)
    assert not (results / "figures" / "mutual_attention.png").exists()
    assert (results / "iron" / "comparison.csv").is_file()


def test_demo_refuses_too_few_training_subjects(capsys):
    assert main(["--subjects", "5", "--test-subjects", "1"]) == 2
    assert "at least 5 training subjects" in capsys.readouterr().err
