"""What a conversion is told: file names inside a subject folder, field units, B0, TE, QSM- thresholds.

Checked on construction; errors name the parameter in backticks (`b0`), which `mqsm_convert` and
`mqsm_predict` print as their flag (`--b0`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


from mqsm_nnunet.command import MQSMWarning
from mqsm_nnunet.physics import unit_b0_direction

FIELD_UNITS = ("ppm", "hz", "rad")
FILE_ROLES = ("t1", "field", "mask", "labels", "chi")


class ConversionWarning(MQSMWarning):
    """Something was changed or looks doubtful, but the dataset is still valid (resampling, remapping)."""


@dataclass(frozen=True)
class FileNames:
    """File names (paths relative to a subject folder) of each input."""

    t1: str = "t1.nii.gz"
    field: str = "field.nii.gz"
    mask: str = "mask.nii.gz"
    labels: str = "labels.nii.gz"
    chi: str = "chi.nii.gz"

    def __post_init__(self) -> None:
        for role in FILE_ROLES:
            name = getattr(self, role)
            if not name or Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"`{role}_name` must be a file name inside each subject folder; got {name!r}")


@dataclass(frozen=True)
class ConversionOptions:
    """How to read the field map and compute QSM-; `qsm_only`: a dataset from field maps and masks
    alone (no T1, no labels; the brain mask is the label map), for `mQSMTrainer_QSM`;
    `skip_field_size_check`: an implausible field size only warns (`field_units.field_in_ppm`)."""

    field_units: str = "ppm"
    b0: float | None = None
    te: float | None = None
    b0_dir: tuple[float, float, float] | None = None
    thresholds: tuple[float, float] = (0.1, 0.2)
    file_names: FileNames = FileNames()
    qsm_only: bool = False
    skip_field_size_check: bool = False

    def __post_init__(self) -> None:
        if self.field_units not in FIELD_UNITS:
            raise ValueError(f"`field_units` must be one of {', '.join(FIELD_UNITS)}; got {self.field_units!r}")
        for name, value, unit in (("b0", self.b0, "tesla"), ("te", self.te, "seconds")):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"`{name}` must be a positive number in {unit}; got {value!r}")
        if self.field_units in ("hz", "rad") and self.b0 is None:
            raise ValueError(f"`field_units` {self.field_units} needs the field strength: give `b0` in tesla (e.g. 3)")
        if self.field_units == "rad" and self.te is None:
            raise ValueError("`field_units` rad needs the echo time of the phase: give `te` in seconds (e.g. 0.02)")
        if self.b0_dir is not None:
            object.__setattr__(self, "b0_dir", unit_b0_direction(self.b0_dir, "`b0_dir`"))
        if len(self.thresholds) != 2 or not all(math.isfinite(t) and 0 < t <= 1 for t in self.thresholds):
            raise ValueError(f"`thresholds` must be two TKD thresholds in (0, 1]; got {self.thresholds!r}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))

    def unused_arguments(self) -> list[str]:
        """Arguments that were given but do not enter the conversion (likely a wrong `field_units`)."""
        unused = []
        if self.te is not None and self.field_units != "rad":
            unused.append(f"`te` is ignored for `field_units` {self.field_units}")
        if self.b0 is not None and self.field_units == "ppm":
            unused.append("`b0` is only recorded (not used) for `field_units` ppm")
        return unused
