"""Bring a QSM map from nnU-Net's preprocessed space back to the case's native grid and write it.

nnU-Net's own export turns logits into labels; a QSM map is a float image, so it takes the same
three steps back (resample to the original spacing, undo the crop, undo the axis transpose) with
nnU-Net's own primitives, and is then written with the exact geometry SimpleITK read from the
input (spacing, origin, direction), as floats in ppm, zero outside the brain mask. The
data-consistency refinement runs there, on the native grid, where the field and B0 are as measured.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from mqsm_nnunet.files import atomic_file
from mqsm_nnunet.prediction.refinement import Refinement


def maps_to_native(maps: list[np.ndarray | torch.Tensor], mask: np.ndarray | torch.Tensor, properties: dict,
                   configuration_manager: ConfigurationManager,
                   plans_manager: PlansManager) -> tuple[list[np.ndarray], np.ndarray]:
    """Float maps on nnU-Net's preprocessed (cropped, transposed, resampled) grid -> native grid in
    SimpleITK (z, y, x) order: (the maps, each 0 outside the brain mask; the boolean mask).

    Args:
        maps: (X', Y', Z') maps (the QSM, the field) on the preprocessed grid, in ppm.
        mask: the brain-mask channel on the same grid (values in [0, 1]).
        properties: the case's nnU-Net properties (spacing, crop box, shapes, sitk geometry).
    """
    stacked = torch.stack([torch.as_tensor(m, dtype=torch.float32) for m in (*maps, mask)])
    spacing_transposed = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    current_spacing = configuration_manager.spacing
    resampled = configuration_manager.resampling_fn_probabilities(
        stacked, properties["shape_after_cropping_and_before_resampling"], current_spacing, spacing_transposed)
    resampled = np.asarray(resampled.cpu().numpy() if isinstance(resampled, torch.Tensor) else resampled)

    def to_full(volume: np.ndarray) -> np.ndarray:
        full = np.zeros(properties["shape_before_cropping"], dtype=np.float32)
        full = insert_crop_into_image(full, volume.astype(np.float32), properties["bbox_used_for_cropping"])
        return np.ascontiguousarray(full.transpose(plans_manager.transpose_backward))

    inside = to_full((resampled[-1] > 0.5).astype(np.float32)) > 0.5
    return [np.where(inside, to_full(volume), 0.0).astype(np.float32) for volume in resampled[:-1]], inside


def qsm_to_native(qsm: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor, properties: dict,
                  configuration_manager: ConfigurationManager, plans_manager: PlansManager) -> np.ndarray:
    """QSM (ppm) on the preprocessed grid -> native grid in SimpleITK (z, y, x) order, masked."""
    (native,), _ = maps_to_native([qsm], mask, properties, configuration_manager, plans_manager)
    return native


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
               out_file: str | os.PathLike, refinement: Refinement | None = None) -> Path:
    """Write `<case>_qsm.nii.gz` next to the segmentation: the network's QSM on the native grid, made
    consistent with the measured field first when a `refinement` is given (`refinement.py`)."""
    if refinement is None or refinement.iterations == 0 and refinement.network_file is None:
        return write_native_float(qsm_to_native(qsm, mask, properties, configuration_manager, plans_manager),
                                  properties, out_file)
    (network_qsm, field), inside = maps_to_native([qsm, refinement.field], mask, properties,
                                                  configuration_manager, plans_manager)
    if refinement.network_file is not None:
        write_native_float(network_qsm, properties, refinement.network_file)
    refined = refinement.apply(network_qsm, field, inside, properties["sitk_stuff"]["spacing"])
    return write_native_float(refined, properties, out_file)
