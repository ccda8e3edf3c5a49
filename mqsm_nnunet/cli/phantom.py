"""`mqsm_phantom`: write a synthetic cohort in the in-house layout and/or its registration template.

Real anatomy by default (the 16 embedded label maps, or the user's own with --anatomy); --geometric
keeps the ellipsoid phantom of the fast physics tests.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mqsm_nnunet.phantom.cohort import write_cohort, write_real_cohort, write_real_template, write_template
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.real_subject import DEFAULT_REAL_VOXEL_SIZE
from mqsm_nnunet.phantom.subject import (DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE, DEFAULT_T1_NOISE,
                                         DEFAULT_VOXEL_SIZE, FIELD_SUPERSAMPLING, MAX_SUPERSAMPLED_VOXELS)

EXAMPLES = """examples:
  mqsm_phantom -o cohort -n 12                      # 12 subjects from the 16 embedded real anatomies, 2 mm
  mqsm_phantom -o mine --anatomy my_asegs           # one subject per label map (aseg.mgz, SynthSeg .nii.gz)
  mqsm_phantom -o cohort -n 12 --template template  # and a registration template (an anatomy none of 12 uses)
  mqsm_phantom -o geo -n 8 --geometric --shape 64 64 48 --voxel-size 3 3 3   # the ellipsoid phantom
"""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqsm_phantom", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a synthetic QSM cohort: per subject a T1, a local field map (ppm), a brain mask, "
                    "region labels (FreeSurfer ids and names for real anatomy) and the true susceptibility (ppm), "
                    "plus labels.json; and/or (--template) a registration template. Subjects come from real "
                    "heads' label maps (16 ship with the package; SynthSeg's training maps, Apache-2.0) with "
                    "substantia nigra, red nucleus and dentate added. See docs/phantom.md.")
    parser.add_argument("-o", "--output", help="output folder (created; must be empty); required unless --template")
    parser.add_argument("-n", "--subjects", type=int,
                        help="number of subjects (>= 1) drawn from the embedded anatomies, randomly deformed "
                             "(the first 16 are 16 different brains); not with --anatomy")
    parser.add_argument("--anatomy", metavar="DIR",
                        help="your own label maps (.nii.gz, .nii or FreeSurfer .mgz with FreeSurfer aseg ids): one "
                             "subject per file, sub-<file name>, in the label map's own space, resampled to "
                             "--voxel-size, undeformed")
    parser.add_argument("--geometric", action="store_true",
                        help="the geometric (ellipsoid) phantom instead of real anatomy: fast, for physics tests")
    parser.add_argument("--template", dest="templates", action="append", metavar="DIR",
                        help="also (or, without -o, only) write a registration template (t1, labels, mask, chi "
                             ".nii.gz + labels.json), a target for mqsm_register: real anatomy: an embedded anatomy "
                             "the first 15 subjects never use, undeformed; given k times, k different anatomies "
                             "(atlases for multi-atlas registration; the first 16 - k subjects use none of them); "
                             "--geometric: the mean anatomy (once)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help=f"grid size in voxels. Real anatomy: centred on each brain (default: each subject's "
                             f"grid is its brain plus 6 mm); --geometric: default {list(DEFAULT_SHAPE)}")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help=f"voxel size in mm (default: {list(DEFAULT_REAL_VOXEL_SIZE)}; --geometric: "
                             f"{list(DEFAULT_VOXEL_SIZE)})")
    parser.add_argument("--b0-dir", type=float, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="B0 direction in voxel axes, written into the affine as an oblique acquisition "
                             "(default: real anatomy: world z of the label map's affine; --geometric: 0 0 1). With "
                             "--anatomy the affine stays the label map's and B0_dir goes to each field.json")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=DEFAULT_FIELD_NOISE,
                        help="field noise sd as a fraction of the in-brain field sd (default: %(default)s)")
    parser.add_argument("--background-residual", type=float, default=0.0, metavar="FRACTION",
                        help="real anatomy: add a residual background field (a random harmonic polynomial of degree "
                             "<= 2, as background-field removal leaves) of this root mean square, as a fraction of the "
                             "in-brain field sd (default: 0; e.g. 0.1)")
    parser.add_argument("--edge-phase", type=float, default=0.0, metavar="FRACTION",
                        help="real anatomy: add non-dipolar phase in the outer millimetres of the brain (a smooth "
                             "random field decaying over 4 mm from the mask's edge) of this root mean square, as a "
                             "fraction of the in-brain field sd (default: 0; e.g. 0.2). Both stress-test QSM methods "
                             "that trust data consistency (docs/phantom.md)")
    parser.add_argument("--supersampling", type=int, default=None, metavar="N",
                        help=f"--geometric only: simulate chi and the field N times finer per axis and average them "
                             f"onto the grid (default: {FIELD_SUPERSAMPLING}, or 1 with a warning for grids whose finer "
                             f"version would exceed {MAX_SUPERSAMPLED_VOXELS:,} voxels). Real anatomy always simulates "
                             "on a grid of about 1 mm")
    parser.add_argument("--t1-noise", type=float, default=DEFAULT_T1_NOISE,
                        help="T1 noise sigma as a fraction of white matter (default: %(default)s; real anatomy: "
                             "x 0.5-1.5 per subject)")
    parser.add_argument("--chi-variation", type=float, default=DEFAULT_CHI_VARIATION,
                        help="per-subject relative sd of each region's susceptibility (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace labels.json and sub-* folders in a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.output is None:
        if not args.templates:
            parser.error("-o/--output is required (or --template DIR to write only the template)")
        if args.subjects is not None or args.anatomy is not None:
            parser.error("-n/--subjects and --anatomy need -o/--output")
    elif args.geometric and args.subjects is None:
        parser.error("--geometric needs -n/--subjects")
    elif not args.geometric and (args.subjects is None) == (args.anatomy is None):
        parser.error("give either -n/--subjects (subjects from the embedded anatomies) or --anatomy DIR")
    if args.geometric and len(args.templates or ()) > 1:
        parser.error("--geometric has one template (the mean anatomy): give --template once")
    if args.geometric and args.anatomy is not None:
        parser.error("--anatomy is real anatomy; leave out --geometric")
    if args.geometric and (args.background_residual or args.edge_phase):
        parser.error("--background-residual and --edge-phase are for real anatomy; leave out --geometric")
    if not args.geometric and args.supersampling is not None:
        parser.error("--supersampling is for --geometric only (real anatomy always simulates on a ~1 mm grid)")


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_phantom`: write a synthetic cohort (in-house layout) and print its summary."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    levels = dict(noise=args.noise, t1_noise=args.t1_noise, chi_variation=args.chi_variation)
    try:
        if args.geometric:
            voxel_size, shape = args.voxel_size or DEFAULT_VOXEL_SIZE, args.shape or DEFAULT_SHAPE
            if args.output is not None:
                summary = write_cohort(args.output, args.subjects, shape, voxel_size, args.b0_dir, args.seed,
                                       supersampling=args.supersampling, overwrite=args.overwrite,
                                       progress=not args.quiet, **levels)
            def template(folder: str, _: int) -> Path:
                return write_template(folder, shape, voxel_size, args.seed, overwrite=args.overwrite)
        else:
            voxel_size = args.voxel_size or DEFAULT_REAL_VOXEL_SIZE
            if args.output is not None:
                summary = write_real_cohort(args.output, args.subjects, args.anatomy, voxel_size, args.b0_dir,
                                            args.shape, args.seed, overwrite=args.overwrite, progress=not args.quiet,
                                            imperfections=FieldImperfections(args.background_residual,
                                                                             args.edge_phase), **levels)
            def template(folder: str, number: int) -> Path:
                return write_real_template(folder, voxel_size, args.seed, shape=args.shape, overwrite=args.overwrite,
                                           from_last=number)
        if args.output is not None and not args.quiet:
            print(summary.report())
        for number, folder in enumerate(args.templates or (), 1):
            written = template(folder, number)
            if not args.quiet:
                print(f"mqsm_phantom: template (seed {args.seed}) in {written}")
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
