"""`mqsm_register`: a template's labels carried to every subject of a cohort by registration (thin CLI
over `mqsm_nnunet.registration.ants`; docs/registration.md)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mqsm_nnunet.command import run_command

PROG = "mqsm_register"

EXAMPLE = """\
example:
  mqsm_phantom --template template                  # or your own: an MNI T1 + an atlas in its space
  mqsm_register -i cohort --template template -o registered --method affine syn
  mqsm_phantom --template t1 --template t2 --template t3  # three atlases (anatomies a cohort of 13 never uses)
  mqsm_register -i cohort --template t1 --template t2 --template t3 -o multi --method syn   # fused by majority
  mqsm_register -i cohort --template t1 --template t2 --template t3 -o jlf --method syn --fusion joint
  mqsm_iron --qsm pred --seg registered/syn --labels cohort/labels.json -o iron_syn
writes OUT/<method>/<case>.nii.gz (labels on the grid of each subject's field map) and
OUT/<method>/registration.json (parameters, seed, seconds per case).
"""


def build_parser() -> argparse.ArgumentParser:
    from mqsm_nnunet.registration.ants import DEFAULT_METHODS, DEFAULT_SEED, METHODS

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLE,
        description="Register a template T1 to each subject's T1 (ANTs) and carry the template's labels onto "
                    "the subject's own grid (nearest-label resampling; the QSM is never resampled): the "
                    "registration-based comparison arm of the paper's Table 2.")
    parser.add_argument("-i", "--input", dest="cohort", required=True, metavar="COHORT",
                        help="cohort folder: one subfolder per subject with t1.nii.gz and field.nii.gz")
    parser.add_argument("--template", dest="templates", action="append", required=True, metavar="DIR",
                        help="template folder with t1.nii.gz and labels.nii.gz (optionally labels.json and mask.nii.gz, "
                             "its brain mask); give "
                             "it several times for multi-atlas registration: every template registered to every "
                             "subject, the carried labels fused by majority vote")
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--method", dest="methods", nargs="+", choices=sorted(METHODS), default=list(DEFAULT_METHODS),
                        metavar="METHOD", help="registration methods: " + "; ".join(
                            f"{m.name}: {m.description}" for m in METHODS.values())
                        + f" (default: {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="only these subjects (default: all)")
    parser.add_argument("--labels", metavar="JSON|LUT", help="the cohort's labels table: labels JSON, dataset.json or "
                        "FreeSurferColorLUT-style table; the template's label map must use its ids (default: "
                        "COHORT/labels.json)")
    parser.add_argument("--t1-name", default="t1.nii.gz", metavar="FILE",
                        help="T1 in each subject folder (default: t1.nii.gz)")
    parser.add_argument("--grid-name", default="field.nii.gz", metavar="FILE",
                        help="image in each subject folder whose grid the labels are written on: the QSM's grid "
                             "(default: field.nii.gz)")
    parser.add_argument("--fusion", choices=("majority", "joint"), default="majority",
                        help="with several templates: majority vote, or joint label fusion (antsJointFusion: atlases "
                             "weighted voxel by voxel by how alike their warped T1 looks to the subject's; stronger, "
                             "docs/registration.md) (default: majority)")
    parser.add_argument("--mask-name", default="mask.nii.gz", metavar="FILE",
                        help="brain mask in each subject folder: where the templates have mask.nii.gz too, brains "
                             "are registered, not heads (T1 x mask on both sides; default: mask.nii.gz)")
    parser.add_argument("--whole-head", action="store_true",
                        help="register the whole T1s, scalp and skull included (no brain extraction)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"ANTs random seed (default: {DEFAULT_SEED})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing OUT/<method> folders")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    return parser


def _register(args: argparse.Namespace) -> int:
    from mqsm_nnunet.registration.cohort import register_cohort

    report = register_cohort(args.cohort, args.templates, args.out_dir, args.methods, cases=args.cases,
                             labels=args.labels, t1_name=args.t1_name, grid_name=args.grid_name,
                             mask_name=None if args.whole_head else args.mask_name, seed=args.seed,
                             overwrite=args.overwrite, progress=not args.quiet, fusion=args.fusion)
    if not args.quiet:
        for method, files in report.files.items():
            fused = (f", {len(report.templates)} templates fused by "
                     f"{'joint label fusion' if args.fusion == 'joint' else 'majority vote'}"
                     if len(report.templates) > 1 else "")
            print(f"{PROG}: {method}: {len(files)} label maps in {report.out_dir / method} "
                  f"({report.seconds_per_subject(method):.1f} s per subject{fused})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`mqsm_register`: 0 done, 1 data error (one line on stderr), 2 bad flags."""
    return run_command(PROG, build_parser, _register, argv)


if __name__ == "__main__":
    sys.exit(main())
