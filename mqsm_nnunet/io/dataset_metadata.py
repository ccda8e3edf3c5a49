"""The channel roles of an mQSM dataset, and the `mqsm` block of its dataset.json that records them.

The one definition of which input channel is what: mqsm_convert writes the channels in this order
and records it; the trainer's loss, the predictor's QSM export, the planner and the benchmarks read
it. Keeping the reader here means one clear error for a dataset that was not made by mqsm_convert.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_CHANNELS = {"t1": 0, "field": 1, "qsm_minus": 2, "mask": 3}
"""Role -> image channel index (`_000X` file suffix) as mqsm_convert writes them."""

QSM_ONLY_CHANNELS = {"field": 0, "qsm_minus": 1, "mask": 2}
"""Role -> channel index of a dataset made from field maps alone (`mqsm_convert --qsm-only`): no T1.
Its dataset.json `mqsm` block says `"qsm_only": true`."""

CHANNEL_NORMALIZATION = {"t1": "zscore", "field": "noNorm", "qsm_minus": "noNorm", "mask": "noNorm"}
"""Role -> nnU-Net normalization scheme (dataset.json "channel_names" values): the T1 is z-scored,
the physical channels (ppm maps, the 0/1 mask) keep their values."""


def channel_layout(qsm_only: bool = False) -> dict[str, int]:
    """Role -> channel index that mqsm_convert writes (`QSM_ONLY_CHANNELS` with `qsm_only`)."""
    return dict(QSM_ONLY_CHANNELS if qsm_only else DEFAULT_CHANNELS)


def channel_names(qsm_only: bool = False) -> dict[str, str]:
    """dataset.json "channel_names": channel index (as a string) -> normalization scheme."""
    layout = channel_layout(qsm_only)
    return {str(index): CHANNEL_NORMALIZATION[role] for role, index in sorted(layout.items(),
                                                                             key=lambda item: item[1])}


@dataclass(frozen=True)
class MQSMChannels:
    """Indices of the input channels (nnU-Net channel order); `t1` is None for a dataset made from
    field maps alone (the reconstruction never reads the T1, only the segmentation does)."""

    t1: int | None = DEFAULT_CHANNELS["t1"]
    field: int = DEFAULT_CHANNELS["field"]
    qsm_minus: int = DEFAULT_CHANNELS["qsm_minus"]
    mask: int = DEFAULT_CHANNELS["mask"]

    @property
    def qsm_only(self) -> bool:
        """No T1 channel: QSM can be trained and predicted, segmentation cannot."""
        return self.t1 is None

    def layout(self) -> dict[str, int]:
        """Role -> channel index of the roles this dataset has, in channel order."""
        roles = {role: getattr(self, role) for role in DEFAULT_CHANNELS if getattr(self, role) is not None}
        return dict(sorted(roles.items(), key=lambda item: item[1]))

    @property
    def physical(self) -> tuple[int, ...]:
        """Channels holding measurements (ppm) or the mask: never intensity-augmented or normalized."""
        return tuple(sorted((self.field, self.qsm_minus, self.mask)))

    @classmethod
    def from_dataset_json(cls, dataset_json: dict) -> "MQSMChannels":
        """Read the channel roles; a dataset without the block gets a message saying how to make one.

        Raises:
            ValueError: no `mqsm` block, or its channels do not match `channel_names`.
        """
        block = dataset_json.get("mqsm")
        if not isinstance(block, dict) or "channels" not in block:
            raise ValueError(
                "dataset.json has no 'mqsm' block with the channel roles: this dataset was not made by "
                "mqsm_convert. Convert your subjects with `mqsm_convert -i COHORT -d ID -n NAME`."
            )
        qsm_only = bool(block.get("qsm_only", False))
        roles = channel_layout(qsm_only)
        channels = {k: int(v) for k, v in block["channels"].items() if k in DEFAULT_CHANNELS}
        missing = sorted(set(roles) - set(channels))
        if missing:
            raise ValueError(f"dataset.json 'mqsm.channels' lacks {missing}; re-run mqsm_convert")
        if qsm_only and "t1" in channels:
            raise ValueError("dataset.json 'mqsm' says qsm_only but its channels name a t1; re-run mqsm_convert")
        n_channels = len(dataset_json.get("channel_names", {}))
        if n_channels and max(channels.values()) >= n_channels:
            raise ValueError(
                f"dataset.json 'mqsm.channels' {channels} points past the {n_channels} channels in channel_names"
            )
        return cls(t1=None, **channels) if qsm_only else cls(**channels)


def qsm_minus_thresholds(dataset_json: dict) -> tuple[float, float]:
    """The TKD thresholds QSM- was computed with for this dataset (prediction must use the same).

    Raises:
        ValueError: no `mqsm` block or no `qsm_minus_thresholds` in it (no silent default: a model
            fed QSM- made with other thresholds sees inputs unlike its training data).
    """
    block = dataset_json.get("mqsm")
    values = block.get("qsm_minus_thresholds") if isinstance(block, dict) else None
    if not isinstance(values, list) or len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError("dataset.json 'mqsm.qsm_minus_thresholds' is missing or not two numbers: the QSM- "
                         "thresholds the model was trained with are unknown; re-run mqsm_convert (it records "
                         "them) or add them to the model's dataset.json")
    return float(values[0]), float(values[1])
