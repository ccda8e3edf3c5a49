"""The mQSM multitask network (paper Fig. 1): QSM reconstruction + two-stream fusion U-Net.

Sized from nnU-Net plans exactly like dynamic_network_architectures' ``PlainConvUNet`` (same keyword
arguments, same deep-supervision outputs, ``decoder.deep_supervision`` switch and feature-map-size
estimate), plus the mQSM extras. Data flow for an input x holding all dataset channels:

    x[:, qsm_minus_channel] -> ReconstructionNet -> (QSM, recon skip)
    x[:, t1_channels]       -> T1 stem  -> T1 conv stack  --+-> fused by MutualTransformer at the
    recon skip (detached)   -> QSM stem -> QSM conv stack --+   fusion stages -> UNetDecoder -> logits

Design choices:
- The recon skip enters the segmentation net detached: the segmentation loss never trains the
  reconstruction net (paper), and the two sub-networks can be scheduled through separate optimizer
  parameter groups (``reconstruction_parameters`` / ``segmentation_parameters``).
- Streams: each stream opens with a stem conv at full resolution, then encoder stages up to and
  including the last fusion stage run one conv stack per stream, so T1 and QSM features stay apart
  until mTrans mixes them. mTrans adds its output to its input (residual), so each part of a fused map still leads with its own stream, which is what lets a second
  fusion stage (the reference used stages 3 and 4) see two streams again. Stages after the last fusion
  stage are plain convolutions: nothing downstream needs the streams separated. ``fusion='none'``
  keeps the same streams and omits the block, so the U-Net / U-Net+SA / U-Net+SA+MA ablations differ
  by the fusion block only.
- Stream widths: the paper's equal halves of each stage's width, whose concatenation is the stage
  width, so the decoder and its cost stay PlainConvUNet's.
- The decoder is dynamic_network_architectures' own ``UNetDecoder``, fed by an encoder that exposes
  the attributes it reads, so skips, upsampling and deep supervision match ``PlainConvUNet``.
"""
from __future__ import annotations

from typing import Sequence, Type

import numpy as np
import torch
from dynamic_network_architectures.building_blocks.helper import maybe_convert_scalar_to_list
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from dynamic_network_architectures.building_blocks.simple_conv_blocks import ConvDropoutNormReLU, StackedConvBlocks
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He
from torch import nn
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.dropout import _DropoutNd

from mqsm_nnunet.network.mtrans import ATTENTION_MODES, MutualTransformer
from mqsm_nnunet.network.reconstruction import (MAP_SCALE_PPM, PAPER_RECON_BLOCKS, PAPER_RECON_SKIP,
                                                PAPER_RECON_WIDTH, ReconstructionNet)

FUSION_MODES = ATTENTION_MODES + ("none", "input")
QSM_STREAM_INPUTS = ("skip", "map")


def _per_stage(value, n: int, name: str) -> list:
    """Expand a scalar plan entry to one per stage, or check a list has n entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{name} must have {n} entries (one per stage), got {len(value)}: {value}")
        return list(value)
    return [value] * n


def stream_split(stage_width: int, stage: int) -> tuple[int, int]:
    """(T1, QSM) channels of a two-stream stage: the paper's equal halves of an even stage width."""
    if stage_width % 2 or stage_width < 2:
        raise ValueError(f"features_per_stage[{stage}] = {stage_width} does not split into two equal streams "
                         "(an even width is needed)")
    return stage_width // 2, stage_width // 2


class TwoStreamEncoder(nn.Module):
    """Encoder over two streams; exposes the attributes ``UNetDecoder`` reads from an encoder
    (output_channels, strides, kernel_sizes, conv_op, conv_bias, norm_op(_kwargs), dropout_op(_kwargs),
    nonlin(_kwargs)). forward(t1, qsm_features) returns the skips, bottleneck last.

    Stages up to the last fusion stage run one conv stack per stream; each of their skips is the two
    streams concatenated (the stage width), so the decoder is always PlainConvUNet's."""

    def __init__(self, t1_channels: int, qsm_feature_channels: int, n_stages: int,
                 features_per_stage: list[int], conv_op: Type[_ConvNd], kernel_sizes: list,
                 strides: list, n_conv_per_stage: list[int], conv_bias: bool, norm_op, norm_op_kwargs,
                 dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, fusion: str,
                 fusion_stages: tuple[int, ...]) -> None:
        super().__init__()
        last_two_stream = max(fusion_stages)
        self.stream_channels = [stream_split(features_per_stage[s], s)
                                for s in range(last_two_stream + 1)]
        block_args = (conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs)
        t1_width, qsm_width = self.stream_channels[0]
        self.t1_stem = ConvDropoutNormReLU(conv_op, t1_channels, t1_width, kernel_sizes[0], 1, *block_args)
        self.qsm_stem = ConvDropoutNormReLU(conv_op, qsm_feature_channels, qsm_width, kernel_sizes[0], 1, *block_args)
        self.t1_stages, self.qsm_stages = nn.ModuleList(), nn.ModuleList()
        self.fusions = nn.ModuleDict()
        previous = self.stream_channels[0]
        for s, (t1_out, qsm_out) in enumerate(self.stream_channels):
            for stack, c_in, c_out in ((self.t1_stages, previous[0], t1_out), (self.qsm_stages, previous[1], qsm_out)):
                stack.append(StackedConvBlocks(n_conv_per_stage[s], conv_op, c_in, c_out, kernel_sizes[s],
                                               strides[s], *block_args))
            if fusion != "none" and s in fusion_stages:
                self.fusions[str(s)] = MutualTransformer(t1_out, qsm_out, attention=fusion)
            previous = (t1_out, qsm_out)
        self.stages = nn.ModuleList(
            StackedConvBlocks(n_conv_per_stage[s], conv_op, features_per_stage[s - 1], features_per_stage[s],
                              kernel_sizes[s], strides[s], *block_args)
            for s in range(last_two_stream + 1, n_stages))

        self.output_channels = list(features_per_stage)
        self.strides = [maybe_convert_scalar_to_list(conv_op, i) for i in strides]
        self.kernel_sizes = kernel_sizes
        self.conv_op = conv_op
        self.conv_bias = conv_bias
        self.norm_op = norm_op
        self.norm_op_kwargs = norm_op_kwargs
        self.dropout_op = dropout_op
        self.dropout_op_kwargs = dropout_op_kwargs
        self.nonlin = nonlin
        self.nonlin_kwargs = nonlin_kwargs

    def forward(self, t1: torch.Tensor, qsm_features: torch.Tensor) -> list[torch.Tensor]:
        t1_map, qsm_map = self.t1_stem(t1), self.qsm_stem(qsm_features)
        skips = []
        for s, (t1_stage, qsm_stage) in enumerate(zip(self.t1_stages, self.qsm_stages)):
            t1_map, qsm_map = t1_stage(t1_map), qsm_stage(qsm_map)
            if str(s) in self.fusions:
                both = self.fusions[str(s)](t1_map, qsm_map)
                t1_map, qsm_map = both.split(self.stream_channels[s], dim=1)
            else:
                both = torch.cat([t1_map, qsm_map], dim=1)
            skips.append(both)
        x = skips[-1]
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return skips

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Conv outputs (stems, both streams' stages, plain stages) plus the fusion blocks' maps, one
        sample."""
        size = [int(i) for i in input_size]
        output = np.int64(self.t1_stem.compute_conv_feature_map_size(size)
                          + self.qsm_stem.compute_conv_feature_map_size(size))
        for s in range(len(self.strides)):
            two_stream = s < len(self.t1_stages)
            stacks = (self.t1_stages[s], self.qsm_stages[s]) if two_stream else (self.stages[s - len(self.t1_stages)],)
            output += sum(stack.compute_conv_feature_map_size(size) for stack in stacks)
            size = [i // j for i, j in zip(size, self.strides[s])]
            if str(s) in self.fusions:
                output += self.fusions[str(s)].compute_conv_feature_map_size(size)
        return output


class MQSMNet(nn.Module):
    """mQSM multitask network: QSM reconstruction and brain-region segmentation (paper Fig. 1).

    Args (PlainConvUNet's, as written by nnU-Net plans): input_channels (all dataset channels),
        n_stages, features_per_stage, conv_op (must be a 3D conv), kernel_sizes, strides,
        n_conv_per_stage, num_classes, n_conv_per_stage_decoder, conv_bias, norm_op, norm_op_kwargs,
        dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs, deep_supervision.
    mQSM extras:
        t1_channels: input channel indices of the T1 stream.
        qsm_minus_channel: input channel index of QSM- (ppm), the reconstruction net's only input.
        recon_width, recon_blocks, recon_skip_channels, recon_dilations: ReconstructionNet sizes (paper
            64, 6, 32, no dilation); the
            reconstruction net's dropout is the paper's 0.2.
        fusion: 'mtrans' (paper), 'sa' (self-attention only), 'none' (plain two-stream U-Net) or
            'input' (no streams: PlainConvUNet's encoder over T1 and the QSM features concatenated).
        fusion_stages: encoder stage indices whose output is fused (-1 = bottleneck).
        qsm_stream_input: what the QSM stream reads from the reconstruction net, detached: 'skip' (the
            recon skip features, the paper's) or 'map' (the reconstructed QSM, in units of
            MAP_SCALE_PPM).

    Attributes:
        decoder.deep_supervision: nnU-Net's switch, as for PlainConvUNet.

    ``forward(x)`` returns the segmentation output only (a tensor, or the deep-supervision list,
    highest resolution first), as nnU-Net's predictor expects; ``forward(x, with_qsm=True)`` returns
    (segmentation output, QSM). Training goes through ``forward`` with keywords (not another method)
    so that DistributedDataParallel's hooks see the call.

    Raises:
        ValueError: conv_op not 3D, inconsistent per-stage lists, channel indices out of range or
            overlapping, unknown fusion, fusion stages out of range, an odd two-stream stage width.
    """

    def __init__(self, input_channels: int, n_stages: int, features_per_stage: int | Sequence[int],
                 conv_op: Type[_ConvNd], kernel_sizes: int | Sequence, strides: int | Sequence,
                 n_conv_per_stage: int | Sequence[int], num_classes: int,
                 n_conv_per_stage_decoder: int | Sequence[int], conv_bias: bool = False,
                 norm_op: Type[nn.Module] | None = None, norm_op_kwargs: dict | None = None,
                 dropout_op: Type[_DropoutNd] | None = None, dropout_op_kwargs: dict | None = None,
                 nonlin: Type[nn.Module] | None = None, nonlin_kwargs: dict | None = None,
                 deep_supervision: bool = False, t1_channels: Sequence[int] = (0,), qsm_minus_channel: int = 2,
                 recon_width: int = PAPER_RECON_WIDTH, recon_blocks: int = PAPER_RECON_BLOCKS,
                 recon_skip_channels: int = PAPER_RECON_SKIP,
                 recon_dilations: Sequence[int] = (1,),
                 fusion: str = "mtrans", fusion_stages: Sequence[int] = (-1,),
                 qsm_stream_input: str = "skip") -> None:
        super().__init__()
        if not (isinstance(conv_op, type) and issubclass(conv_op, nn.Conv3d)):
            raise ValueError(f"conv_op must be a 3D convolution (torch.nn.Conv3d), got {conv_op}: the dipole "
                             "physics is 3D; use the 3d_fullres configuration")
        if n_stages < 2:
            raise ValueError(f"n_stages must be >= 2 (a U-Net needs one downsampling), got {n_stages}")
        features = _per_stage(features_per_stage, n_stages, "features_per_stage")
        kernel_sizes = _per_stage(kernel_sizes, n_stages, "kernel_sizes")
        strides = _per_stage(strides, n_stages, "strides")
        n_conv = _per_stage(n_conv_per_stage, n_stages, "n_conv_per_stage")
        n_conv_decoder = _per_stage(n_conv_per_stage_decoder, n_stages - 1, "n_conv_per_stage_decoder")

        t1_channels = tuple(int(c) for c in t1_channels)
        if not t1_channels:
            raise ValueError("t1_channels must name at least one input channel")
        for name, idx in [("t1_channels", c) for c in t1_channels] + [("qsm_minus_channel", qsm_minus_channel)]:
            if not 0 <= idx < input_channels:
                raise ValueError(f"{name} entry {idx} is not an input channel index in [0, {input_channels})")
        if qsm_minus_channel in t1_channels:
            raise ValueError(f"qsm_minus_channel {qsm_minus_channel} is also listed in t1_channels {t1_channels}")
        if qsm_stream_input not in QSM_STREAM_INPUTS:
            raise ValueError(f"qsm_stream_input must be one of {QSM_STREAM_INPUTS}, got {qsm_stream_input!r}")
        if fusion not in FUSION_MODES:
            raise ValueError(f"fusion must be one of {FUSION_MODES}, got {fusion!r}")
        fusion_stages = tuple(int(s) for s in fusion_stages)
        if not fusion_stages:
            raise ValueError("fusion_stages must name at least one encoder stage (-1 = bottleneck)")
        for s in fusion_stages:
            if not -n_stages <= s < n_stages:
                raise ValueError(f"fusion_stages entry {s} is outside the {n_stages} encoder stages")
        normalized = tuple(sorted({s % n_stages for s in fusion_stages}))
        if len(normalized) != len(fusion_stages):
            raise ValueError(f"fusion_stages {fusion_stages} names a stage twice")

        self.input_channels = input_channels
        self.num_classes = num_classes
        self.t1_channels = t1_channels
        self.qsm_minus_channel = int(qsm_minus_channel)
        self.fusion = fusion
        self.fusion_stages = normalized
        self.qsm_stream_input = qsm_stream_input

        self.recon = ReconstructionNet(width=recon_width, n_blocks=recon_blocks, skip_channels=recon_skip_channels,
                                       dilations=recon_dilations)
        qsm_feature_channels = {"skip": recon_skip_channels, "map": 1}[qsm_stream_input]
        conv_args = (conv_bias, norm_op, norm_op_kwargs, dropout_op, dropout_op_kwargs, nonlin, nonlin_kwargs)
        if fusion == "input":   # one stream over T1 and the QSM features: PlainConvUNet's own encoder
            self.encoder = PlainConvEncoder(len(t1_channels) + qsm_feature_channels, n_stages, features, conv_op,
                                            kernel_sizes, strides, n_conv, *conv_args, return_skips=True)
        else:
            self.encoder = TwoStreamEncoder(len(t1_channels), qsm_feature_channels, n_stages, features, conv_op,
                                            kernel_sizes, strides, n_conv, *conv_args, fusion, normalized)
        self.decoder = UNetDecoder(self.encoder, num_classes, n_conv_decoder, deep_supervision)
        self._total_stride = [int(v) for v in np.prod(np.array(self.encoder.strides), axis=0)]

    def forward(self, x: torch.Tensor, with_qsm: bool = False, reconstruction_grad: bool = True):
        """x: (B, input_channels, X, Y, Z), each spatial size divisible by the total encoder stride.

        with_qsm: also return the QSM (B, 1, X, Y, Z), ppm. reconstruction_grad=False runs the
        reconstruction net without autograd (it is frozen): its backward, the costliest part of a
        step at full resolution, is skipped; the caller then owes its parameters a zero gradient
        (``zero_reconstruction_gradient``) if DDP is used.
        """
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(f"expected input (B, {self.input_channels}, X, Y, Z), got {tuple(x.shape)}")
        if any(s % t for s, t in zip(x.shape[2:], self._total_stride)):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by the total encoder stride "
                             f"{tuple(self._total_stride)}")
        with torch.set_grad_enabled(reconstruction_grad and torch.is_grad_enabled()):
            qsm, recon_skip = self.recon(x[:, self.qsm_minus_channel:self.qsm_minus_channel + 1])
        qsm_features = (recon_skip if self.qsm_stream_input == "skip" else qsm / MAP_SCALE_PPM).detach()
        t1 = x[:, list(self.t1_channels)]
        skips = self.encoder(torch.cat([t1, qsm_features], dim=1)) if self.fusion == "input" \
            else self.encoder(t1, qsm_features)
        seg = self.decoder(skips)
        return (seg, qsm) if with_qsm else seg

    def zero_reconstruction_gradient(self) -> torch.Tensor:
        """0 * (sum of the reconstruction parameters): added to a loss, it gives each of them a zero
        gradient at no cost, which DDP (without find_unused_parameters) needs at every step."""
        return sum(p.sum() for p in self.recon.parameters()) * 0.0

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """QSM (B, 1, X, Y, Z) in ppm from the full input (only its QSM- channel is read), without the
        segmentation branch; any spatial size (the reconstruction net never downsamples)."""
        if x.ndim != 5 or x.shape[1] != self.input_channels:
            raise ValueError(f"expected input (B, {self.input_channels}, X, Y, Z), got {tuple(x.shape)}")
        return self.recon(x[:, self.qsm_minus_channel:self.qsm_minus_channel + 1])[0]

    def reconstruction_parameters(self) -> list[nn.Parameter]:
        """Parameters of the reconstruction net (trained by the reconstruction loss only)."""
        return list(self.recon.parameters())

    def segmentation_parameters(self) -> list[nn.Parameter]:
        """All other parameters (stems, both streams, fusion, decoder); disjoint from the reconstruction's."""
        recon_ids = {id(p) for p in self.recon.parameters()}
        return [p for p in self.parameters() if id(p) not in recon_ids]

    def compute_conv_feature_map_size(self, input_size: Sequence[int]) -> np.int64:
        """Feature-map elements for one sample of spatial size input_size (x, y, z), for nnU-Net's
        planner VRAM estimate, counted like PlainConvUNet (every conv output) plus the reconstruction
        net at full resolution and the fusion blocks (including 2 N^2 attention weights per fusion stage,
        N = tokens at that stage, as materialized by SDPA's math backend; see MutualTransformer)."""
        if len(input_size) != 3:
            raise ValueError(f"input_size must be the 3 spatial sizes (x, y, z), got {input_size}")
        return (np.int64(self.recon.compute_conv_feature_map_size(input_size))
                + self.encoder.compute_conv_feature_map_size(input_size)
                + self.decoder.compute_conv_feature_map_size(input_size))

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's ``network.apply(network.initialize)`` hook: He init as for PlainConvUNet, then the
        reconstruction net's output layer back to zero (``apply`` visits children before parents)."""
        InitWeights_He(1e-2)(module)
        if isinstance(module, ReconstructionNet):
            module.zero_output_layer()
