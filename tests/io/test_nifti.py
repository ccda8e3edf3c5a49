"""nifti: the one complete, checked image read, and the atomic write."""
from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from mqsm_nnunet.io.nifti import read_volume, write_volume
from mqsm_nnunet.phantom import grid_affine

from nifti_faults import CORRUPTIONS, corrupt, disagreeing, expected_words, no_orientation, patch_pixdim, sheared, singular

SHAPE = (9, 8, 7)


@pytest.fixture
def image(tmp_path):
    """A small label-like volume on an oblique grid (rotated affine, 2 x 3 x 4 mm voxels)."""
    data = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE) % 5
    return write_volume(tmp_path / "image.nii.gz", data, grid_affine(SHAPE, (2.0, 3.0, 4.0), (0.0, 0.3, 0.95)))


def test_round_trip_keeps_data_affine_and_dtype(image, tmp_path):
    volume = read_volume(image, dtype=None)
    assert volume.data.dtype == np.int16 and volume.data.shape == SHAPE
    assert volume.voxel_size == pytest.approx((2.0, 3.0, 4.0))
    assert read_volume(image).data.dtype == np.float32
    assert [p.name for p in tmp_path.iterdir()] == ["image.nii.gz"]  # no temporary file left


def test_uncompressed_files_and_a_trailing_singleton_axis(tmp_path):
    data = np.ones((4, 5, 6, 1), np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "a.nii"))
    assert read_volume(tmp_path / "a.nii").data.shape == (4, 5, 6)


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupted_file_is_reported_as_corrupted(image, how):
    corrupt(image, how)
    with pytest.raises(ValueError, match=f"{image}: .*{expected_words(how)}"):
        read_volume(image)


def test_a_truncated_uncompressed_file_is_corrupted(image, tmp_path):
    raw = gzip.decompress(image.read_bytes())
    (tmp_path / "cut.nii").write_bytes(raw[:-10])
    with pytest.raises(ValueError, match="corrupted .truncated"):
        read_volume(tmp_path / "cut.nii")


@pytest.mark.parametrize("shape", [(4, 5), (4, 5, 6, 2)])
def test_only_3d_images(tmp_path, shape):
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), str(tmp_path / "x.nii.gz"))
    with pytest.raises(ValueError, match="expected a 3D image"):
        read_volume(tmp_path / "x.nii.gz")


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan")])
def test_broken_voxel_sizes_are_refused_before_nibabel_repairs_them(image, value, capfd):
    patch_pixdim(image, 2, value)
    with pytest.raises(ValueError, match=r"voxel size \(header pixdim\)"):
        read_volume(image)
    assert capfd.readouterr().err == ""  # neither nibabel's repair note nor a numpy warning


@pytest.mark.parametrize("change, words", [(sheared, "sheared affine"), (singular, "singular affine"),
                                           (disagreeing, r"SimpleITK .* sform \(code 2\) and qform \(code 1\)"),
                                           (no_orientation, "no orientation")])
def test_geometry_the_two_readers_disagree_on_is_refused(image, change, words):
    change(image)
    with pytest.raises(ValueError, match=f"{image}: .*{words}"):
        read_volume(image)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_volume(tmp_path / "nowhere.nii.gz")
