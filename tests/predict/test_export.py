"""predict.export: a QSM map on nnU-Net's preprocessed grid back to the case's native grid, the three
steps of nnU-Net's own export undone by hand on a known case (fast: no model, no nnU-Net run)."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from mqsm_nnunet.predict.export import qsm_to_native, write_native_float

NATIVE_ZYX = (10, 12, 14)       # SimpleITK order, as nnU-Net reads a case
TRANSPOSE = [2, 0, 1]
TRANSPOSED = tuple(NATIVE_ZYX[a] for a in TRANSPOSE)   # (14, 10, 12): nnU-Net transposes before cropping
BBOX = [[3, 12], [2, 8], [1, 11]]  # nnU-Net's crop to the nonzero region, in the transposed frame


def plans(spacing: list[float]) -> PlansManager:
    configuration = {"data_identifier": "x", "preprocessor_name": "DefaultPreprocessor", "batch_size": 1,
                     "patch_size": [8, 8, 8], "median_image_size_in_voxels": [8, 8, 8], "spacing": spacing,
                     "normalization_schemes": ["NoNormalization"], "use_mask_for_norm": [False],
                     "resampling_fn_data": "resample_data_or_seg_to_shape",
                     "resampling_fn_seg": "resample_data_or_seg_to_shape",
                     "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                     "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                     "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                     "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                            "force_separate_z": None},
                     "batch_dice": False, "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                           "_kw_requires_import": []}}
    return PlansManager({"dataset_name": "Dataset001_X", "plans_name": "p", "original_median_spacing_after_transp": spacing,
                         "original_median_shape_after_transp": [8, 8, 8], "image_reader_writer": "SimpleITKIO",
                         "transpose_forward": TRANSPOSE, "transpose_backward": list(np.argsort(TRANSPOSE)),
                         "configurations": {"3d_fullres": configuration}, "experiment_planner_used": "x",
                         "label_manager": "LabelManager", "foreground_intensity_properties_per_channel": {}})


def properties(spacing_zyx: list[float]) -> dict:
    cropped = [b - a for a, b in BBOX]
    return {"spacing": spacing_zyx, "shape_before_cropping": list(TRANSPOSED), "bbox_used_for_cropping": BBOX,
            "shape_after_cropping_and_before_resampling": cropped,
            "sitk_stuff": {"spacing": tuple(spacing_zyx[::-1]), "origin": (1.0, -2.0, 3.0),
                           "direction": (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)}}


def preprocessed(native: np.ndarray) -> np.ndarray:
    """What nnU-Net's preprocessing does to a channel before resampling: transpose, then crop."""
    return native.transpose(TRANSPOSE)[tuple(slice(a, b) for a, b in BBOX)]


def crop_region() -> tuple[slice, ...]:
    """The crop box in native (SimpleITK) order."""
    backward = np.argsort(TRANSPOSE)
    return tuple(slice(*BBOX[b]) for b in backward)


def test_crop_and_transpose_are_undone_and_the_outside_of_the_mask_is_zero():
    rng = np.random.default_rng(0)
    native = rng.normal(0.0, 0.05, NATIVE_ZYX).astype(np.float32)
    mask = np.zeros(NATIVE_ZYX, np.float32)
    mask[3:7, 2:10, 4:11] = 1   # inside the crop region
    spacing_zyx = [1.0, 1.0, 1.0]
    manager = plans(spacing_zyx)
    back = qsm_to_native(preprocessed(native), preprocessed(mask), properties(spacing_zyx),
                         manager.get_configuration("3d_fullres"), manager)
    assert back.shape == NATIVE_ZYX
    np.testing.assert_allclose(back, native * mask, atol=1e-6)


def test_resampled_maps_come_back_on_the_native_grid_and_keep_their_values():
    """A smooth map preprocessed at twice the voxel size comes back at the native size, close to itself."""
    z, y, x = np.meshgrid(*[np.linspace(0, 1, n) for n in NATIVE_ZYX], indexing="ij")
    native = (0.1 * np.sin(2 * z) + 0.05 * y - 0.02 * x).astype(np.float32)
    mask = np.ones(NATIVE_ZYX, np.float32)
    spacing_zyx = [1.0, 1.0, 1.0]
    manager = plans([2.0, 2.0, 2.0])   # the preprocessed (transposed) spacing
    coarse_shape = [n // 2 for n in preprocessed(native).shape]
    from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
    coarse = resample_data_or_seg_to_shape(np.stack([preprocessed(native), preprocessed(mask)]), coarse_shape,
                                           [1.0] * 3, [2.0] * 3, is_seg=False, order=1, order_z=0)
    back = qsm_to_native(coarse[0], coarse[1], properties(spacing_zyx), manager.get_configuration("3d_fullres"),
                         manager)
    inside = crop_region()
    outside = np.ones(NATIVE_ZYX, bool)
    outside[inside] = False
    assert back.shape == NATIVE_ZYX and not back[outside].any()   # outside the crop: zero
    interior = tuple(slice(r.start + 1, r.stop - 1) for r in inside)   # linear resampling blurs the crop's rim
    np.testing.assert_allclose(back[interior], native[interior], atol=0.01)


def test_the_written_map_carries_the_case_geometry(tmp_path):
    spacing_zyx = [1.0, 1.5, 2.0]
    array = np.arange(np.prod(NATIVE_ZYX), dtype=np.float32).reshape(NATIVE_ZYX) / 1000
    out = write_native_float(array, properties(spacing_zyx), tmp_path / "sub-001_qsm.nii.gz")
    image = sitk.ReadImage(str(out))
    assert image.GetSpacing() == (2.0, 1.5, 1.0) and image.GetOrigin() == (1.0, -2.0, 3.0)
    assert image.GetPixelID() == sitk.sitkFloat32
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), array)
    assert [p.name for p in tmp_path.iterdir()] == ["sub-001_qsm.nii.gz"]   # no partial file left
