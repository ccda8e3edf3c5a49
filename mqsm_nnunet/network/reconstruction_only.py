"""The network of QSM-only training (`mQSMTrainer_QSM`): mQSM's reconstruction net alone.

It takes all of a dataset's channels, as nnU-Net hands them over, reads only QSM- (the paper's
reconstruction never sees the T1) and returns the QSM. It is the architecture class written into
the plans of a dataset without a T1 (`mqsm_convert --qsm-only`, planned by `mQSMPlanner`), so the
planner's memory estimate is that of a full-resolution network, and nnU-Net's predictor builds it
from the plans like any other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from mqsm_nnunet.network import MQSMNet, ReconstructionNet
from mqsm_nnunet.network.reconstruction import PAPER_RECON_BLOCKS, PAPER_RECON_SKIP, PAPER_RECON_WIDTH

RECONSTRUCTION_ARCH_KEYS = ("qsm_minus_channel", "recon_width", "recon_blocks", "recon_skip_channels", "recon_dilations")
"""The keyword arguments this network takes from the plans' arch_kwargs (mQSMPlanner writes them)."""


class ReconstructionOnlyNet(nn.Module):
    """QSM- channel of x (B, input_channels, X, Y, Z) -> QSM (B, 1, X, Y, Z), ppm; any spatial size.

    Args:
        input_channels: channels of the dataset (nnU-Net passes them all).
        num_classes: nnU-Net's segmentation head count; unused (there is no segmentation).
        qsm_minus_channel: input channel index of QSM- (ppm).
        recon_width, recon_blocks, recon_skip_channels, recon_dilations: ReconstructionNet sizes (paper
            64, 6, 32, no dilation).
        deep_supervision: accepted because nnU-Net passes it; there are no deep-supervision outputs.

    Raises:
        ValueError: qsm_minus_channel is not an input channel.
    """

    initialize = staticmethod(MQSMNet.initialize)   # nnU-Net's He init, the output layer back to zero

    def __init__(self, input_channels: int, num_classes: int, qsm_minus_channel: int,
                 recon_width: int = PAPER_RECON_WIDTH, recon_blocks: int = PAPER_RECON_BLOCKS,
                 recon_skip_channels: int = PAPER_RECON_SKIP, recon_dilations: Sequence[int] = (1,),
                 deep_supervision: bool = False) -> None:
        super().__init__()
        if not 0 <= qsm_minus_channel < input_channels:
            raise ValueError(f"qsm_minus_channel {qsm_minus_channel} is not an input channel index in "
                             f"[0, {input_channels})")
        self.input_channels = int(input_channels)
        self.qsm_minus_channel = int(qsm_minus_channel)
        self.recon = ReconstructionNet(width=recon_width, n_blocks=recon_blocks, skip_channels=recon_skip_channels,
                                       dilations=recon_dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(f"expected input (B, {self.input_channels}, X, Y, Z), got {tuple(x.shape)}")
        return self.recon(x[:, self.qsm_minus_channel:self.qsm_minus_channel + 1])[0]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The QSM, under the name MQSMNet gives it (the predictor's QSM path calls this)."""
        return self(x)

    def reconstruction_parameters(self) -> list[nn.Parameter]:
        return list(self.recon.parameters())

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map elements for one sample, for nnU-Net's planner memory estimate."""
        return np.int64(self.recon.compute_conv_feature_map_size(input_size))
