"""QSM reconstruction sub-network of mQSM (paper Fig. 1, upper branch).

A full-resolution residual CNN that refines the initial QSM (QSM-, paper Eq. 3) into the QSM. It sees
QSM- only (no T1), so a trained model reconstructs QSM from the field map alone (paper Sec. 3.2).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

MAP_SCALE_PPM = 0.1
"""Order of magnitude of brain susceptibility contrast (ppm): the reconstruction net's internal unit."""


def _conv3(in_channels: int, out_channels: int, dilation: int = 1) -> nn.Conv3d:
    """3x3x3 convolution with 'same' padding: the reconstruction never changes resolution."""
    return nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=dilation, dilation=dilation,
                     bias=True)


class ResidualBlock(nn.Module):
    """conv -> IN -> LeakyReLU -> Dropout3d -> conv -> IN -> (+ input) -> LeakyReLU, constant width."""

    def __init__(self, channels: int, dropout: float, dilations: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = _conv3(channels, channels, dilations[0])
        self.norm1 = nn.InstanceNorm3d(channels, eps=1e-5, affine=True)
        self.dropout = nn.Dropout3d(p=dropout)
        self.conv2 = _conv3(channels, channels, dilations[1])
        self.norm2 = nn.InstanceNorm3d(channels, eps=1e-5, affine=True)
        self.nonlin = nn.LeakyReLU(negative_slope=0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.nonlin(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(self.dropout(y)))
        return self.nonlin(y + x)


PAPER_RECON_WIDTH, PAPER_RECON_BLOCKS, PAPER_RECON_SKIP = 64, 6, 32
"""The paper's reconstruction net (Fig. 1, reference code): 64-channel trunk, 6 residual blocks, a
32-channel recon skip; every default and the planner's plans take them from here."""


class ReconstructionNet(nn.Module):
    """QSM- (B, 1, *S) -> (QSM (B, 1, *S), recon skip (B, skip_channels, *S)), maps in ppm.

    Layout (paper Fig. 1): conv 1->skip_channels, conv skip_channels->width, ``n_blocks`` residual blocks
    of ``width`` channels, conv width->skip_channels (the "recon skip" feature the segmentation net's
    QSM stream starts from), conv skip_channels->1. The paper's sizes are the defaults; width and depth
    are parameters because this full-resolution net dominates the training cost.

    Output: QSM = QSM- + MAP_SCALE_PPM * out_conv(skip), the trunk seeing QSM- / MAP_SCALE_PPM.
    Tissue susceptibilities are a few hundredths of a ppm while He-initialized convolutions work at
    order 1: the fixed scale keeps both ends of the net at order 1. ``out_conv`` starts at zero
    (``zero_output_layer``, applied by ``MQSMNet.initialize`` after nnU-Net's He init), so an
    untrained net returns QSM- exactly, while the gradient reaches ``out_conv`` from the first step
    and every trunk weight from the second. (An earlier form gated the residual with a scalar that
    started at 0: every trunk gradient was proportional to that scalar, so only it moved and the
    trunk never trained.) The paper's net emits the QSM directly; this residual form spans the same
    maps but a briefly trained net returns QSM- instead of He-initialized noise of order 1 ppm.

    Args:
        width: channels of the residual trunk (paper: 64).
        n_blocks: number of residual blocks (paper: 6).
        skip_channels: channels of the first conv and of the recon skip (paper: 32).
        dropout: Dropout3d probability inside each block (paper: 0.2).
        dilations: dilation of the block convolutions in turn, cycled (paper: (1,), none). The dipole
            inversion is non-local; with few, narrow blocks (the CPU variants) dilations (1, 2, 4, 8)
            widen the receptive field from 13 to 35 voxels at the same cost.

    Raises:
        ValueError: for a non-positive width, skip_channels, negative n_blocks or dropout outside [0, 1).
    """

    def __init__(self, width: int = PAPER_RECON_WIDTH, n_blocks: int = PAPER_RECON_BLOCKS,
                 skip_channels: int = PAPER_RECON_SKIP, dropout: float = 0.2,
                 dilations: Sequence[int] = (1,)) -> None:
        super().__init__()
        if width < 1 or skip_channels < 1:
            raise ValueError(f"width and skip_channels must be >= 1, got width={width}, "
                             f"skip_channels={skip_channels}")
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        dilations = tuple(int(d) for d in dilations)
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations must be positive integers, got {dilations}")
        self.width = width
        self.n_blocks = n_blocks
        self.skip_channels = skip_channels
        self.in_conv = nn.Sequential(_conv3(1, skip_channels), _conv3(skip_channels, width))
        cycle = [dilations[i % len(dilations)] for i in range(2 * n_blocks)]
        self.blocks = nn.Sequential(*[ResidualBlock(width, dropout, (cycle[2 * b], cycle[2 * b + 1]))
                                      for b in range(n_blocks)])
        self.skip_conv = _conv3(width, skip_channels)
        self.out_conv = _conv3(skip_channels, 1)
        self.zero_output_layer()

    def zero_output_layer(self) -> None:
        """Zero the last convolution: the net then returns QSM- until training moves it."""
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    def forward(self, qsm_minus: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if qsm_minus.ndim != 5 or qsm_minus.shape[1] != 1:
            raise ValueError(f"qsm_minus must have shape (B, 1, X, Y, Z), got {tuple(qsm_minus.shape)}")
        skip = self.skip_conv(self.blocks(self.in_conv(qsm_minus / MAP_SCALE_PPM)))
        return qsm_minus + MAP_SCALE_PPM * self.out_conv(skip), skip

    def compute_conv_feature_map_size(self, input_size: tuple[int, ...]) -> int:
        """Voxels of all conv outputs for one sample, the quantity PlainConvUNet reports to the planner."""
        n_vox = 1
        for s in input_size:
            n_vox *= int(s)
        channels = self.skip_channels + self.width + 2 * self.n_blocks * self.width + self.skip_channels + 1
        return channels * n_vox
