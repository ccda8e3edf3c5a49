"""Does QSM help where T1 is blind, at the long setting? The shipped model against stock nnU-Net on T1 alone.

Why: at 300 iterations from random weights no arm of bench_learning.py finds an iron nucleus, so
the paper's claim is not decided there. The shipped model (`scripts/pretrain_demo_model.py`:
mQSMTrainer_tiny_inputFusionMap, T1 + local field + QSM- + mask, 26 subjects, 40 x 50 iterations,
64^3 patch) finds them on held-out anatomies. Here the stock PlainConvUNet is trained on the same
subjects, the same length, patch, width cap and optimiser (`nnUNetTrainer_tinyRecipe`), from T1
alone; both are scored on the anatomies the pretraining held out (`HELD_OUT`), simulated by
`mqsm_phantom --anatomy` (undeformed, their own space, 2 mm).

Run from the repository root (training about 2000 x 3 s on a 2-core CPU; reuses --work's cohort and
a finished training, and a stopped one goes on from its last snapshot, every 5 epochs):
    .venv/bin/python benchmarks/bench_t1_blind.py --work /tmp/mqsm_pretrain
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

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPOSITORY / "scripts"), str(REPOSITORY / "benchmarks")]

from pretrain_demo_model import DATASET_ID, DATASET_NAME, HELD_OUT, prepare_dataset, use_work_folder  # noqa: E402

T1_ID, T1_NAME = 992, "Dataset992_MQSMPretrainT1"
HELD_OUT_ID, HELD_OUT_NAME = 993, "MQSMHeldOutAnatomies"
TRAINER, PLANS = "nnUNetTrainer_tinyRecipe", "nnUNetPlans"
IRON_NUCLEI = ("Pallidum", "Substancia-Nigra", "Red-Nucleus", "Dentate")
SNAPSHOT_EVERY = 5          # epochs: a training stopped (a session's end) goes on from its last snapshot


def run(command: list[str], log: Path) -> None:
    """Run a CLI of the venv, its output in `log`; raise with the log's tail on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        done = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]], stdout=stream,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed; last lines of {log}:\n" +
                           "\n".join(log.read_text().splitlines()[-20:]))


def t1_twin(env: dict[str, Path], patch: list[int], epochs: int, iterations: int, logs: Path) -> Path:
    """Dataset992: the pretraining dataset's T1 channel and labels alone, planned with nnUNetPlans at
    the shipped model's patch and length; returns its plans file."""
    from mqsm_nnunet.training.short_training import ShortTraining, write_short_training

    plans_file = env["nnUNet_preprocessed"] / T1_NAME / f"{PLANS}.json"
    if not plans_file.is_file():
        source, twin = env["nnUNet_raw"] / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}", env["nnUNet_raw"] / T1_NAME
        shutil.rmtree(twin, ignore_errors=True)
        for sub in ("imagesTr", "labelsTr"):
            (twin / sub).mkdir(parents=True)
            for path in sorted((source / sub).glob("*.nii.gz")):
                if sub == "labelsTr" or path.name.endswith("_0000.nii.gz"):
                    shutil.copy2(path, twin / sub / path.name)
        dataset = {k: v for k, v in json.loads((source / "dataset.json").read_text()).items() if k != "mqsm"}
        dataset["channel_names"] = {"0": "T1"}
        (twin / "dataset.json").write_text(json.dumps(dataset, indent=2))
        run(["nnUNetv2_plan_and_preprocess", "-d", str(T1_ID), "-c", "3d_fullres", "-np", "2"], logs / "plan_t1.log")
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["patch_size"] = list(patch)
    plans_file.write_text(json.dumps(plans, indent=4))
    write_short_training(plans_file, ShortTraining(epochs, iterations, SNAPSHOT_EVERY))
    return plans_file


def resume_from_snapshot(model: Path) -> bool:
    """A stopped training continues from its last snapshot: checkpoint_epoch<E>.pth (whose stored epoch
    is one too far: it is saved after nnU-Net counts the epoch) written as the checkpoint_latest.pth
    that `nnUNetv2_train --c` reads. False when there is none."""
    import torch

    snapshots = sorted((int(p.stem.removeprefix("checkpoint_epoch")), p)
                       for p in (model / "fold_all").glob("checkpoint_epoch*.pth"))
    if not snapshots:
        return False
    epoch, path = snapshots[-1]
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["current_epoch"] = epoch
    torch.save(checkpoint, model / "fold_all" / "checkpoint_latest.pth")
    print(f"resuming the T1 training after epoch {epoch} ({path.name})")
    return True


def held_out_inputs(work: Path, seed: int, logs: Path) -> tuple[Path, Path, list[str]]:
    """The held-out anatomies simulated and converted: (cohort, nnU-Net imagesTs folder, case ids)."""
    from mqsm_nnunet.conversion.options import ConversionOptions
    from mqsm_nnunet.phantom.label_maps import embedded_anatomies, label_map_stem
    from mqsm_nnunet.predict.staging import stage_inhouse_cohort
    from mqsm_nnunet.pretrained import pretrained_file

    cohort, maps = work / "held_out_cohort", work / "held_out_maps"
    raw = work / "nnUNet_raw" / f"Dataset{HELD_OUT_ID:03d}_{HELD_OUT_NAME}"
    shutil.rmtree(maps, ignore_errors=True)
    maps.mkdir(parents=True)
    for path in embedded_anatomies():
        if label_map_stem(path) in HELD_OUT:
            shutil.copy2(path, maps / path.name)
    run(["mqsm_phantom", "-o", str(cohort), "--anatomy", str(maps), "--seed", str(seed), "--overwrite", "--quiet"],
        logs / "phantom_held_out.log")
    cases = sorted(p.name for p in cohort.glob("sub-*") if p.is_dir())
    shutil.rmtree(raw, ignore_errors=True)
    dataset_json = json.loads(pretrained_file("dataset").read_text())
    stage_inhouse_cohort(cohort, raw / "imagesTs", dataset_json, ConversionOptions())   # as mqsm_predict stages them
    return cohort, raw / "imagesTs", cases


def predict_t1(images: Path, out: Path, env: dict[str, Path], logs: Path) -> None:
    """Stock nnUNetv2_predict of the T1 model on the T1 channel, labels written back in FreeSurfer ids."""
    from mqsm_nnunet.io.labels import LabelIdMap
    from mqsm_nnunet.predict.outputs import write_in_user_ids

    t1_images = out.parent / "t1_inputs"
    shutil.rmtree(t1_images, ignore_errors=True)
    t1_images.mkdir(parents=True)
    for path in images.glob("*_0000.nii.gz"):
        shutil.copy2(path, t1_images / path.name)
    shutil.rmtree(out, ignore_errors=True)
    run(["nnUNetv2_predict", "-i", str(t1_images), "-o", str(out), "-d", str(T1_ID), "-c", "3d_fullres", "-f", "all",
         "-tr", TRAINER, "-p", PLANS, "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"],
        logs / "predict_t1.log")
    source = env["nnUNet_raw"] / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / "dataset.json"   # its id map (T1's copy has none)
    label_ids = LabelIdMap.from_dataset_json(json.loads(source.read_text()))
    for path in out.glob("*.nii.gz"):
        write_in_user_ids(path, path, label_ids)


def nuclei_columns(regions: dict[str, float]) -> dict[str, float]:
    """Each iron nucleus's Dice, left and right averaged."""
    return {nucleus: sum(v for k, v in regions.items() if nucleus in k) /
            max(1, sum(nucleus in k for k in regions)) for nucleus in IRON_NUCLEI}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True,
                        help="the pretraining's work folder (its cohort is made there if it is missing)")
    parser.add_argument("--subjects", type=int, default=26, help="as the shipped model (record.json)")
    parser.add_argument("--seed", type=int, default=1000, help="as the shipped model (record.json)")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 64])
    parser.add_argument("--held-out-seed", type=int, default=5, help="seed of the held-out subjects' simulation")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    env = use_work_folder(work)
    os.environ["nnUNet_extTrainer"] = os.pathsep.join([os.environ["nnUNet_extTrainer"],
                                                        str(REPOSITORY / "benchmarks" / "trainers")])
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY / "benchmarks"),
                                                             os.environ.get("PYTHONPATH")]))
    logs = work / "logs_t1_blind"
    if not (env["nnUNet_raw"] / f"Dataset{DATASET_ID:03d}_{DATASET_NAME}" / "dataset.json").is_file():
        prepare_dataset(work, args.subjects, args.seed)
    t1_twin(env, args.patch, args.epochs, args.iterations, logs)
    model = env["nnUNet_results"] / T1_NAME / f"{TRAINER}__{PLANS}__3d_fullres"
    seconds = None
    if not (model / "fold_all" / "checkpoint_final.pth").is_file():
        start = time.perf_counter()
        resume = ["--c"] if resume_from_snapshot(model) else []
        run(["nnUNetv2_train", str(T1_ID), "3d_fullres", "all", "-tr", TRAINER, "-p", PLANS, "-device", "cpu",
             *resume], logs / f"train_t1{'_resumed' if resume else ''}.log")
        seconds = None if resume else round(time.perf_counter() - start)

    from mqsm_nnunet.evaluation.scoring import segmentation_scores
    from mqsm_nnunet.io.labels import read_labels

    cohort, images, cases = held_out_inputs(work, args.held_out_seed, logs)
    predictions = {"shipped mQSM model (T1 + field + QSM-)": work / "predictions_held_out" / "mqsm_pretrained",
                   "stock network, T1 alone (same recipe)": work / "predictions_held_out" / "stock_t1"}
    shutil.rmtree(predictions["shipped mQSM model (T1 + field + QSM-)"], ignore_errors=True)
    run(["mqsm_predict", "-i", str(images), "-o", str(predictions["shipped mQSM model (T1 + field + QSM-)"]),
         "--pretrained", "-device", "cpu", "--disable_progress_bar"], logs / "predict_mqsm.log")
    predict_t1(images, predictions["stock network, T1 alone (same recipe)"], env, logs)
    labels = read_labels(cohort / "labels.json").regions
    results = {}
    print(f"held-out anatomies {', '.join(HELD_OUT)} ({len(cases)} subjects, 2 mm); {args.epochs} x {args.iterations} "
          f"iterations, patch {args.patch}")
    print(f"| arm | mean Dice | deep nuclei | {' | '.join(IRON_NUCLEI)} | cortex |\n|---|---|---|{'---|' * len(IRON_NUCLEI)}---|")
    for arm, folder in predictions.items():
        scores = segmentation_scores({c: folder / f"{c}.nii.gz" for c in cases},
                                     {c: cohort / c / "labels.nii.gz" for c in cases}, labels)
        nuclei = nuclei_columns(scores["regions"])
        results[arm] = {"mean_dice": scores["mean_dice"], "groups": scores["groups"], "iron_nuclei": nuclei,
                        "regions": scores["regions"]}
        print(f"| {arm} | {scores['mean_dice']:.3f} | {scores['groups']['deep nuclei']:.3f} | "
              + " | ".join(f"{nuclei[n]:.3f}" for n in IRON_NUCLEI) + f" | {scores['groups']['cortex']:.3f} |")
    if seconds is not None:
        results["t1_training_seconds"] = seconds
    (work / "t1_blind_results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
