"""QC figures: orthogonal slices of QSM / QSM- / labels (paper Figs. 2-3), the mutual-attention map
(Fig. 4), a per-method comparison row plot, the cohort plot of the iron analysis and the per-group
difference plot of its Table 2.

Drawing only: every function takes numpy arrays and writes one PNG. matplotlib is used through
`Figure` objects rendered by the Agg canvas (no pyplot, so no global figure state and no GUI backend).

Display conventions (see docs/iron.md):
- Arrays are 3D in NIfTI voxel order (i, j, k), `voxel_size` (mm) in the same order. Slices are shown
  without reorientation: axial = a k-slice with i to the right and j upward; coronal = a j-slice with
  i to the right and k upward; sagittal = an i-slice with j to the right and k upward. For RAS-stored
  volumes (nibabel's `as_closest_canonical`) that is the neurological convention (patient's right on
  the right), anterior up in axial, superior up in coronal and sagittal, anterior right in sagittal.
- Each panel is drawn in mm (imshow `extent`), its box sized to the physical extent, so anisotropic
  voxels keep the true shape. Figure sizes follow from the physical extent (documented per function)
  and PNGs are saved without tight cropping, so their pixel size is `figure inches * dpi`.
- Maps in ppm with a fixed window (default -0.15..0.25 ppm) so figures are comparable; residuals on a
  symmetric diverging window; voxels outside `mask` are shown black.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from mqsm_nnunet.io.files import atomic_file
from mqsm_nnunet.io.grid import check_voxel_size
from mqsm_nnunet.io.labels import as_label_map

__all__ = [
    "QSM_WINDOW_PPM",
    "RESIDUAL_WINDOW_PPM",
    "PLANES",
    "display_slice",
    "mask_centre",
    "symmetry_index",
    "normalize_attention",
    "qc_figure",
    "attention_figure",
    "method_comparison_figure",
    "iron_plot",
    "difference_plot",
]

QSM_WINDOW_PPM = (-0.15, 0.25)
"""Gray-scale window for susceptibility maps (ppm): deep grey nuclei up to ~0.2 ppm, white matter below 0."""

RESIDUAL_WINDOW_PPM = 0.1
"""Half-width (ppm) of the diverging window for residual maps (map - reference)."""

PLANES = ("axial", "coronal", "sagittal")
# plane -> (sliced axis, horizontal axis, vertical axis), voxel axes (i, j, k) = (0, 1, 2)
_PLANE_AXES = {"axial": (2, 0, 1), "coronal": (1, 0, 2), "sagittal": (0, 1, 2)}

# Layout constants (inches). The QC figure's image panels span QC_PANELS_WIDTH_IN in total.
_QC_PANELS_WIDTH_IN = 9.0
_COMPARISON_PANEL_WIDTH_IN = 3.0
_LEFT_IN = 0.45  # row labels
_TOP_IN = 0.75  # figure title + column titles
_BOTTOM_IN = 0.1
_GAP_IN = 0.08
_COLORBAR_SPACE_IN = 0.95  # gap + bar + tick labels
_LABEL_ALPHA = 0.5


# ----------------------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------------------
def _volume(array: np.ndarray, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    volume = np.asarray(array)
    if volume.ndim != 3:
        raise ValueError(f"{name} must be a 3D array in voxel order (i, j, k), got shape {volume.shape}")
    if shape is not None and volume.shape != shape:
        raise ValueError(f"{name} has shape {volume.shape} but the QSM has shape {shape}; pass arrays on one grid")
    return volume


def _plane(plane: str) -> str:
    if plane not in _PLANE_AXES:
        raise ValueError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    return plane


# ----------------------------------------------------------------------------------------------------
# slicing helpers
# ----------------------------------------------------------------------------------------------------
def display_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """The 2D slice of `volume` (voxel order) for `imshow(..., origin='lower')`.

    Rows run along the plane's vertical axis (j for axial, k otherwise), columns along its horizontal
    axis (i, or j for sagittal); trailing axes (e.g. RGBA) are kept.
    """
    sliced, horizontal, vertical = _PLANE_AXES[_plane(plane)]
    image = np.take(volume, index, axis=sliced)  # remaining axes: (horizontal, vertical, ...)
    return np.swapaxes(image, 0, 1)


def _plane_size_mm(shape: Sequence[int], voxel_size: Sequence[float], plane: str) -> tuple[float, float]:
    """(width, height) of a plane's slice in mm."""
    _, horizontal, vertical = _PLANE_AXES[plane]
    return shape[horizontal] * voxel_size[horizontal], shape[vertical] * voxel_size[vertical]


def mask_centre(mask: np.ndarray | None, shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel index of the mask's centre of mass (rounded); the volume centre without a mask or for an empty one."""
    if mask is None or not np.any(mask):
        return tuple(int(n) // 2 for n in shape)
    centre = np.argwhere(np.asarray(mask) != 0).mean(axis=0)
    return tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(centre, shape))


def _masked(volume: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    volume = np.asarray(volume, dtype=float)
    return volume if mask is None else np.where(np.asarray(mask) != 0, volume, np.nan)


def _label_rgba(seg: np.ndarray) -> np.ndarray:
    """RGBA volume for a label map: label l gets tab20 colour (l - 1) mod 20, background transparent."""
    seg = as_label_map(seg, "seg")
    palette = matplotlib.colormaps["tab20"]
    n = int(seg.max(initial=0)) + 1
    lut = np.zeros((n, 4))
    lut[1:] = palette((np.arange(1, n) - 1) % 20)
    lut[1:, 3] = _LABEL_ALPHA
    return lut[seg]


def _cmap(name: str):
    return matplotlib.colormaps[name].with_extremes(bad="black")


def _save(figure: Figure, out_png: str | os.PathLike, dpi: float) -> Path:
    """Render with Agg and write the PNG through a temporary name (no half-written file on error)."""
    FigureCanvasAgg(figure)
    with atomic_file(out_png) as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")
    return Path(out_png)


def _image_axes(figure: Figure, x_in: float, y_in: float, w_in: float, h_in: float):
    """Axes at a rectangle given in inches from the lower-left corner, drawn without ticks or frame."""
    width, height = figure.get_size_inches()
    ax = figure.add_axes((x_in / width, y_in / height, w_in / width, h_in / height))
    ax.set_axis_off()
    return ax


def _show(ax, image: np.ndarray, extent: tuple[float, float], **kwargs):
    """Draw a display slice in mm; the axes box already has the physical aspect, so the image fills it."""
    return ax.imshow(image, origin="lower", extent=(0, extent[0], 0, extent[1]), aspect="auto",
                     interpolation="nearest", **kwargs)


# ----------------------------------------------------------------------------------------------------
# QC figure (paper Figs. 2-3)
# ----------------------------------------------------------------------------------------------------
def qc_figure(
    out_png: str | os.PathLike,
    t1: np.ndarray,
    qsm: np.ndarray,
    qsm_minus: np.ndarray | None,
    seg: np.ndarray,
    voxel_size: Sequence[float],
    reference: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    title: str = "",
    window: tuple[float, float] = QSM_WINDOW_PPM,
    residual_window: float = RESIDUAL_WINDOW_PPM,
    dpi: float = 100,
) -> Path:
    """Three orthogonal slices through the mask centre of one subject's maps.

    Rows, top to bottom: QSM- (if given), QSM, the reference and the residual QSM - reference (if a
    reference is given), the labels over the T1. Columns: axial, coronal, sagittal (module docstring
    for the orientation). Maps share the gray `window` (ppm, with a colorbar); the residual uses a
    diverging window of +-`residual_window` ppm; labels are tab20 colours at alpha 0.5 over the T1
    (window: its 1st-99th percentile inside the mask).

    Size: the image panels span 9 in in total width (axial and coronal are i*vi mm wide, sagittal
    j*vj mm), each row is as tall as the tallest panel, so the PNG width is fixed and its height
    follows the volume's physical proportions.

    Args:
        out_png: PNG path to write.
        t1, qsm, qsm_minus, seg: 3D arrays on one grid, voxel order (i, j, k); maps in ppm; seg holds
            integer labels (0 = background). `qsm_minus` may be None.
        voxel_size: voxel edge lengths in mm, (i, j, k) order.
        reference: optional reference susceptibility (ppm), e.g. COSMOS or the phantom's truth.
        mask: optional brain mask: fixes the slice position (its centre of mass) and blanks the
            maps outside it; without one the slices go through the volume centre.
        title: figure title.

    Raises:
        ValueError: an array is not 3D or not on the QSM's grid, or voxel_size is not 3 positive numbers.
    """
    qsm = _volume(qsm, "qsm")
    shape = qsm.shape
    t1 = _volume(t1, "t1", shape)
    seg = _volume(seg, "seg", shape)
    if qsm_minus is not None:
        qsm_minus = _volume(qsm_minus, "qsm_minus", shape)
    if reference is not None:
        reference = _volume(reference, "reference", shape)
    if mask is not None:
        mask = _volume(mask, "mask", shape)
    voxel_size = check_voxel_size(voxel_size)

    gray, diverging = _cmap("gray"), _cmap("RdBu_r")
    map_norm = Normalize(*window)
    rows = []  # (label, volume, colormap, norm) ; None volume = the label overlay row
    if qsm_minus is not None:
        rows.append(("QSM$^{-}$", _masked(qsm_minus, mask), gray, map_norm))
    rows.append(("QSM", _masked(qsm, mask), gray, map_norm))
    if reference is not None:
        rows.append(("reference", _masked(reference, mask), gray, map_norm))
        rows.append(("QSM $-$ reference", _masked(qsm - reference, mask), diverging,
                     Normalize(-residual_window, residual_window)))
    rows.append(("labels on T1", None, None, None))

    sizes_mm = [_plane_size_mm(shape, voxel_size, plane) for plane in PLANES]
    scale = _QC_PANELS_WIDTH_IN / sum(w for w, _ in sizes_mm)  # inches per mm
    row_height = scale * max(h for _, h in sizes_mm)
    panels_width = _QC_PANELS_WIDTH_IN + _GAP_IN * (len(PLANES) - 1)
    fig_width = _LEFT_IN + panels_width + _COLORBAR_SPACE_IN
    fig_height = _TOP_IN + len(rows) * row_height + (len(rows) - 1) * _GAP_IN + _BOTTOM_IN
    figure = Figure(figsize=(fig_width, fig_height))
    if title:
        figure.suptitle(title, y=1 - 0.1 / fig_height, va="top")

    centre = mask_centre(mask, shape)
    t1_inside = np.asarray(t1, dtype=float)[mask != 0] if mask is not None and np.any(mask) else np.asarray(t1, float)
    t1_low, t1_high = np.percentile(t1_inside, (1, 99))
    t1_norm = Normalize(t1_low, t1_high if t1_high > t1_low else t1_low + 1)
    seg_rgba = _label_rgba(seg)

    for r, (label, volume, cmap, norm) in enumerate(rows):
        y0 = fig_height - _TOP_IN - (r + 1) * row_height - r * _GAP_IN
        figure.text(_LEFT_IN / 2 / fig_width, (y0 + row_height / 2) / fig_height, label,
                    rotation=90, ha="center", va="center")
        x0 = _LEFT_IN
        for plane, (width_mm, height_mm) in zip(PLANES, sizes_mm):
            w, h = scale * width_mm, scale * height_mm
            ax = _image_axes(figure, x0, y0 + (row_height - h) / 2, w, h)
            index = centre[_PLANE_AXES[plane][0]]
            if volume is None:
                _show(ax, display_slice(t1, plane, index), (width_mm, height_mm), cmap=gray, norm=t1_norm)
                _show(ax, display_slice(seg_rgba, plane, index), (width_mm, height_mm))
            else:
                image = _show(ax, display_slice(volume, plane, index), (width_mm, height_mm), cmap=cmap, norm=norm)
            if r == 0:
                axis_name = "ijk"[_PLANE_AXES[plane][0]]
                ax.set_title(f"{plane} ({axis_name} = {index})", fontsize=9)
            x0 += w + _GAP_IN
        if volume is not None:
            cax = figure.add_axes(((_LEFT_IN + panels_width + 0.12) / fig_width,
                                   (y0 + 0.1 * row_height) / fig_height,
                                   0.15 / fig_width, 0.8 * row_height / fig_height))
            figure.colorbar(image, cax=cax).set_label("ppm", fontsize=8)
            cax.tick_params(labelsize=7)
    return _save(figure, out_png, dpi)


# ----------------------------------------------------------------------------------------------------
# mutual attention (paper Fig. 4)
# ----------------------------------------------------------------------------------------------------
def _attention_matrix(matrix: np.ndarray, square: bool = False) -> np.ndarray:
    array = np.asarray(matrix, dtype=float)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"matrix must be a non-empty 2D (C1 x C2) array, got shape {array.shape}")
    if square and array.shape[0] != array.shape[1]:
        raise ValueError(f"matrix must be square (C x C) for a symmetry index, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("matrix holds NaN or infinite values")
    return array


def symmetry_index(matrix: np.ndarray) -> float:
    """||A - A^T||_F / (2 ||A||_F) of the raw matrix: 0 for symmetric, 1 for antisymmetric, 0 for A = 0.

    The factor 2 bounds the index by 1 (triangle inequality). It is computed before normalization:
    shifting A by a constant (as min-max normalization does) would make any matrix look more symmetric.
    """
    array = _attention_matrix(matrix, square=True)
    norm = np.linalg.norm(array)
    return 0.0 if norm == 0 else float(np.linalg.norm(array - array.T) / (2 * norm))


def normalize_attention(matrix: np.ndarray) -> np.ndarray:
    """Min-max normalization to [0, 1] as in the paper's Fig. 4 (a constant matrix gives zeros)."""
    array = _attention_matrix(matrix)
    low, high = array.min(), array.max()
    return np.zeros_like(array) if high == low else (array - low) / (high - low)


def attention_figure(
    out_png: str | os.PathLike,
    matrix: np.ndarray,
    title: str = "Mutual attention",
    row_label: str = "T1-stream channel",
    col_label: str = "QSM-stream channel",
    figsize: tuple[float, float] = (6.0, 5.0),
    dpi: float = 100,
) -> Path:
    """Heatmap of a (C1 x C2) mutual-attention matrix normalized to [0, 1], with colorbar.

    `MA = Q_1^T Q_2` (paper Eq. 4): rows are channels of the first (T1) stream, columns of the second
    (QSM) stream. For equal streams (square MA, as in the paper) the title carries the symmetry index
    of the raw matrix (`symmetry_index`); streams of unequal width have no such index.
    The PNG is `figsize * dpi` pixels.

    Raises:
        ValueError: the matrix is not a non-empty 2D array or not finite.
    """
    normalized = normalize_attention(matrix)
    figure = Figure(figsize=figsize)
    ax = figure.add_subplot()
    image = ax.imshow(normalized, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    rows, columns = normalized.shape
    detail = (f"symmetry index ||A - A$^T$|| / 2||A|| = {symmetry_index(matrix):.3f}" if rows == columns
              else f"{rows} T1 x {columns} QSM channels (unequal streams: no symmetry index)")
    ax.set_title(f"{title}\n{detail}", fontsize=10)
    figure.colorbar(image, ax=ax, label="normalized attention")
    return _save(figure, out_png, dpi)


# ----------------------------------------------------------------------------------------------------
# per-method comparison (the demo's baselines)
# ----------------------------------------------------------------------------------------------------
def method_comparison_figure(
    out_png: str | os.PathLike,
    maps: Mapping[str, np.ndarray],
    reference: np.ndarray,
    mask: np.ndarray | None,
    voxel_size: Sequence[float],
    plane: str = "axial",
    window: tuple[float, float] = QSM_WINDOW_PPM,
    residual_window: float = RESIDUAL_WINDOW_PPM,
    dpi: float = 100,
) -> Path:
    """One slice of each method's map and its residual (map - reference), one row per method.

    The first row shows the reference itself. Panels are 3 in wide and as tall as the slice's
    physical proportions demand; colorbars (ppm) sit under the two columns. The slice goes through
    the mask's centre of mass (the volume centre without a mask).

    Args:
        maps: method name -> susceptibility map (ppm), 3D voxel order, on the reference's grid.
        reference: reference susceptibility (ppm).
        mask: brain mask or None; the maps are blanked outside it.
        voxel_size: mm, (i, j, k) order.
        plane: 'axial', 'coronal' or 'sagittal'.

    Raises:
        ValueError: no maps, an array not 3D or not on the reference's grid, a bad plane or voxel_size.
    """
    reference = _volume(reference, "reference")
    shape = reference.shape
    if not maps:
        raise ValueError("maps is empty: pass at least one method name -> map")
    volumes = {name: _volume(volume, f"maps[{name!r}]", shape) for name, volume in maps.items()}
    if mask is not None:
        mask = _volume(mask, "mask", shape)
    voxel_size = check_voxel_size(voxel_size)
    plane = _plane(plane)

    width_mm, height_mm = _plane_size_mm(shape, voxel_size, plane)
    w = _COMPARISON_PANEL_WIDTH_IN
    h = w * height_mm / width_mm
    colorbar_space = 0.75
    n_rows = len(volumes) + 1
    fig_width = _LEFT_IN + 2 * w + 3 * _GAP_IN
    fig_height = _TOP_IN + n_rows * h + (n_rows - 1) * _GAP_IN + colorbar_space
    figure = Figure(figsize=(fig_width, fig_height))
    index = mask_centre(mask, shape)[_PLANE_AXES[plane][0]]
    axis_name = "ijk"[_PLANE_AXES[plane][0]]
    figure.suptitle(f"{plane} slice {axis_name} = {index}", y=1 - 0.1 / fig_height, va="top")

    map_norm = Normalize(*window)
    residual_norm = Normalize(-residual_window, residual_window)
    gray, diverging = _cmap("gray"), _cmap("RdBu_r")
    rows = [("reference", reference)] + list(volumes.items())
    for r, (name, volume) in enumerate(rows):
        y0 = fig_height - _TOP_IN - (r + 1) * h - r * _GAP_IN
        figure.text(_LEFT_IN / 2 / fig_width, (y0 + h / 2) / fig_height, name, rotation=90, ha="center", va="center")
        ax = _image_axes(figure, _LEFT_IN, y0, w, h)
        map_image = _show(ax, display_slice(_masked(volume, mask), plane, index), (width_mm, height_mm),
                          cmap=gray, norm=map_norm)
        if r == 0:
            ax.set_title("map", fontsize=9)
            continue
        ax = _image_axes(figure, _LEFT_IN + w + _GAP_IN, y0, w, h)
        residual_image = _show(ax, display_slice(_masked(volume - reference, mask), plane, index),
                               (width_mm, height_mm), cmap=diverging, norm=residual_norm)
        if r == 1:
            ax.set_title("map $-$ reference", fontsize=9)
    for column, image, label in ((0, map_image, "map (ppm)"), (1, residual_image, "residual (ppm)")):
        cax = figure.add_axes(((_LEFT_IN + column * (w + _GAP_IN) + 0.1 * w) / fig_width,
                               0.45 / fig_height, 0.8 * w / fig_width, 0.12 / fig_height))
        ticks = np.linspace(image.norm.vmin, image.norm.vmax, 5)
        figure.colorbar(image, cax=cax, orientation="horizontal", ticks=ticks).set_label(label, fontsize=8)
        cax.tick_params(labelsize=7)
    return _save(figure, out_png, dpi)


# ----------------------------------------------------------------------------------------------------
# cohort plot of the iron analysis
# ----------------------------------------------------------------------------------------------------
def iron_plot(
    out_png: str | os.PathLike,
    regions: Sequence[str],
    sets: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    marks: Sequence[str] | None = None,
    title: str = "",
    ylabel: str = "susceptibility (ppb)",
    dpi: float = 100,
) -> Path:
    """Per-region cohort means with +-std error bars, the sets side by side at each region.

    Args:
        regions: region names (x axis).
        sets: set name -> (means, stds), one value per region; NaN means are not drawn, NaN stds
            (a single subject) are drawn without a bar.
        marks: optional per-region text (e.g. '**') placed above the last set's bar.

    Raises:
        ValueError: a set or `marks` does not have one value per region, or no set is given.
    """
    regions = list(regions)
    if not sets:
        raise ValueError("sets is empty: pass at least one set name -> (means, stds)")
    arrays = {}
    for name, (means, stds) in sets.items():
        means, stds = np.asarray(means, dtype=float), np.asarray(stds, dtype=float)
        if means.shape != (len(regions),) or stds.shape != (len(regions),):
            raise ValueError(f"set {name!r}: expected {len(regions)} means and stds (one per region), "
                             f"got {means.shape} and {stds.shape}")
        arrays[name] = (means, np.nan_to_num(stds, nan=0.0))
    if marks is not None and len(marks) != len(regions):
        raise ValueError(f"marks: expected {len(regions)} entries (one per region), got {len(marks)}")

    figure = Figure(figsize=(max(6.0, 0.5 * len(regions) + 2.0), 4.5), layout="constrained")
    ax = figure.add_subplot()
    x = np.arange(len(regions), dtype=float)
    step = 0.6 / len(arrays)
    offsets = (np.arange(len(arrays)) - (len(arrays) - 1) / 2) * step
    for offset, (name, (means, stds)) in zip(offsets, arrays.items()):
        shown = np.isfinite(means)
        ax.errorbar(x[shown] + offset, means[shown], yerr=stds[shown], fmt="o", capsize=3, label=name)
    if marks is not None:
        means, stds = arrays[list(arrays)[-1]]
        for xi, mean, std, mark in zip(x + offsets[-1], means, stds, marks):
            if mark and np.isfinite(mean):
                ax.annotate(mark, (xi, mean + std), textcoords="offset points", xytext=(0, 3), ha="center")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_xticks(x, regions, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(figure, out_png, dpi)


def difference_plot(
    out_png: str | os.PathLike,
    groups: Mapping[str, Mapping[str, Sequence[float]]],
    title: str = "",
    ylabel: str = "difference to the reference (ppb)",
    dpi: float = 100,
) -> Path:
    """One panel per region group; in it one box per method (median, quartiles, whiskers at 1.5 IQR)
    with every value drawn as a point over it (spread sideways evenly, no randomness).

    Args:
        groups: group name -> method name -> values (e.g. per subject and region, method minus
            reference); a method without values in a group gets an empty slot. Every group must
            list the same methods, in the same order.

    Raises:
        ValueError: no group, or groups listing different methods.
    """
    if not groups:
        raise ValueError("groups is empty: pass at least one group name -> method name -> values")
    methods = list(next(iter(groups.values())))
    for name, per_method in groups.items():
        if list(per_method) != methods:
            raise ValueError(f"group {name!r} lists methods {list(per_method)}, the first group {methods}; "
                             "every group must list the same methods")
    figure = Figure(figsize=(max(6.0, (1.2 + 0.7 * len(methods)) * len(groups)), 4.2), layout="constrained")
    axes = figure.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, (name, per_method) in zip(axes, groups.items()):
        for x, method in enumerate(methods, start=1):
            values = np.asarray(per_method[method], dtype=float)
            values = values[np.isfinite(values)]
            if values.size:
                ax.boxplot(values, positions=[x], widths=0.6, showfliers=False,
                           medianprops={"color": colours(x - 1)})
                spread = np.linspace(-0.2, 0.2, values.size) if values.size > 1 else np.zeros(1)
                ax.plot(x + spread, values, "o", markersize=3, alpha=0.6, color=colours(x - 1))
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right", fontsize=8)
        ax.set_xlim(0.4, len(methods) + 0.6)
        ax.set_title(name, fontsize=10)
    axes[0].set_ylabel(ylabel)
    if title:
        figure.suptitle(title)
    return _save(figure, out_png, dpi)


def learning_curve_figure(out_png: str | os.PathLike, curves: Mapping[str, Mapping[str, Sequence[float]]],
                          qsm_references: Mapping[str, float] | None = None,
                          title: str = "Learning curves, held-out subjects") -> Path:
    """Held-out mean Dice (left) and QSM NRMSE (right) against training iterations, one line per method.

    Args:
        curves: method -> {"iterations": [...], "dice": [...], "nrmse": [...] (optional, %)}.
        qsm_references: name -> NRMSE (%) drawn as horizontal lines (QSM-, TKD, TV-ADMM, ...).
    """
    figure = Figure(figsize=(11, 4.2))
    ax_dice, ax_qsm = figure.subplots(1, 2)
    for method, curve in curves.items():
        ax_dice.plot(curve["iterations"], curve["dice"], marker="o", label=method)
        if curve.get("nrmse"):
            ax_qsm.plot(curve["iterations"], curve["nrmse"], marker="o", label=method)
    for i, (name, value) in enumerate((qsm_references or {}).items()):
        ax_qsm.axhline(value, ls="--", lw=1, color=matplotlib.colormaps["tab10"](i + 3), label=name)
    ax_dice.set(xlabel="training iterations", ylabel="mean Dice (held-out)", ylim=(0, 1))
    ax_qsm.set(xlabel="training iterations", ylabel="QSM NRMSE vs truth (%, held-out)")
    for ax in (ax_dice, ax_qsm):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, out_png, dpi=90)
