"""`mqsm_plan_and_preprocess`: nnU-Net fingerprint + mQSMPlanner + stock preprocessing, one command.

`nnUNetv2_plan_and_preprocess -pl` only finds planners inside nnunetv2, so this command runs the
same three steps through nnU-Net's API with our planner class. Flags follow nnU-Net's.
"""
from __future__ import annotations

import argparse
import sys

from mqsm_nnunet.planning import PLANS_NAME


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_plan_and_preprocess",
        description="Fingerprint a dataset made by mqsm_convert, plan it with mQSMPlanner (plans "
                    f"'{PLANS_NAME}', whose memory estimate includes the reconstruction net and mTrans) and "
                    "preprocess it with nnU-Net's DefaultPreprocessor. Needs nnUNet_raw and nnUNet_preprocessed.",
        epilog="example: mqsm_plan_and_preprocess -d 501 -c 3d_fullres -np 2\n"
               "then:    nnUNetv2_train 501 3d_fullres 0 -tr mQSMTrainer -p mQSMPlans",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", type=int, nargs="+", required=True, help="dataset id(s), e.g. 501")
    parser.add_argument("-c", nargs="+", default=["3d_fullres"],
                        help="configurations to preprocess (default: 3d_fullres; mQSM is 3D only)")
    parser.add_argument("-gpu_memory_target", type=float, default=8.0,
                        help="GPU memory (GB) the patch and batch size are planned for (default: 8)")
    parser.add_argument("-np", type=int, default=2, help="processes for fingerprinting and preprocessing (default: 2)")
    parser.add_argument("--verify_dataset_integrity", action="store_true",
                        help="run nnU-Net's dataset integrity check first")
    parser.add_argument("--clean", action="store_true", help="recompute the fingerprint even if one exists")
    parser.add_argument("--no_pbar", action="store_true", help="no progress bars (batch jobs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.np < 1:
        print("mqsm_plan_and_preprocess: -np must be >= 1", file=sys.stderr)
        return 2
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints,
                                                                      plan_experiment_dataset, preprocess)
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    from mqsm_nnunet.planning import mQSMPlanner

    for name, var in (("nnUNet_raw", nnUNet_raw), ("nnUNet_preprocessed", nnUNet_preprocessed)):
        if not var.is_set():
            print(f"mqsm_plan_and_preprocess: set the environment variable {name} (see nnU-Net's set-up docs)",
                  file=sys.stderr)
            return 2
    try:
        print("[1/3] fingerprint")
        extract_fingerprints(args.d, num_processes=args.np, check_dataset_integrity=args.verify_dataset_integrity,
                             clean=args.clean, verbose=False, show_progress_bar=not args.no_pbar)
        print(f"[2/3] plan with mQSMPlanner -> {PLANS_NAME}")
        for dataset_id in args.d:
            plan_experiment_dataset(dataset_id, mQSMPlanner, gpu_memory_target_in_gb=args.gpu_memory_target)
        print(f"[3/3] preprocess {', '.join(args.c)}")
        preprocess(args.d, PLANS_NAME, configurations=args.c, num_processes=[args.np] * len(args.c),
                   show_progress_bar=not args.no_pbar)
    except ValueError as error:  # e.g. a dataset.json without the mqsm block
        print(f"mqsm_plan_and_preprocess: {error}", file=sys.stderr)
        return 1
    print(f"done: train with  nnUNetv2_train {args.d[0]} 3d_fullres FOLD -tr mQSMTrainer -p {PLANS_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
