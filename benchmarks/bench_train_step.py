"""Cost of one training step of mQSM against nnU-Net's PlainConvUNet, on the CPU.

All networks come from the same nnU-Net 3d_fullres-style plan for the patch: stages, pooling strides
and kernel sizes from nnU-Net's own `get_pool_and_conv_props` (1 mm isotropic spacing, feature maps
down to 4 voxels), features 32 * 2^s capped at 320, 2 convs per stage, instance norm, LeakyReLU,
exactly as nnU-Net's ExperimentPlanner writes them. They are built the way training builds them:

- plain: PlainConvUNet through nnU-Net's `get_network_from_plans` (stock nnUNetTrainer), 4 input channels.
- mqsm:  MQSMNet through `build_mqsm_network` with mQSMTrainer's settings and mQSMPlanner's keys
         (reconstruction net 64 wide, 6 blocks, 32 skip channels; mTrans at the bottleneck; paper sizes).
- tiny:  the same with mQSMTrainer_tiny's settings (reconstruction 8 wide / 2 dilated blocks / 8 skip
         channels, U-Net features 16 at full resolution and at most 32 below), weights and batch in its
         channels-last-3d layout.
- tiny_contiguous: tiny in nnU-Net's default (contiguous) layout: what the layout alone buys.
- tiny_bf16: tiny with its forward pass under bfloat16 autocast on the CPU (the short trainers'
  `cpu_bf16`; losses in float32, as `mQSMTrainer.training_autocast` does).

One step is what the trainers' train_step does on the CPU: zero_grad, forward, nnU-Net's DC_and_CE_loss
in a DeepSupervisionWrapper (weights 1/2^i, lowest output 0, normalized) on the segmentation outputs,
plus for MQSMNet mqsm_nnunet.qsm.losses.ReconstructionLoss on the QSM (inputs T1, field, QSM-, mask),
backward, gradient clipping at 12, SGD (nesterov, momentum 0.99) step, on random data.

Timing: each network runs in its own process; after one warm-up step each, the networks take turns,
one step each per round, for --repeats rounds, and the minimum per network is reported. Taking turns
exposes all networks to the same load drift, so the ratios hold better on a shared machine than
back-to-back runs do. On a machine another job keeps busy, --threads 1 avoids the OpenMP stalls that
make 2-thread steps there 3-8x slower and erratic.

Memory, two figures, each from the network's own process:
- "tensor MB": the peak of torch's own count of live CPU tensor bytes during one (untimed) step, from
  torch.profiler's memory events ("Total Allocated"), counting what the step allocates (activations,
  gradients, optimizer temporaries) and not the parameters or momentum buffers that outlive it. It does
  not depend on the allocator; memory oneDNN takes outside torch's allocator is not in it.
- "RSS MB": the growth of the process's peak RSS (getrusage ru_maxrss) over its RSS once network,
  optimizer and batch exist (/proc/self/statm), over the warm-up and timed steps: what the OS sees,
  including momentum buffers, oneDNN workspace and what glibc keeps after frees.
"peak MB" is the absolute peak RSS of the process (Python, torch, parameters and the steps).

    .venv/bin/python benchmarks/bench_train_step.py [--patch 64 64 32] [--batch 2] [--classes 31] [--repeats 3]
        [--models plain mqsm tiny tiny_contiguous] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

from mqsm_nnunet.io.dataset_metadata import DEFAULT_CHANNELS as CHANNELS  # the order mqsm_convert writes

MODELS = ("plain", "mqsm", "tiny", "tiny_contiguous", "tiny_bf16")


def plan_configuration(patch: list[int]) -> dict:
    """An nnU-Net 3d_fullres configuration for `patch` (1 mm isotropic), as ExperimentPlanner writes it."""
    from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

    _, strides, kernel_sizes, patch_size, _ = get_pool_and_conv_props([1.0, 1.0, 1.0], patch, 4, 999999)
    n_stages = len(strides)
    return {
        "patch_size": [int(p) for p in patch_size],
        "batch_dice": False,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n_stages,
                "features_per_stage": [min(320, 32 * 2 ** s) for s in range(n_stages)],
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [list(k) for k in kernel_sizes],
                "strides": [list(s) for s in strides],
                "n_conv_per_stage": [2] * n_stages,
                "n_conv_per_stage_decoder": [2] * (n_stages - 1),
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-5, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }


def _build(model: str, configuration: dict, classes: int):
    """The network as the trainer for `model` builds it, with deep supervision on."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from mqsm_nnunet.planning import mQSMPlanner
    from mqsm_nnunet.training.architecture import build_mqsm_network, plans_describing_network
    from mqsm_nnunet.training.trainer import mQSMTrainer
    from mqsm_nnunet.training.variants import mQSMTrainer_tiny

    arch = configuration["architecture"]
    n_inputs = len(CHANNELS)
    if model == "plain":
        return get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"], arch["_kw_requires_import"],
                                      n_inputs, classes, allow_init=True, deep_supervision=True)
    mqsm_configuration = dict(configuration, architecture=dict(
        arch, network_class_name="mqsm_nnunet.network.mqsm_net.MQSMNet",
        arch_kwargs={**arch["arch_kwargs"], **mQSMPlanner.mqsm_network_kwargs,
                     "t1_channels": [CHANNELS["t1"]], "qsm_minus_channel": CHANNELS["qsm_minus"]}))
    trainer = mQSMTrainer if model == "mqsm" else mQSMTrainer_tiny   # tiny, tiny_contiguous, tiny_bf16
    described = plans_describing_network({"configurations": {"3d_fullres": mqsm_configuration}}, "3d_fullres",
                                         trainer.network_overrides, trainer.max_unet_features)
    network = build_mqsm_network(ConfigurationManager(described["configurations"]["3d_fullres"]), n_inputs, classes,
                                 True)   # as the trainer builds it: from the plans it wrote its sizes into
    return network if model == "tiny_contiguous" else trainer.in_memory_layout(network)


def _built_channels_last(network) -> bool:
    """Whether the trainer's layout made the convolution weights channels-last (a 1-channel or 1x1x1
    weight is both layouts at once, so only the others tell)."""
    import torch

    weights = [m.weight for m in network.modules() if isinstance(m, torch.nn.Conv3d)]
    return any(w.is_contiguous(memory_format=torch.channels_last_3d) and not w.is_contiguous() for w in weights)


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _profiled_tensor_peak(step) -> int:
    """Peak bytes of CPU tensors allocated during step() and alive at once, from torch.profiler's memory
    events (their "Total Allocated" is the running sum of the allocations made while profiling, less the
    ones freed)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    return max((e["args"]["Total Allocated"] for e in events
                if e.get("name") == "[memory]" and e["args"].get("Device Type") == 0), default=0)


def _send(message: dict) -> None:
    print(json.dumps(message), flush=True)


def _child(model: str, patch: list[int], batch: int, classes: int, threads: int) -> None:
    """Build `model` and its losses, take the warm-up step, then answer the parent: a line "step" runs
    and times one step; any other line (or end of input) ends with the memory figures and the sizes."""
    import gc

    import numpy as np
    import torch
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    from mqsm_nnunet.qsm.losses import ReconstructionLoss

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    configuration = plan_configuration(patch)
    patch = configuration["patch_size"]
    network = _build(model, configuration, classes)
    network.train()

    # nnU-Net's segmentation loss, as nnUNetTrainer._build_loss sets it up (no regions, no ignore label)
    strides = configuration["architecture"]["arch_kwargs"]["strides"]
    scales = np.cumprod(np.array(strides), axis=0)[:-1]  # downsampling of each deep-supervision output
    weights = np.array([1 / 2 ** i for i in range(len(scales))])
    weights[-1] = 0
    segmentation_loss = DeepSupervisionWrapper(
        DC_and_CE_loss({"batch_dice": configuration["batch_dice"], "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                       weight_ce=1, weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss),
        weights / weights.sum())
    reconstruction_loss = ReconstructionLoss(morph_weight=0.01)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, weight_decay=3e-5, momentum=0.99, nesterov=True)

    c = CHANNELS
    data = torch.randn(batch, len(c), *patch)
    data[:, [c["field"], c["qsm_minus"]]] *= 0.05  # ppm
    grid = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, n) for n in patch], indexing="ij"))
    data[:, c["mask"]] = (grid.square().sum(0) < 0.8).float()
    if _built_channels_last(network):
        data = data.contiguous(memory_format=torch.channels_last_3d)   # as the trainer's batch_images
    labels = torch.randint(0, classes, (batch, 1, *patch)).float()
    target = [labels[(..., *[slice(None, None, int(s)) for s in scale])] for scale in scales]
    qsm_minus, field = data[:, c["qsm_minus"]:c["qsm_minus"] + 1], data[:, c["field"]:c["field"] + 1]
    mask = data[:, c["mask"]:c["mask"] + 1] > 0.5

    def step():
        optimizer.zero_grad(set_to_none=True)
        if model == "plain":
            loss = segmentation_loss(network(data), target)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=model == "tiny_bf16"):
                segmentation, qsm = network(data, with_qsm=True)
            segmentation = [s.float() for s in segmentation]
            loss = (reconstruction_loss(qsm.float(), qsm_minus, field, mask).total
                    + segmentation_loss(segmentation, target))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        optimizer.step()

    gc.collect()
    base = _current_rss_bytes()
    step()  # warm-up: allocates gradients and momentum buffers, picks oneDNN kernels
    _send({"ready": True})
    for line in sys.stdin:
        if line.strip() != "step":
            break
        start = time.perf_counter()
        step()
        _send({"time_s": time.perf_counter() - start})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # before the profiler's own buffers
    optimizer.zero_grad(set_to_none=True)  # no tensor from before the profiled step is freed inside it
    tensor_peak = _profiled_tensor_peak(step)
    result = {"tensor_mb": tensor_peak / 2 ** 20, "rss_mb": max(peak - base, 0) / 2 ** 20, "peak_mb": peak / 2 ** 20,
              "params": sum(p.numel() for p in network.parameters()), "patch": patch,
              "arch": {k: configuration["architecture"]["arch_kwargs"][k]
                       for k in ("n_stages", "features_per_stage", "strides", "kernel_sizes")}}
    if model != "plain":
        result["recon_params"] = sum(p.numel() for p in network.reconstruction_parameters())
        result["recon"] = [network.recon.width, network.recon.n_blocks, network.recon.skip_channels]
        result["unet_features"] = [int(f) for f in network.encoder.output_channels]
        result["fusion"] = [network.fusion, list(network.fusion_stages)]
    _send(result)


class _Worker:
    """One network in its own process (so its memory figures are its own), driven step by step."""

    def __init__(self, model: str, args: argparse.Namespace) -> None:
        self.model = model
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--_child", model, "--patch", *map(str, args.patch), "--batch",
             str(args.batch), "--classes", str(args.classes), "--threads", str(args.threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.times: list[float] = []
        self.receive()  # built and warmed up

    def receive(self) -> dict:
        """The child's next message; library chatter on stdout (lines not holding a JSON object) is skipped."""
        for line in self.process.stdout:
            if line.startswith("{"):
                return json.loads(line)
        self.process.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"benchmark of {self.model} failed (exit {self.process.returncode}):\n{self.stderr.read()}")

    def step(self) -> float:
        self.process.stdin.write("step\n")
        self.process.stdin.flush()
        self.times.append(self.receive()["time_s"])
        return self.times[-1]

    def finish(self) -> dict:
        self.process.stdin.close()
        result = self.receive()
        self.process.wait()
        return {**result, "time_s": min(self.times), "times_s": self.times}

    def close(self) -> None:
        """End the child if it still runs (after an error elsewhere) and drop its stderr file."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stderr.close()


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patch", nargs=3, type=int, default=[64, 64, 32], metavar=("X", "Y", "Z"))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--classes", type=int, default=31, help="segmentation outputs (labels + background)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (one step per network each)")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads per network (default: all CPUs, as training uses)")
    parser.add_argument("--_child", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if min(args.patch) < 1 or min(args.batch, args.repeats, args.threads) < 1 or args.classes < 2:
        parser.error("--patch, --batch, --repeats and --threads must be >= 1 and --classes >= 2")

    if args._child:
        _child(args._child, args.patch, args.batch, args.classes, args.threads)
        return

    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, torch {torch.__version__}, {args.threads} threads per network")
    print(f"load average (1, 5, 15 min) at start: {_load()}", flush=True)
    started = time.perf_counter()
    workers: list[_Worker] = []
    try:
        for model in args.models:  # one after the other: builds and warm-ups do not overlap
            workers.append(_Worker(model, args))
        for round_ in range(args.repeats):
            times = [f"{w.model} {w.step():.2f} s" for w in workers]
            print(f"round {round_ + 1}: {', '.join(times)} (load {_load()})", flush=True)
        results = {w.model: w.finish() for w in workers}
    finally:
        for w in workers:
            w.close()

    first = results[args.models[0]]
    a = first["arch"]
    print(f"\nplan: patch {first['patch']}, batch {args.batch}, {args.classes} classes, {a['n_stages']} stages, "
          f"features {a['features_per_stage']}, strides {a['strides']}, kernels {a['kernel_sizes']}")
    print(f"\n{'network':<15} {'params':>11} {'recon params':>12} {'step s':>7} {'x plain':>7} "
          f"{'tensor MB':>9} {'x plain':>7} {'RSS MB':>7} {'x plain':>7} {'peak MB':>8}  details")
    ref = results.get("plain")
    for model, r in results.items():
        ratio = {k: f"{r[k] / max(ref[k], 1e-9):.2f}" if ref else "-" for k in ("time_s", "tensor_mb", "rss_mb")}
        details = "PlainConvUNet" if model == "plain" else (
            f"recon {r['recon'][0]}/{r['recon'][1]}/{r['recon'][2]}, U-Net {r['unet_features']}, "
            f"fusion {r['fusion'][0]} at stage {r['fusion'][1]}")
        print(f"{model:<15} {r['params']:>11,} {r.get('recon_params', 0):>12,} {r['time_s']:>7.2f} "
              f"{ratio['time_s']:>7} {r['tensor_mb']:>9.0f} {ratio['tensor_mb']:>7} {r['rss_mb']:>7.0f} "
              f"{ratio['rss_mb']:>7} {r['peak_mb']:>8.0f}  {details}")
    print(f"\nload average (1, 5, 15 min) at end: {_load()}; total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
