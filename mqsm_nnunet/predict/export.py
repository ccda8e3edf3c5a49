"""Bring a QSM map from nnU-Net's preprocessed space back to the case's native grid and write it.

nnU-Net's own export turns logits into labels; a QSM map is a float image, so it takes the same
three steps back (resample to the original spacing, undo the crop, undo the axis transpose) with
nnU-Net's own primitives, and is then written with the exact geometry SimpleITK read from the
input (spacing, origin, direction), as floats in ppm, zero outside the brain mask.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mqsm_nnunet.io.files import atomic_file


def qsm_to_native(qsm: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, properties: dict,
                  configuration_manager: ConfigurationManager, plans_manager: PlansManager) -> np.ndarray:
    """QSM (ppm) on the preprocessed grid -> native grid in SimpleITK (z, y, x) order, masked.

    Args:
        qsm: (X', Y', Z') map on nnU-Net's preprocessed (cropped, transposed, resampled) grid.
        mask: the brain-mask channel on the same grid (values in [0, 1]).
        properties: the case's nnU-Net properties (spacing, crop box, shapes, sitk geometry).
    """
    stacked = torch.stack([torch.as_tensor(qsm, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)])
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current_spacing = configuration_manager.spacing
    resampled = configuration_manager.resampling_fn_probabilities(
        stacked, properties["shape_after_cropping_and_before_resampling"], current_spacing, spacing_transposed)
    resampled = np.asarray(resampled.cpu().numpy() if isinstance(resampled, torch.Tensor) else resampled)
    native_qsm = resampled[0] * (resampled[1] > 0.5)
    full = np.zeros(properties["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, native_qsm.astype(np.float32), properties["bbox_used_for_cropping"])
    return np.ascontiguousarray(full.transpose(plans_manager.transpose_backward))


def write_native_float(array_zyx: np.ndarray, properties: dict, out_file: str | os.PathLike) -> Path:
    """Write a float32 map with the geometry nnU-Net's reader recorded for the case (atomic)."""
    out_file = Path(out_file)
    image = sitk.GetImageFromArray(array_zyx.astype(np.float32, copy=False))
    geometry = properties["sitk_stuff"]
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    if "original_orientation" in geometry:  # SimpleITKIOWithReorient datasets
        image = sitk.DICOMOrient(image, geometry["original_orientation"])
    with atomic_file(out_file) as tmp:
        sitk.WriteImage(image, str(tmp), True)
    return out_file


def export_qsm(qsm: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, properties: dict,
               configuration_manager: ConfigurationManager, plans_manager: PlansManager,
               out_file: str | os.PathLike) -> Path:
    """qsm_to_native + write_native_float: `<case>_qsm.nii.gz` next to the segmentation."""
    native = qsm_to_native(qsm, mask, properties, configuration_manager, plans_manager)
    return write_native_float(native, properties, out_file)
