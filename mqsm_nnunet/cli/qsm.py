"""`mqsm_qsm`: QSM from local field maps with the shipped learned net, no training (thin CLI over
`mqsm_nnunet.learned_qsm.cohort`; docs/qsm_only.md)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mqsm_nnunet.command import run_command

PROG = "mqsm_qsm"

EXAMPLE = """\
examples:
  mqsm_qsm -i my_fields -o qsm                     # sub-001/field.nii.gz + mask.nii.gz -> qsm/sub-001_qsm.nii.gz
  mqsm_qsm -i my_fields -o qsm --field-units hz --b0 3
  mqsm_qsm -i my_fields -o qsm --finetune 100      # adapt the net to these fields first (guarded)
  mqsm_qsm -i $nnUNet_raw/Dataset501_Phantom/imagesTs -o qsm --b0-dir 0 0 1
B0 direction: --b0-dir, else 'B0_dir' of a JSON sidecar (field.json, params.json), else the field
map's orientation (world z). How the net was trained and how it compares: docs/qsm_only.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        description="Susceptibility maps from local field maps (background field removed) with the learned QSM "
                    "shipped in the package: TV-ADMM with a data-driven alpha, refined by an unrolled network "
                    "(dipole data-consistency steps and small U-Nets) pretrained on simulated real-anatomy "
                    "subjects with known susceptibility. Writes <case>_qsm.nii.gz (ppm, the field map's grid, 0 "
                    "outside the mask) and qsm.json.")
    parser.add_argument("-i", dest="input_folder", required=True, metavar="FIELDS",
                        help="subject folders (field.nii.gz + mask.nii.gz each), or nnU-Net style files as "
                             "mqsm_convert writes them")
    parser.add_argument("-o", dest="output_folder", required=True, metavar="OUT", help="output folder (created)")
    parser.add_argument("--b0-dir", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        help="B0 direction in voxel axes (i, j, k), for every case")
    parser.add_argument("--field-units", choices=("ppm", "hz", "rad"), default="ppm",
                        help="units of the field maps: ppm (default), hz (needs --b0), rad (needs --b0 and --te)")
    parser.add_argument("--b0", type=float, metavar="T", help="field strength in tesla")
    parser.add_argument("--te", type=float, metavar="S", help="echo time in seconds (for --field-units rad)")
    parser.add_argument("--finetune", type=int, default=0, metavar="N",
                        help="adapt the net to these field maps for N self-supervised steps first (data consistency "
                             "anchored to the pretrained maps; a case whose fine-tuned map grows streaks keeps its "
                             "pretrained one); on simulated fields it moved the error by under a point either way, "
                             "so it is off by default (default: 0)")
    parser.add_argument("--weights", default=None, metavar="DIR",
                        help="folder with weights.pt (default: the net shipped in the package)")
    parser.add_argument("-device", "--device", dest="device", default="cpu", choices=("cpu", "cuda"),
                        help="device (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _qsm(args: argparse.Namespace) -> int:
    from mqsm_nnunet.learned_qsm.cohort import reconstruct_folder
    from mqsm_nnunet.learned_qsm.inference import PRETRAINED_DIR

    report = reconstruct_folder(args.input_folder, args.output_folder, b0_dir=args.b0_dir,
                                field_units=args.field_units, b0=args.b0, te=args.te, finetune=args.finetune,
                                weights=args.weights or PRETRAINED_DIR, device=args.device,
                                overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        print(f"{PROG}: {len(report['cases'])} QSM maps in {args.output_folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_qsm`: 0 done, 1 data error (one line on stderr), 2 bad flags."""
    return run_command(PROG, build_parser, _qsm, argv)


if __name__ == "__main__":
    sys.exit(main())
