"""Tests of protect_physical_channels on real batchgeneratorsv2 transforms and nnU-Net's own pipeline.

Input: a (4, 24, 24, 24) image, T1 then field, QSM-, mask, each channel c = 1000 c + (c + 1) (i + 2j + 4k),
and a random-label segmentation. The ramp makes every mirror visible (flipping any set of axes changes
some voxel by at least 23), the offsets 1000 c name each channel, and every value is an integer held
exactly in float32, so copies and flips compare with torch.equal. The mirror axes a run drew are read
off the segmentation, which intensity transforms never touch.
"""
import itertools

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from mqsm_nnunet.training.augmentation import PARKING_KEY, protect_physical_channels

SHAPE = (24, 24, 24)
N_CHANNELS = 4
PHYSICAL = (1, 2, 3)  # field, QSM-, mask
ALL_AXES = (0, 1, 2)
SEEDS = range(12)


def _image() -> torch.Tensor:
    i, j, k = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in SHAPE], indexing="ij")
    ramp = i + 2 * j + 4 * k
    return torch.stack([1000.0 * c + (c + 1) * ramp for c in range(N_CHANNELS)])


def _segmentation() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 5, (1, *SHAPE), generator=generator).to(torch.int16)


def _flip(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Flip spatial axes of a (C, X, Y, Z) tensor, as MirrorTransform does."""
    return torch.flip(x, [a + 1 for a in axes]) if axes else x


def _axis_subsets() -> list[tuple[int, ...]]:
    return [s for r in range(4) for s in itertools.combinations(ALL_AXES, r)]


def _mirror_axes(seg_out: torch.Tensor, seg_in: torch.Tensor) -> tuple[int, ...]:
    """The one set of axes whose flip maps seg_in onto seg_out."""
    matches = [axes for axes in _axis_subsets() if torch.equal(_flip(seg_in, axes), seg_out)]
    assert len(matches) == 1, f"segmentation matches mirrors {matches}"
    return matches[0]


def _run(pipeline, image: torch.Tensor, seg: torch.Tensor, seed: int) -> dict:
    """One pass on copies (some transforms work in place); SpatialTransform draws from numpy, the rest
    from torch."""
    np.random.seed(seed)
    torch.manual_seed(seed)
    return pipeline(image=image.clone(), segmentation=seg.clone())


def _stock_pipeline(do_dummy_2d: bool, use_mask_for_norm, spatial_off: bool = True) -> ComposeTransforms:
    """nnU-Net's training pipeline for the 24^3 patch; spatial_off: rotation and scaling never drawn, so
    the spatial transform is an exact (identity) centre crop and mirroring is the only spatial change."""
    pipeline = nnUNetTrainer.get_training_transforms(
        patch_size=SHAPE, rotation_for_DA=(-np.pi, np.pi), deep_supervision_scales=None, mirror_axes=ALL_AXES,
        do_dummy_2d_data_aug=do_dummy_2d, use_mask_for_norm=use_mask_for_norm, is_cascaded=False,
        foreground_labels=(1, 2, 3, 4), regions=None, ignore_label=None)
    if spatial_off:
        spatial = next(t for t in pipeline.transforms if isinstance(t, SpatialTransform))
        spatial.p_rotation = 0.0
        spatial.p_scaling = 0.0
    return pipeline


def _identity_spatial() -> SpatialTransform:
    """Centre crop of the whole 24^3 volume: no resampling."""
    return SpatialTransform(SHAPE, patch_center_dist_from_border=0, random_crop=False)


@pytest.mark.parametrize("do_dummy_2d, use_mask_for_norm", [
    (False, None), (True, None), (False, [True, False, False, False])])
def test_stock_pipeline_keeps_physical_channels_exact_and_augments_t1(do_dummy_2d, use_mask_for_norm):
    image, seg = _image(), _segmentation()
    pipeline = protect_physical_channels(_stock_pipeline(do_dummy_2d, use_mask_for_norm), PHYSICAL, N_CHANNELS)
    t1_changed, mirrors = 0, set()
    for seed in SEEDS:
        out = _run(pipeline, image, seg, seed)
        assert PARKING_KEY not in out
        assert out["image"].shape == (N_CHANNELS, *SHAPE)
        axes = _mirror_axes(out["segmentation"], seg)
        mirrors.add(axes)
        # field, QSM-, mask: bit-identical to the input under the same mirror as the segmentation
        assert torch.equal(out["image"][1:], _flip(image[1:], axes))
        t1_changed += not torch.equal(out["image"][:1], _flip(image[:1], axes))
    assert t1_changed >= 1, "no intensity transform reached the T1 in any run"
    assert len(mirrors) >= 2, "the runs never drew different mirrors"


def test_unprotected_stock_pipeline_does_change_physical_channels():
    """Control: without protection the same runs alter the physical channels, so the test above can fail."""
    image, seg = _image(), _segmentation()
    pipeline = _stock_pipeline(False, None)
    altered = 0
    for seed in SEEDS:
        out = _run(pipeline, image, seg, seed)
        axes = _mirror_axes(out["segmentation"], seg)
        altered += not torch.equal(out["image"][1:], _flip(image[1:], axes))
    assert altered >= 1


@pytest.mark.parametrize("physical", [(1, 2, 3), (3, 1, 2)])
def test_forced_noise_hits_t1_only_and_channel_order_is_kept(physical):
    image, seg = _image(), _segmentation()
    noise = GaussianNoiseTransform(noise_variance=(0.05, 0.1), p_per_channel=1, synchronize_channels=True)
    pipeline = protect_physical_channels(ComposeTransforms([
        _identity_spatial(),
        RandomTransform(noise, apply_probability=1),
        MirrorTransform(allowed_axes=ALL_AXES),
        RemoveLabelTansform(-1, 0),
    ]), physical, N_CHANNELS)
    for seed in SEEDS:
        out = _run(pipeline, image, seg, seed)
        axes = _mirror_axes(out["segmentation"], seg)
        result = out["image"]
        # order T1, field, QSM-, mask: each channel's mean sits at its own offset 1000 c (ramp mean <= 322)
        assert [round(float(result[c].mean()) / 1000) for c in range(N_CHANNELS)] == [0, 1, 2, 3]
        assert torch.equal(result[1:], _flip(image[1:], axes))
        t1 = _flip(image[:1], axes)
        assert not torch.equal(result[:1], t1), "noise at probability 1 left the T1 untouched"
        # the noise is small (std <= 0.32): the T1 carries the same mirror as the other channels, and no
        # other mirror of the ramp (which moves some voxel by >= 23) comes near it
        assert (result[:1] - t1).abs().max() < 3
        for other in set(_axis_subsets()) - {axes}:
            assert (result[:1] - _flip(image[:1], other)).abs().max() > 10


def test_random_rotation_scaling_and_mirror_act_on_parked_channels_as_on_unparked_ones():
    """Park and unpark draw no random numbers, so with the same seed a protected pipeline without intensity
    transforms must reproduce the plain one bit for bit, for every channel and the segmentation."""
    image, seg = _image(), _segmentation()

    def pipeline():
        return ComposeTransforms([
            SpatialTransform(SHAPE, patch_center_dist_from_border=0, random_crop=False, p_rotation=1,
                             rotation=(-np.pi, np.pi), p_scaling=1, scaling=(0.7, 1.4),
                             border_mode_seg="constant", padding_value_seg=-1),
            MirrorTransform(allowed_axes=ALL_AXES),
            RemoveLabelTansform(-1, 0),
        ])

    plain, protected = pipeline(), protect_physical_channels(pipeline(), PHYSICAL, N_CHANNELS)
    for seed in range(4):
        expected = _run(plain, image, seg, seed)
        got = _run(protected, image, seg, seed)
        assert torch.equal(got["image"], expected["image"])
        assert torch.equal(got["segmentation"], expected["segmentation"])
        assert not torch.equal(got["image"][1:], image[1:]), "the spatial transform did not move the channels"


def test_fixed_rotation_reaches_physical_channels_through_the_stock_intensity_stage():
    """A deterministic rotation + scaling inside nnU-Net's pipeline: the physical channels come out as the
    spatial transform alone makes them, then flipped with the segmentation's mirror."""
    image, seg = _image(), _segmentation()
    stock = _stock_pipeline(False, None, spatial_off=False)
    spatial = next(t for t in stock.transforms if isinstance(t, SpatialTransform))
    spatial.p_rotation, spatial.rotation = 1.0, (0.5, 0.5)
    spatial.p_scaling, spatial.scaling = 1.0, (1.2, 1.2)
    reference = spatial(image=image.clone(), segmentation=seg.clone())
    reference_seg = RemoveLabelTansform(-1, 0)(segmentation=reference["segmentation"])["segmentation"]
    assert not torch.equal(reference["image"], image)

    pipeline = protect_physical_channels(stock, PHYSICAL, N_CHANNELS)
    for seed in SEEDS[:6]:
        out = _run(pipeline, image, seg, seed)
        axes = _mirror_axes(out["segmentation"], reference_seg)
        assert torch.equal(out["image"][1:], _flip(reference["image"][1:], axes))


@pytest.mark.parametrize("physical, n_channels", [((0, 1, 2), 4), ((1, 2), 4), ((1, 2, 3), 5), ((2, 3, 4), 4)])
def test_non_trailing_physical_channels_are_rejected(physical, n_channels):
    with pytest.raises(ValueError, match="must be the last"):
        protect_physical_channels(_stock_pipeline(False, None), physical, n_channels)


def test_pipeline_without_spatial_transform_is_rejected():
    pipeline = ComposeTransforms([MirrorTransform(allowed_axes=ALL_AXES), RemoveLabelTansform(-1, 0)])
    with pytest.raises(ValueError, match="SpatialTransform"):
        protect_physical_channels(pipeline, PHYSICAL, N_CHANNELS)


def test_no_physical_channels_leaves_the_pipeline_alone():
    pipeline = _stock_pipeline(False, None)
    assert protect_physical_channels(pipeline, (), N_CHANNELS) is pipeline
