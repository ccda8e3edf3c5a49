"""conversion.field_units: ppm, Hz and radians told apart by the robust half-range, at 1.5, 3 and 7 T."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mqsm_nnunet import physics
from mqsm_nnunet.conversion.field_units import PLAUSIBLE_PPM, TYPICAL_PPM, field_in_ppm, robust_half_range

MASK = np.ones(1000, dtype=bool)


def field_with_half_range(spread: float, offset: float = 0.0) -> np.ndarray:
    """12 voxels (1.2 %) at offset +- spread, the rest at the offset: the 99th percentile of
    |x - median| is `spread`."""
    values = np.full(1000, offset)
    values[:6], values[6:12] = offset + spread, offset - spread
    return values


def test_robust_half_range_ignores_the_offset_and_the_extreme_voxels():
    values = field_with_half_range(0.05, offset=0.3)
    values[0] = 100.0  # one vein-like outlier
    assert robust_half_range(values, MASK) == pytest.approx(0.05)


@pytest.mark.parametrize("spread", [0.011, 0.03, 0.059])
def test_a_typical_ppm_field_passes_silently(spread):
    ppm, warning = field_in_ppm(field_with_half_range(spread), MASK, "ppm", None, None)
    assert warning is None and ppm.dtype == np.float32


@pytest.mark.parametrize("b0", [1.5, 3.0, 7.0])
@pytest.mark.parametrize("spread", [1.1 * TYPICAL_PPM[0], 0.05, 0.95 * TYPICAL_PPM[1]])
def test_hz_read_as_ppm_and_ppm_read_as_hz_are_refused_at_every_field_strength(b0, spread):
    hz = physics.ppm_to_hz(field_with_half_range(spread), b0)
    with pytest.raises(ValueError, match="implausible"):
        field_in_ppm(hz, MASK, "ppm", None, None)
    with pytest.raises(ValueError, match="implausible"):
        field_in_ppm(field_with_half_range(spread), MASK, "hz", b0, None)
    ppm, warning = field_in_ppm(hz, MASK, "hz", b0, None)  # the right units
    assert warning is None and robust_half_range(ppm, MASK) == pytest.approx(spread, rel=1e-5)


@pytest.mark.parametrize("spread", [0.07, 0.007])
def test_borderline_sizes_warn_with_the_numbers(spread):
    _, warning = field_in_ppm(field_with_half_range(spread), MASK, "ppm", None, None)
    assert warning is not None and f"{spread:.3g} ppm" in warning and "at 1.5 T" in warning and "`field_units`" in warning


@pytest.mark.parametrize("spread", [PLAUSIBLE_PPM[0] / 2, PLAUSIBLE_PPM[1] * 2])
def test_outside_the_plausible_range_is_refused(spread):
    with pytest.raises(ValueError, match=f"{spread:.3g} ppm read as ppm"):
        field_in_ppm(field_with_half_range(spread), MASK, "ppm", None, None)


@pytest.mark.parametrize("b0", [3.0, 7.0])
@pytest.mark.parametrize("te", [0.005, 0.01, 0.02, 0.03, 0.04])
@pytest.mark.parametrize("spread", [0.019, 0.03, 0.06])
def test_a_local_phase_at_3_and_7_tesla_read_as_ppm_is_refused_over_the_usual_echo_times(b0, te, spread):
    """A tissue field of 0.019 ppm or more (the phantom's: 0.02-0.03) as radians, TE 5-40 ms, given as ppm."""
    phase = physics.ppm_to_phase(field_with_half_range(spread), te, b0)
    with pytest.raises(ValueError, match="implausible.*field_units` rad"):
        field_in_ppm(phase, MASK, "ppm", None, None)
    ppm, warning = field_in_ppm(phase, MASK, "rad", b0, te)
    assert warning is None and robust_half_range(ppm, MASK) == pytest.approx(spread, rel=1e-5)


def test_the_size_check_can_be_skipped_for_a_truly_unusual_field_but_not_the_wrapping_check():
    strong = field_with_half_range(0.15)  # ppm, e.g. a large hemorrhage
    with pytest.raises(ValueError, match="`skip_field_size_check`"):
        field_in_ppm(strong, MASK, "ppm", None, None)
    ppm, warning = field_in_ppm(strong, MASK, "ppm", None, None, check_size=False)
    assert "implausible" in warning and "converted anyway" in warning
    np.testing.assert_array_equal(ppm, strong.astype(np.float32))
    with pytest.raises(ValueError, match="wrapped phase"):
        field_in_ppm(np.linspace(-math.pi, math.pi, 1000), MASK, "ppm", None, None, check_size=False)


def test_radians_at_long_te_read_as_ppm_are_refused_and_converted_when_stated():
    phase = physics.ppm_to_phase(field_with_half_range(0.05), 0.02, 7.0)  # x37 rad per ppm
    with pytest.raises(ValueError, match="implausible"):
        field_in_ppm(phase, MASK, "ppm", None, None)
    ppm, warning = field_in_ppm(phase, MASK, "rad", 7.0, 0.02)
    assert warning is None and robust_half_range(ppm, MASK) == pytest.approx(0.05, rel=1e-5)


@pytest.mark.parametrize("units, b0, te", [("ppm", None, None), ("rad", 3.0, 0.02), ("hz", 3.0, None)])
def test_a_wrapped_phase_is_refused_whatever_the_units(units, b0, te):
    wrapped = np.linspace(-math.pi, math.pi, 1000)
    with pytest.raises(ValueError, match="wrapped phase"):
        field_in_ppm(wrapped, MASK, units, b0, te)
