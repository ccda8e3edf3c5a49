"""`mqsm_predict`: nnUNetv2_predict's flags; writes `<case>.nii.gz` and `<case>_qsm.nii.gz`.

The input folder is either nnU-Net style (`<case>_0000.nii.gz` ... as mqsm_convert writes them) or
in-house subject folders (`sub-001/t1.nii.gz`, `field.nii.gz`, `mask.nii.gz`): those are converted
on the fly (units, B0 direction, whole-volume QSM-) into a temporary folder first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

DEFAULT_TRAINER = "mQSMTrainer"
DEFAULT_PLANS = "mQSMPlans"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_predict",
        description="QSM and brain-region segmentation for new subjects with a trained mQSM model. Same flags "
                    "as nnUNetv2_predict; per case it writes the segmentation <case>.nii.gz and the QSM "
                    "<case>_qsm.nii.gz (ppm, the input's exact geometry, 0 outside the brain mask). Sliding "
                    "window with Gaussian weighting, mirroring test-time augmentation and averaging over folds "
                    "apply to both outputs.",
        epilog="examples:\n"
               "  mqsm_predict -i $nnUNet_raw/Dataset501_Phantom/imagesTs -o pred -d 501 -c 3d_fullres -f 0\n"
               "  mqsm_predict -i my_cohort -o pred -d 501 -f 0 1 2 3 4      # in-house subject folders\n"
               "  mqsm_predict -i my_cohort -o pred -d 501 --field-units hz --b0 3",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", required=True, help="input folder: <case>_000X.nii.gz files, or in-house subject "
                                                  "folders (t1.nii.gz, field.nii.gz, mask.nii.gz)")
    parser.add_argument("-o", required=True, help="output folder (created)")
    parser.add_argument("-d", required=True, help="dataset name or id the model was trained on")
    parser.add_argument("-p", default=DEFAULT_PLANS, help=f"plans identifier (default: {DEFAULT_PLANS})")
    parser.add_argument("-tr", default=DEFAULT_TRAINER, help=f"trainer class (default: {DEFAULT_TRAINER})")
    parser.add_argument("-c", default="3d_fullres", help="configuration (default: 3d_fullres)")
    parser.add_argument("-f", nargs="+", default=["0", "1", "2", "3", "4"],
                        help="folds to ensemble (default: 0 1 2 3 4; 'all' for fold_all)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a patch fraction")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--save_probabilities", action="store_true", help="also export segmentation probabilities")
    parser.add_argument("--continue_prediction", action="store_true", help="skip cases whose outputs exist")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint name (default: checkpoint_final.pth)")
    parser.add_argument("-npp", type=int, default=2, help="preprocessing processes (default: 2)")
    parser.add_argument("-nps", type=int, default=2, help="segmentation export processes (default: 2)")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"),
                        help="device (default: cuda; use CUDA_VISIBLE_DEVICES to pick the GPU)")
    parser.add_argument("--disable_progress_bar", action="store_true")
    inhouse = parser.add_argument_group("in-house subject folders (as mqsm_convert)")
    inhouse.add_argument("--field-units", choices=("ppm", "hz", "rad"), default="ppm")
    inhouse.add_argument("--b0", type=float, default=None, help="field strength in tesla (hz/rad fields)")
    inhouse.add_argument("--te", type=float, default=None, help="echo time in seconds (rad fields)")
    inhouse.add_argument("--b0-dir", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                         help="B0 direction in voxel axes (default: from each field map's orientation)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"mqsm_predict: {error}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    import torch
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    from mqsm_nnunet.inference.model_folder import check_model_folder
    from mqsm_nnunet.inference.predictor import mQSMPredictor
    from mqsm_nnunet.inference.staging import check_channel_files, is_inhouse_cohort, stage_inhouse_cohort

    folds = [f if f == "all" else int(f) for f in args.f]
    model_folder = Path(get_output_folder(args.d, args.tr, args.p, args.c))
    check_model_folder(model_folder, folds, args.chk)
    input_dir = Path(args.i)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder not found (-i)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda, but no CUDA GPU is available: pass -device cpu")

    out_dir = Path(args.o)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".mqsm_predict_inputs_", dir=out_dir) as tmp:
        if is_inhouse_cohort(input_dir):
            from mqsm_nnunet.conversion import ConversionOptions

            options = ConversionOptions(field_units=args.field_units, b0=args.b0, te=args.te,
                                        b0_dir=tuple(args.b0_dir) if args.b0_dir else None)
            print(f"{input_dir}: in-house subject folders; computing the network inputs (QSM-) first")
            input_dir = stage_inhouse_cohort(input_dir, Path(tmp), model_folder, options)
        else:
            n_channels = len(json.loads((model_folder / "dataset.json").read_text())["channel_names"])
            check_channel_files(input_dir, n_channels)
        device = torch.device(args.device)
        if device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        predictor = mQSMPredictor(tile_step_size=args.step_size, use_gaussian=True,
                                  use_mirroring=not args.disable_tta, perform_everything_on_device=True,
                                  device=device, verbose=args.verbose, verbose_preprocessing=args.verbose,
                                  allow_tqdm=not args.disable_progress_bar)
        predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name=args.chk)
        predictor.channels  # fail early on a model whose dataset.json has no mqsm block
        predictor.predict_from_files(str(input_dir), str(out_dir), save_probabilities=args.save_probabilities,
                                     overwrite=not args.continue_prediction, num_processes_preprocessing=args.npp,
                                     num_processes_segmentation_export=args.nps)
    print(f"wrote segmentations and QSM maps to {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
