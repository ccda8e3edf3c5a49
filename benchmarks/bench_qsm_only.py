"""QSM from field maps alone: speed at in-vivo size, and the transductive reconstruction of a cohort.

Two parts (benchmarks/README.md has the figures):

- `speed`: one field-only subject (field + mask, 256 x 256 x 136 at 1 mm by default): `mqsm_predict`
  with a trained model against our TKD, Tikhonov and TV-ADMM on the same volume, each in its own
  process under `/usr/bin/time -v` (wall seconds including reading and writing, peak RSS). With
  `--compare-tv-with FILE` another implementation of `tv_admm` (e.g. an earlier `baselines.py`) runs
  on the same volume, with its maximum difference to ours.
- `cohort`: a phantom cohort of field maps and masks only (no T1, no labels, no truth in the input
  folder) through `mqsm_convert --qsm-only`, `mqsm_plan_and_preprocess`, `nnUNetv2_train ... all -tr
  mQSMTrainer_QSM_tiny` and `mqsm_predict` on the same field maps (the transductive use of
  docs/qsm_only.md), then the NRMSE of every subject's map against the true chi next to QSM-, TKD,
  Tikhonov (and TV-ADMM with `--tv`).

    .venv/bin/python benchmarks/bench_qsm_only.py cohort -o /tmp/qsm_cohort --subjects 4 --epochs 10 --iterations 15
    .venv/bin/python benchmarks/bench_qsm_only.py speed -o /tmp/qsm_speed --dataset 950 --trainer mQSMTrainer_QSM_tiny
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAINER = "mQSMTrainer_QSM_tiny"
BASELINES = ("tkd", "tikhonov", "tv_admm")


def machine() -> str:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()}, load average {load}")


def timed(command: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run `command` under /usr/bin/time -v: wall seconds and peak RSS (MB) of its process tree's
    largest process; the output goes to `log`."""
    result = subprocess.run(["/usr/bin/time", "-v", *command], env=env, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL)
    if log is not None:
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-4000:]}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", result.stderr).group(1)
    seconds = sum(float(part) * 60 ** i for i, part in enumerate(reversed(wall.split(":"))))
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return {"seconds": round(seconds, 1), "peak_mb": round(peak_kb / 1024), "stdout": result.stdout}


def phantom(out: Path, subjects: int, shape, voxel_size, seed: int) -> Path:
    """A phantom cohort (written once) and its copy with field and mask only, `out/fields`."""
    cohort, fields = out / "cohort", out / "fields"
    if not cohort.is_dir():
        subprocess.run([str(BIN / "mqsm_phantom"), "-o", str(cohort), "-n", str(subjects), "--geometric", "--shape", *map(str, shape),
                        "--voxel-size", *map(str, voxel_size), "--b0-dir", "0.26", "0", "0.97", "--seed", str(seed),
                        "--quiet"], check=True)
    for subject in sorted(cohort.glob("sub-*")):
        (fields / subject.name).mkdir(parents=True, exist_ok=True)
        for name in ("field.nii.gz", "mask.nii.gz"):
            shutil.copy(subject / name, fields / subject.name / name)
    return cohort


# ----------------------------------------------------------------------------------------------------
# one baseline in its own process
# ----------------------------------------------------------------------------------------------------
def run_one(name: str, subject: Path, result: Path, module: str | None) -> None:
    """Invert one subject's field with baseline `name` (of `module`, a baselines.py file, if given)."""
    from mqsm_nnunet.conversion.b0 import b0_direction
    from mqsm_nnunet.io.nifti import read_volume

    if module is None:
        from mqsm_nnunet.qsm import baselines
    else:
        spec = importlib.util.spec_from_file_location("other_baselines", module)
        baselines = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(baselines)
    field = read_volume(subject / "field.nii.gz")
    mask = read_volume(subject / "mask.nii.gz", dtype=None).data > 0
    start = time.perf_counter()
    b0_dir, _ = b0_direction(subject / "field.nii.gz", field.affine, None)  # as mqsm_convert resolves it
    chi = getattr(baselines, name)(field.data, field.voxel_size, b0_dir, mask)
    print(f"inversion_seconds {time.perf_counter() - start:.2f}")
    np.save(result, chi.astype(np.float32))


def speed(args: argparse.Namespace) -> dict:
    out = Path(args.o)
    cohort = phantom(out, 1, args.shape, args.voxel_size, args.seed)
    fields = out / "fields"
    subject = fields / "sub-001"
    env = {**os.environ, "nnUNet_extTrainer": str(REPO / "trainers"), "nnUNet_def_n_proc": "1"}
    results = {}
    pred = out / "pred"
    shutil.rmtree(pred, ignore_errors=True)
    results["mqsm_predict"] = timed([str(BIN / "mqsm_predict"), "-i", str(fields), "-o", str(pred), "-d",
                                     str(args.dataset), "-tr", args.trainer, "-f", *args.folds, "-device", "cpu",
                                     "-npp", "1", "-nps", "1", "-step_size", str(args.step_size),
                                     "--disable_progress_bar"], env, out / "mqsm_predict.log")
    runs = [(name, None) for name in BASELINES]
    if args.compare_tv_with:
        runs.append(("tv_admm", args.compare_tv_with))
    for name, module in runs:
        label = name if module is None else f"{name} ({Path(module).name})"
        result = out / f"{name}{'_other' * bool(module)}.npy"
        command = [sys.executable, __file__, "_one", name, str(subject), str(result)]
        results[label] = timed(command + (["--module", module] if module else []), log=out / f"{label}.log")
        match = re.search(r"inversion_seconds (\S+)", results[label].pop("stdout"))
        results[label]["inversion_seconds"] = float(match.group(1))
    results["mqsm_predict"].pop("stdout")
    if args.compare_tv_with:
        ours, other = np.load(out / "tv_admm.npy"), np.load(out / "tv_admm_other.npy")
        chi = np.asarray(__import__("nibabel").load(cohort / "sub-001" / "chi.nii.gz").dataobj)
        mask = chi != 0
        from mqsm_nnunet.metrics import nrmse

        results["tv_admm_difference"] = {"max_abs_ppm": float(np.abs(ours - other).max()),
                                         "nrmse_ours": nrmse(ours, chi, mask), "nrmse_other": nrmse(other, chi, mask)}
    print(f"machine: {machine()}")
    print(f"subject: {'x'.join(map(str, args.shape))} voxels of {'x'.join(map(str, args.voxel_size))} mm, field + mask")
    print(f"{'method':32s} {'seconds':>8s} {'inversion s':>12s} {'peak MB':>8s}")
    for label, figures in results.items():
        if "seconds" in figures:
            print(f"{label:32s} {figures['seconds']:8.1f} {figures.get('inversion_seconds', float('nan')):12.1f} "
                  f"{figures['peak_mb']:8d}")
    if "tv_admm_difference" in results:
        print("TV-ADMM against the other implementation:", results["tv_admm_difference"])
    return results


# ----------------------------------------------------------------------------------------------------
# the transductive cohort
# ----------------------------------------------------------------------------------------------------
def cohort(args: argparse.Namespace) -> dict:
    from mqsm_nnunet.conversion.b0 import b0_direction
    from mqsm_nnunet.qsm import baselines
    from mqsm_nnunet.metrics import nrmse
    from mqsm_nnunet.io.nifti import read_volume

    out = Path(args.o)
    source = phantom(out, args.subjects, args.shape, args.voxel_size, args.seed)
    fields = out / "fields"
    folders = {key: out / key for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **{k: str(v) for k, v in folders.items()}, "nnUNet_extTrainer": str(REPO / "trainers"),
           "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": str(args.da_processes)}
    figures = {}
    figures["convert"] = timed([str(BIN / "mqsm_convert"), "-i", str(fields), "-d", str(args.dataset), "-n", "Fields",
                                "--qsm-only", "--overwrite", "-np", "1"], env, out / "convert.log")
    figures["plan"] = timed([str(BIN / "mqsm_plan_and_preprocess"), "-d", str(args.dataset), "-np", "1", "--no_pbar",
                             "-gpu_memory_target", str(args.gpu_memory_target)], env, out / "plan.log")
    write_short_training(folders["nnUNet_preprocessed"] / f"Dataset{args.dataset:03d}_Fields" / "mQSMPlans.json",
                         ShortTraining(args.epochs, args.iterations))
    figures["train"] = timed([str(BIN / "nnUNetv2_train"), str(args.dataset), "3d_fullres", "all", "-tr", TRAINER,
                              "-p", "mQSMPlans", "-device", "cpu"], env, out / "train.log")
    pred = out / "pred"
    shutil.rmtree(pred, ignore_errors=True)
    figures["predict"] = timed([str(BIN / "mqsm_predict"), "-i", str(fields), "-o", str(pred), "-d", str(args.dataset),
                                "-tr", TRAINER, "-f", "all", "-device", "cpu", "-npp", "1", "-nps", "1",
                                "--disable_progress_bar"], env, out / "predict.log")
    for step in figures.values():
        step.pop("stdout")
    methods = ["mQSMTrainer_QSM_tiny", "qsm_minus", "tkd", "tikhonov"] + (["tv_admm"] if args.tv else [])
    scores = {method: {} for method in methods}
    for subject in sorted(source.glob("sub-*")):
        field = read_volume(subject / "field.nii.gz")
        chi = read_volume(subject / "chi.nii.gz").data
        mask = read_volume(subject / "mask.nii.gz", dtype=None).data > 0
        b0_dir, _ = b0_direction(subject / "field.nii.gz", field.affine, None)  # as mqsm_convert resolves it
        maps = {"mQSMTrainer_QSM_tiny": read_volume(pred / f"{subject.name}_qsm.nii.gz").data,
                **baselines.run_baselines(field.data, field.voxel_size, b0_dir, mask, methods[1:])}
        for method in methods:
            scores[method][subject.name] = nrmse(maps[method], chi, mask)
    plans = json.loads((folders["nnUNet_preprocessed"] / f"Dataset{args.dataset:03d}_Fields" / "mQSMPlans.json")
                       .read_text())["configurations"]["3d_fullres"]
    print(f"machine: {machine()}")
    print(f"cohort: {args.subjects} subjects, {'x'.join(map(str, args.shape))} voxels of "
          f"{'x'.join(map(str, args.voxel_size))} mm; patch {plans['patch_size']}, batch {plans['batch_size']}; "
          f"{args.epochs} epochs x {args.iterations} iterations")
    for step, figure in figures.items():
        print(f"  {step:8s} {figure['seconds']:7.1f} s  peak {figure['peak_mb']} MB")
    print(f"{'method':24s} NRMSE % (mean over subjects; per subject)")
    for method in methods:
        values = list(scores[method].values())
        print(f"{method:24s} {np.mean(values):6.2f}  " + "  ".join(f"{v:.2f}" for v in values))
    result = {"machine": machine(), "patch_size": plans["patch_size"], "batch_size": plans["batch_size"],
              "steps": figures, "nrmse": scores}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        parser = argparse.ArgumentParser()
        parser.add_argument("part")
        parser.add_argument("name")
        parser.add_argument("subject", type=Path)
        parser.add_argument("result", type=Path)
        parser.add_argument("--module")
        one = parser.parse_args()
        run_one(one.name, one.subject, one.result, one.module)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    for name, default_shape, default_voxel in (("speed", (256, 256, 136), (1, 1, 1)),
                                               ("cohort", (256, 256, 136), (1, 1, 1))):
        part = parts.add_parser(name)
        part.add_argument("-o", required=True, help="working folder (the phantom is written once and reused)")
        part.add_argument("--shape", type=int, nargs=3, default=default_shape)
        part.add_argument("--voxel-size", type=float, nargs=3, default=default_voxel)
        part.add_argument("--seed", type=int, default=11)
        part.add_argument("--dataset", type=int, default=950, help="nnU-Net dataset ID")
    speed_part, cohort_part = parts.choices["speed"], parts.choices["cohort"]
    speed_part.add_argument("--trainer", default=TRAINER)
    speed_part.add_argument("--folds", nargs="+", default=["all"])
    speed_part.add_argument("--step-size", type=float, default=0.5,
                            help="sliding-window step (mqsm_predict -step_size)")
    speed_part.add_argument("--compare-tv-with", metavar="FILE", help="another baselines.py whose tv_admm to compare")
    cohort_part.add_argument("--subjects", type=int, default=4)
    cohort_part.add_argument("--epochs", type=int, default=10)
    cohort_part.add_argument("--iterations", type=int, default=15)
    cohort_part.add_argument("--gpu-memory-target", type=float, default=8.0,
                             help="mqsm_plan_and_preprocess -gpu_memory_target (sets the patch size)")
    cohort_part.add_argument("--da-processes", type=int, default=1, help="nnUNet_n_proc_DA")
    cohort_part.add_argument("--tv", action="store_true", help="also score TV-ADMM")
    args = parser.parse_args()
    (speed if args.part == "speed" else cohort)(args)


if __name__ == "__main__":
    main()
