"""MQSMNet under DistributedDataParallel (gloo, 2 CPU processes) through the three training phases.

nnU-Net wraps the network in DDP without find_unused_parameters, so every parameter must receive a
gradient at every step, whatever the phase: segmentation frozen (w_seg = 0), both trained, and
reconstruction frozen (lr 0 for its parameter group, loss kept). DDP reports a parameter left out of
one step at the next forward, so the phases run back to back on one wrapped model. With per-sample-
mean losses, no batch statistics (instance norm) and dropout off, DDP's gradient average over two
half batches equals the single-process gradient on the whole batch.
"""
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mqsm_nnunet.qsm.losses import ReconstructionLoss
from mqsm_nnunet.network import MQSMNet

WORLD_SIZE = 2
BATCH = 4
SIZE = (16, 24, 20)
# (w_rec, w_seg, recon lr, segmentation lr): segmentation frozen, both, reconstruction frozen
PHASES = [(1.0, 0.0, 0.1, 0.0), (1.0, 1.0, 0.1, 0.1), (1.0, 1.0, 0.0, 0.1)]


def _build_net() -> MQSMNet:
    torch.manual_seed(0)
    net = MQSMNet(input_channels=4, n_stages=4, features_per_stage=(4, 8, 8, 16), conv_op=nn.Conv3d,
                  kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
                  strides=[[1, 1, 1], [2, 2, 1], [2, 2, 2], [2, 2, 2]], n_conv_per_stage=2, num_classes=3,
                  n_conv_per_stage_decoder=1, conv_bias=True, norm_op=nn.InstanceNorm3d,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                  nonlin_kwargs={"inplace": True}, deep_supervision=True, recon_width=8, recon_blocks=2,
                  recon_skip_channels=4, fusion="mtrans", fusion_stages=(2, 3))
    net.apply(net.initialize)
    with torch.no_grad():  # a trained output layer (zero at initialization), so the trunk gets gradients
        net.recon.out_conv.weight.normal_(std=0.1)
    return net.double().eval()  # eval: dropout off (instance norm has no running statistics)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 4, *SIZE, generator=g, dtype=torch.float64)
    x[:, 3] = (x[:, 3] > -0.5).double()  # brain mask channel
    target = torch.randint(0, 3, (BATCH, *SIZE), generator=g)
    return x, target


def _loss(net: nn.Module, x: torch.Tensor, target: torch.Tensor, w_rec: float, w_seg: float) -> torch.Tensor:
    """w_rec * L_rec + w_seg * sum_i 2^-i CE_i over all deep-supervision outputs (per-sample means)."""
    seg, qsm = net(x, with_qsm=True)
    l_rec = ReconstructionLoss()(qsm, x[:, 2:3], x[:, 1:2], x[:, 3:4]).total
    l_seg = 0.0
    for i, out in enumerate(seg):
        t = F.interpolate(target[:, None].double(), size=out.shape[2:], mode="nearest")[:, 0].long()
        l_seg = l_seg + 0.5 ** i * F.cross_entropy(out, t)
    return w_rec * l_rec + w_seg * l_seg


def _train(net: nn.Module, inner: MQSMNet, x: torch.Tensor, target: torch.Tensor) -> tuple[list, list]:
    """Run the phases with SGD on two parameter groups; return each step's gradients and the parameters
    after it."""
    optimizer = torch.optim.SGD([{"params": inner.reconstruction_parameters()},
                                 {"params": inner.segmentation_parameters()}], lr=0.0)
    grads, params = [], []
    for w_rec, w_seg, lr_rec, lr_seg in PHASES:
        optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"] = lr_rec, lr_seg
        optimizer.zero_grad(set_to_none=True)
        _loss(net, x, target, w_rec, w_seg).backward()
        grads.append([p.grad.detach().clone() for p in inner.parameters()])
        optimizer.step()
        params.append([p.detach().clone() for p in inner.parameters()])
    net(x)  # a forward after the last step: DDP raises here if the last step left a parameter out
    return grads, params


def _worker(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        x, target = _batch()
        half = BATCH // WORLD_SIZE
        net = _build_net()
        ddp = DistributedDataParallel(net, find_unused_parameters=False)
        grads, params = _train(ddp, net, x[rank * half:(rank + 1) * half], target[rank * half:(rank + 1) * half])
        if rank == 0:
            reference_net = _build_net()
            reference, _ = _train(reference_net, reference_net, x, target)
            for phase, (got, expected) in enumerate(zip(grads, reference)):
                for g, e in zip(got, expected):
                    torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10, msg=lambda m: f"phase {phase}: {m}")
            is_recon = [any(p is q for q in net.reconstruction_parameters()) for p in net.parameters()]
            # phase 0 (w_seg = 0): zero gradients for the segmentation parameters, real ones for the
            # reconstruction (from phase 1 on for all of it: its output gate starts closed at 0)
            assert all(not g.any() for g, r in zip(grads[0], is_recon) if not r)
            assert any(g.any() for g, r in zip(grads[0], is_recon) if r)
            assert all(g.any() for g, r in zip(grads[1], is_recon) if r)
            # phase 2 (reconstruction lr 0): only the segmentation parameters move
            for before, after, r in zip(params[1], params[2], is_recon):
                assert torch.equal(before, after) == r
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_gradients_equal_single_process_in_every_phase():
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD_SIZE, join=True)
