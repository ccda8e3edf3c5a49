"""The learned QSM's network: a dipole inversion unrolled into data-consistency steps and small U-Nets.

The dipole field is non-local (a source moves the field across the whole brain), so a CNN that sees a
few centimetres cannot invert it; the dipole model can, by FFT. Each of the ``n_steps`` steps computes
the gradient of the data misfit ``1/2 ||M (D (M x) - f)||^2`` with the dipole convolution D (exact, on
a zero-padded grid) and hands it, with the current map, the field and the mask, to its own small U-Net,
whose output is added to the map (LPCNN/MoDL-style unrolling). The steps start from a classical map
(TV-ADMM with the rule's alpha, `learned_qsm.inference`): the last layer of every U-Net starts at zero, so an
untrained net returns its starting map exactly and training can only learn what that map gets wrong.

Scale: every map enters divided by the field's standard deviation in the mask and leaves multiplied by
it, so the net is blind to units and field strength (the inversion is linear).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mqsm_nnunet.physics import dipole_kernel, padded_shape

UNROLLED_PAD_FACTOR = 1.5
"""Zero-padding of the unrolled steps' FFTs: the maps live on the mask's box, whose sources all lie
inside, so 1.5 keeps the wrap-around small at half the cost of the usual 2."""


class DipoleOperator:
    """x (B, 1, *S) -> D * x on a zero-padded grid, cropped back; D real and even, so self-adjoint."""

    def __init__(self, shape: Sequence[int], voxel_size: Sequence[float], b0_dir: Sequence[float],
                 device: torch.device | str = "cpu", pad_factor: float = UNROLLED_PAD_FACTOR) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.padded = padded_shape(self.shape, pad_factor)
        kernel = dipole_kernel(self.padded, voxel_size, b0_dir, rfft=True)
        self.kernel = torch.from_numpy(kernel).to(device=device, dtype=torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfftn(x.float(), s=self.padded, dim=(2, 3, 4)) * self.kernel
        return torch.fft.irfftn(spectrum, s=self.padded, dim=(2, 3, 4))[..., :self.shape[0], :self.shape[1],
                                                                        :self.shape[2]]


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1)


class SmallUNet(nn.Module):
    """A three-level U-Net (width, 2 width, 4 width), one conv per level and side, LeakyReLU, no norm
    (the maps' amplitude is the information). Any input size: odd sizes are padded and cropped back."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        act = nn.LeakyReLU(0.01, inplace=True)
        self.enc0 = nn.Sequential(_conv(in_channels, width), act)
        self.enc1 = nn.Sequential(_conv(width, 2 * width, stride=2), act)
        self.enc2 = nn.Sequential(_conv(2 * width, 4 * width, stride=2), act, _conv(4 * width, 4 * width), act)
        self.up2 = nn.ConvTranspose3d(4 * width, 2 * width, 2, stride=2)
        self.dec1 = nn.Sequential(_conv(4 * width, 2 * width), act)
        self.up1 = nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.dec0 = nn.Sequential(_conv(2 * width, width), act)
        self.out = _conv(width, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        pad = [p for s in reversed(size) for p in (0, (-s) % 4)]
        x = F.pad(x, pad)
        e0 = self.enc0(x)
        e1 = self.enc1(e0)
        d1 = self.dec1(torch.cat([self.up2(self.enc2(e1)), e1], dim=1))
        d0 = self.dec0(torch.cat([self.up1(d1), e0], dim=1))
        return self.out(d0)[..., :size[0], :size[1], :size[2]]


class UnrolledQSMNet(nn.Module):
    """(field, mask, starting map, dipole operator) -> susceptibility map, all (B, 1, *S) in the field's units.

    Args:
        n_steps: data-consistency steps, each with its own U-Net.
        width: channels of the U-Nets' first level.
    """

    IN_CHANNELS = 5   # current map, misfit gradient, field, starting map, mask

    def __init__(self, n_steps: int = 3, width: int = 16) -> None:
        super().__init__()
        if n_steps < 1 or width < 1:
            raise ValueError(f"n_steps and width must be >= 1, got n_steps={n_steps}, width={width}")
        self.n_steps, self.width = int(n_steps), int(width)
        self.steps = nn.ModuleList(SmallUNet(self.IN_CHANNELS, width) for _ in range(n_steps))

    def sizes(self) -> dict[str, int]:
        return {"n_steps": self.n_steps, "width": self.width}

    def forward(self, field: torch.Tensor, mask: torch.Tensor, start: torch.Tensor,
                dipole: DipoleOperator) -> torch.Tensor:
        m = (mask > 0.5).to(field.dtype)
        scale = _masked_std(field, m).clamp(min=torch.finfo(field.dtype).tiny).view(-1, 1, 1, 1, 1)
        f, x0 = field * m / scale, start * m / scale
        x = x0
        for unet in self.steps:
            gradient = m * dipole(m * (dipole(m * x) - f))
            x = x + m * unet(torch.cat([x, gradient, f, x0, m], dim=1))
        return x * scale


def _masked_std(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    n = m.sum(dim=(1, 2, 3, 4)).clamp(min=1.0)
    mean = (x * m).sum(dim=(1, 2, 3, 4)) / n
    return torch.sqrt((((x - mean.view(-1, 1, 1, 1, 1)) * m) ** 2).sum(dim=(1, 2, 3, 4)) / n)
