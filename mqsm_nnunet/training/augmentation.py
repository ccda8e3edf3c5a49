"""Augmentation that keeps physical channels physical.

nnU-Net's training pipeline applies intensity transforms (noise, blur, brightness, contrast,
low resolution, gamma) to every image channel. The local field, QSM- and the brain mask are
measurements in ppm (or a binary mask): scaling or blurring them would teach the network wrong
physics. We therefore take the stock pipeline unchanged and park the physical channels under the
`regression_target` key right after the spatial transform (so they are rotated, scaled and cropped
exactly like the T1), and move them back after the intensity transforms and mirroring, before
the label clean-up (batchgeneratorsv2's SpatialTransform and MirrorTransform both transform
`regression_target`, so parked channels still follow every spatial change).
"""
from __future__ import annotations

from typing import Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import ImageOnlyTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.move_channels import MoveChannelsTransform
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform

PARKING_KEY = "regression_target"
N_COORDINATE_CHANNELS = 3


class AppendVoxelCoordinates(ImageOnlyTransform):
    """Appends 3 channels holding each voxel's index along the 3 axes, counted from 1 (0 = outside).

    Put first in the pipeline (and shielded like the physical channels), these channels come out of
    the spatial transform and mirroring holding, for each patch voxel, the position it was sampled
    from: a linear function of the patch position, x_source = A x_patch + t, from which the trainer
    reads A (rotation, scaling, flips) and turns B0 into the patch's own voxel frame. Trilinear
    interpolation reproduces a linear function exactly, so A is exact wherever the patch lies inside
    the sampled data.
    """

    def _apply_to_image(self, img: torch.Tensor, **params) -> torch.Tensor:
        if img.ndim != 4:
            raise ValueError(f"expected a 3D image (C, X, Y, Z), got shape {tuple(img.shape)}")
        axes = [torch.arange(1, n + 1, dtype=img.dtype) for n in img.shape[1:]]
        grids = torch.meshgrid(*axes, indexing="ij")
        return torch.cat([img, torch.stack(grids)], dim=0)


def with_voxel_coordinates(pipeline: ComposeTransforms) -> ComposeTransforms:
    """`pipeline` with `AppendVoxelCoordinates` in front (the coordinates become the last 3 channels)."""
    return ComposeTransforms([AppendVoxelCoordinates(), *pipeline.transforms])


def protect_physical_channels(pipeline: ComposeTransforms, physical_channels: Sequence[int],
                              n_channels: int) -> ComposeTransforms:
    """Return `pipeline` with `physical_channels` shielded from every non-spatial transform.

    Args:
        pipeline: nnU-Net's training transforms (spatial transform, possibly inside the pseudo-2D
            conversion, then intensity transforms and mirroring, then mask/label clean-up).
        physical_channels: indices of the channels that must keep their values; they must be the
            last channels of the image (the conversion writes them last), so that moving them back
            restores the original channel order.
        n_channels: total number of image channels.

    When every channel is physical (a dataset of field maps alone), nothing may be intensity-augmented
    and parking them all would leave no image: the transforms between the two are left out instead.

    Raises:
        ValueError: the physical channels are not the trailing channels, or the pipeline lacks the
            SpatialTransform or the label clean-up that bracket the intensity transforms.
    """
    physical = tuple(sorted(int(c) for c in physical_channels))
    if not physical:
        return pipeline
    if physical != tuple(range(n_channels - len(physical), n_channels)):
        raise ValueError(
            f"physical channels {physical} must be the last of {n_channels} channels; "
            "convert the dataset with mqsm_convert, which writes T1 first"
        )
    transforms = list(pipeline.transforms)
    spatial_at = _index_of(transforms, SpatialTransform)
    # With pseudo-2D augmentation the spatial transform is followed by the 2D->3D conversion.
    if spatial_at + 1 < len(transforms) and isinstance(transforms[spatial_at + 1], Convert2DTo3DTransform):
        spatial_at += 1
    # Intensity transforms and mirroring sit between the spatial transform and the label clean-up.
    cleanup_at = _index_of(transforms, (MaskImageTransform, RemoveLabelTansform))
    if len(physical) == n_channels:
        return ComposeTransforms(transforms[:spatial_at + 1] + transforms[cleanup_at:])
    park = MoveChannelsTransform(physical, source_key="image", target_key=PARKING_KEY)
    unpark = MoveChannelsTransform(tuple(range(len(physical))), source_key=PARKING_KEY, target_key="image")
    transforms.insert(cleanup_at, unpark)
    transforms.insert(spatial_at + 1, park)
    return ComposeTransforms(transforms)


def _index_of(transforms: list, kind: type | tuple[type, ...]) -> int:
    for i, t in enumerate(transforms):
        if isinstance(t, kind):
            return i
    raise ValueError(f"the nnU-Net training pipeline has no {kind}; cannot place the physical channels")
