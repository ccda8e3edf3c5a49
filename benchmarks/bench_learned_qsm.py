"""The learned QSM (`mqsm_qsm`) against the classical inversions tuned as a user can and against the truth.

Held-out real anatomies (the label maps the pretraining never draws: `learned_qsm.simulated_fields.HELD_OUT_ANATOMIES`),
simulated at 2 mm undeformed with a seed the pretraining never uses, in two conditions: a clean field
(dipolar + the cohort's noise) and an imperfect one (residual background and non-dipolar edge phase, as
real local fields have). Columns: TKD and Tikhonov and TV-ADMM with the rule's parameters (from the field
alone), TV-ADMM with alpha chosen against the truth (oracle: the rule's alpha x 0.25..4), the shipped net,
and the shipped net fine-tuned on the three fields of the condition (`--finetune` steps, guarded). Metrics:
demeaned NRMSE (QSM-CI) and plain NRMSE (2016 challenge) in the mask; seconds per subject.

    .venv/bin/python benchmarks/bench_learned_qsm.py -o learned_qsm.json
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation


from mqsm_nnunet.metrics import nrmse, nrmse_demeaned
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.label_maps import embedded_anatomies, label_map_stem, load_anatomy
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.physics import b0_direction_from_affine
from mqsm_nnunet.learned_qsm import finetuning, inference
from mqsm_nnunet.learned_qsm.simulated_fields import HELD_OUT_ANATOMIES
from mqsm_nnunet.qsm import baselines, parameter_rules

CONDITIONS = {"clean": FieldImperfections(), "imperfect": FieldImperfections(background=0.15, edge=0.25)}
CLASSICAL = ("tkd", "tikhonov", "tv_admm")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _tilted_b0(affine: np.ndarray, degrees: float) -> tuple[float, float, float]:
    """World z in the label map's voxel axes, turned by `degrees` about the first voxel axis."""
    b0 = b0_direction_from_affine(affine)
    return tuple(float(v) for v in Rotation.from_rotvec([math.radians(degrees), 0.0, 0.0]).apply(b0))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=31, help="simulation seed of the held-out subjects")
    parser.add_argument("--voxel-size", type=float, nargs="+", default=[2.0],
                        help="voxel size in mm: one number (isotropic) or three")
    parser.add_argument("--b0-tilt", type=float, default=0.0,
                        help="B0 turned this many degrees from world z about the first voxel axis (default 0)")
    parser.add_argument("--finetune", type=int, default=30, help="fine-tuning steps per condition (0: skip)")
    parser.add_argument("--anatomies", nargs="+", default=list(HELD_OUT_ANATOMIES), choices=HELD_OUT_ANATOMIES,
                        help="held-out anatomies to simulate (default: all three)")
    parser.add_argument("--no-oracle", action="store_true", help="skip the TV oracle (4 more TV solves per subject)")
    parser.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS))
    parser.add_argument("-o", "--out", type=Path, default=Path("learned_qsm.json"))
    args = parser.parse_args(argv)
    if len(args.voxel_size) not in (1, 3):
        parser.error("--voxel-size takes one number or three")
    voxel = tuple(args.voxel_size * 3 if len(args.voxel_size) == 1 else args.voxel_size)
    net = inference.load_pretrained()
    paths = [p for p in embedded_anatomies() if label_map_stem(p) in args.anatomies]
    rows = []
    for condition in args.conditions:
        imperfections = CONDITIONS[condition]
        subjects, starts, truths = [], [], []
        for index, path in enumerate(paths):
            anatomy = load_anatomy(path)
            s = make_real_subject(anatomy, index, args.seed, voxel_size=voxel, deform=False, imperfections=imperfections,
                                  b0_dir=_tilted_b0(anatomy.affine, args.b0_tilt))
            mask = s.mask > 0
            field_map = inference.FieldMap(s.field, mask, voxel, s.b0_dir)
            row = {"condition": condition, "anatomy": label_map_stem(path), "nrmse_demeaned": {}, "nrmse": {},
                   "seconds": {}}
            parameters = parameter_rules.tuned_parameters(s.field, voxel, s.b0_dir, mask)
            maps = {}
            for name in CLASSICAL:
                maps[name], row["seconds"][name] = _timed(baselines.BASELINES[name], s.field, voxel, s.b0_dir, mask,
                                                          **parameters[name])
            row["tv_rule_alpha"] = parameters["tv_admm"]["alpha"]
            if not args.no_oracle:
                row["tv_oracle_alpha"], maps["tv_oracle"] = parameter_rules.oracle_parameter(
                    "tv_admm", s.field, voxel, s.b0_dir, mask, s.chi, rule_chi=maps["tv_admm"])
            maps["learned"], seconds = _timed(inference.reconstruct, net, s.field, mask, voxel, s.b0_dir, maps["tv_admm"])
            row["seconds"]["learned"] = seconds + row["seconds"]["tv_admm"]
            for name, chi in maps.items():
                row["nrmse_demeaned"][name] = nrmse_demeaned(chi, s.chi, mask)
                row["nrmse"][name] = nrmse(chi, s.chi, mask)
            rows.append(row)
            subjects.append(field_map)
            starts.append(maps["tv_admm"])
            truths.append(s.chi)
            print(json.dumps({k: row[k] for k in ("condition", "anatomy", "nrmse_demeaned")}), flush=True)
        if args.finetune:
            (tuned, accepted), seconds = _timed(finetuning.finetune, net, subjects, args.finetune, starts=starts)
            for row, subject, start, truth, keep in zip(rows[-len(paths):], subjects, starts, truths, accepted):
                chi = inference.reconstruct(tuned if keep else net, subject.field, subject.mask, voxel, subject.b0_dir,
                                          start)
                row["nrmse_demeaned"]["learned_finetuned"] = nrmse_demeaned(chi, truth, subject.mask)
                row["nrmse"]["learned_finetuned"] = nrmse(chi, truth, subject.mask)
                row["finetuned_map_kept"] = bool(keep)
                row["seconds"]["finetune_per_subject"] = seconds / len(paths)
    tv_best = "tv_admm" if args.no_oracle else "tv_oracle"
    methods = [*CLASSICAL, *([] if args.no_oracle else ["tv_oracle"]), "learned"] \
        + (["learned_finetuned"] if args.finetune else [])
    print("\n| condition | anatomy | " + " | ".join(methods) + f" | learned / {tv_best} |")
    print("|---" * (len(methods) + 3) + "|")
    for row in rows:
        d = row["nrmse_demeaned"]
        print(f"| {row['condition']} | {row['anatomy']} | " + " | ".join(f"{d[m]:.1f}" for m in methods)
              + f" | {d['learned'] / d[tv_best]:.3f} |")
    print("\nplain NRMSE (2016 challenge):")
    for row in rows:
        print(f"| {row['condition']} | {row['anatomy']} | " + " | ".join(f"{row['nrmse'][m]:.1f}" for m in methods)
              + f" | learned / TKD {row['nrmse']['learned'] / row['nrmse']['tkd']:.3f} |")
    args.out.write_text(json.dumps({"seed": args.seed, "voxel_size": voxel, "b0_tilt_deg": args.b0_tilt,
                                    "finetune_steps": args.finetune,
                                    "record": json.loads((inference.PRETRAINED_DIR / inference.RECORD_NAME).read_text()),
                                    "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
