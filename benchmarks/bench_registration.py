"""Registration done as ANTs users do it, on held-out real anatomies: affine, SyN, and multi-atlas fusion.

Why: the comparison arm of the paper's Table 2 is only as strong as its registration. Here each
held-out anatomy (`mqsm_phantom --anatomy` on embedded label maps no template uses: undeformed, in its
own space, 2 mm, its own T1 contrast and noise) receives the labels of registration templates made of
other anatomies (`mqsm_phantom --template` k times), with every method of `mqsm_register`, brains
registered (T1 x mask, the default) and, with --whole-head, heads too. Printed per method: mean Dice
of the carried labels against the truth for each template alone, for the templates fused by majority
vote and by joint label fusion (the same registrations), and seconds per registration (one ITK
thread; fusion included).

Run from the repository root (about 10 / 25 / 100 s per registration for affine / synquick / syn on a
2-core CPU):
    .venv/bin/python benchmarks/bench_registration.py -o /tmp/bench_registration
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from mqsm_nnunet.evaluation.scoring import segmentation_scores
from mqsm_nnunet.io.labels import read_labels
from mqsm_nnunet.phantom.cohort import template_anatomy
from mqsm_nnunet.phantom.label_maps import embedded_anatomies, label_map_stem
from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.registration.cohort import register_cohort
from mqsm_nnunet.registration.fusion import fuse_labels


def held_out_cohort(out: Path, anatomies: list[str], seed: int) -> Path:
    """`mqsm_phantom --anatomy` on copies of the named embedded label maps; returns the cohort folder."""
    maps, cohort = out / "label_maps", out / "cohort"
    shutil.rmtree(maps, ignore_errors=True)
    maps.mkdir(parents=True)
    for path in embedded_anatomies():
        if label_map_stem(path) in anatomies:
            shutil.copy2(path, maps / path.name)
    subprocess.run([str(Path(sys.executable).parent / "mqsm_phantom"), "-o", str(cohort), "--anatomy", str(maps),
                    "--seed", str(seed), "--overwrite", "--quiet"], check=True)
    return cohort


def templates(out: Path, count: int) -> list[Path]:
    """`count` registration templates (`mqsm_phantom --template`: the last `count` embedded anatomies)."""
    folders = [out / f"template{k}" for k in range(1, count + 1)]
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([str(Path(sys.executable).parent / "mqsm_phantom"), *[a for f in folders for a in ("--template", str(f))],
                    "--quiet"], check=True)
    return folders


def dice(files: dict[str, Path], cohort: Path, cases: list[str], labels: dict[str, int]) -> dict:
    scores = segmentation_scores(files, {c: cohort / c / "labels.nii.gz" for c in cases}, labels)
    return {"mean_dice": scores["mean_dice"], "groups": scores["groups"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, required=True, help="working folder (replaced parts: cohort, templates, registered)")
    parser.add_argument("--anatomies", nargs="+", default=["anatomy_02", "anatomy_03", "anatomy_04", "anatomy_06"],
                        help="embedded anatomies to register to (never the templates': mqsm_phantom --template's, "
                             "anatomy_16, _08, _01 for three)")
    parser.add_argument("--atlases", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["affine", "synquick", "syn"])
    parser.add_argument("--seed", type=int, default=11, help="seed of the subjects' simulation")
    parser.add_argument("--whole-head", action="store_true", help="also register whole heads (no brain extraction)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    used = [template_anatomy(0, k) for k in range(1, args.atlases + 1)]
    if set(used) & set(args.anatomies):
        raise SystemExit(f"--anatomies overlap the templates' anatomies {used}")
    cohort = held_out_cohort(out, args.anatomies, args.seed)
    atlases = templates(out, args.atlases)
    labels = read_labels(cohort / "labels.json").regions
    cases = sorted(p.name for p in cohort.glob("sub-*") if p.is_dir())
    results = {}
    for mode, mask_name in (("brain", "mask.nii.gz"), ("head", None))[:2 if args.whole_head else 1]:
        report = register_cohort(cohort, atlases, out / "registered" / mode, args.methods, mask_name=mask_name,
                                 overwrite=True, progress=True, keep_each_template=True, fusion="joint")
        for method in args.methods:
            single = [dice(each, cohort, cases, labels) for each in report.each_template[method]]
            majority = {}
            for case in cases:
                majority[case] = out / "registered" / mode / method / "majority" / f"{case}.nii.gz"
                maps = [read_volume(each[case], dtype=None) for each in report.each_template[method]]
                write_volume(majority[case], fuse_labels([m.data for m in maps]), maps[0].affine, np.int32)
            results[f"{mode} {method}"] = {
                "each_template": single,
                "one_template_mean": float(np.mean([s["mean_dice"] for s in single])),
                "majority": dice(majority, cohort, cases, labels),
                "fused": dice(report.files[method], cohort, cases, labels),
                "seconds_per_registration": report.seconds_per_subject(method) / len(atlases)}
    print(f"subjects: {', '.join(args.anatomies)} (mqsm_phantom --anatomy, seed {args.seed}); templates: {', '.join(used)}")
    print("| images | method | " + " | ".join(f"template {k}" for k in range(1, args.atlases + 1))
          + f" | mean of one | {args.atlases} fused: majority | joint label fusion | deep nuclei: majority / joint"
          " | s per registration |")
    print("|---" * (args.atlases + 7) + "|")
    for name, row in results.items():
        mode, method = name.split()
        print(f"| {mode} | {method} | " + " | ".join(f"{s['mean_dice']:.3f}" for s in row["each_template"])
              + f" | {row['one_template_mean']:.3f} | {row['majority']['mean_dice']:.3f} | "
              f"{row['fused']['mean_dice']:.3f} | {row['majority']['groups']['deep nuclei']:.3f} / "
              f"{row['fused']['groups']['deep nuclei']:.3f} | {row['seconds_per_registration']:.1f} |")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
