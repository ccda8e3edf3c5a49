"""How long the short (CPU) trainer variants train: an entry of the plans, not an environment variable.

nnUNetv2_train has no flag for the length, and nnU-Net's way is that the plans plus the trainer's
class name determine a training. So the length of mQSMTrainer_tiny and the other short variants is
written into the configuration they train under, `mqsm_short_training` = {"epochs",
"iterations_per_epoch", "snapshot_every"}; nnU-Net copies the plans into the results folder, which
then records the length the model was trained for. `snapshot_every` > 0 also keeps
`checkpoint_epoch<E>.pth` every that many epochs (learning curves); `cpu_bf16` runs the networks'
forward pass under bfloat16 autocast when training on the CPU (the losses stay float32; a CPU with
AVX512-BF16 takes about half the time per step, docs/training.md); `initial_weights` names a
checkpoint to start from, segmentation outputs included (`initial_weights.py`). Without the entry the short
variants run `DEFAULT` (3 x 4 iterations). mQSMTrainer itself ignores the entry: it trains nnU-Net's
length (1000 x 250).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from mqsm_nnunet.io.files import write_text_atomic

PLANS_KEY = "mqsm_short_training"
RETIRED_VARIABLES = ("MQSM_TINY_EPOCHS", "MQSM_TINY_ITERATIONS", "MQSM_TINY_SNAPSHOT_EVERY")


@dataclass(frozen=True)
class ShortTraining:
    """Length of a short variant's training: epochs x iterations per epoch, snapshots every E epochs,
    whether the CPU forward pass runs in bfloat16, and the checkpoint it starts from (None: at random)."""

    epochs: int = 3
    iterations_per_epoch: int = 4
    snapshot_every: int = 0
    cpu_bf16: bool = False
    initial_weights: str | None = None

    def __post_init__(self):
        if not isinstance(self.cpu_bf16, bool):
            raise ValueError(f"`cpu_bf16` of the short training must be true or false, got {self.cpu_bf16!r}")
        if self.initial_weights is not None and not isinstance(self.initial_weights, str):
            raise ValueError(f"`initial_weights` of the short training must be a checkpoint path, got "
                             f"{self.initial_weights!r}")
        for name, value, least in (("epochs", self.epochs, 1), ("iterations_per_epoch", self.iterations_per_epoch, 1),
                                   ("snapshot_every", self.snapshot_every, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"`{name}` of the short training must be an integer >= {least}, got {value!r}")

    @classmethod
    def from_configuration(cls, configuration: dict) -> ShortTraining:
        """The entry of a (resolved) plans configuration, or DEFAULT where it has none."""
        entry = configuration.get(PLANS_KEY)
        if entry is None:
            return DEFAULT
        unknown = set(entry) - set(asdict(DEFAULT))
        if unknown:
            raise ValueError(f"plans entry '{PLANS_KEY}' has unknown keys {sorted(unknown)}; "
                             f"allowed: {sorted(asdict(DEFAULT))}")
        return cls(**entry)


DEFAULT = ShortTraining()


def check_no_retired_variables(environ: Mapping[str, str]) -> None:
    """Refuse the environment variables that set the length before it moved into the plans, rather
    than silently training another length than the user asked for.

    Raises:
        RuntimeError: one of `RETIRED_VARIABLES` is set.
    """
    found = [name for name in RETIRED_VARIABLES if name in environ]
    if found:
        raise RuntimeError(f"{', '.join(found)} no longer set(s) the short variants' length: it is the plans entry "
                           f"'{PLANS_KEY}' now; unset the variable(s) and call mqsm_nnunet.training.short_training."
                           "write_short_training(plans_file, ShortTraining(epochs, iterations, snapshot_every))")


def write_short_training(plans_file: str | os.PathLike, length: ShortTraining,
                         configuration: str = "3d_fullres") -> Path:
    """Record `length` in `configuration` of a preprocessed plans file (atomically), for the short
    variants trained under those plans next; returns the file.

    Raises:
        FileNotFoundError: no plans file (run mqsm_plan_and_preprocess first).
        ValueError: the plans have no such configuration.
    """
    plans_file = Path(plans_file)
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no plans file; run mqsm_plan_and_preprocess first")
    plans = json.loads(plans_file.read_text())
    if configuration not in plans.get("configurations", {}):
        raise ValueError(f"{plans_file}: no configuration '{configuration}' (has: "
                         f"{', '.join(plans.get('configurations', {}))})")
    plans["configurations"][configuration][PLANS_KEY] = asdict(length)
    return write_text_atomic(plans_file, json.dumps(plans, indent=4, sort_keys=False))
