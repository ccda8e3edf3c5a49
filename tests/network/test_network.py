"""Tests of the mQSM network: reconstruction net, mTrans against an einsum reference, the two-stream U-Net."""
import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from mqsm_nnunet.qsm.losses import ReconstructionLoss
from mqsm_nnunet.network import MQSMNet, MutualTransformer, ReconstructionNet
from mqsm_nnunet.network.reconstruction import MAP_SCALE_PPM

torch.set_num_threads(2)

# (strides, kernel_sizes, features, spatial size): isotropic, anisotropic with 1-kernels, 5 and 6 stages,
# and odd sizes on axes that are never downsampled.
PLANS = {
    "iso4": ([1, 2, 2, 2], 3, (4, 8, 16, 16), (24, 32, 40)),
    "aniso4": ([[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]],
               [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]], (4, 8, 16, 16), (24, 40, 56)),
    "iso5": ([1, 2, 2, 2, 2], 3, (4, 8, 8, 16, 16), (16, 32, 48)),
    "aniso6": ([[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]],
               [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
               (4, 8, 8, 8, 16, 16), (16, 64, 64)),
    "odd": ([[1, 1, 1], [1, 2, 1], [1, 2, 1], [1, 2, 1]],
            [[3, 3, 3], [3, 3, 1], [3, 3, 3], [3, 3, 3]], (4, 8, 8, 16), (33, 32, 35)),
}


def unet_kwargs(plan: str, deep_supervision: bool = True, input_channels: int = 4, num_classes: int = 3) -> dict:
    """PlainConvUNet-style keyword arguments as nnU-Net plans give them."""
    strides, kernels, features, _ = PLANS[plan]
    return dict(input_channels=input_channels, n_stages=len(features), features_per_stage=features,
                conv_op=nn.Conv3d, kernel_sizes=kernels, strides=strides, n_conv_per_stage=2,
                num_classes=num_classes, n_conv_per_stage_decoder=1, conv_bias=True,
                norm_op=nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                dropout_op=None, dropout_op_kwargs=None, nonlin=nn.LeakyReLU,
                nonlin_kwargs={"inplace": True}, deep_supervision=deep_supervision)


def tiny_net(plan: str = "aniso4", **extra) -> MQSMNet:
    kwargs = dict(t1_channels=(0,), qsm_minus_channel=2, recon_width=8, recon_blocks=2, recon_skip_channels=4)
    kwargs.update(extra)
    deep_supervision = kwargs.pop("deep_supervision", True)
    net = MQSMNet(**unet_kwargs(plan, deep_supervision), **kwargs)
    net.apply(net.initialize)
    return net


def mutual_transformer_reference(q1, k1, v1, q2, k2, v2):
    """Eq. 4 written out: (B, C_i, N) channel-first tensors -> cat[SA_1, MA V_2, SA_2, MA^T V_1],
    (B, 2 C1 + 2 C2, N)."""
    n = q1.shape[2]

    def self_attention(q, k, v):
        logits = torch.einsum("bcn,bcm->bnm", q, k) / q.shape[1] ** 0.5
        weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return torch.einsum("bnm,bcm->bcn", weights, v)

    mutual = torch.tanh(torch.einsum("bcn,bdn->bcd", q1, q2) / n ** 0.5)
    return torch.cat([self_attention(q1, k1, v1), torch.einsum("bcd,bdn->bcn", mutual, v2),
                      self_attention(q2, k2, v2), torch.einsum("bcd,bcn->bdn", mutual, v1)], dim=1)


# ---------------------------------------------------------------- reconstruction net

def test_reconstruction_net_shapes_and_layout():
    net = ReconstructionNet(width=8, n_blocks=3, skip_channels=4).eval()
    x = torch.randn(2, 1, 9, 10, 11)
    qsm, skip = net(x)
    assert qsm.shape == (2, 1, 9, 10, 11)
    assert skip.shape == (2, 4, 9, 10, 11)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert len(convs) == 2 + 2 * 3 + 2
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (1, 1, 1) for c in convs)
    assert [(c.in_channels, c.out_channels) for c in (convs[0], convs[1], convs[-2], convs[-1])] == \
        [(1, 4), (4, 8), (8, 4), (4, 1)]
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert len(norms) == 6 and all(n.affine for n in norms)
    assert all(m.p == 0.2 for m in net.modules() if isinstance(m, nn.Dropout3d))


def test_reconstruction_net_paper_defaults_and_validation():
    net = ReconstructionNet()
    assert (net.width, net.n_blocks, net.skip_channels) == (64, 6, 32)
    with pytest.raises(ValueError, match="dropout"):
        ReconstructionNet(dropout=1.0)
    with pytest.raises(ValueError, match="qsm_minus"):
        net(torch.zeros(1, 2, 4, 4, 4))


# ---------------------------------------------------------------- mTrans

def _qkv(block: MutualTransformer, f1, f2):
    q1, k1, v1 = block.to_qkv[0](f1).flatten(2).chunk(3, dim=1)
    q2, k2, v2 = block.to_qkv[1](f2).flatten(2).chunk(3, dim=1)
    return q1, k1, v1, q2, k2, v2


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
@pytest.mark.parametrize("attention", ["mtrans", "sa"])
@pytest.mark.parametrize("c1, c2", [(5, 5), (6, 3)])
def test_mutual_transformer_matches_einsum_reference(attention, dtype, tol, c1, c2):
    torch.manual_seed(0)
    block = MutualTransformer(c1, c2, attention=attention).to(dtype)
    f1, f2 = torch.randn(2, c1, 3, 4, 5, dtype=dtype), torch.randn(2, c2, 3, 4, 5, dtype=dtype)
    with torch.no_grad():
        out = block(f1, f2)
        ref = mutual_transformer_reference(*_qkv(block, f1, f2))
        if attention == "sa":
            ref = torch.cat([ref[:, :c1], ref[:, 2 * c1:2 * c1 + c2]], dim=1)
        expected = torch.cat([f1, f2], dim=1) + block.proj(ref.view(2, -1, 3, 4, 5))
    assert out.shape == (2, c1 + c2, 3, 4, 5)
    torch.testing.assert_close(out, expected, atol=tol, rtol=tol)


def test_mutual_attention_is_stored_only_on_request():
    torch.manual_seed(1)
    block = MutualTransformer(3)
    f1, f2 = torch.randn(2, 1, 3, 4, 4, 4)
    block(f1, f2)
    assert block.last_mutual_attention is None
    block.store_attention = True
    block(f1, f2)
    ma = block.last_mutual_attention
    q1, _, _, q2, _, _ = _qkv(block, f1, f2)
    assert ma.shape == (1, 3, 3) and not ma.requires_grad
    torch.testing.assert_close(ma, torch.tanh(q1 @ q2.transpose(1, 2) / 64 ** 0.5).detach())
    sa_block = MutualTransformer(3, attention="sa")
    sa_block.store_attention = True
    sa_block(f1, f2)
    assert sa_block.last_mutual_attention is None


@pytest.mark.parametrize("attention", ["mtrans", "sa"])
def test_mutual_transformer_is_permutation_equivariant(attention):
    """No positional encoding: reordering the voxels reorders the output the same way."""
    torch.manual_seed(2)
    block = MutualTransformer(4, attention=attention).double()
    f1, f2 = torch.randn(2, 2, 4, 3, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        flipped = block(f1.flip(2, 4), f2.flip(2, 4))
        torch.testing.assert_close(flipped, block(f1, f2).flip(2, 4))


def test_mutual_transformer_validation():
    with pytest.raises(ValueError, match="attention"):
        MutualTransformer(4, attention="cross")
    with pytest.raises(ValueError, match="f1 and f2"):
        MutualTransformer(4)(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 3, 2, 2, 2))
    with pytest.raises(ValueError, match="f1 and f2"):
        MutualTransformer(4, 2)(torch.zeros(1, 4, 2, 2, 2), torch.zeros(1, 2, 2, 2, 3))
    with pytest.raises(ValueError, match="channel"):
        MutualTransformer(4, 0)


# ---------------------------------------------------------------- MQSMNet

@pytest.mark.parametrize("plan", sorted(PLANS))
def test_deep_supervision_outputs_match_plain_conv_unet(plan):
    torch.manual_seed(0)
    size = PLANS[plan][3]
    x = torch.randn(1, 4, *size)
    net = tiny_net(plan)
    reference = PlainConvUNet(**unet_kwargs(plan))
    with torch.no_grad():
        outputs = net(x)
        expected = reference(x)
    assert isinstance(outputs, list) and len(outputs) == len(PLANS[plan][2]) - 1
    assert [o.shape for o in outputs] == [e.shape for e in expected]
    assert outputs[0].shape == (1, 3, *size)


@pytest.mark.parametrize("plan", ["aniso4", "odd"])
def test_inference_mode_returns_one_tensor_and_qsm_on_request(plan):
    size = PLANS[plan][3]
    net = tiny_net(plan).eval()
    net.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled(False) does
    x = torch.randn(2, 4, *size)
    with torch.no_grad():
        seg = net(x)
        assert isinstance(seg, torch.Tensor) and seg.shape == (2, 3, *size)
        seg_again, qsm = net(x, with_qsm=True)
    torch.testing.assert_close(seg_again, seg)
    assert qsm.shape == (2, 1, *size)


def test_qsm_depends_only_on_qsm_minus_channel():
    """The reconstruction net sees QSM- only, so the QSM works from the field map alone."""
    torch.manual_seed(0)
    net = tiny_net().eval()
    with torch.no_grad():  # a trained output layer (zero at initialization)
        net.recon.out_conv.weight.normal_()
    x = torch.randn(1, 4, 24, 40, 56)
    y = x.clone()
    y[:, [0, 1, 3]] = torch.randn(1, 3, 24, 40, 56)
    with torch.no_grad():
        seg_x, qsm_x = net(x, with_qsm=True)
        seg_y, qsm_y = net(y, with_qsm=True)
    torch.testing.assert_close(qsm_x, qsm_y)
    assert not torch.allclose(seg_x[0], seg_y[0])
    with torch.no_grad():
        torch.testing.assert_close(net.reconstruct(x), qsm_x)
        assert net.reconstruct(x[..., :-3]).shape == (1, 1, 24, 40, 53)  # no stride constraint


def _seg_loss(seg_outputs, target):
    """CE summed over deep-supervision outputs (target nearest-downsampled to each scale)."""
    loss = 0.0
    for out in seg_outputs:
        t = F.interpolate(target[:, None].float(), size=out.shape[2:], mode="nearest")[:, 0].long()
        loss = loss + F.cross_entropy(out, t)
    return loss


def _recon_loss(qsm, x):
    return ReconstructionLoss()(qsm, x[:, 2:3], x[:, 1:2], (x[:, 3:4] > 0).float()).total


@pytest.mark.parametrize("fusion, qsm_stream_input", [("mtrans", "skip"), ("mtrans", "map"), ("input", "map")])
def test_segmentation_loss_does_not_train_the_reconstruction_net(fusion, qsm_stream_input):
    torch.manual_seed(0)
    net = tiny_net(fusion=fusion, qsm_stream_input=qsm_stream_input)
    with torch.no_grad():  # a trained output layer: at 0 it passes no gradient into the trunk
        net.recon.out_conv.weight.normal_(std=0.1)
    x = torch.randn(2, 4, 24, 40, 56)
    target = torch.randint(0, 3, (2, 24, 40, 56))
    seg, qsm = net(x, with_qsm=True)
    _seg_loss(seg, target).backward()
    for p in net.reconstruction_parameters():
        assert p.grad is None or not p.grad.any()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.segmentation_parameters())

    net.zero_grad(set_to_none=True)
    seg, qsm = net(x, with_qsm=True)
    _recon_loss(qsm, x).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.reconstruction_parameters())
    assert all(p.grad is None for p in net.segmentation_parameters())


def test_qsm_stream_can_read_the_reconstructed_map():
    """With 'map' the QSM stem reads the reconstructed QSM (in units of MAP_SCALE_PPM) instead of the
    recon skip features (the paper's)."""
    torch.manual_seed(0)
    net = tiny_net(qsm_stream_input="map").eval()
    assert net.encoder.qsm_stem.conv.in_channels == 1
    x = torch.randn(1, 4, 24, 40, 56)
    seen = []
    hook = net.encoder.qsm_stem.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        _, qsm = net(x, with_qsm=True)
    hook.remove()
    torch.testing.assert_close(seen[0], qsm / MAP_SCALE_PPM)
    assert tiny_net().encoder.qsm_stem.conv.in_channels == net.recon.skip_channels
    with pytest.raises(ValueError, match="qsm_stream_input"):
        tiny_net(qsm_stream_input="field")


def test_input_fusion_is_plain_conv_unet_over_t1_and_qsm_features():
    """fusion='input': no streams; PlainConvUNet's encoder reads T1 + the reconstructed QSM, so every
    conv of encoder and decoder has PlainConvUNet's shape except the first one's input channels."""
    torch.manual_seed(0)
    plan = "aniso4"
    net = tiny_net(plan, fusion="input", qsm_stream_input="map")
    reference = PlainConvUNet(**unet_kwargs(plan))
    conv_shapes = lambda module: [tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Conv3d)]
    ours, stock = conv_shapes(net.encoder), conv_shapes(reference.encoder)
    assert ours[0][1] == 1 + 1 and ours[1:] == stock[1:]
    assert conv_shapes(net.decoder)[len(ours):] == conv_shapes(reference.decoder)[len(stock):]
    x = torch.randn(1, 4, *PLANS[plan][3])
    with torch.no_grad():
        assert [o.shape for o in net(x)] == [o.shape for o in reference(x)]


def test_parameter_groups_are_disjoint_and_cover_everything():
    net = tiny_net(fusion_stages=(2, 3))
    recon = {id(p) for p in net.reconstruction_parameters()}
    seg = {id(p) for p in net.segmentation_parameters()}
    everything = {id(p) for p in net.parameters()}
    assert recon and seg and not recon & seg
    assert recon | seg == everything
    assert recon == {id(p) for p in net.recon.parameters()}


@pytest.mark.parametrize("fusion", ["none", "sa", "mtrans"])
def test_fusion_variants_train_one_step(fusion):
    torch.manual_seed(0)
    net = tiny_net("iso4", fusion=fusion, fusion_stages=(2, -1))
    assert len(net.encoder.fusions) == (0 if fusion == "none" else 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-2)
    x = torch.randn(2, 4, 24, 32, 40)
    target = torch.randint(0, 3, (2, 24, 32, 40))
    with torch.no_grad():  # a trained output layer: at 0 it passes no gradient into the trunk
        net.recon.out_conv.weight.normal_(std=0.1)
    seg, qsm = net(x, with_qsm=True)
    loss = _recon_loss(qsm, x) + _seg_loss(seg, target)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))


def test_streams_stay_apart_until_the_fusion_stage():
    """Changing the QSM stream does not move the T1 stream before the fusion stage: the T1 part of
    each skip (its leading half) stays."""
    torch.manual_seed(0)
    net = tiny_net("iso4", fusion_stages=(2,)).eval()
    t1 = torch.randn(1, 1, 24, 32, 40)
    qsm_a, qsm_b = torch.randn(2, 1, 4, 24, 32, 40)
    t1_outputs, fused = [], []
    hooks = [stage.register_forward_hook(lambda m, i, o: t1_outputs.append(o)) for stage in net.encoder.t1_stages]
    hooks.append(net.encoder.fusions["2"].register_forward_hook(lambda m, i, o: fused.append(o)))
    with torch.no_grad():
        skips_a = net.encoder(t1, qsm_a)
        skips_b = net.encoder(t1, qsm_b)
    for hook in hooks:
        hook.remove()
    t1_a, t1_b = t1_outputs[:3], t1_outputs[3:]
    for s in (0, 1, 2):  # the T1 stack's outputs, up to and including the fusion stage's, before mTrans
        torch.testing.assert_close(t1_a[s], t1_b[s])
        assert not torch.allclose(skips_a[s], skips_b[s])
    t1_width = net.encoder.stream_channels[2][0]
    assert not torch.allclose(fused[0][:, :t1_width], fused[1][:, :t1_width])  # mTrans mixed QSM into T1
    for s in (0, 1):  # skips lead with the T1 stream's channels
        torch.testing.assert_close(skips_a[s][:, :net.encoder.stream_channels[s][0]], t1_a[s])
    assert len(net.encoder.t1_stages) == 3 and len(net.encoder.stages) == 1  # plain after the last fusion


def test_feature_map_size_extends_plain_conv_unet_estimate():
    plan = "aniso4"
    size = PLANS[plan][3]
    n_vox = size[0] * size[1] * size[2]
    plain = PlainConvUNet(**unet_kwargs(plan)).compute_conv_feature_map_size(size)
    none = tiny_net(plan, fusion="none").compute_conv_feature_map_size(size)
    recon_channels = 4 + 8 + 2 * 2 * 8 + 4 + 1  # skip, width, 2 blocks x 2 convs, skip, qsm
    stems = PLANS[plan][2][0]  # two stems of F0/2 channels
    assert none == plain + (recon_channels + stems) * n_vox
    bottleneck_tokens = (24 // 8) * (40 // 8) * (56 // 4)
    fused = tiny_net(plan, fusion="mtrans").compute_conv_feature_map_size(size)
    assert fused - none >= 2 * bottleneck_tokens ** 2


@pytest.mark.parametrize("change, message", [
    (dict(conv_op=nn.Conv2d), "3D"),
    (dict(features_per_stage=(4, 8, 15, 16)), "even"),
    (dict(kernel_sizes=[3, 3, 3]), "kernel_sizes"),
    (dict(t1_channels=(4,)), "t1_channels"),
    (dict(qsm_minus_channel=0), "also listed"),
    (dict(fusion="cross"), "fusion"),
    (dict(fusion_stages=(4,)), "fusion_stages"),
    (dict(fusion_stages=(3, -1)), "twice"),
])
def test_invalid_configurations_raise(change, message):
    kwargs = unet_kwargs("aniso4")
    extra = {k: change.pop(k) for k in list(change) if k not in kwargs}
    kwargs.update(change)
    with pytest.raises(ValueError, match=message):
        MQSMNet(**kwargs, **extra)


def test_unknown_keyword_is_rejected_and_inputs_are_checked():
    with pytest.raises(TypeError):
        MQSMNet(**unet_kwargs("aniso4"), nonlin_first=False)
    net = tiny_net()
    with pytest.raises(ValueError, match="expected input"):
        net(torch.zeros(1, 3, 24, 40, 56))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 4, 24, 40, 54))


def test_untrained_reconstruction_returns_qsm_minus_and_every_weight_learns_within_two_steps():
    """The output layer starts at 0 (also after nnU-Net's He init): before training the QSM is exactly
    QSM-; the first step's gradient reaches the output layer, the second every trunk weight."""
    torch.manual_seed(0)
    net = tiny_net()
    net.apply(net.initialize)
    net.eval()
    x = torch.randn(1, 4, 24, 40, 56)
    assert torch.equal(net.reconstruct(x), x[:, 2:3])
    net.train()
    optimizer = torch.optim.SGD(net.reconstruction_parameters(), lr=1e-2)
    target = torch.randn(1, 1, 24, 40, 56)
    for step in range(2):
        optimizer.zero_grad()
        ((net.reconstruct(x) - target) ** 2).mean().backward()
        if step == 0:
            assert net.recon.out_conv.weight.grad.abs().sum() > 0
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.reconstruction_parameters())
