"""Pretrain the learned QSM shipped in mqsm_nnunet/pretrained/qsm_net (what `mqsm_qsm` runs).

Reproducible: the pool of simulated fields is drawn from `--seed` (`learned_qsm.simulated_fields`; the
embedded anatomies minus the held-out ones), cached under `--work` (an interrupted run reuses what it
drew), and the training resumes from `--work/checkpoint.pt`. The last `--validation` examples of the
pool are never trained on: their whole-volume demeaned NRMSE picks the shipped weights. The record
(command, seed, sizes, steps, machine, time, validation curve) is written next to the weights.

    .venv/bin/python scripts/pretrain_qsm_net.py --work /tmp/qsm_pretraining
"""
from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mqsm_nnunet.metrics import nrmse_demeaned
from mqsm_nnunet.learned_qsm import inference
from mqsm_nnunet.learned_qsm.unrolled_net import UnrolledQSMNet
from mqsm_nnunet.learned_qsm.pretraining import cosine_lr, sample_box, supervised_step
from mqsm_nnunet.learned_qsm.simulated_fields import HELD_OUT_ANATOMIES, FieldExample, build_pool


def validate(net: UnrolledQSMNet, examples: list[FieldExample], device: torch.device) -> tuple[float, float]:
    """(mean demeaned NRMSE % of the net, of its TV start) over whole validation volumes."""
    ours, start = [], []
    for example in examples:
        chi = inference.reconstruct(net, example.field, example.mask, example.voxel_size, example.b0_dir,
                                  start=example.tv, device=device)
        ours.append(nrmse_demeaned(chi, example.chi, example.mask))
        start.append(nrmse_demeaned(example.tv, example.chi, example.mask))
    return float(np.mean(ours)), float(np.mean(start))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="cache of the drawn pool and the checkpoint")
    parser.add_argument("--out", type=Path, default=inference.PRETRAINED_DIR, help="where the weights go")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=120, help="simulated subjects drawn")
    parser.add_argument("--validation", type=int, default=8, help="the pool's last examples, never trained on")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--unrolled-steps", type=int, default=3)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--validate-every", type=int, default=250)
    parser.add_argument("--float32", action="store_true", help="no bfloat16 autocast on the CPU")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    paths = build_pool(args.work / "pool", args.examples, args.seed)
    train_paths, validation = paths[:-args.validation], [FieldExample.load(p) for p in paths[-args.validation:]]
    net = UnrolledQSMNet(args.unrolled_steps, args.width).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    checkpoint_path = args.work / "checkpoint.pt"
    state = {"step": 0, "curve": [], "best": None}
    if checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, map_location=device, weights_only=False)
        net.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resuming at step {state['step']}")
    rng = np.random.default_rng(np.random.SeedSequence([args.seed, 1, state["step"]]))
    bar = tqdm(total=args.steps, initial=state["step"], desc="pretraining", unit="step")
    losses = []
    while state["step"] < args.steps:
        step = state["step"]
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, args.steps, args.lr)
        example = FieldExample.load(train_paths[int(rng.integers(len(train_paths)))])
        losses.append(supervised_step(net, sample_box(example, rng), optimizer, device, not args.float32))
        state["step"] = step = step + 1
        bar.update(1)
        bar.set_postfix(box_nrmse=f"{losses[-1] * 100:.1f} %")
        if step % args.validate_every == 0 or step == args.steps:
            ours, tv = validate(net, validation, device)
            state["curve"].append({"step": step, "train_nrmse": float(np.mean(losses[-args.validate_every:])) * 100,
                                   "validation_nrmse": ours, "validation_tv_nrmse": tv})
            print(f"\nstep {step}: train box NRMSE {state['curve'][-1]['train_nrmse']:.1f} %, validation "
                  f"{ours:.2f} % (its TV start {tv:.2f} %)", flush=True)
            if state["best"] is None or ours < state["best"]["validation_nrmse"]:
                state["best"] = {"step": step, "validation_nrmse": ours}
                torch.save(net.state_dict(), args.work / "best.pt")
            torch.save({"net": net.state_dict(), "optimizer": optimizer.state_dict(), "state": state},
                       checkpoint_path.with_suffix(".partial"))
            checkpoint_path.with_suffix(".partial").replace(checkpoint_path)

    net.load_state_dict(torch.load(args.work / "best.pt", map_location="cpu"))
    record = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "seed": args.seed,
              "examples": args.examples, "validation_examples": args.validation, "held_out": list(HELD_OUT_ANATOMIES),
              "steps": args.steps, "lr": args.lr, "bfloat16": not args.float32, "sizes": net.sizes(),
              "best": state["best"], "curve": state["curve"],
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device.type}",
              "seconds_this_run": round(time.perf_counter() - started)}
    inference.save_pretrained(net.cpu(), args.out, record)
    shutil.copy(args.out / inference.RECORD_NAME, args.work / inference.RECORD_NAME)
    print(f"wrote {args.out} (best validation step {state['best']['step']}: {state['best']['validation_nrmse']:.2f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
