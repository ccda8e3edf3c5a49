"""The unrolled QSM network: its dipole operator against the physics module and the operator's
invariants, the identity at initialisation and the scale equivariance that makes it unit-free."""
import numpy as np
import pytest
import torch

from mqsm_nnunet import physics
from mqsm_nnunet.learned_qsm.unrolled_net import UNROLLED_PAD_FACTOR, DipoleOperator, SmallUNet, UnrolledQSMNet

SHAPE, VOXEL, B0 = (14, 12, 10), (1.0, 1.2, 1.5), (0.2, 0.3, 0.93)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=np.float32))[None, None]


def test_dipole_operator_is_the_physics_forward_model():
    chi = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    expected = physics.forward_field(chi, VOXEL, B0, pad_factor=UNROLLED_PAD_FACTOR)
    got = DipoleOperator(SHAPE, VOXEL, B0)(_t(chi))[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_dipole_operator_of_a_sphere_has_the_analytic_outside_field():
    """A uniformly magnetised sphere: outside, the field is that of a point dipole, chi a^3 (3 cos^2 - 1) / (3 r^3)."""
    n, radius = 64, 6.0
    grid = np.indices((n, n, n)) - n / 2 + 0.5
    r = np.sqrt((grid ** 2).sum(axis=0))
    chi = (r <= radius).astype(np.float32)
    field = DipoleOperator((n, n, n), (1.0, 1.0, 1.0), (0, 0, 1), pad_factor=2.0)(_t(chi))[0, 0].numpy()
    volume_radius = (3 * chi.sum() / (4 * np.pi)) ** (1 / 3)    # the voxelised sphere's volume
    outside = (r > 2 * radius) & (r < 3 * radius)
    cos2 = (grid[2] / np.where(r > 0, r, 1)) ** 2
    analytic = volume_radius ** 3 * (3 * cos2 - 1) / (3 * np.where(r > 0, r, 1) ** 3)
    error = np.abs(field - analytic)[outside].max() / np.abs(analytic[outside]).max()
    assert error < 0.05


def test_dipole_operator_is_self_adjoint():
    rng = np.random.default_rng(1)
    x, y = (_t(rng.normal(size=SHAPE)) for _ in range(2))
    operator = DipoleOperator(SHAPE, VOXEL, B0)
    assert float((operator(x) * y).sum()) == pytest.approx(float((x * operator(y)).sum()), rel=1e-4)


def test_untrained_net_returns_its_starting_map_inside_the_mask():
    rng = np.random.default_rng(2)
    field, start = _t(rng.normal(size=SHAPE)), _t(rng.normal(size=SHAPE))
    mask = _t(rng.uniform(size=SHAPE) > 0.3)
    with torch.no_grad():
        out = UnrolledQSMNet(n_steps=2, width=4)(field, mask, start, DipoleOperator(SHAPE, VOXEL, B0))
    torch.testing.assert_close(out, start * mask)


def test_net_is_equivariant_to_the_field_scale():
    """Units (ppm, ppb) and field strength must not change the map beyond its scale."""
    torch.manual_seed(0)
    net = UnrolledQSMNet(n_steps=2, width=4)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.2)
    rng = np.random.default_rng(3)
    field, start = _t(rng.normal(size=SHAPE)), _t(rng.normal(size=SHAPE))
    mask = torch.ones_like(field)
    operator = DipoleOperator(SHAPE, VOXEL, B0)
    with torch.no_grad():
        small = net(field, mask, start, operator)
        large = net(1000 * field, mask, 1000 * start, operator)
        assert float((small - start).abs().max()) > 1e-3      # the weights do something
    torch.testing.assert_close(large, 1000 * small, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape", [(9, 10, 11), (8, 8, 8)])
def test_small_unet_keeps_any_size(shape):
    assert SmallUNet(3, 4)(torch.zeros(1, 3, *shape)).shape == (1, 1, *shape)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="n_steps"):
        UnrolledQSMNet(n_steps=0)
