"""Calibrate the classical inversions' parameter rules on the real-anatomy cohort (docs/baselines.md).

For each simulated subject (real anatomy, 2 mm, B0 drawn within 25 degrees of the head's axis) it
scans TKD's threshold, Tikhonov's lambda and TV-ADMM's alpha, scores each map against the true chi
(demeaned NRMSE, QSM-CI's headline metric) and records the best setting (the oracle) beside what a
user can measure without the truth: the field's noise level and the scales of a quick TKD map
(`parameter_rules.prior_scales`). The rule constants in `baselines.py` are the medians of
oracle / measured scale printed here
(`parameter_rules.RULES`); a second run with another seed checks the rule on subjects it was not
calibrated on.

    .venv/bin/python scripts/calibrate_qsm_parameters.py --subjects 8 --seed 2024 -o /tmp/calibration.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from mqsm_nnunet.metrics import nrmse_demeaned
from mqsm_nnunet.phantom.label_maps import embedded_anatomies, load_anatomy
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.qsm import baselines, parameter_rules

GRIDS = {
    "tkd": ("threshold", np.geomspace(0.05, 0.4, 7)),
    "tikhonov": ("lam", np.geomspace(1e-4, 1e-1, 10)),
    "tv_admm": ("alpha", np.geomspace(1e-5, 1e-3, 9)),
}


def random_b0(rng: np.random.Generator, max_degrees: float = 25.0) -> tuple[float, float, float]:
    """A B0 direction within `max_degrees` of the label maps' foot-head axis (their second)."""
    tilt, turn = np.radians(rng.uniform(0, max_degrees)), rng.uniform(0, 2 * np.pi)
    return (float(np.sin(tilt) * np.cos(turn)), float(np.cos(tilt)), float(np.sin(tilt) * np.sin(turn)))


def scan_subject(subject, b0_dir) -> dict:
    field, mask, chi = subject.field, subject.mask > 0, subject.chi
    voxel = (2.0, 2.0, 2.0)
    scales = parameter_rules.prior_scales(field, voxel, b0_dir, mask)
    tuned = parameter_rules.tuned_parameters(field, voxel, b0_dir, mask)
    record = {"true_noise": subject.field_noise_std, "field_noise": scales["noise"], "scales": scales}
    for method, (name, grid) in GRIDS.items():
        scores = []
        for value in grid:
            start = time.perf_counter()
            estimate = baselines.BASELINES[method](field, voxel, b0_dir, mask, **{name: float(value)})
            scores.append(nrmse_demeaned(estimate, chi, mask))
            record.setdefault(f"{method}_seconds", time.perf_counter() - start)
        best = int(np.argmin(scores))
        record[method] = {"grid": [float(v) for v in grid], "nrmse_demeaned": scores, "best": float(grid[best]),
                          "best_nrmse": float(scores[best])}
        ruled = baselines.BASELINES[method](field, voxel, b0_dir, mask, **tuned[method])
        record[method]["rule"] = tuned[method][name]
        record[method]["rule_nrmse"] = nrmse_demeaned(ruled, chi, mask)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("-o", "--out", type=Path, default=Path("calibration.json"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    anatomies = embedded_anatomies()
    records = []
    for index in range(args.subjects):
        anatomy = load_anatomy(anatomies[index % len(anatomies)])
        b0_dir = random_b0(rng)
        subject = make_real_subject(anatomy, index, args.seed, b0_dir=b0_dir)
        record = {"anatomy": anatomy.name, "b0_dir": b0_dir, **scan_subject(subject, b0_dir)}
        records.append(record)
        args.out.write_text(json.dumps(records, indent=1))
        print(f"{anatomy.name}: noise {record['true_noise']:.4f} (estimated {record['field_noise']:.4f}); " + "; ".join(
            f"{m} best {record[m]['best']:.3g} ({record[m]['best_nrmse']:.1f} %), rule {record[m]['rule_nrmse']:.1f} %"
            for m in GRIDS), flush=True)
    for method, (name, _) in GRIDS.items():
        best = np.array([r[method]["best"] for r in records])
        print(f"{method}: oracle {name} {np.median(best):.3g} (range {best.min():.3g}-{best.max():.3g}); "
              f"oracle NRMSE {np.mean([r[method]['best_nrmse'] for r in records]):.2f} %, "
              f"rule {np.mean([r[method]['rule_nrmse'] for r in records]):.2f} %")
        for key in records[0]["scales"]:
            ratios = best / np.array([r["scales"][key] for r in records])
            print(f"    oracle / {key}: median {np.median(ratios):.4g}, spread (max/min) {ratios.max() / ratios.min():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
