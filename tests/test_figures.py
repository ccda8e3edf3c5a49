"""QC figures: PNGs of the expected size, panels with the physical aspect, bad shapes refused."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import ndimage

from mqsm_nnunet import figures

DPI = 100


def black_panels(png) -> list[tuple[int, int]]:
    """(height, width) in pixels of the solid black rectangles of a PNG, top-left first.

    Maps set to the bottom of the gray window render as pure black panels; text, colorbar ends and
    outlines are too small or not solid enough to count.
    """
    image = imread(png)
    black = np.all(image[..., :3] < 0.02, axis=-1)
    labelled, _ = ndimage.label(black)
    boxes = []
    for box in ndimage.find_objects(labelled):
        height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
        area = black[box].sum()
        if area > 400 and area >= 0.98 * height * width:
            boxes.append((box[0].start, box[1].start, height, width))
    return [(h, w) for _, _, h, w in sorted(boxes)]


def volumes(shape, low=figures.QSM_WINDOW_PPM[0]):
    """QSM at the window's low end everywhere (black), a labelled T1."""
    qsm = np.full(shape, low)
    seg = np.ones(shape, dtype=int)
    seg[: shape[0] // 2] = 2
    t1 = np.random.default_rng(0).random(shape)
    return t1, qsm, seg


@pytest.mark.parametrize(
    "shape, voxel_size", [((24, 28, 20), (1.0, 1.0, 1.0)), ((24, 28, 10), (1.0, 1.0, 2.0)), ((16, 28, 8), (1.5, 1.0, 3.0))]
)
def test_qc_figure_panels_keep_the_physical_aspect(tmp_path, shape, voxel_size):
    t1, qsm, seg = volumes(shape)
    png = figures.qc_figure(tmp_path / "qc.png", t1, qsm, qsm, seg, voxel_size, title="sub-001")
    assert png.is_file() and png.stat().st_size > 0
    x, y, z = (n * v for n, v in zip(shape, voxel_size))  # physical extents (mm)
    panels = black_panels(png)
    assert len(panels) == 6  # QSM- and QSM rows x 3 planes; the label row is coloured
    expected_ratios = [y / x, z / x, z / y] * 2  # height / width: axial, coronal, sagittal
    for (height, width), ratio in zip(panels, expected_ratios):
        assert height == pytest.approx(width * ratio, abs=2.5)
    # the three panels span the fixed 9 in of panel width, split in proportion to x, x, y
    widths = [w for _, w in panels[:3]]
    assert sum(widths) == pytest.approx(9 * DPI, abs=4)
    assert widths[0] / widths[2] == pytest.approx(x / y, abs=0.02)


def test_qc_figure_size_depends_on_physical_extent_only(tmp_path):
    sizes = []
    for shape, voxel_size in [((24, 28, 20), (1, 1, 1)), ((24, 28, 10), (1, 1, 2)), ((24, 28, 40), (1, 1, 1))]:
        t1, qsm, seg = volumes(shape)
        sizes.append(imread(figures.qc_figure(tmp_path / "qc.png", t1, qsm, None, seg, voxel_size)).shape)
    assert sizes[0] == sizes[1]  # isotropic and anisotropic grids of one physical size
    assert sizes[2][1] == sizes[0][1] and sizes[2][0] > sizes[0][0]  # fixed width, taller volume -> taller
    assert sizes[0][2] == 4


def test_qc_figure_with_reference_and_mask(tmp_path):
    shape = (20, 24, 12)
    t1, qsm, seg = volumes(shape)
    mask = np.zeros(shape, dtype=bool)
    mask[2:18, 2:22, 2:10] = True
    png = figures.qc_figure(tmp_path / "qc.png", t1, qsm, qsm, seg, (1, 1, 2), reference=qsm, mask=mask)
    # QSM-, QSM and reference rows are black inside the mask and black (outside-mask colour) around it
    assert len(black_panels(png)) == 9


def test_mask_centre_is_the_rounded_centre_of_mass():
    mask = np.zeros((10, 12, 8), dtype=bool)
    mask[2:5, 3:10, 1:3] = True
    assert figures.mask_centre(mask, mask.shape) == (3, 6, 2)
    assert figures.mask_centre(None, (10, 12, 8)) == (5, 6, 4)


def test_display_slice_orientation():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    # axial: rows along j (origin='lower' puts j = 0 at the bottom), columns along i
    np.testing.assert_array_equal(figures.display_slice(volume, "axial", 1), volume[:, :, 1].T)
    np.testing.assert_array_equal(figures.display_slice(volume, "coronal", 2), volume[:, 2, :].T)
    np.testing.assert_array_equal(figures.display_slice(volume, "sagittal", 0), volume[0, :, :].T)


def test_qc_figure_rejects_bad_shapes(tmp_path):
    t1, qsm, seg = volumes((8, 8, 8))
    with pytest.raises(ValueError, match="seg"):
        figures.qc_figure(tmp_path / "a.png", t1, qsm, qsm, seg[:-1], (1, 1, 1))
    with pytest.raises(ValueError, match="3D"):
        figures.qc_figure(tmp_path / "a.png", t1, qsm[..., 0], None, seg, (1, 1, 1))
    with pytest.raises(ValueError, match="reference"):
        figures.qc_figure(tmp_path / "a.png", t1, qsm, qsm, seg, (1, 1, 1), reference=qsm[1:])
    with pytest.raises(ValueError, match="voxel_size"):
        figures.qc_figure(tmp_path / "a.png", t1, qsm, qsm, seg, (1, 1))
    assert not (tmp_path / "a.png").exists()


def test_attention_figure_size_and_symmetry_index(tmp_path):
    rng = np.random.default_rng(0)
    half = rng.random((16, 16))
    png = figures.attention_figure(tmp_path / "ma.png", half + half.T)
    assert imread(png).shape == (5 * DPI, 6 * DPI, 4)  # figsize (6, 5) in at 100 dpi
    assert figures.symmetry_index(half + half.T) == 0.0
    assert figures.symmetry_index(half - half.T) == pytest.approx(1.0)
    assert figures.symmetry_index(np.array([[0.0, 1.0], [0.0, 0.0]])) == pytest.approx(np.sqrt(2) / 2)
    assert figures.symmetry_index(np.zeros((3, 3))) == 0.0
    normalized = figures.normalize_attention(np.array([[-1.0, 0.0], [1.0, 3.0]]))
    np.testing.assert_allclose(normalized, [[0.0, 0.25], [0.5, 1.0]])


def test_attention_figure_of_unequal_streams(tmp_path):
    """The short variants' T1 stream is twice the QSM stream: a rectangular MA is drawn, without the
    symmetry index, which only a square matrix has."""
    matrix = np.random.default_rng(1).random((32, 16))
    png = figures.attention_figure(tmp_path / "ma.png", matrix)
    assert imread(png).shape == (5 * DPI, 6 * DPI, 4)
    with pytest.raises(ValueError, match="square"):
        figures.symmetry_index(matrix)


@pytest.mark.parametrize("matrix", [np.zeros((2, 3, 3)), np.zeros((0, 0)), np.zeros((3, 0)), np.array([[np.nan]])])
def test_attention_figure_rejects_bad_matrices(tmp_path, matrix):
    with pytest.raises(ValueError, match="matrix"):
        figures.attention_figure(tmp_path / "ma.png", matrix)


@pytest.mark.parametrize(
    "voxel_size, plane, ratio",  # shape (20, 30, 8): panel height / width in mm
    [((1.5, 1.0, 3.0), "axial", 30 / 30), ((1.0, 1.0, 1.0), "axial", 30 / 20), ((1.5, 1.0, 3.0), "coronal", 24 / 30)],
)
def test_method_comparison_figure_rows_and_aspect(tmp_path, voxel_size, plane, ratio):
    shape = (20, 30, 8)
    reference = np.full(shape, figures.QSM_WINDOW_PPM[0])
    maps = {"TKD": reference.copy(), "mQSM": reference.copy()}
    png = figures.method_comparison_figure(tmp_path / "cmp.png", maps, reference, None, voxel_size, plane=plane)
    panels = black_panels(png)  # the map column is black; residuals (0) are not
    assert len(panels) == 1 + len(maps)
    for height, width in panels:
        assert width == pytest.approx(3 * DPI, abs=2)  # 3 in wide panels
        assert height == pytest.approx(width * ratio, abs=2.5)


def test_method_comparison_figure_rejects_bad_input(tmp_path):
    reference = np.zeros((8, 8, 8))
    with pytest.raises(ValueError, match="TKD"):
        figures.method_comparison_figure(tmp_path / "c.png", {"TKD": reference[:-1]}, reference, None, (1, 1, 1))
    with pytest.raises(ValueError, match="empty"):
        figures.method_comparison_figure(tmp_path / "c.png", {}, reference, None, (1, 1, 1))
    with pytest.raises(ValueError, match="mask"):
        figures.method_comparison_figure(tmp_path / "c.png", {"a": reference}, reference, reference[1:], (1, 1, 1))
    with pytest.raises(ValueError, match="plane"):
        figures.method_comparison_figure(tmp_path / "c.png", {"a": reference}, reference, None, (1, 1, 1), plane="oblique")


def test_iron_plot(tmp_path):
    regions = ["caudate", "pallidum", "thalamus"]
    png = figures.iron_plot(tmp_path / "p.png", regions, {"truth": ([44, 131, 20], [3, 4, np.nan]),
                                                          "mQSM": ([45, 150, np.nan], [3, 4, 2])}, marks=["", "**", ""])
    image = imread(png)
    assert image.shape[0] == 450 and image.shape[1] == 600  # 6 x 4.5 in at 100 dpi for few regions
    with pytest.raises(ValueError, match="one per region"):
        figures.iron_plot(tmp_path / "p.png", regions, {"truth": ([1, 2], [1, 1])})
