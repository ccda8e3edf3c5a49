"""`mqsm_demo`: the whole mQSM path on the synthetic cohort, in one command.

real-anatomy phantom cohort -> mqsm_convert -> mqsm_plan_and_preprocess -> nnUNetv2_train
(mQSMTrainer_tiny_inputFusionMap, fine-tuned from the shipped pretrained model unless --from-scratch:
its plans' network adopted, `pretrained.adopt_pretrained_plans`) -> mqsm_predict on the held-out subjects -> classical baselines on the same fields -> mqsm_qsm (the shipped
learned QSM) on the same fields -> QSM and
segmentation metrics against the phantom's truth -> iron table (mQSM vs truth) -> registration arm
(template labels by ANTs, Table 2 with mQSM and truth; `demo.registration`) -> QC figures ->
results/summary.md and results/summary.json. The nnU-Net steps run the real command-line tools as
subprocesses; everything else calls the public functions of the package. All nnU-Net folders live
inside the output folder, so the demo never touches a user's own nnUNet_raw/results.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


from mqsm_nnunet.demo.summary import DISPLAY_NAMES, METHODS_ORDER, ordered, write_summary

DATASET_ID = 990
DATASET_NAME = "MQSMDemo"
TRAINER = "mQSMTrainer_tiny_inputFusionMap"
PLANS = "mQSMPlans"
PRETRAINED_POINT = "pretrained"      # predictions_curve/<this>: the shipped model before fine-tuning


class Steps:
    """Numbered progress lines with elapsed time; subprocess output goes to OUT/logs/<step>.log."""

    def __init__(self, total: int, log_dir: Path):
        self.total, self.index, self.log_dir, self.start = total, 0, log_dir, time.perf_counter()
        log_dir.mkdir(parents=True, exist_ok=True)

    def begin(self, title: str) -> None:
        self.index += 1
        print(f"[{self.index}/{self.total}] {title}  (t = {time.perf_counter() - self.start:.0f} s)", flush=True)

    def run(self, name: str, command: list[str], env: dict) -> None:
        """Run a command; on failure show the end of its log and stop the demo."""
        log = self.log_dir / f"{name}.log"
        print(f"      $ {' '.join(command)}   (log: {log})", flush=True)
        with open(log, "w") as handle:
            result = subprocess.run(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            tail = log.read_text().splitlines()[-25:]
            raise RuntimeError(f"{command[0]} failed (exit {result.returncode}); last lines of {log}:\n"
                               + "\n".join(tail))


def demo_environment(out: Path) -> dict:
    """nnU-Net folders inside OUT, our trainers folder, one worker per pool."""
    from mqsm_nnunet.io.nnunet_datasets import trainer_folders

    env = dict(os.environ)
    env.update({"nnUNet_raw": str(out / "nnUNet_raw"), "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
                "nnUNet_results": str(out / "nnUNet_results"),
                "nnUNet_extTrainer": trainer_folders(),
                "nnUNet_n_proc_DA": env.get("nnUNet_n_proc_DA", "1"), "nnUNet_compile": "false",
                "nnUNet_def_n_proc": env.get("nnUNet_def_n_proc", "1")})
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    return env


def _tool(name: str) -> str:
    """A console script of this environment (the one running the demo)."""
    return str(Path(sys.executable).parent / name)


def run(args: argparse.Namespace) -> Path:
    import torch

    from mqsm_nnunet.phantom import DEFAULT_REAL_VOXEL_SIZE, write_real_cohort

    out = Path(args.out).resolve()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    snapshot_every = max(1, args.epochs // (args.curve_points + 1)) if args.curve_points > 0 else 0
    env = demo_environment(out)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                          "nnUNet_extTrainer")})
    steps = Steps(12, out / "logs")

    steps.begin(f"phantom cohort: {args.subjects} subjects from real anatomies (FreeSurfer labels)")
    cohort = out / "cohort"
    summary = write_real_cohort(cohort, args.subjects, voxel_size=args.voxel_size or DEFAULT_REAL_VOXEL_SIZE,
                                b0_dir=args.b0_dir, shape=args.shape, seed=args.seed, overwrite=True, progress=True)
    print(summary.report(), flush=True)
    test_cases = [f"sub-{i:03d}" for i in range(args.subjects - args.test_subjects + 1, args.subjects + 1)]

    steps.begin(f"mqsm_convert -> Dataset{DATASET_ID:03d}_{DATASET_NAME} (held out: {', '.join(test_cases)})")
    from mqsm_nnunet.conversion import convert_cohort

    raw = convert_cohort(cohort, DATASET_ID, DATASET_NAME, test_subjects=test_cases, overwrite=True,
                         num_processes=2, progress=True)

    steps.begin("mqsm_plan_and_preprocess (nnU-Net fingerprint, mQSMPlanner, preprocessing)")
    steps.run("plan_and_preprocess", [_tool("mqsm_plan_and_preprocess"), "-d", str(DATASET_ID), "-np", "2",
                                      "--no_pbar", "--clean"], env)
    from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

    plans_file = out / "nnUNet_preprocessed" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / f"{PLANS}.json"
    start_from = None
    if not args.from_scratch:
        from mqsm_nnunet.pretrained import adopt_pretrained_plans, check_same_labels, pretrained_file

        check_same_labels(json.loads((raw / "dataset.json").read_text()))
        adopt_pretrained_plans(plans_file)
        start_from = str(pretrained_file("weights"))
    write_short_training(plans_file, ShortTraining(args.epochs, args.iterations, snapshot_every,
                                                   cpu_bf16=not args.fp32, initial_weights=start_from))

    origin = "from scratch" if start_from is None else f"fine-tuning the pretrained model ({start_from})"
    steps.begin(f"nnUNetv2_train {DATASET_ID} 3d_fullres all -tr {TRAINER} ({args.epochs} epochs x "
                f"{args.iterations} iterations on all {args.subjects - args.test_subjects} training subjects, {device}, "
                f"{origin})")
    steps.run("train", [_tool("nnUNetv2_train"), str(DATASET_ID), "3d_fullres", "all", "-tr", TRAINER, "-p", PLANS,
                        "-device", device], env)

    steps.begin("mqsm_predict on the held-out subjects (final model, intermediate checkpoints"
                + (", the shipped model before fine-tuning)" if start_from is not None else ")"))
    predictions = out / "predictions"
    snapshots = sorted(_model_folder(out).glob("fold_all/checkpoint_epoch*.pth"),
                       key=lambda p: int(p.stem.removeprefix("checkpoint_epoch")))
    for checkpoint in [*snapshots, None]:
        target = predictions if checkpoint is None else out / "predictions_curve" / checkpoint.stem
        steps.run(f"predict_{target.name}", [
            _tool("mqsm_predict"), "-i", str(raw / "imagesTs"), "-o", str(target), "-d", str(DATASET_ID), "-c",
            "3d_fullres", "-f", "all", "-tr", TRAINER, "-p", PLANS, "-device", device, "--disable_progress_bar",
            *(["-chk", checkpoint.name] if checkpoint is not None else [])], env)
    if start_from is not None:     # the curve's first point: the shipped model as it is, before fine-tuning
        steps.run("predict_pretrained", [
            _tool("mqsm_predict"), "-i", str(raw / "imagesTs"), "-o", str(out / "predictions_curve" / PRETRAINED_POINT),
            "--pretrained", "-device", device, "--disable_progress_bar"], env)

    steps.begin("classical dipole inversions on the same field maps (QSM-, TKD, Tikhonov, TV-ADMM, each tuned "
                "per subject by its rule; TV-ADMM also with the alpha best against the truth: an oracle)")
    from mqsm_nnunet.qsm.cohort_baselines import run_cohort_baselines

    method_files = {"mQSM": {case: predictions / f"{case}_qsm.nii.gz" for case in test_cases}}
    baselines = run_cohort_baselines(cohort, test_cases, out / "baselines")
    method_files.update(baselines.files)

    steps.begin("the learned QSM that ships with the package (mqsm_qsm: TV-ADMM refined by the pretrained unrolled "
                "network, no training) on the same field maps")
    held_out_fields = out / "held_out_fields"      # the held-out subject folders (field, mask, B0 sidecars)
    shutil.rmtree(held_out_fields, ignore_errors=True)
    held_out_fields.mkdir()
    for case in test_cases:
        (held_out_fields / case).symlink_to(cohort / case, target_is_directory=True)
    steps.run("mqsm_qsm", [_tool("mqsm_qsm"), "-i", str(held_out_fields), "-o", str(out / "learned_qsm"),
                           "--overwrite", "--quiet", "-device", device], env)
    method_files["mqsm_qsm"] = {case: out / "learned_qsm" / f"{case}_qsm.nii.gz" for case in test_cases}
    learned_report = json.loads((out / "learned_qsm" / "qsm.json").read_text())["cases"]
    for case in test_cases:      # its seconds (TV-ADMM start included) beside the baselines'
        baselines.add("mqsm_qsm", case, method_files["mqsm_qsm"][case], None, learned_report[case]["seconds"])

    steps.begin("evaluation against the phantom truth (QSM: Table 1; segmentation: Table 3)")
    results = out / "results"
    truth = {case: cohort / case / "chi.nii.gz" for case in test_cases}
    masks = {case: cohort / case / "mask.nii.gz" for case in test_cases}
    true_labels = {case: cohort / case / "labels.nii.gz" for case in test_cases}
    predicted_seg = {case: predictions / f"{case}.nii.gz" for case in test_cases}
    qsm_tables, seg_summary = _evaluate(method_files, truth, masks, predicted_seg, true_labels,
                                        cohort / "labels.json", results)

    steps.begin("regional iron: mQSM segmentation + QSM vs true labels + true susceptibility (Table 2)")
    from mqsm_nnunet.analysis import run_iron_analysis

    iron = run_iron_analysis(method_files["mQSM"], predicted_seg, cohort / "labels.json", results / "iron",
                             compare_qsm_files=truth, compare_seg_files=true_labels,
                             set_names=("mQSM", "Ground truth"))

    steps.begin("registration arm: template labels by ANTs (affine, SyN, 3-atlas SyN fused by majority vote) against "
                "mQSM and the truth (Table 2)")
    from mqsm_nnunet.demo.registration import registration_table2

    arm = registration_table2(cohort, test_cases, method_files["mQSM"], predicted_seg, truth, true_labels,
                              results / "registration", seed=args.seed, template_shape=args.shape,
                              template_voxel_size=args.voxel_size)

    steps.begin("learning curve: held-out Dice and QSM error against training iterations")
    curve = _learning_curve(out, cohort, test_cases, snapshots, args.iterations, args.epochs, qsm_tables,
                            from_pretrained=start_from is not None)

    steps.begin("figures")
    figures = _figures(cohort, raw, test_cases, method_files, predicted_seg, out, results)
    figures["learning_curve"] = str(curve.pop("figure"))

    write_summary(results, args, f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", TRAINER, summary, test_cases,
                  method_files, qsm_tables, seg_summary, iron, figures, cohort, predictions, device, curve, arm,
                  baselines)
    print(f"done in {time.perf_counter() - steps.start:.0f} s: read {results / 'summary.md'}")
    return results


def _model_folder(out: Path) -> Path:
    return out / "nnUNet_results" / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / f"{TRAINER}__{PLANS}__3d_fullres"


def _learning_curve(out: Path, cohort: Path, cases: list[str], snapshots: list[Path], iterations: int,
                    epochs: int, qsm_means: dict, from_pretrained: bool) -> dict:
    """Held-out mean Dice and QSM NRMSE at each kept checkpoint and at the end (and, when fine-tuning,
    of the shipped model at 0 iterations), and their figure."""
    from mqsm_nnunet.figures import learning_curve_figure
    from mqsm_nnunet.io.labels import read_labels
    from mqsm_nnunet.evaluation.scoring import qsm_scores, segmentation_scores

    folders = [(0, out / "predictions_curve" / PRETRAINED_POINT)] if from_pretrained else []
    folders += [(int(p.stem.removeprefix("checkpoint_epoch")), out / "predictions_curve" / p.stem) for p in snapshots]
    folders.append((epochs, out / "predictions"))
    regions = read_labels(cohort / "labels.json").ids
    curve = {"iterations": [], "dice": [], "nrmse": []}
    for epoch, folder in folders:
        seg = segmentation_scores({c: folder / f"{c}.nii.gz" for c in cases},
                                  {c: cohort / c / "labels.nii.gz" for c in cases}, regions)
        qsm = qsm_scores({c: folder / f"{c}_qsm.nii.gz" for c in cases}, {c: cohort / c / "chi.nii.gz" for c in cases},
                         {c: cohort / c / "mask.nii.gz" for c in cases})
        curve["iterations"].append(epoch * iterations)
        curve["dice"].append(seg["mean_dice"])
        curve["nrmse"].append(qsm["nrmse"])
    references = {DISPLAY_NAMES[m]: qsm_means[m]["nrmse"] for m in METHODS_ORDER if m != "mQSM" and m in qsm_means}
    curve["figure"] = learning_curve_figure(out / "results" / "figures" / "learning_curve.png", {"mQSM": curve},
                                            references, title="mQSM demo: held-out subjects during training")
    return curve


def _evaluate(method_files, truth, masks, predicted_seg, true_labels, labels_json, results: Path):
    from mqsm_nnunet.evaluation.evaluate import evaluate_qsm, evaluate_segmentation, qsm_mean_row, summarize_segmentation
    from mqsm_nnunet.io.labels import read_labels

    qsm_tables = {method: evaluate_qsm(files, truth, masks) for method, files in method_files.items()}
    seg_rows = evaluate_segmentation(predicted_seg, true_labels, read_labels(labels_json))
    seg_summary = summarize_segmentation(seg_rows)
    results.mkdir(parents=True, exist_ok=True)
    means = {method: qsm_mean_row(rows) for method, rows in qsm_tables.items()}
    return means, seg_summary


def _figures(cohort, raw, cases, method_files, predicted_seg, out, results) -> dict[str, str]:
    from mqsm_nnunet.figures import method_comparison_figure, qc_figure
    from mqsm_nnunet.io.nifti import read_volume

    figures = {}
    for case in cases:
        t1 = read_volume(cohort / case / "t1.nii.gz")
        qsm = read_volume(method_files["mQSM"][case]).data
        qsm_minus = read_volume(raw / "imagesTs" / f"{case}_0002.nii.gz").data
        seg = read_volume(predicted_seg[case], dtype=None).data
        chi = read_volume(cohort / case / "chi.nii.gz").data
        mask = read_volume(cohort / case / "mask.nii.gz").data > 0
        figures[f"qc_{case}"] = str(qc_figure(results / "figures" / f"qc_{case}.png", t1.data, qsm, qsm_minus, seg,
                                              t1.voxel_size, reference=chi, mask=mask,
                                              title=f"{case}: mQSM vs truth"))
    case = cases[0]
    chi = read_volume(cohort / case / "chi.nii.gz")
    maps = {DISPLAY_NAMES[method]: read_volume(files[case]).data for method, files in ordered(method_files).items()}
    figures["methods"] = str(method_comparison_figure(results / "figures" / f"methods_{case}.png", maps, chi.data,
                                                      read_volume(cohort / case / "mask.nii.gz").data > 0,
                                                      chi.voxel_size))
    attention = _mutual_attention_figure(out, raw, case, results / "figures" / "mutual_attention.png")
    if attention is not None:
        figures["mutual_attention"] = str(attention)
    return figures


def _mutual_attention_figure(out: Path, raw: Path, case: str, out_png: Path) -> Path | None:
    """The trained model's mutual-attention matrix on one held-out case (paper Fig. 4)."""
    from mqsm_nnunet.predict.attention import mutual_attention_of_case
    from mqsm_nnunet.figures import attention_figure

    matrix = mutual_attention_of_case(_model_folder(out), sorted((raw / "imagesTs").glob(f"{case}_*.nii.gz")),
                                      fold="all")
    return attention_figure(out_png, matrix, title=f"Mutual attention, {case}") if matrix is not None else None
