"""`mqsm_plan_and_preprocess`: nnU-Net fingerprint + mQSMPlanner + stock preprocessing, one command.

`nnUNetv2_plan_and_preprocess -pl` only finds planners inside nnunetv2, so this command runs the
same three steps through nnU-Net's API with our planner class. Flags follow nnU-Net's.

Before nnU-Net starts, it checks what nnU-Net would otherwise answer with a traceback: the
nnU-Net folders and process-count variables, each dataset ID, that each dataset is in
`$nnUNet_raw` and was made by mqsm_convert. Exit status 0; 1 for such an error (one line); 2 for
bad flags; 130 / 143 when interrupted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.command import UsageError, run_command

PROG = "mqsm_plan_and_preprocess"


def build_parser() -> argparse.ArgumentParser:
    from mqsm_nnunet.planning import PLANS_NAME

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Fingerprint a dataset made by mqsm_convert, plan it with mQSMPlanner (plans "
                    f"'{PLANS_NAME}', whose memory estimate includes the reconstruction net and mTrans) and "
                    "preprocess it with nnU-Net's DefaultPreprocessor. Needs nnUNet_raw and nnUNet_preprocessed.",
        epilog="example: mqsm_plan_and_preprocess -d 501 -c 3d_fullres -np 2\n"
               f"then:    nnUNetv2_train 501 3d_fullres 0 -tr mQSMTrainer -p {PLANS_NAME}",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-d", dest="dataset_id", type=int, nargs="+", required=True, help="dataset id(s), e.g. 501")
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


def _raw_dataset(dataset_id: int) -> tuple[Path, bool]:
    """The raw dataset folder of an ID, checked to be one mqsm_convert made, and whether it holds
    field maps alone (`mqsm_convert --qsm-only`: trained with mQSMTrainer_QSM).

    Raises:
        ValueError: unknown ID, not in $nnUNet_raw, or a dataset.json without the mqsm block.
    """
    from mqsm_nnunet.io.dataset_metadata import MQSMChannels
    from mqsm_nnunet.io.nnunet_datasets import resolve_dataset

    name = resolve_dataset(dataset_id)
    folder = Path(os.environ["nnUNet_raw"]) / name
    if not (folder / "dataset.json").is_file():
        raise ValueError(f"{folder}: no raw dataset with dataset.json for ID {dataset_id} in nnUNet_raw; convert it "
                         "first (mqsm_convert -i COHORT -d ID -n NAME)")
    try:
        dataset_json = json.loads((folder / "dataset.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{folder / 'dataset.json'}: not valid JSON ({error})") from None
    try:
        channels = MQSMChannels.from_dataset_json(dataset_json)
    except ValueError as error:
        raise ValueError(f"{folder / 'dataset.json'}: {error}") from None
    return folder, channels.qsm_only


def run(args: argparse.Namespace) -> None:
    """Check, then fingerprint, plan and preprocess every dataset."""
    from mqsm_nnunet.io.nnunet_datasets import check_process_counts

    if args.np < 1:
        raise UsageError("-np must be >= 1")
    for variable in ("nnUNet_raw", "nnUNet_preprocessed"):
        if not os.environ.get(variable):
            raise ValueError(f"{variable} is not set: export {variable}=/path/to/{variable} (see nnU-Net's "
                             "documentation/setting_up_paths.md)")
    check_process_counts()
    qsm_only = {dataset_id: _raw_dataset(dataset_id)[1] for dataset_id in args.dataset_id}

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints,
                                                                      plan_experiment_dataset, preprocess)

    from mqsm_nnunet.planning import PLANS_NAME, mQSMPlanner

    print("[1/3] fingerprint")
    extract_fingerprints(args.dataset_id, num_processes=args.np, check_dataset_integrity=args.verify_dataset_integrity,
                         clean=args.clean, verbose=False, show_progress_bar=not args.no_pbar)
    print(f"[2/3] plan with mQSMPlanner -> {PLANS_NAME}")
    for dataset_id in args.dataset_id:
        plan_experiment_dataset(dataset_id, mQSMPlanner, gpu_memory_target_in_gb=args.gpu_memory_target)
    print(f"[3/3] preprocess {', '.join(args.c)}")
    preprocess(args.dataset_id, PLANS_NAME, configurations=args.c, num_processes=[args.np] * len(args.c),
               show_progress_bar=not args.no_pbar)
    for dataset_id, fields_only in qsm_only.items():
        trainer = "mQSMTrainer_QSM" if fields_only else "mQSMTrainer"
        print(f"done: train with  nnUNetv2_train {dataset_id} 3d_fullres FOLD -tr {trainer} -p {PLANS_NAME}")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0; 1 for a user error (one line); 2 for bad flags; 130 / 143 when interrupted."""
    return run_command(PROG, build_parser, run, argv)


if __name__ == "__main__":
    sys.exit(main())
