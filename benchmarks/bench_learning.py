"""Does mQSM learn, and faster than what a user would run instead? (the paper's Table 3, measured).

On one phantom cohort (a seed and B0 direction no test uses; the last --test-subjects subjects are
held out and never trained on), every method trains the same number of iterations with stock
`nnUNetv2_train ... -f all` and predicts the held-out subjects with the real prediction CLIs:

    stock_t1         nnUNetTrainer_tinyLength, T1 only, nnUNetPlans  (nnU-Net's own recipe, shortened)
    stock_all        nnUNetTrainer_tinyLength, all 4 channels, nnUNetPlans
    stock_t1_recipe  nnUNetTrainer_tinyRecipe, T1 only (stock network, mQSM's short recipe)
    stock_all_recipe nnUNetTrainer_tinyRecipe, all 4 channels (stock network, mQSM's short recipe)
    mqsm_unet        mQSMTrainer_tiny_UNet   (two streams, no fusion)
    mqsm_sa          mQSMTrainer_tiny_SA     (+ self-attention)
    mqsm             mQSMTrainer_tiny        (+ mutual attention = mQSM; default loss)
    mqsm_paper       mQSMTrainer_tiny_paperLoss (mQSM with the paper's Eq. 5 alone)
    mqsm_input_fusion_map mQSMTrainer_tiny_inputFusionMap (one stream over T1 and the QSM: the demo's)
    mqsm_input_fusion_map_bf16 the same in bfloat16 on the CPU, as the demo trains (every other arm: float32)
    mqsm_qsm_map_only mQSMTrainer_tiny_qsmMapOnly (mQSM, QSM stream reads the reconstructed map only)

The stock trainers and mqsm_qsm_map_only are the benchmark's own (`benchmark_trainers.py`, found
through `benchmarks/trainers/`). Three experiments measured here were removed with the network
options only they used (results in benchmarks/README.md; code at commit cef2241): mqsm_wide_t1,
mqsm_qsm_map, mqsm_input_fusion.

Printed per method: held-out mean Dice over the regions and per group (deep nuclei, cortex, other),
QSM NRMSE / HFEN against the true chi (mQSM methods), beside QSM-, TKD, Tikhonov and TV-ADMM on the
same subjects, and seconds per training iteration as a ratio to stock_t1 (or the first stock method
run; epoch time / iterations, so nnU-Net's per-epoch validation batches are included
alike). --repeats N trains every method N times (interleaved) and reports the mean and range: one
short training's Dice varies by about 0.1, so a single run cannot separate two methods closer than
that. With --curve, every method also keeps
a checkpoint every --curve-every epochs and the held-out scores (mean Dice, deep nuclei, QSM NRMSE) are
tabled and drawn against iterations.

    .venv/bin/python benchmarks/bench_learning.py                     # short setting (about 1 h here)
    .venv/bin/python benchmarks/bench_learning.py --setting long      # 2000 its, 2 methods: about 2 h; GPU: --device cuda
    .venv/bin/python benchmarks/bench_learning.py --methods stock_t1 mqsm --iterations 300

Everything lives under --out (default bench_learning_output/); results.json holds every number and
results.md the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MQSM_ID, T1_ID = 981, 982
MQSM_NAME, T1_NAME = "Dataset981_BenchLearning", "Dataset982_BenchLearningT1"
SETTINGS = {"short": {"iterations": 250, "per_epoch": 25}, "long": {"iterations": 2000, "per_epoch": 50}}


class Method(NamedTuple):
    trainer: str
    plans: str
    dataset_id: int
    tool: str                 # the prediction CLI
    cpu_bf16: bool = False    # the short training's bfloat16 autocast on the CPU (mQSM trainers only)


METHODS = {
    "stock_t1": Method("nnUNetTrainer_tinyLength", "nnUNetPlans", T1_ID, "nnUNetv2_predict"),
    "stock_all": Method("nnUNetTrainer_tinyLength", "nnUNetPlans", MQSM_ID, "nnUNetv2_predict"),
    "stock_t1_recipe": Method("nnUNetTrainer_tinyRecipe", "nnUNetPlans", T1_ID, "nnUNetv2_predict"),
    "mqsm_unet": Method("mQSMTrainer_tiny_UNet", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "mqsm_sa": Method("mQSMTrainer_tiny_SA", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "mqsm": Method("mQSMTrainer_tiny", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "mqsm_paper": Method("mQSMTrainer_tiny_paperLoss", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "mqsm_input_fusion_map": Method("mQSMTrainer_tiny_inputFusionMap", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "mqsm_input_fusion_map_bf16": Method("mQSMTrainer_tiny_inputFusionMap", "mQSMPlans", MQSM_ID, "mqsm_predict",
                                         cpu_bf16=True),
    "mqsm_qsm_map_only": Method("mQSMTrainer_tiny_qsmMapOnly", "mQSMPlans", MQSM_ID, "mqsm_predict"),
    "stock_all_recipe": Method("nnUNetTrainer_tinyRecipe", "nnUNetPlans", MQSM_ID, "nnUNetv2_predict"),
}
# The long setting's question: where do the demo's mQSM and the stock network it must beat plateau?
LONG_METHODS = ["mqsm_input_fusion_map", "stock_t1_recipe"]
QSM_COLUMNS = {"nrmse": "QSM NRMSE (%)", "qsmci_nrmse": "demeaned NRMSE (QSM-CI, %)", "hfen": "HFEN (%)"}
# The iron nuclei, each its own column (left and right averaged): where T1 is blind and QSM is not.
IRON_NUCLEI = {"pallidum": "pallid", "s. nigra": "nigra", "red nucleus": "red_nucleus", "dentate": "dentate"}
BASELINE_NAMES = {"qsm_minus": "QSM- (Eq. 3)", "tkd": "TKD", "tikhonov": "Tikhonov (rule)",
                  "tv_admm": "TV-ADMM (rule)", "tv_admm_oracle": "TV-ADMM (oracle alpha)"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="short",
                        help="short: 250 iterations (10 epochs x 25), every method; long: 2000 (40 x 50), with "
                             f"curves, {' and '.join(LONG_METHODS)} unless --methods (about 2 h on 2 cores)")
    parser.add_argument("--iterations", type=int, help="training iterations per method (overrides --setting)")
    parser.add_argument("--per-epoch", type=int, help="iterations per nnU-Net epoch (overrides --setting)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS),
                        help="default: every method (short), the demo's mQSM and the stock network (long)")
    parser.add_argument("--subjects", type=int, default=10, help="cohort size (default 10)")
    parser.add_argument("--test-subjects", type=int, default=2, help="held out (default 2)")
    parser.add_argument("--seed", type=int, default=7, help="cohort seed (default 7; no test uses it)")
    parser.add_argument("--b0-dir", type=float, nargs=3, default=(0.17, 0.95, 0.26), metavar=("X", "Y", "Z"),
                        help="B0 in voxel axes (default about 18 degrees oblique from the real-anatomy label maps' "
                             "foot-head axis, their second; the cohort is mqsm_phantom's default, real anatomy)")
    parser.add_argument("--curve", action="store_true", help="held-out scores every --curve-every epochs "
                        "(on by default in the long setting)")
    parser.add_argument("--curve-every", type=int, default=0, help="epochs between curve points (default: 1/5 of the run)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="trainings per method (default 1), interleaved across methods so that the "
                             "machine's drift hits all alike; the table gives the mean and the range: at a "
                             "few hundred iterations one training's Dice varies by about 0.1")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64], metavar=("X", "Y", "Z"),
                        help="patch size of every method's plans (default 64 64 64: the demo's and the shipped "
                             "model's; 0 0 0 keeps nnU-Net's planned patch)")
    parser.add_argument("--timing", action="store_true",
                        help="only measure seconds per iteration: each method trains 3 epochs x 10 iterations on the "
                             "prepared data, nothing scored (run it on an idle machine after a long run with the "
                             "same -o: the equal-time table then uses these figures); writes timing.json")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("-o", "--out", default="bench_learning_output")
    args = parser.parse_args(argv)
    setting = SETTINGS[args.setting]
    args.iterations = args.iterations or setting["iterations"]
    args.per_epoch = args.per_epoch or setting["per_epoch"]
    args.epochs = max(1, round(args.iterations / args.per_epoch))
    args.curve = args.curve or args.setting == "long"
    args.methods = args.methods or (LONG_METHODS if args.setting == "long" else list(METHODS))
    args.curve_every = args.curve_every or max(1, args.epochs // 5)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    return args


def run(command: list[str], env: dict, log: Path) -> None:
    """A console script of this environment; its output to `log`; stop with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.run([str(BIN / command[0]), *command[1:]], env=env, stdout=handle,
                              stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{command[0]} failed (exit {code}); see {log}:\n" + "\n".join(
            log.read_text().splitlines()[-20:]))


def prepare(args, out: Path, env: dict) -> tuple[Path, list[str]]:
    """Cohort, the mQSM dataset (mQSMPlans and nnUNetPlans) and a T1-only twin (nnUNetPlans)."""
    cohort = out / "cohort"
    cases = [f"sub-{i:03d}" for i in range(args.subjects - args.test_subjects + 1, args.subjects + 1)]
    if (Path(env["nnUNet_preprocessed"]) / T1_NAME / "nnUNetPlans.json").is_file():
        return cohort, cases                              # prepared by an earlier run with this --out
    logs = out / "logs"
    run(["mqsm_phantom", "-o", str(cohort), "-n", str(args.subjects), "--seed", str(args.seed), "--b0-dir",
         *map(str, args.b0_dir), "--overwrite", "--quiet"], env, logs / "phantom.log")
    run(["mqsm_convert", "-i", str(cohort), "-d", str(MQSM_ID), "-n", MQSM_NAME.split("_", 1)[1],
         "--test-subjects", *cases, "--overwrite", "-np", "2"], env, logs / "convert.log")
    run(["mqsm_plan_and_preprocess", "-d", str(MQSM_ID), "-np", "2", "--no_pbar"], env, logs / "plan_mqsm.log")
    run(["nnUNetv2_plan_and_preprocess", "-d", str(MQSM_ID), "-c", "3d_fullres", "-np", "2"], env,
        logs / "plan_stock_all.log")
    raw = Path(env["nnUNet_raw"])
    t1 = raw / T1_NAME
    shutil.rmtree(t1, ignore_errors=True)
    source = raw / MQSM_NAME
    for sub in ("imagesTr", "imagesTs", "labelsTr"):
        (t1 / sub).mkdir(parents=True)
        for path in sorted((source / sub).glob("*.nii.gz")):
            if sub == "labelsTr" or path.name.endswith("_0000.nii.gz"):
                shutil.copy2(path, t1 / sub / path.name)
    dataset = json.loads((source / "dataset.json").read_text())
    dataset = {k: v for k, v in dataset.items() if k != "mqsm"}
    dataset["channel_names"] = {"0": "T1"}
    (t1 / "dataset.json").write_text(json.dumps(dataset, indent=2))
    run(["nnUNetv2_plan_and_preprocess", "-d", str(T1_ID), "-c", "3d_fullres", "-np", "2"], env,
        logs / "plan_stock_t1.log")
    if any(args.patch):
        for plans_file in (Path(env["nnUNet_preprocessed"]) / MQSM_NAME / "mQSMPlans.json",
                           Path(env["nnUNet_preprocessed"]) / MQSM_NAME / "nnUNetPlans.json",
                           Path(env["nnUNet_preprocessed"]) / T1_NAME / "nnUNetPlans.json"):
            plans = json.loads(plans_file.read_text())
            plans["configurations"]["3d_fullres"]["patch_size"] = list(args.patch)
            plans_file.write_text(json.dumps(plans, indent=4))
    return cohort, cases


def epoch_seconds(log_text: str) -> float:
    """Median nnU-Net 'Epoch time' after the first epoch (which includes start-up)."""
    times = [float(t) for t in re.findall(r"Epoch time: ([0-9.]+) s", log_text)]
    return float(np.median(times[1:] if len(times) > 1 else times)) if times else float("nan")


def checkpoints(model: Path) -> list[tuple[int, str]]:
    """(epoch, checkpoint name) of the snapshots and the final checkpoint, in training order."""
    fold = model / "fold_all"
    found = [(int(m.group(1)), p.name) for p in fold.glob("checkpoint_epoch*.pth")
             if (m := re.match(r"checkpoint_epoch(\d+)\.pth", p.name))]
    return sorted(found)


def score_checkpoint(method: str, checkpoint: str, args, out: Path, env: dict, cohort: Path,
                     cases: list[str]) -> dict:
    from mqsm_nnunet.evaluation.scoring import qsm_scores, segmentation_scores
    from mqsm_nnunet.io.labels import LabelIdMap, read_labels
    from mqsm_nnunet.predict.outputs import write_in_user_ids

    trainer, plans, dataset_id, tool, _ = METHODS[method]
    name = MQSM_NAME if dataset_id == MQSM_ID else T1_NAME
    pred = out / "predictions" / method / checkpoint.removesuffix(".pth")
    shutil.rmtree(pred, ignore_errors=True)
    run([tool, "-i", str(Path(env["nnUNet_raw"]) / name / "imagesTs"), "-o", str(pred), "-d", str(dataset_id),
         "-c", "3d_fullres", "-f", "all", "-tr", trainer, "-p", plans, "-chk", checkpoint, "-device", args.device,
         "-npp", "1", "-nps", "1", "--disable_progress_bar"], env, out / "logs" / f"predict_{method}_{pred.name}.log")
    if tool == "nnUNetv2_predict":       # nnU-Net's consecutive ids -> the cohort's FreeSurfer ids, as mqsm_predict
        dataset_json = json.loads((Path(env["nnUNet_raw"]) / MQSM_NAME / "dataset.json").read_text())
        label_ids = LabelIdMap.from_dataset_json(dataset_json)
        for case in cases:
            write_in_user_ids(pred / f"{case}.nii.gz", pred / f"{case}.nii.gz", label_ids)
    labels = read_labels(cohort / "labels.json").regions
    scores = segmentation_scores({c: pred / f"{c}.nii.gz" for c in cases},
                                 {c: cohort / c / "labels.nii.gz" for c in cases}, labels)
    if tool == "mqsm_predict":
        scores["qsm"] = qsm_scores({c: pred / f"{c}_qsm.nii.gz" for c in cases},
                                   {c: cohort / c / "chi.nii.gz" for c in cases},
                                   {c: cohort / c / "mask.nii.gz" for c in cases})
    return scores


def train(method: str, training: ShortTraining, args, env: dict, log: Path) -> tuple[Path, float, float]:
    """Train `method` from scratch for `training`: (model folder, wall seconds, seconds per iteration)."""
    trainer, plans, dataset_id, _, cpu_bf16 = METHODS[method]
    name = MQSM_NAME if dataset_id == MQSM_ID else T1_NAME
    model = Path(env["nnUNet_results"]) / name / f"{trainer}__{plans}__3d_fullres"
    shutil.rmtree(model, ignore_errors=True)
    write_short_training(Path(env["nnUNet_preprocessed"]) / name / f"{plans}.json",
                         dataclasses.replace(training, cpu_bf16=cpu_bf16))
    start = time.perf_counter()
    run(["nnUNetv2_train", str(dataset_id), "3d_fullres", "all", "-tr", trainer, "-p", plans, "-device",
         args.device], env, log)
    return model, time.perf_counter() - start, epoch_seconds(log.read_text()) / training.iterations_per_epoch


def train_and_score(method: str, args, out: Path, env: dict, cohort: Path, cases: list[str]) -> dict:
    trainer, plans, _, _, _ = METHODS[method]
    model, wall, seconds_per_iteration = train(
        method, ShortTraining(args.epochs, args.per_epoch, args.curve_every if args.curve else 0), args, env,
        out / "logs" / f"train_{method}.log")
    curve = {"iterations": [], "dice": [], "deep_nuclei": [], "nrmse": []}
    if args.curve:
        for epoch, checkpoint in checkpoints(model):
            scores = score_checkpoint(method, checkpoint, args, out, env, cohort, cases)
            curve["iterations"].append(epoch * args.per_epoch)
            curve["dice"].append(scores["mean_dice"])
            curve["deep_nuclei"].append(scores["groups"]["deep nuclei"])
            curve["nrmse"].append(scores.get("qsm", {}).get("nrmse"))
    final = score_checkpoint(method, "checkpoint_final.pth", args, out, env, cohort, cases)
    curve["iterations"].append(args.epochs * args.per_epoch)
    curve["dice"].append(final["mean_dice"])
    curve["deep_nuclei"].append(final["groups"]["deep nuclei"])
    curve["nrmse"].append(final.get("qsm", {}).get("nrmse"))
    if not any(v is not None for v in curve["nrmse"]):
        curve.pop("nrmse")
    return {"trainer": trainer, "plans": plans, "train_wall_s": wall, "s_per_iteration": seconds_per_iteration,
            **final, "curve": curve}


def combine_runs(runs: list[dict]) -> dict:
    """One method's trainings as one entry: means of the scores, the range of mean Dice, every run kept."""
    first = runs[0]
    combined = {"trainer": first["trainer"], "plans": first["plans"], "runs": runs,
                "mean_dice": float(np.mean([r["mean_dice"] for r in runs])),
                "dice_range": [float(min(r["mean_dice"] for r in runs)), float(max(r["mean_dice"] for r in runs))],
                "groups": {g: float(np.mean([r["groups"][g] for r in runs])) for g in first["groups"]},
                "regions": {g: float(np.mean([r["regions"][g] for r in runs])) for g in first["regions"]},
                "s_per_iteration": float(np.median([r["s_per_iteration"] for r in runs])),
                "curve": {"iterations": first["curve"]["iterations"],
                          **{k: np.mean([r["curve"][k] for r in runs], axis=0).tolist()
                             for k in ("dice", "deep_nuclei", "nrmse") if k in first["curve"]}}}
    if "qsm" in first:
        combined["qsm"] = {m: float(np.mean([r["qsm"][m] for r in runs])) for m in QSM_COLUMNS}
    return combined


def classical_baselines(cohort: Path, cases: list[str], out: Path) -> dict[str, dict]:
    """QSM-, TKD, Tikhonov, TV-ADMM (parameters by rule) and TV-ADMM with the oracle alpha on the
    held-out subjects (`qsm.cohort_baselines`): scores, parameters and seconds per subject."""
    from mqsm_nnunet.evaluation.scoring import qsm_scores
    from mqsm_nnunet.qsm.cohort_baselines import run_cohort_baselines

    report = run_cohort_baselines(cohort, cases, out / "baselines")
    seconds = report.seconds_per_subject()
    return {method: {**qsm_scores(files, {c: cohort / c / "chi.nii.gz" for c in cases},
                                  {c: cohort / c / "mask.nii.gz" for c in cases}),
                     "parameters": report.parameters.get(method, {}), "seconds": seconds[method]}
            for method, files in report.files.items()}


def iron_nuclei_dice(regions: dict[str, float]) -> dict[str, float]:
    """Mean Dice of each iron nucleus over its hemispheres (NaN where the label set has none)."""
    def matching(key: str) -> list[float]:
        return [d for name, d in regions.items() if key in name.lower().replace("-", "_")]
    return {nucleus: float(np.mean(matching(key))) if matching(key) else float("nan")
            for nucleus, key in IRON_NUCLEI.items()}


def table(results: dict, baselines: dict) -> str:
    base = next((m for m in ("stock_t1", "stock_t1_recipe", "stock_all_recipe", "stock_all") if m in results),
                next(iter(results)))
    reference = results[base]["s_per_iteration"]
    lines = ["| method | trainer | runs | mean Dice (range) | deep nuclei | " + " | ".join(IRON_NUCLEI) +
             " | cortex | other | " + " | ".join(QSM_COLUMNS.values()) + f" | s/it | x {base} |",
             "| --- " * (9 + len(IRON_NUCLEI) + len(QSM_COLUMNS)) + "|"]
    for method, r in results.items():
        qsm = {k: f"{v:.1f}" for k, v in r.get("qsm", {}).items()}
        low, high = r["dice_range"]
        dice = f"{r['mean_dice']:.3f}" + (f" ({low:.3f}-{high:.3f})" if len(r["runs"]) > 1 else "")
        iron = " | ".join(f"{d:.3f}" for d in iron_nuclei_dice(r["regions"]).values())
        lines.append(f"| {method} | {r['trainer']} | {len(r['runs'])} | {dice} | {r['groups']['deep nuclei']:.3f} | "
                     f"{iron} | {r['groups']['cortex']:.3f} | {r['groups']['other']:.3f} | "
                     + " | ".join(qsm.get(k, "") for k in QSM_COLUMNS) +
                     f" | {r['s_per_iteration']:.2f} | {r['s_per_iteration'] / reference:.2f} |")
    for method, q in baselines.items():
        values = ", ".join(f"{v:.2g}" for v in q.get("parameters", {}).values())
        name = BASELINE_NAMES.get(method, method) + (f" ({values}; {q['seconds']:.1f} s/subject)" if values else
                                                      f" ({q['seconds']:.1f} s/subject)")
        lines.append(f"| {name} | classical |" + " |" * (5 + len(IRON_NUCLEI)) + " " +
                     " | ".join(f"{q[k]:.1f}" for k in QSM_COLUMNS) + " | | |")
    return "\n".join(lines)


def curve_table(results: dict) -> str:
    """The learning curves as rows: held-out mean Dice / deep nuclei [/ QSM NRMSE %] at each point."""
    points = next(iter(results.values()))["curve"]["iterations"]
    lines = ["| method | " + " | ".join(f"{i} its" for i in points) + " |", "| --- |" + " --- |" * len(points)]
    for method, r in results.items():
        c = r["curve"]
        nrmse = c.get("nrmse") or [None] * len(points)
        cells = [f"{d:.3f} / {g:.3f}" + (f" / {n:.1f} %" if n is not None else "")
                 for d, g, n in zip(c["dice"], c["deep_nuclei"], nrmse)]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def equal_time_table(results: dict, timing: dict | None = None) -> str:
    """Held-out scores at equal training time: the slowest method's budget is the fastest's full run;
    each method's curve (mean Dice and deep nuclei against iterations, from 0 at 0) read at
    budget / its s/it by linear interpolation. s/it from `timing` (an idle `--timing` run) where given."""
    per_iteration = {m: (timing or {}).get(m, r["s_per_iteration"]) for m, r in results.items()}
    budget = min(r["curve"]["iterations"][-1] * per_iteration[m] for m, r in results.items())
    lines = [f"Equal training time: {budget / 60:.1f} min each (the quickest method's full run)", "",
             "| method | s/it | iterations in that time | mean Dice | deep nuclei |", "| --- | --- | --- | --- | --- |"]
    for method, r in results.items():
        curve = r["curve"]
        iterations = budget / per_iteration[method]
        points = [0, *curve["iterations"]]
        dice = np.interp(iterations, points, [0.0, *curve["dice"]])
        deep = np.interp(iterations, points, [0.0, *curve["deep_nuclei"]])
        lines.append(f"| {method} | {per_iteration[method]:.2f} | {iterations:.0f} | {dice:.3f} | {deep:.3f} |")
    return "\n".join(lines)


def measure_timing(args, out: Path, env: dict) -> int:
    """Seconds per iteration of every method, 3 epochs x 10 iterations each, one after another; the
    median epoch after the first (nnU-Net's 2 validation batches per epoch included, as in training)."""
    timing = {}
    for method in args.methods:
        _, _, timing[method] = train(method, ShortTraining(3, 10), args, env, out / "logs" / f"timing_{method}.log")
        print(f"[{method}] {timing[method]:.2f} s/it (load {os.getloadavg()[0]:.1f})", flush=True)
    (out / "timing.json").write_text(json.dumps(timing, indent=2))
    results_file = out / "results.json"
    if results_file.is_file():
        results = json.loads(results_file.read_text())["results"]
        if all(m in timing for m in results):
            print(equal_time_table(results, timing))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    env = {**os.environ, "nnUNet_raw": str(out / "nnUNet_raw"), "nnUNet_preprocessed": str(out / "nnUNet_preprocessed"),
           "nnUNet_results": str(out / "nnUNet_results"),
           "nnUNet_extTrainer": os.pathsep.join([str(REPO / "trainers"), str(REPO / "benchmarks" / "trainers")]),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "benchmarks"), os.environ.get("PYTHONPATH")])),
           "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA", "1"), "nnUNet_def_n_proc": "1",
           "nnUNet_compile": "false"}
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        Path(env[key]).mkdir(parents=True, exist_ok=True)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")})
    print(f"bench_learning: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}; {args.iterations} iterations per method "
          f"({args.epochs} epochs x {args.per_epoch}), device {args.device}", flush=True)
    cohort, cases = prepare(args, out, env)
    if args.timing:
        return measure_timing(args, out, env)
    baselines = classical_baselines(cohort, cases, out)
    runs: dict[str, list[dict]] = {}
    results = {}
    results_file = out / "results.json"
    for repeat in range(1, args.repeats + 1):
        for method in args.methods:
            label = f"[{method}" + (f" {repeat}/{args.repeats}]" if args.repeats > 1 else "]")
            print(f"{label} training {METHODS[method].trainer} ...", flush=True)
            r = train_and_score(method, args, out, env, cohort, cases)
            print(f"{label} mean Dice {r['mean_dice']:.3f} (deep nuclei {r['groups']['deep nuclei']:.3f}), "
                  f"{r['s_per_iteration']:.2f} s/it" + (f", QSM NRMSE {r['qsm']['nrmse']:.1f} %" if "qsm" in r else ""),
                  flush=True)
            runs.setdefault(method, []).append(r)
            results[method] = combine_runs(runs[method])
            results_file.write_text(json.dumps({"args": vars(args), "held_out": cases, "results": results,
                                                "baselines": baselines}, indent=2, default=float))
    text = table(results, baselines)
    (out / "results.md").write_text(
        f"{args.iterations} iterations per method ({args.epochs} epochs x {args.per_epoch}); held-out "
        f"{', '.join(cases)}; seed {args.seed}, B0 {list(args.b0_dir)}; load average at the end "
        f"{os.getloadavg()[0]:.1f}\n\n{text}\n" + (
            f"\nHeld-out mean Dice / deep nuclei / QSM NRMSE along training:\n\n{curve_table(results)}\n\n"
            f"{equal_time_table(results)}\n" if args.curve else ""))
    if args.curve:
        from mqsm_nnunet.figures import learning_curve_figure

        learning_curve_figure(out / "learning_curves.png", {m: r["curve"] for m, r in results.items()},
                              {BASELINE_NAMES[m]: q["nrmse"] for m, q in baselines.items() if m in BASELINE_NAMES})
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
