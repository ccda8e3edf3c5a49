"""`mqsm_demo`: the whole mQSM path on the synthetic cohort, in one command (`mqsm_nnunet.demo.run`)."""
from __future__ import annotations

import argparse
import sys

from mqsm_nnunet.demo.run import TRAINER, run

FINE_TUNE_EPOCHS = 2
SCRATCH_EPOCHS = 14


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_demo",
        description="Run mQSM end to end on a synthetic cohort built from real brains' label maps (FreeSurfer "
                    "regions plus substantia nigra, red nucleus, dentate): generate, convert, plan, train a short "
                    "mQSM variant, predict held-out subjects, compare with classical dipole inversions, analyse "
                    "regional iron and write tables and figures to OUT/results.",
        epilog="example: mqsm_demo -o demo_output --subjects 8 --epochs 2 --iterations 25   (the defaults: 7.5 "
               "minutes on an idle 2-core CPU; the shipped model alone gave held-out mean Dice 0.846, 0.841 after "
               "fine-tuning, every iron nucleus 0.84 or more; fine-tuning adds nothing measurable, it runs the "
               "training path; --from-scratch trains from random weights, far worse at this length)")
    parser.add_argument("-o", "--out", default="mqsm_demo_output", help="output folder (default: mqsm_demo_output)")
    parser.add_argument("--subjects", type=int, default=8, help="cohort size; at least 5 more than --test-subjects (default: 8)")
    parser.add_argument("--test-subjects", type=int, default=2, help="held-out subjects (default: 2)")
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="matrix size, centred on each brain (default: each brain plus 6 mm)")
    parser.add_argument("--voxel-size", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                        help="voxel size in mm (default: 2 2 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs of {TRAINER} (default: {FINE_TUNE_EPOCHS} fine-tuning the pretrained "
                             f"model, {SCRATCH_EPOCHS} with --from-scratch)")
    parser.add_argument("--iterations", type=int, default=25, help="training iterations per epoch (default: 25)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train from random weights with the demo cohort's own plans instead of fine-tuning the "
                             "model pretrained on the real-anatomy cohort that ships with the package "
                             "(mqsm_nnunet/pretrained, scripts/pretrain_demo_model.py)")
    parser.add_argument("--fp32", action="store_true",
                        help="train in float32 on the CPU (default: the forward pass in bfloat16, about 1.4-1.6x "
                             "faster per step on a CPU with AVX512-BF16; docs/training.md)")
    parser.add_argument("--curve-points", type=int, default=0,
                        help="held-out scores at this many intermediate checkpoints, for the learning curve, "
                             "besides the final model and, when fine-tuning, the shipped model before it "
                             "(default: 0; each costs a prediction run, about 35 s on 2 cores)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="training/prediction device (default: cuda if available, else cpu)")
    parser.add_argument("--seed", type=int, default=0, help="phantom cohort seed (default: 0)")
    parser.add_argument("--b0-dir", type=float, nargs=3, default=(0.0, 0.97, 0.26), metavar=("X", "Y", "Z"),
                        help="B0 direction in voxel axes, written into each affine (default: 15 degrees oblique "
                             "from the head's axis, 0 0.97 0.26: the label maps' second axis runs foot-head)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is None:
        args.epochs = SCRATCH_EPOCHS if args.from_scratch else FINE_TUNE_EPOCHS
    if args.test_subjects < 1 or args.subjects - args.test_subjects < 5:
        print("mqsm_demo: need --test-subjects >= 1 and at least 5 training subjects (nnU-Net's 5-fold "
              f"split); got --subjects {args.subjects} --test-subjects {args.test_subjects}", file=sys.stderr)
        return 2
    if args.epochs < 1 or args.iterations < 1:
        print("mqsm_demo: --epochs and --iterations must be >= 1", file=sys.stderr)
        return 2
    try:
        run(args)
    except (RuntimeError, ValueError, FileNotFoundError) as error:
        print(f"mqsm_demo: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
