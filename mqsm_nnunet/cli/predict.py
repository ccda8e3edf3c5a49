"""`mqsm_predict`: nnUNetv2_predict's flags; writes `<case>.nii.gz` and `<case>_qsm.nii.gz`.

The input folder is either nnU-Net style (`<case>_0000.nii.gz` ... as mqsm_convert writes them) or
in-house subject folders (`sub-001/t1.nii.gz`, `field.nii.gz`, `mask.nii.gz`): those are converted
on the fly (units, B0 direction, whole-volume QSM-) into a temporary folder first. A case without
a T1 (no `t1.nii.gz`, or no T1 channel file) and every case of a QSM-only model (`mQSMTrainer_QSM`)
gets the QSM alone (`qsm_only`).

Everything that can be refused is refused before a model is loaded or the output folder is made:
the environment, the dataset ID, the model folder, the device, the output folder (not the input
folder or inside it; writable) and every input file (`staging`). An output folder this run created
is removed again when the run fails or is interrupted.
"""
from __future__ import annotations

import argparse
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.command import UsageError, run_command

PROG = "mqsm_predict"
DEFAULT_TRAINER = "mQSMTrainer"
DEFAULT_PLANS = "mQSMPlans"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="QSM and brain-region segmentation for new subjects with a trained mQSM model. Same flags "
                    "as nnUNetv2_predict; per case it writes the segmentation <case>.nii.gz (in the label ids of "
                    "your own label maps, whatever ids nnU-Net trained on) and the QSM <case>_qsm.nii.gz (ppm, the "
                    "input's exact geometry, 0 outside the brain mask). Sliding "
                    "window with Gaussian weighting, mirroring test-time augmentation and averaging over folds "
                    "apply to both outputs. Subjects without a T1 (field map + mask only) get the QSM alone, "
                    "from any mQSM model: the reconstruction never reads the T1.",
        epilog="examples:\n"
               "  mqsm_predict -i $nnUNet_raw/Dataset501_Phantom/imagesTs -o pred -d 501 -c 3d_fullres -f 0\n"
               "  mqsm_predict -i my_cohort -o pred -d 501 -f 0 1 2 3 4      # in-house subject folders\n"
               "  mqsm_predict -i my_cohort -o pred --pretrained -device cpu  # the shipped model, no training\n"
               "  mqsm_predict -i my_cohort -o pred -d 501 --field-units hz --b0 3\n"
               "field maps only (sub-001/field.nii.gz + mask.nii.gz; docs/qsm_only.md):\n"
               "  mqsm_predict -i my_fields -o qsm -d 501 -f 0                # any mQSM model: <case>_qsm.nii.gz\n"
               "  mqsm_convert -i my_fields -d 502 -n MyFields --qsm-only && mqsm_plan_and_preprocess -d 502 \\\n"
               "    && nnUNetv2_train 502 3d_fullres all -tr mQSMTrainer_QSM -p mQSMPlans   # train on them\n"
               "  mqsm_predict -i my_fields -o qsm -d 502 -f all -tr mQSMTrainer_QSM\n"
               "B0 direction: --b0-dir, else 'B0_dir' of a JSON sidecar (field.json, params.json), else the\n"
               "field map's orientation.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-i", dest="input_folder", required=True,
                        help="input folder: <case>_000X.nii.gz files, or in-house subject folders (t1.nii.gz, "
                             "field.nii.gz, mask.nii.gz; without t1.nii.gz: QSM only)")
    parser.add_argument("-o", dest="output_folder", required=True,
                        help="output folder (created; not the input folder or inside it)")
    parser.add_argument("-d", dest="dataset_id", help="dataset name or id the model was trained on (required unless "
                                                      "--pretrained)")
    parser.add_argument("--pretrained", action="store_true",
                        help="use the model that ships with the package (pretrained on the real-anatomy cohort: "
                             "FreeSurfer regions plus substantia nigra, red nucleus, dentate; 2 mm): no training, "
                             "no nnUNet_results; -d, -tr, -p, -c and -f are not used")
    parser.add_argument("-p", dest="plans", default=DEFAULT_PLANS, help=f"plans identifier (default: {DEFAULT_PLANS})")
    parser.add_argument("-tr", dest="trainer", default=DEFAULT_TRAINER,
                        help=f"trainer class (default: {DEFAULT_TRAINER})")
    parser.add_argument("-c", dest="configuration", default="3d_fullres", help="configuration (default: 3d_fullres)")
    parser.add_argument("-f", dest="folds", nargs="+", default=["0", "1", "2", "3", "4"],
                        help="folds to ensemble (default: 0 1 2 3 4; 'all' for fold_all)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding-window step as a patch fraction")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring test-time augmentation")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--save_probabilities", action="store_true", help="also export segmentation probabilities")
    parser.add_argument("--continue_prediction", action="store_true", help="skip cases whose outputs exist")
    parser.add_argument("-chk", dest="checkpoint_name", default="checkpoint_final.pth",
                        help="checkpoint name (default: checkpoint_final.pth)")
    parser.add_argument("-npp", type=int, default=2, help="preprocessing processes (default: 2)")
    parser.add_argument("-nps", type=int, default=2, help="segmentation export processes (default: 2)")
    parser.add_argument("-device", default="cuda", choices=("cuda", "cpu", "mps"),
                        help="device (default: cuda; use CUDA_VISIBLE_DEVICES to pick the GPU)")
    parser.add_argument("--disable_progress_bar", action="store_true")
    inhouse = parser.add_argument_group("in-house subject folders (as mqsm_convert)")
    inhouse.add_argument("--field-units", choices=("ppm", "hz", "rad"), default="ppm")
    inhouse.add_argument("--b0", type=float, default=None, help="field strength in tesla (hz/rad fields)")
    inhouse.add_argument("--te", type=float, default=None, help="echo time in seconds (rad fields)")
    inhouse.add_argument("--skip-field-size-check", action="store_true",
                         help="a field whose size does not fit its units only warns (as mqsm_convert)")
    inhouse.add_argument("--b0-dir", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                         help="B0 direction in voxel axes (default: 'B0_dir' of a JSON sidecar field.json or "
                              "params.json in the subject folder, else each field map's orientation)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0; 1 for a user error (one line); 2 for bad flags; 130 / 143 when interrupted."""
    return run_command(PROG, build_parser, run, argv)


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """(input, output) after the checks that need no model.

    Raises:
        FileNotFoundError / ValueError / PermissionError: a missing input, an output that is the input
            or inside it, an output that cannot be created.
    """
    from mqsm_nnunet.io.files import writable_folder

    if args.npp < 1 or args.nps < 1:
        raise UsageError(f"-npp and -nps must be at least 1; got {args.npp} and {args.nps}")
    input_dir = Path(args.input_folder)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: input folder not found (`input_folder`)")
    out_dir = Path(args.output_folder)
    inputs, outputs = input_dir.resolve(), out_dir.resolve()
    if outputs == inputs or inputs in outputs.parents:
        raise ValueError(f"{out_dir}: the output folder is the input folder {input_dir} or inside it; predictions "
                         "would be mixed with the inputs: choose another `output_folder`")
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"{out_dir}: exists and is not a folder; choose another `output_folder`")
    writable_folder(out_dir)
    return input_dir, out_dir


def run(args: argparse.Namespace) -> int:
    """Check everything, then predict; returns 0."""
    from mqsm_nnunet.io.nnunet_datasets import check_process_counts, resolve_dataset

    check_process_counts()
    if args.pretrained == (args.dataset_id is not None):
        raise UsageError("give either -d DATASET (a model you trained) or --pretrained (the shipped model)")
    if not args.pretrained and not os.environ.get("nnUNet_results"):
        raise ValueError("nnUNet_results is not set: export nnUNet_results=/path/to/nnUNet_results (where the "
                         "trained model is)")
    dataset = None if args.pretrained else resolve_dataset(args.dataset_id)
    input_dir, out_dir = _folders(args)

    from nnunetv2.utilities.file_path_utilities import get_output_folder

    bad_folds = [f for f in args.folds if f != "all" and not f.isdigit()]
    if bad_folds:
        raise UsageError(f"`folds` must be fold numbers or 'all'; got {' '.join(bad_folds)}")
    folds = [f if f == "all" else int(f) for f in args.folds]
    with tempfile.TemporaryDirectory(prefix="mqsm_pretrained_") as links:
        if args.pretrained:
            from mqsm_nnunet.pretrained import pretrained_model_folder

            folds, args.checkpoint_name = ["all"], "checkpoint_final.pth"
            model_folder = pretrained_model_folder(links)
        else:
            model_folder = Path(get_output_folder(dataset, args.trainer, args.plans, args.configuration))
        return _check_and_predict(args, model_folder, folds, input_dir, out_dir)


def _check_and_predict(args: argparse.Namespace, model_folder: Path, folds: list, input_dir: Path,
                       out_dir: Path) -> int:
    """Check the model and the inputs, then predict into `out_dir` (removed again on failure when new)."""
    import torch

    from mqsm_nnunet.predict.model_folder import check_model_folder
    from mqsm_nnunet.predict.staging import check_channel_files, is_inhouse_cohort, stage_inhouse_cohort

    dataset_json = check_model_folder(model_folder, folds, args.checkpoint_name)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda, but no CUDA GPU is available: pass -device cpu")
    inhouse = is_inhouse_cohort(input_dir)
    if not inhouse:
        check_channel_files(input_dir, dataset_json)

    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mqsm_predict_inputs_", dir=out_dir) as tmp:
            if inhouse:
                from mqsm_nnunet.conversion import ConversionOptions

                options = ConversionOptions(field_units=args.field_units, b0=args.b0, te=args.te,
                                            b0_dir=tuple(args.b0_dir) if args.b0_dir else None,
                                            skip_field_size_check=args.skip_field_size_check)
                print(f"{input_dir}: in-house subject folders; computing the network inputs (QSM-) first")
                input_dir = stage_inhouse_cohort(input_dir, Path(tmp), dataset_json, options)
            written = _predict(args, model_folder, folds, input_dir, out_dir)
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    print(f"wrote {written} to {out_dir}")
    return 0


def _predict(args: argparse.Namespace, model_folder: Path, folds: list, input_dir: Path, out_dir: Path) -> str:
    import torch

    from mqsm_nnunet.predict.predictor import mQSMPredictor
    from mqsm_nnunet.predict.folder import predict_folder

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    predictor = mQSMPredictor(tile_step_size=args.step_size, use_gaussian=True,
                              use_mirroring=not args.disable_tta, perform_everything_on_device=True,
                              device=device, verbose=args.verbose, verbose_preprocessing=args.verbose,
                              allow_tqdm=not args.disable_progress_bar)
    try:
        predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name=args.checkpoint_name)
    except (EOFError, pickle.UnpicklingError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{model_folder}: cannot load {args.checkpoint_name} of fold(s) "
                         f"{', '.join(map(str, folds))} ({reason}); a corrupted or unfinished checkpoint, or "
                         "another `trainer` / `plans` than it was trained with?") from None
    return predict_folder(predictor, input_dir, out_dir, save_probabilities=args.save_probabilities,
                          overwrite=not args.continue_prediction, num_processes_preprocessing=args.npp,
                          num_processes_segmentation_export=args.nps)


if __name__ == "__main__":
    sys.exit(main())
