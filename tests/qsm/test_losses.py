"""Tests of the reconstruction loss (paper Eq. 5) and its torch Sobel."""
import numpy as np
import pytest
import torch

from mqsm_nnunet import physics
from mqsm_nnunet.qsm.losses import ReconstructionLoss, sobel_gradients_torch


def _t(a) -> torch.Tensor:
    """numpy (X, Y, Z) or (B, X, Y, Z) -> torch (B, 1, X, Y, Z) float64."""
    a = torch.as_tensor(np.asarray(a, dtype=np.float64))
    return a.reshape(-1, 1, *a.shape[-3:])


def test_torch_sobel_matches_physics_sobel_everywhere():
    rng = np.random.default_rng(0)
    volumes = rng.normal(size=(2, 7, 8, 9))
    got = sobel_gradients_torch(_t(volumes)).numpy()
    for b in range(2):
        np.testing.assert_allclose(got[b], physics.sobel_gradients(volumes[b]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_torch_sobel_of_a_ramp_is_32_times_the_slope(axis):
    shape = (6, 7, 8)
    ramp = 0.5 * np.indices(shape)[axis]
    grads = sobel_gradients_torch(_t(ramp))[0].numpy()
    interior = (slice(1, -1),) * 3
    np.testing.assert_allclose(grads[axis][interior], 16.0)
    for other in {0, 1, 2} - {axis}:
        np.testing.assert_allclose(grads[other], 0.0)


def test_consistency_term_hand_computed():
    qsm_minus = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0, -1.0, 2.0]).reshape(2, 2, 2)
    qsm = np.array([0.0, -1.0, 0.5, 5.0, 3.0, 2.0, 1.0, 2.0]).reshape(2, 2, 2)
    mask = np.array([1, 1, 1, 1, 0, 0, 1, 1]).reshape(2, 2, 2)
    # |QSM-| |QSM- - QSM| inside the mask: 1*1 + 2*1 + 0.5*0 + 0*5 + 1*2 + 2*0 = 5 over 6 voxels,
    # in units of the QSM- mean square there: (1 + 4 + 0.25 + 0 + 1 + 4) / 6 = 10.25 / 6
    terms = ReconstructionLoss(eps=1e-12)(_t(qsm), _t(qsm_minus), _t(qsm_minus), _t(mask))
    assert terms.consistency.item() == pytest.approx((5 / 6) / (10.25 / 6))
    # a second sample with an empty mask contributes 0 to the per-sample mean
    pair = ReconstructionLoss(eps=1e-12)(_t([qsm, qsm]), _t([qsm_minus, qsm_minus]), _t([qsm_minus, qsm_minus]),
                                       _t([mask, np.zeros_like(mask)]))
    assert pair.consistency.item() == pytest.approx((5 / 6) / (10.25 / 6) / 2)


def test_consistency_term_is_unit_free():
    """Expressing all maps in ppb instead of ppm leaves L_C (and L_M) unchanged."""
    rng = np.random.default_rng(0)
    qsm_minus, qsm, field = (rng.normal(0, 0.03, (6, 6, 6)) for _ in range(3))
    mask = np.ones((6, 6, 6))
    ppm = ReconstructionLoss()(_t(qsm), _t(qsm_minus), _t(field), _t(mask))
    ppb = ReconstructionLoss()(_t(qsm * 1000), _t(qsm_minus * 1000), _t(field * 1000), _t(mask))
    assert ppb.consistency.item() == pytest.approx(ppm.consistency.item(), rel=1e-4)  # eps: 1e-8 vs ~1e-3 ppm^2
    assert ppb.morphology.item() == pytest.approx(ppm.morphology.item(), rel=1e-5)


def _numpy_morphology(qsm, field, mask, eps=1e-8):
    """L_M for one sample from physics.sobel_gradients and numpy moments, as documented."""
    m = mask > 0.5
    if not m.any():
        return 0.0
    total = 0.0
    for g_f, g_q in zip(physics.sobel_gradients(field * m), physics.sobel_gradients(qsm * m)):
        z_f = (g_f - g_f[m].mean()) / np.sqrt(g_f[m].var() + eps)
        z_q = (g_q - g_q[m].mean()) / np.sqrt(g_q[m].var() + eps)
        total += np.abs(np.abs(z_f[m]) - np.abs(z_q[m])).mean()
    return total / 3


def _random_case(rng, batch=2, shape=(6, 7, 8)):
    field = rng.normal(size=(batch, *shape))
    qsm = rng.normal(size=(batch, *shape))
    mask = np.zeros((batch, *shape))
    mask[:, 1:-1, 1:-2, 2:-1] = 1
    return qsm, field, mask


def test_morphology_term_matches_numpy_and_total_combines_terms():
    rng = np.random.default_rng(1)
    qsm, field, mask = _random_case(rng)
    terms = ReconstructionLoss(morph_weight=0.01)(_t(qsm), _t(qsm), _t(field), _t(mask))
    expected = np.mean([_numpy_morphology(qsm[b], field[b], mask[b]) for b in range(2)])
    assert terms.morphology.item() == pytest.approx(expected, rel=1e-10)
    assert terms.consistency.item() == 0.0  # QSM == QSM-
    assert terms.total.item() == pytest.approx(0.01 * expected, rel=1e-10)


def test_morphology_is_zero_for_any_nonzero_multiple_of_the_field():
    """z-scoring removes scale; the absolute value removes the sign."""
    rng = np.random.default_rng(2)
    _, field, mask = _random_case(rng)
    loss = ReconstructionLoss()
    for factor in (1.0, 3.0, -0.25):
        terms = loss(_t(factor * field), _t(field), _t(field), _t(mask))
        assert terms.morphology.item() == pytest.approx(0.0, abs=1e-7)  # up to the eps floor


def test_morphology_ignores_units_of_field_and_qsm():
    rng = np.random.default_rng(3)
    qsm, field, mask = _random_case(rng)
    loss = ReconstructionLoss()
    base = loss(_t(qsm), _t(qsm), _t(field), _t(mask)).morphology.item()
    rescaled = loss(_t(0.1 * qsm), _t(qsm), _t(42.58 * 3 * field), _t(mask)).morphology.item()
    assert base > 0.1
    assert rescaled == pytest.approx(base, rel=1e-6)


def test_values_outside_the_mask_do_not_matter():
    rng = np.random.default_rng(4)
    qsm, field, mask = _random_case(rng)
    noisy_qsm = qsm + 100 * rng.normal(size=qsm.shape) * (1 - mask)
    noisy_field = field + 100 * rng.normal(size=qsm.shape) * (1 - mask)
    loss = ReconstructionLoss()
    a = loss(_t(qsm), _t(field), _t(field), _t(mask))
    b = loss(_t(noisy_qsm), _t(noisy_field), _t(noisy_field), _t(mask))
    assert b.total.item() == pytest.approx(a.total.item(), rel=1e-12)


def test_batch_loss_is_the_mean_of_sample_losses():
    rng = np.random.default_rng(5)
    qsm, field, mask = _random_case(rng)
    mask[1, 2:4] = 0  # different mask sizes per sample
    qsm_minus = rng.normal(size=qsm.shape)
    loss = ReconstructionLoss()
    both = loss(_t(qsm), _t(qsm_minus), _t(field), _t(mask))
    single = [loss(_t(qsm[b]), _t(qsm_minus[b]), _t(field[b]), _t(mask[b])) for b in range(2)]
    for name in ("total", "consistency", "morphology"):
        expected = (getattr(single[0], name) + getattr(single[1], name)) / 2
        assert getattr(both, name).item() == pytest.approx(expected.item(), rel=1e-12)


def test_empty_masks_give_zero_loss_and_finite_gradients():
    rng = np.random.default_rng(6)
    qsm, field, _ = _random_case(rng)
    pred = _t(qsm).requires_grad_(True)
    terms = ReconstructionLoss()(pred, _t(qsm + 1), _t(field), _t(np.zeros_like(qsm)))
    terms.total.backward()
    assert terms.total.item() == 0.0
    assert torch.isfinite(pred.grad).all() and not pred.grad.any()


def test_constant_prediction_gives_finite_loss_and_gradient():
    rng = np.random.default_rng(7)
    qsm, field, mask = _random_case(rng)
    pred = torch.zeros(2, 1, 6, 7, 8, dtype=torch.float64, requires_grad=True)
    terms = ReconstructionLoss()(pred, _t(qsm), _t(field), _t(mask))
    terms.total.backward()
    assert torch.isfinite(terms.total) and torch.isfinite(pred.grad).all()


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="morph_weight"):
        ReconstructionLoss(morph_weight=-1)
    with pytest.raises(ValueError, match="same shape|one shape"):
        ReconstructionLoss()(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4),
                             torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ValueError, match="B, 1"):
        sobel_gradients_torch(torch.zeros(1, 2, 4, 4, 4))
