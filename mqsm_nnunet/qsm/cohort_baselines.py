"""The classical inversions on the held-out subjects of a phantom cohort, as the demo and the
benchmarks report them: each tuned per subject by its rule (`parameter_rules`), TV-ADMM also with
the alpha best against the truth (an oracle, labelled so), each map written as a NIfTI file with its
parameter and the seconds it took."""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ORACLE = "tv_admm_oracle"
"""The method key of TV-ADMM with the alpha chosen against the truth."""


@dataclass
class CohortBaselines:
    """Per method: case -> map file, case -> the parameter used, case -> seconds."""

    files: dict[str, dict[str, Path]] = field(default_factory=dict)
    parameters: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, method: str, case: str, path: Path, parameter: float | None, seconds: float) -> None:
        self.files.setdefault(method, {})[case] = path
        self.seconds.setdefault(method, {})[case] = seconds
        if parameter is not None:
            self.parameters.setdefault(method, {})[case] = parameter

    def seconds_per_subject(self) -> dict[str, float]:
        return {method: float(np.mean(list(by_case.values()))) for method, by_case in self.seconds.items()}


def run_cohort_baselines(cohort: Path, cases: Sequence[str], out_dir: Path, oracle: bool = True) -> CohortBaselines:
    """QSM-, TKD, Tikhonov and TV-ADMM (parameters by rule) on `cases` of `cohort` (field, mask and,
    for the oracle, chi), written to `out_dir`/<method>/<case>_qsm.nii.gz."""
    from mqsm_nnunet.conversion.b0 import b0_direction
    from mqsm_nnunet.io.nifti import read_volume, write_volume
    from mqsm_nnunet.qsm.baselines import BASELINES
    from mqsm_nnunet.qsm.parameter_rules import RULES, oracle_parameter, tuned_parameters

    report = CohortBaselines()
    for case in cases:
        field_volume = read_volume(cohort / case / "field.nii.gz")
        field_map, affine, voxel = field_volume.data, field_volume.affine, field_volume.voxel_size
        mask = read_volume(cohort / case / "mask.nii.gz").data > 0
        b0_dir, _ = b0_direction(cohort / case / "field.nii.gz", affine, None)  # as mqsm_convert resolves it
        start = time.perf_counter()
        tuned = tuned_parameters(field_map, voxel, b0_dir, mask)
        rule_seconds = time.perf_counter() - start
        maps = {}
        for method, inversion in BASELINES.items():
            start = time.perf_counter()
            chi = maps[method] = inversion(field_map, voxel, b0_dir, mask, **tuned.get(method, {}))
            seconds = time.perf_counter() - start + (rule_seconds if method in RULES else 0.0)
            path = write_volume(out_dir / method / f"{case}_qsm.nii.gz", chi * mask, affine, np.float32)
            report.add(method, case, path, tuned[method][RULES[method].parameter] if method in RULES else None,
                       seconds)
        if oracle:
            start = time.perf_counter()
            true_chi = read_volume(cohort / case / "chi.nii.gz").data
            alpha, chi = oracle_parameter("tv_admm", field_map, voxel, b0_dir, mask, true_chi,
                                          rule_chi=maps["tv_admm"])
            path = write_volume(out_dir / ORACLE / f"{case}_qsm.nii.gz", chi * mask, affine, np.float32)
            report.add(ORACLE, case, path, alpha, time.perf_counter() - start)
    return report
