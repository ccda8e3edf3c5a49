"""Is a field map in the units the user stated? A plausibility check that holds at 1.5, 3 and 7 T.

The statistic is the field's robust half-range inside the brain mask, after conversion to ppm:
the 99th percentile of |field - median|. The median removes an offset (the mean of a local field is
not observable), the percentile ignores a few extreme voxels (veins, mask edges).

Why it separates the units (docs/conversion.md has the table):
- A local (tissue) field after background removal is a few hundredths of a ppm: its robust
  half-range is about 0.01-0.06 ppm (the phantom's: 0.02-0.03 ppm), `TYPICAL_PPM`. Above
  `PLAUSIBLE_PPM`'s 0.075 ppm the stated units are refused. Hemorrhage or strong calcification can
  pass that in ppm, so `check_size=False` (mqsm_convert --skip-field-size-check) lets such a map
  through with a warning; the wrapped-phase check stays.
- Hz = ppm * 42.58 * B0: x64 at 1.5 T, x128 at 3 T, x298 at 7 T. A Hz map read as ppm has a
  half-range of at least 0.01 * 64 = 0.64 "ppm", above 0.075; a ppm map read as Hz at most
  0.06 / 64 = 0.001 ppm, below the lower bound 0.005. Between the typical and the plausible range
  the conversion goes on with a warning that names the numbers.
- Radians = ppm * 2 pi * 42.58 * B0 * TE: the factor is 4.0 at 3 T and TE 5 ms, 16 at 20 ms, 32
  at 40 ms, so the local phase of a tissue field of 0.019 ppm or more, read as ppm, passes 0.075
  and is refused over the whole usual TE range (5-40 ms) at 3 T and 7 T. Size is the only cue
  (every reading is the same field up to a factor): a weak field at short TE and 1.5 T (factor 2.0
  at 5 ms) still looks like ppm; the docs say so.
- A wrapped phase is bounded by pi and spreads over [-pi, pi] (a local field peaks at 0): a map
  whose brain values stop at +-pi with a large share beyond pi/2 is refused whatever the units.
"""
from __future__ import annotations

import math

import numpy as np

from mqsm_nnunet import physics

ROBUST_PERCENTILE = 99.0
TYPICAL_PPM = (0.01, 0.06)
"""Robust half-range (ppm) of a local tissue field; outside it (but inside PLAUSIBLE_PPM): a warning."""
PLAUSIBLE_PPM = (0.005, 0.075)
"""Outside this robust half-range (ppm) the stated units are refused (unless the size check is off)."""
WRAPPED_SHARE = 0.25
"""Share of brain voxels beyond pi/2 above which a map bounded by pi reads as a wrapped phase
(uniform wrapped phase: 0.5; a local field peaked at 0: a few percent)."""
REPORTED_B0 = (1.5, 3.0, 7.0)


def robust_half_range(field: np.ndarray, mask: np.ndarray) -> float:
    """99th percentile of |field - median(field)| over the mask's voxels (units of `field`)."""
    values = np.asarray(field, dtype=np.float64)[mask]
    return float(np.percentile(np.abs(values - np.median(values)), ROBUST_PERCENTILE))


def _looks_wrapped(field: np.ndarray, mask: np.ndarray) -> str | None:
    values = np.abs(np.asarray(field, dtype=np.float64)[mask])
    peak = float(values.max())
    share = float(np.mean(values > math.pi / 2))
    if 0.9 * math.pi <= peak <= math.pi * (1 + 1e-3) and share >= WRAPPED_SHARE:
        return (f"its brain values stop at +-{peak:.3g} (pi = 3.14) with {share:.0%} beyond +-pi/2, like a wrapped "
                "phase; unwrap it and remove the background field, then convert the local field")
    return None


def _as_hz(spread_ppm: float) -> str:
    return ", ".join(f"{physics.hz_to_ppm(spread_ppm, b0):.2g} ppm at {b0:g} T" for b0 in REPORTED_B0)


def field_in_ppm(field: np.ndarray, mask: np.ndarray, units: str, b0: float | None, te: float | None,
                 check_size: bool = True) -> tuple[np.ndarray, str | None]:
    """The field in ppm (float32) and a warning for a borderline size (None if typical).

    `check_size=False` turns the refusal of an implausible size into a warning (for maps that are
    truly unusual: hemorrhage, calcification); a wrapped phase is refused either way.

    Raises:
        ValueError: a wrapped phase, or a robust half-range outside `PLAUSIBLE_PPM` after conversion;
            the message gives the numbers and what the data would be in the other units.
    """
    wrapped = _looks_wrapped(field, mask)
    if wrapped:
        raise ValueError(wrapped)
    if units == "hz":
        field = physics.hz_to_ppm(field, b0)
    elif units == "rad":
        field = physics.phase_to_ppm(field, te, b0)
    field = np.asarray(field, dtype=np.float32)
    spread = robust_half_range(field, mask)
    stated = "ppm" if units == "ppm" else f"Hz at {b0:g} T" if units == "hz" else f"radians at {b0:g} T, TE {te:g} s"
    measured = (f"the field's robust half-range in the brain mask ({ROBUST_PERCENTILE:g}th percentile of "
                f"|field - median|) is {spread:.3g} ppm read as {stated}")
    hint = {
        "ppm": f"if it is in Hz it would be {_as_hz(spread)}: give `field_units` hz and `b0`; if it is a phase in "
               "radians, `field_units` rad with `b0` and `te`",
        "hz": "check `b0`, or give the right `field_units` (ppm or rad)",
        "rad": "check `b0` and `te`, or give the right `field_units` (ppm or hz)",
    }[units]
    low, high = PLAUSIBLE_PPM
    if not low <= spread <= high:
        implausible = (f"implausible local field: {measured}, while a tissue field has {TYPICAL_PPM[0]:g} to "
                       f"{TYPICAL_PPM[1]:g} ppm (accepted: {low:g} to {high:g}); {hint}")
        if check_size:
            raise ValueError(f"{implausible}; if the units are right and the field is truly this size "
                             "(hemorrhage, calcification), give `skip_field_size_check`")
        return field, f"{implausible} (converted anyway: `skip_field_size_check`)"
    if not TYPICAL_PPM[0] <= spread <= TYPICAL_PPM[1]:
        return field, (f"{measured}, outside the {TYPICAL_PPM[0]:g} to {TYPICAL_PPM[1]:g} ppm of a tissue field "
                       f"(converted anyway); {hint}")
    return field, None
