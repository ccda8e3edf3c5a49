"""The data-consistency refinement of the predicted QSM: axis order, B0 source, and its effect."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from test_baselines import B0_DIR, VOXEL_SIZE, phantom  # noqa: F401  (phantom: the shared fixture)

from mqsm_nnunet import baselines, metrics, physics
from mqsm_nnunet.prediction.refinement import Refinement, case_b0


def test_refinement_on_simpleitk_arrays_equals_support_cg_in_voxel_order(phantom):
    """mqsm_predict refines on SimpleITK (z, y, x) arrays with SimpleITK's (x, y, z) spacing; with an
    oblique B0 and anisotropic voxels, any axis mix-up would change the result (and it is solved in
    voxel order, so it equals the inversion on the files exactly)."""
    chi, mask, field = phantom
    start = baselines.qsm_minus(field, VOXEL_SIZE, B0_DIR, mask)
    zyx = (2, 1, 0)
    refinement = Refinement(field=np.zeros(1), b0_ijk=B0_DIR, iterations=30)
    refined_zyx = refinement.apply(start.transpose(zyx), field.transpose(zyx), mask.transpose(zyx), VOXEL_SIZE)
    expected = baselines.support_cg(field, VOXEL_SIZE, B0_DIR, mask, iterations=30, start=start)
    np.testing.assert_allclose(refined_zyx.transpose(zyx), expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert metrics.nrmse(expected, chi, mask) < metrics.nrmse(start, chi, mask)
    unchanged = Refinement(field=np.zeros(1), b0_ijk=(0.0, 0.0, 1.0), iterations=0)
    assert unchanged.apply(start, field, mask, VOXEL_SIZE) is start


def test_b0_comes_from_the_conversion_record_else_from_the_image_orientation(tmp_path):
    angle = np.deg2rad(25)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                               [0, np.sin(angle), np.cos(angle)]]) @ affine[:3, :3]
    path = tmp_path / "field.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), affine), path)
    properties = {"sitk_stuff": {"direction": sitk.ReadImage(str(path)).GetDirection()}}
    from_image = case_b0("sub-001", {}, properties)
    np.testing.assert_allclose(from_image, physics.b0_direction_from_affine(affine), atol=1e-6)
    assert abs(from_image[1]) > 0.3                     # really oblique: the test can tell the axes apart
    assert case_b0("sub-001", {"sub-001": [0, 0, 2]}, properties) == (0.0, 0.0, 1.0)
    assert case_b0("sub-002", {"sub-001": [0, 0, 2]}, properties) == from_image
