"""Per-subject parameter rules for the classical inversions (`qsm.parameter_rules`): the noise
estimate against known white noise, the units the MAP scaling implies, and the point of the rules:
on a field far noisier than the fixed defaults were chosen for, the tuned inversions are better."""
from __future__ import annotations

import numpy as np
import pytest

from mqsm_nnunet import metrics
from mqsm_nnunet.qsm import baselines, parameter_rules
from helpers import QSM_B0_DIR as B0_DIR, QSM_VOXEL_SIZE as VOXEL_SIZE, ellipsoid_qsm_phantom


@pytest.fixture(scope="module")
def phantom():
    return ellipsoid_qsm_phantom()


def noisy_field(field, mask, relative, seed=0):
    sigma = relative * field[mask].std()
    return field + sigma * np.random.default_rng(seed).standard_normal(field.shape), sigma


def test_field_noise_recovers_white_noise():
    mask = np.zeros((40, 40, 40), bool)
    mask[4:36, 4:36, 4:36] = True
    noise = 0.01 * np.random.default_rng(3).standard_normal(mask.shape)
    assert parameter_rules.field_noise(noise, mask) == pytest.approx(0.01, rel=0.05)


@pytest.mark.parametrize("relative", [0.5, 1.0])
def test_field_noise_of_a_noisy_dipole_field_is_the_noise(phantom, relative):
    _, mask, field = phantom
    noisy, sigma = noisy_field(field, mask, relative)
    assert parameter_rules.field_noise(noisy, mask) == pytest.approx(sigma, rel=0.25)


def test_rules_scale_with_the_units_of_the_field(phantom):
    """A field in other units (x 10) is the same data: TV's alpha scales with it, Tikhonov's lambda
    and TKD's threshold are dimensionless."""
    _, mask, field = phantom
    noisy, _ = noisy_field(field, mask, 0.5)
    one, ten = (parameter_rules.tuned_parameters(f, VOXEL_SIZE, B0_DIR, mask) for f in (noisy, 10 * noisy))
    assert ten["tv_admm"]["alpha"] == pytest.approx(10 * one["tv_admm"]["alpha"], rel=1e-6)
    assert ten["tikhonov"]["lam"] == pytest.approx(one["tikhonov"]["lam"], rel=1e-6)
    assert ten["tkd"] == one["tkd"]


def test_tuned_inversions_beat_the_fixed_defaults_on_a_much_noisier_field(phantom):
    """Noise as large as the field's own spread: the rules regularise harder than the defaults (chosen
    on milder noise) and the errors against the truth fall by points, not decimals."""
    chi, mask, field = phantom
    noisy, _ = noisy_field(field, mask, 1.0)
    tuned = parameter_rules.tuned_parameters(noisy, VOXEL_SIZE, B0_DIR, mask)
    assert tuned["tv_admm"]["alpha"] > baselines.TV_ALPHA and tuned["tikhonov"]["lam"] > baselines.TIKHONOV_LAMBDA
    for name in ("tikhonov", "tv_admm"):
        default = metrics.nrmse_demeaned(baselines.BASELINES[name](noisy, VOXEL_SIZE, B0_DIR, mask), chi, mask)
        ruled = metrics.nrmse_demeaned(baselines.BASELINES[name](noisy, VOXEL_SIZE, B0_DIR, mask, **tuned[name]),
                                       chi, mask)
        assert ruled < default - 5, name


def test_oracle_is_never_worse_than_the_rule(phantom):
    chi, mask, field = phantom
    noisy, _ = noisy_field(field, mask, 0.5)
    ruled = parameter_rules.tuned_parameters(noisy, VOXEL_SIZE, B0_DIR, mask)["tv_admm"]["alpha"]
    alpha, best = parameter_rules.oracle_parameter("tv_admm", noisy, VOXEL_SIZE, B0_DIR, mask, chi)
    assert any(alpha == pytest.approx(ruled * f) for f in parameter_rules.ORACLE_FACTORS)
    rule_map = baselines.tv_admm(noisy, VOXEL_SIZE, B0_DIR, mask, alpha=ruled)
    assert metrics.nrmse_demeaned(best, chi, mask) <= metrics.nrmse_demeaned(rule_map, chi, mask)
