"""`mqsm_phantom`: write a synthetic cohort in the in-house layout and/or its registration template."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mqsm_nnunet.phantom.cohort import write_cohort, write_template
from mqsm_nnunet.phantom.subject import (DEFAULT_CHI_VARIATION, DEFAULT_FIELD_NOISE, DEFAULT_SHAPE, DEFAULT_T1_NOISE,
                                         DEFAULT_VOXEL_SIZE, FIELD_SUPERSAMPLING, MAX_SUPERSAMPLED_VOXELS)


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_phantom`: write a synthetic cohort (in-house layout) and print its summary."""
    parser = argparse.ArgumentParser(
        prog="mqsm_phantom",
        description="Write a synthetic QSM cohort: per subject a T1, a local field map (ppm), a brain mask, "
                    "region labels and the true susceptibility (ppm), plus labels.json; and/or (--template) "
                    "the cohort's registration template. See docs/phantom.md.")
    parser.add_argument("-o", "--output", help="output folder (created; must be empty); required unless --template")
    parser.add_argument("-n", "--subjects", type=int, help="number of subjects (>= 1); required with -o")
    parser.add_argument("--template", metavar="DIR",
                        help="also (or, without -o, only) write the template: mean anatomy, its own folding, "
                             "literature chi, noise-free T1, axial grid of --shape/--voxel-size (t1, labels, mask, "
                             "chi .nii.gz + labels.json), a target for mqsm_register")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=list(DEFAULT_SHAPE),
                        help="grid size in voxels (default: %(default)s)")
    parser.add_argument("--voxel-size", type=float, nargs=3, metavar=("X", "Y", "Z"),
                        default=list(DEFAULT_VOXEL_SIZE), help="voxel size in mm (default: %(default)s)")
    parser.add_argument("--b0-dir", type=float, nargs=3, metavar=("X", "Y", "Z"), default=None,
                        help="B0 direction in voxel axes (default 0 0 1); written into the affine as an "
                             "oblique acquisition")
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=DEFAULT_FIELD_NOISE,
                        help="field noise sd as a fraction of the in-brain field sd (default: %(default)s)")
    parser.add_argument("--supersampling", type=int, default=None, metavar="N",
                        help=f"simulate chi and the field N times finer per axis and average them onto the grid "
                             f"(default: {FIELD_SUPERSAMPLING}, or 1 with a warning for grids whose finer version would "
                             f"exceed {MAX_SUPERSAMPLED_VOXELS:,} voxels; 1: the field is the grid's own discrete dipole "
                             "model of chi, exact for physics tests but an inverse crime for comparing inversions)")
    parser.add_argument("--t1-noise", type=float, default=DEFAULT_T1_NOISE,
                        help="T1 noise sigma as a fraction of white matter (default: %(default)s)")
    parser.add_argument("--chi-variation", type=float, default=DEFAULT_CHI_VARIATION,
                        help="per-subject relative sd of each region's susceptibility (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace labels.json and sub-* folders in a non-empty output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    args = parser.parse_args(argv)
    if args.template is None and (args.output is None or args.subjects is None):
        parser.error("-o/--output and -n/--subjects are required (or --template DIR to write only the template)")
    if (args.output is None) != (args.subjects is None):
        parser.error("-o/--output and -n/--subjects go together")
    try:
        if args.output is not None:
            summary = write_cohort(args.output, args.subjects, args.shape, args.voxel_size, args.b0_dir, args.seed,
                                   noise=args.noise, t1_noise=args.t1_noise, chi_variation=args.chi_variation,
                                   supersampling=args.supersampling,
                                   overwrite=args.overwrite, progress=not args.quiet)
            if not args.quiet:
                print(summary.report())
        if args.template is not None:
            folder = write_template(args.template, args.shape, args.voxel_size, args.seed, overwrite=args.overwrite)
            if not args.quiet:
                print(f"mqsm_phantom: template (mean anatomy, seed {args.seed}) in {folder}")
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
