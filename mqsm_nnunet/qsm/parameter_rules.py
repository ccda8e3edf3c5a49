"""Per-subject parameters for the classical inversions, chosen from the field alone (no truth).

A fixed regularisation weight is right for one noise level and one contrast; a user tunes it per
dataset. These rules do what a user could do without the truth: measure the field's noise and the
scale of a quick TKD map, and set each parameter as a constant times the scale that the MAP reading
of the method names:

- TV-ADMM ``1/2 ||D chi - f||^2 + alpha ||G chi||_1`` is the MAP estimate for Gaussian noise of
  variance sigma^2 and Laplacian differences of mean |G chi| = b: ``alpha = sigma^2 / b``.
- Tikhonov ``||D chi - f||^2 + lam ||chi||^2``: Gaussian chi of variance s^2, ``lam = sigma^2 / s^2``.
- TKD has no noise model; its threshold is a constant.

The constants (`RULES`) were calibrated on the real-anatomy cohort by
`scripts/calibrate_qsm_parameters.py`: the median over subjects of (best parameter against the
truth) / (its scale). Measurements: docs/baselines.md.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from mqsm_nnunet.qsm import baselines

_MAD_TO_SIGMA = 1.0 / 0.6745      # a Gaussian's standard deviation over its median absolute value


class Rule(NamedTuple):
    parameter: str      # the keyword of the baseline it sets
    scale: str          # a key of `prior_scales`
    constant: float     # parameter = constant * scale


RULES: dict[str, Rule] = {
    "tkd": Rule("threshold", "one", 0.14),
    "tikhonov": Rule("lam", "noise_to_chi_squared", 1.4),
    "tv_admm": Rule("alpha", "noise2_per_gradient", 1.6),
}


def field_noise(field: np.ndarray, mask: np.ndarray) -> float:
    """The standard deviation of the field's white noise, estimated from the field alone.

    The finest 3D Haar detail (the alternating-sign sum over each 2x2x2 block, / sqrt(8)) of white
    noise has the noise's standard deviation, while a smooth dipole field contributes little to it;
    its median absolute value over the blocks inside the mask / 0.6745 is a robust estimate
    (Donoho and Johnstone's wavelet noise estimator).
    """
    field = np.asarray(field, dtype=np.float64)
    inside = np.asarray(mask) != 0
    even = tuple(slice(0, n - n % 2) for n in field.shape)
    shape = [n // 2 for n in field[even].shape]
    blocks = field[even].reshape(shape[0], 2, shape[1], 2, shape[2], 2)
    inside_blocks = inside[even].reshape(shape[0], 2, shape[1], 2, shape[2], 2).all(axis=(1, 3, 5))
    if not inside_blocks.any():
        raise ValueError("the mask holds no 2x2x2 block: too small to estimate the field's noise")
    sign = np.array([1.0, -1.0])
    signs = sign[:, None, None] * sign[None, :, None] * sign[None, None, :]
    detail = np.einsum("iajbkc,abc->ijk", blocks, signs) / np.sqrt(8.0)
    return float(_MAD_TO_SIGMA * np.median(np.abs(detail[inside_blocks])))


def prior_scales(field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
                 mask: np.ndarray) -> dict[str, float]:
    """The scales the rules multiply: noise sigma, sigma^2 / mean |G chi|, (sigma / std chi)^2, 1.

    chi is a TKD map (threshold 0.2) of the field; |G chi| the anisotropic L1 norm of its forward
    differences per voxel, as in TV-ADMM's regulariser; both averaged over the mask.
    """
    inside = np.asarray(mask) != 0
    sigma = field_noise(field, inside)
    chi = baselines.tkd(field, voxel_size, b0_dir, inside)
    gradient = sum(np.abs(np.diff(chi, axis=axis, append=chi.take([-1], axis=axis))) for axis in range(3))
    mean_gradient = float(gradient[inside].mean())
    spread = float(chi[inside].std())
    if mean_gradient <= 0 or spread <= 0:
        raise ValueError("the field is constant inside the mask: there is nothing to invert")
    return {"one": 1.0, "noise": sigma, "noise2_per_gradient": sigma ** 2 / mean_gradient,
            "noise_to_chi_squared": (sigma / spread) ** 2}


def tuned_parameters(field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
                     mask: np.ndarray, names: Sequence[str] = tuple(RULES)) -> dict[str, dict[str, float]]:
    """``{baseline: {parameter: value}}`` for this field by `RULES` (baselines without a rule: {})."""
    scales = prior_scales(field, voxel_size, b0_dir, mask)
    return {name: ({RULES[name].parameter: RULES[name].constant * scales[RULES[name].scale]}
                   if name in RULES else {}) for name in names}


ORACLE_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""The oracle's search: the rule's parameter times these factors."""


def oracle_parameter(name: str, field: np.ndarray, voxel_size: Sequence[float], b0_dir: Sequence[float],
                     mask: np.ndarray, true_chi: np.ndarray, factors: Sequence[float] = ORACLE_FACTORS,
                     rule_chi: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """The baseline `name` with the parameter that is best against the truth (demeaned NRMSE in the
    mask) among the rule's value times `factors`: an oracle, for synthetic data only, to show how
    far the rule is from the best a tuned method could do. `rule_chi`: the map at the rule's own
    value when the caller has it (not computed again). Returns (parameter, chi)."""
    from mqsm_nnunet.metrics import nrmse_demeaned

    rule = RULES[name]
    centre = tuned_parameters(field, voxel_size, b0_dir, mask, [name])[name][rule.parameter]
    tried = []
    for factor in factors:
        if factor == 1.0 and rule_chi is not None:
            chi = rule_chi
        else:
            chi = baselines.BASELINES[name](field, voxel_size, b0_dir, mask, **{rule.parameter: centre * factor})
        tried.append((nrmse_demeaned(chi, true_chi, mask), centre * factor, chi))
    _, best, chi = min(tried, key=lambda entry: entry[0])
    return float(best), chi
