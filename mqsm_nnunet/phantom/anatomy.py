"""The phantom's anatomy: label table, tissue properties, and the shapes that draw a brain.

Every structure is an ellipsoid or a chain of capsules (tubes) defined in millimetres in an MNI-like
head frame: x left -> right, y posterior -> anterior, z inferior -> superior, positions following the
MNI152 atlas (e.g. red nucleus at (+-5, -20, -8)), sizes typical of adults. The subject module maps
each voxel centre into this frame (pose, size, smooth deformation) and `render` evaluates the shapes
there, so any matrix or voxel size samples the same continuous anatomy. docs/phantom.md has the
table of regions, values and sources.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MARQUES_2021 = ("Marques JP et al., QSM reconstruction challenge 2.0: a realistic in silico head phantom, "
                "Magn Reson Med 2021;86:526-542, doi:10.1002/mrm.28716")


@dataclass(frozen=True)
class Tissue:
    """Properties of one tissue class: susceptibility (ppb), T1-weighted intensity (white matter = 1)."""

    chi_ppb: float
    t1w: float
    source: str


TISSUES: dict[str, Tissue] = {
    "caudate": Tissue(44.0, 0.70, MARQUES_2021),
    "globus_pallidus": Tissue(131.0, 0.86, MARQUES_2021),
    "putamen": Tissue(38.0, 0.73, MARQUES_2021),
    "thalamus": Tissue(20.0, 0.82, MARQUES_2021),
    "substantia_nigra": Tissue(111.0, 0.76, MARQUES_2021 + " (SN & subthalamic nucleus class)"),
    "red_nucleus": Tissue(100.0, 0.80, MARQUES_2021),
    "dentate": Tissue(152.0, 0.78, MARQUES_2021),
    "csf": Tissue(19.0, 0.18, MARQUES_2021),
    "veins": Tissue(190.0, 0.45, MARQUES_2021 + " (blood class)"),
    "white_matter": Tissue(-30.0, 1.00, MARQUES_2021),
    "brainstem": Tissue(-30.0, 0.93, MARQUES_2021 + " white-matter value (no brainstem class there)"),
    "cortex": Tissue(20.0, 0.62, MARQUES_2021 + " (grey matter class)"),
    "cerebellar_cortex": Tissue(20.0, 0.60, MARQUES_2021 + " grey-matter value"),
}

_REGIONS: tuple[tuple[str, str], ...] = (
    ("caudate_L", "caudate"), ("caudate_R", "caudate"),
    ("globus_pallidus_L", "globus_pallidus"), ("globus_pallidus_R", "globus_pallidus"),
    ("putamen_L", "putamen"), ("putamen_R", "putamen"),
    ("thalamus_L", "thalamus"), ("thalamus_R", "thalamus"),
    ("substantia_nigra_L", "substantia_nigra"), ("substantia_nigra_R", "substantia_nigra"),
    ("red_nucleus_L", "red_nucleus"), ("red_nucleus_R", "red_nucleus"),
    ("dentate_L", "dentate"), ("dentate_R", "dentate"),
    ("lateral_ventricle_L", "csf"), ("lateral_ventricle_R", "csf"),
    ("csf", "csf"), ("veins", "veins"), ("brainstem", "brainstem"), ("white_matter", "white_matter"),
    ("frontal_cortex_L", "cortex"), ("frontal_cortex_R", "cortex"),
    ("parietal_cortex_L", "cortex"), ("parietal_cortex_R", "cortex"),
    ("temporal_cortex_L", "cortex"), ("temporal_cortex_R", "cortex"),
    ("occipital_cortex_L", "cortex"), ("occipital_cortex_R", "cortex"),
    ("cerebellar_cortex_L", "cerebellar_cortex"), ("cerebellar_cortex_R", "cerebellar_cortex"),
)
LABELS: dict[str, int] = {"background": 0, **{name: i for i, (name, _) in enumerate(_REGIONS, start=1)}}
"""Region name -> label id (consecutive 0..N, as nnU-Net requires)."""
REGION_TISSUE: dict[str, str] = dict(_REGIONS)
SUSCEPTIBILITY_PPB: dict[str, float] = {name: TISSUES[t].chi_ppb for name, t in _REGIONS}
"""Region name -> literature susceptibility in ppb (source: `TISSUES[REGION_TISSUE[name]].source`)."""

# Geometry constants, MNI-like mm.
HEAD_CENTRE = (0.0, -18.0, 12.0)      # centre of the brain's bounding box (the head centre)
BRAIN_LOW = (-68.0, -104.0, -54.0)    # brain bounding box of the mean anatomy
BRAIN_HIGH = (68.0, 68.0, 78.0)
CSF_OUTER = 1.5        # CSF layer inside the brain envelope (part of the mask)
CSF_MARGIN = 1.5       # CSF around cerebellum and brainstem (cisterns, tentorium)
GM_CROWN, GM_SULCUS = 5.0, 10.0   # cortex thickness on gyral crowns, extra depth around sulci
SULCUS_HALF, SULCUS_FLOOR = 0.12, 2.5   # sulcal CSF: |gyral field| below this, stopping this far above WM
CEREBELLAR_GM = 6.0
IHF_HALF, SYLVIAN_HALF, SYLVIAN_MEDIAL = 1.2, 1.5, 36.0
BRAINSTEM_CUT = -54.0  # the brainstem is cut at the foramen-magnum level, like a brain mask
# T1-only head classes outside the brain: outer edge (mm outside the brain surface), T1w intensity.
HEAD_LAYERS = ((2.5, 0.15), (4.5, 0.05), (7.0, 0.45), (9.0, 0.05), (14.0, 0.80))  # dura/CSF, skull, diploe, skull, scalp
NECK_T1W, NECK_TOP = 0.45, -25.0


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with separate semi-axes on the negative and positive side of each axis, turned about z."""

    centre: tuple[float, float, float]
    radii: tuple[tuple[float, float], ...]  # ((-x, +x), (-y, +y), (-z, +z)) mm
    yaw_deg: float = 0.0

    @classmethod
    def make(cls, centre: Sequence[float], radii: Sequence, yaw_deg: float = 0.0, scale: float = 1.0) -> Ellipsoid:
        pairs = tuple((float(r) * scale,) * 2 if np.isscalar(r) else tuple(float(v) * scale for v in r) for r in radii)
        return cls(tuple(float(c) for c in centre), pairs, float(yaw_deg))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(max(pair) for pair in self.radii)
        return np.asarray(self.centre) - r, np.asarray(self.centre) + r

    def depth(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Approximate signed distance to the surface in mm (positive inside), first order in (1 - G).

        With G the normalized radius, depth = (1 - G) / |grad G|; exact for spheres, close to the
        surface for any ellipsoid, which is where the cortex and the head shell need it.
        """
        dx, dy, dz = x - self.centre[0], y - self.centre[1], z - self.centre[2]
        if self.yaw_deg:
            c, s = math.cos(math.radians(self.yaw_deg)), math.sin(math.radians(self.yaw_deg))
            dx, dy = c * dx + s * dy, c * dy - s * dx
        q = np.zeros_like(dx)
        w = np.zeros_like(dx)
        for d, (neg, pos) in zip((dx, dy, dz), self.radii):
            a = np.where(d < 0, neg, pos).astype(d.dtype)
            q += (d / a) ** 2
            w += (d / (a * a)) ** 2
        g = np.sqrt(q)
        w = np.sqrt(w)
        safe = w > 1e-12
        return np.where(safe, (1 - g) * g / np.where(safe, w, 1), min(min(p) for p in self.radii))


@dataclass(frozen=True)
class Capsule:
    """Tube segment from a to b whose radius goes linearly from ra to rb (round ends)."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    ra: float
    rb: float

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.ra, self.rb)
        return np.minimum(self.a, self.b) - r, np.maximum(self.a, self.b) + r

    def depth(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance to the tube wall in mm (positive inside)."""
        ab = np.subtract(self.b, self.a)
        length2 = float(ab @ ab) or 1.0
        dx, dy, dz = x - self.a[0], y - self.a[1], z - self.a[2]
        t = np.clip((dx * ab[0] + dy * ab[1] + dz * ab[2]) / length2, 0, 1)
        dist = np.sqrt((dx - t * ab[0]) ** 2 + (dy - t * ab[1]) ** 2 + (dz - t * ab[2]) ** 2)
        return self.ra + t * (self.rb - self.ra) - dist


def tube(points: Sequence[Sequence[float]], radii: Sequence[float], scale: float = 1.0) -> tuple[Capsule, ...]:
    """A polyline tube as capsules (each rendered on its own bounding box, so long thin tubes stay cheap)."""
    pts = [tuple(float(v) for v in p) for p in points]
    return tuple(Capsule(pts[i], pts[i + 1], radii[i] * scale, radii[i + 1] * scale) for i in range(len(pts) - 1))


Shape = Ellipsoid | Capsule


@dataclass(frozen=True)
class Anatomy:
    """One subject's shapes in the MNI-like frame (see `build_anatomy`)."""

    cerebrum: Ellipsoid
    temporal: tuple[Ellipsoid, Ellipsoid]
    cerebellum: tuple[Ellipsoid, ...]
    brainstem: tuple[Capsule, ...]
    structures: tuple[tuple[int, Shape], ...]  # painted in order over the tissue classes
    veins: tuple[Capsule, ...]                 # painted inside the brain only
    cortex_scale: float


def _surface_arc(ellipsoid: Ellipsoid, origin: Sequence[float], directions: np.ndarray, depth: float) -> np.ndarray:
    """Points `depth` mm inside the ellipsoid along rays from `origin` (bisection on the depth)."""
    o = np.asarray(origin, dtype=float)
    lo, hi = np.zeros(len(directions)), np.full(len(directions), 300.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        p = o + mid[:, None] * directions
        inside = ellipsoid.depth(p[:, 0], p[:, 1], p[:, 2]) > depth
        lo, hi = np.where(inside, mid, lo), np.where(inside, hi, mid)
    return o + lo[:, None] * directions


def build_anatomy(rng: np.random.Generator | None = None) -> Anatomy:
    """The anatomy with per-subject variation drawn from `rng`, or the mean anatomy for None.

    Varied: ventricle size (x0.75..1.45), cortical thickness (x0.88..1.12), each nucleus's size
    (x0.92..1.08) and position (+-1.2 mm), cortical vein positions (+-10 mm).
    """
    def draw(sd: float, limit: float, n: int = 1) -> np.ndarray:
        return np.zeros(n) if rng is None else np.clip(rng.normal(0.0, sd, n), -limit, limit)

    ventricles = float(np.exp(draw(0.15, 0.35)[0]))
    cortex_scale = float(np.exp(draw(0.06, 0.12)[0]))
    cerebrum = Ellipsoid.make(HEAD_CENTRE, (68, (86, 86), (40, 66)))
    temporal = tuple(Ellipsoid.make((s * 46, -18, -16), (22, 40, 22)) for s in (-1, 1))
    cerebellum = (Ellipsoid.make((-24, -62, -34), (26, 24, 20)), Ellipsoid.make((24, -62, -34), (26, 24, 20)),
                  Ellipsoid.make((0, -60, -30), (10, 20, 17)))
    brainstem = tube([(0, -16, -2), (0, -20, -12), (0, -26, -32), (0, -34, -50), (0, -36, -60)],
                     [10, 13, 14, 10, 9])

    def nucleus(name: str, side: int, centre, radii, yaw: float = 0.0) -> tuple[int, Ellipsoid]:
        size = float(np.exp(draw(0.04, 0.08)[0]))
        shift = draw(0.6, 1.2, 3)
        c = (side * centre[0] + shift[0], centre[1] + shift[1], centre[2] + shift[2])
        return LABELS[f"{name}_{'L' if side < 0 else 'R'}"], Ellipsoid.make(c, radii, side * yaw, size)

    structures: list[tuple[int, Shape]] = []
    for side in (-1, 1):
        tag = "L" if side < 0 else "R"
        structures += [
            nucleus("thalamus", side, (11, -19, 7), (8.5, 15, 11), 15),
            nucleus("caudate", side, (13, 12, 10), (6.5, 11, 10)),
            *[(LABELS[f"caudate_{tag}"], c) for c in
              tube([(side * 14, 6, 17), (side * 17, -10, 21), (side * 20, -26, 21)], [4.5, 3.5, 2.5])],
            nucleus("putamen", side, (25, 2, 1), (6, 17, 11), 10),
            nucleus("globus_pallidus", side, (18, -3, -1), (4.5, 10, 6.5), 10),
            nucleus("substantia_nigra", side, (10, -17, -12), (3.5, 8, 3), -35),
            nucleus("red_nucleus", side, (5, -20, -8), (4, 4.5, 4)),
            nucleus("dentate", side, (14, -56, -32), (6, 9, 6)),
        ]
    for side in (-1, 1):
        label = LABELS[f"lateral_ventricle_{'L' if side < 0 else 'R'}"]
        body = tube([(side * 7, 24, 10), (side * 8, 8, 15), (side * 10, -18, 18), (side * 20, -38, 12),
                     (side * 22, -56, 6)], [3.5, 5, 5.5, 6, 2.5], ventricles)
        horn = tube([(side * 20, -38, 12), (side * 28, -30, -6), (side * 30, -12, -18)], [4, 3, 2], ventricles)
        structures += [(label, c) for c in body + horn]
    structures += [(LABELS["csf"], Ellipsoid.make((0, -12, 5), (2.5 * ventricles, 14, 9))),
                   (LABELS["csf"], Ellipsoid.make((0, -44, -30), (5, 4, 7)))]

    phi = np.radians(np.arange(20, 201, 10))
    sss = _surface_arc(cerebrum, HEAD_CENTRE, np.stack([0 * phi, np.cos(phi), np.sin(phi)], 1), 3.0)
    veins = tube(sss, np.linspace(3.0, 4.5, len(sss)))
    veins += tube([(0, -36, 9), (0, -40, 6), (0, -66, 1), (0, -92, -3)], [2.0, 2.5, 2.5, 3.0])
    for side in (-1, 1):
        veins += tube([(side * 2.5, 0, 14), (side * 2, -36, 9)], [1.3, 1.5])
        veins += tube([(0, -94, -4), (side * 28, -90, -10), (side * 46, -72, -18), (side * 54, -50, -24)],
                      [4, 3.5, 3, 3])
        theta = np.radians(np.arange(15, 90, 8))
        for y0, dy in zip((35, 0, -30, -60), draw(5.0, 10.0, 4)):
            directions = np.stack([side * np.cos(theta), 0 * theta, np.sin(theta)], 1)
            veins += tube(_surface_arc(cerebrum, (0, y0 + dy, HEAD_CENTRE[2]), directions, 2.0), [1.4] * len(theta))
    return Anatomy(cerebrum, temporal, cerebellum, brainstem, tuple(structures), veins, cortex_scale)


class Space:
    """MNI-like coordinates (mm) of every voxel, with per-block bounds so shapes touch only their blocks."""

    BLOCK = 8

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.coords = (x, y, z)
        self.shape = x.shape
        b = self.BLOCK
        pad = [(0, -n % b) for n in self.shape]
        blocks = [n // b for n in np.add(self.shape, [p[1] for p in pad])]
        lows, highs = [], []
        for c in self.coords:
            tiles = np.pad(c, pad, mode="edge").reshape(blocks[0], b, blocks[1], b, blocks[2], b)
            lows.append(tiles.min(axis=(1, 3, 5)))
            highs.append(tiles.max(axis=(1, 3, 5)))
        self._low, self._high = lows, highs

    def region(self, low: Sequence[float], high: Sequence[float]) -> tuple[slice, slice, slice] | None:
        """Index box covering every voxel whose coordinates may lie in [low, high]; None if none."""
        hit = np.ones(self._low[0].shape, dtype=bool)
        for axis in range(3):
            hit &= (self._high[axis] >= low[axis]) & (self._low[axis] <= high[axis])
        if not hit.any():
            return None
        found = np.nonzero(hit)
        return tuple(slice(int(f.min()) * self.BLOCK, min((int(f.max()) + 1) * self.BLOCK, n))
                     for f, n in zip(found, self.shape))

    def take(self, region: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(c[region] for c in self.coords)


def _around(space: Space, shapes: Sequence[Shape], margin: float) -> tuple[slice, slice, slice] | None:
    """Index box of the voxels near `shapes` (their bounds grown by `margin` mm)."""
    low = np.min([s.bounds()[0] for s in shapes], axis=0) - margin
    high = np.max([s.bounds()[1] for s in shapes], axis=0) + margin
    return space.region(low, high)


_LOBES = ("frontal", "parietal", "temporal", "occipital")
_LOBE_LABELS = np.array([[LABELS[f"{lobe}_cortex_{side}"] for lobe in _LOBES] for side in "LR"], dtype=np.uint8)


def _lobe_labels(x: np.ndarray, y: np.ndarray, z: np.ndarray, temporal_depth: np.ndarray) -> np.ndarray:
    """Lobe of cortex points: occipital behind a tilted parieto-occipital plane, temporal below the
    Sylvian line inside the temporal ellipsoids, frontal in front of a tilted central sulcus."""
    occipital = y < -70 + 0.2 * (z - 10)
    sylvian = np.where(y > -35, 2 - 0.45 * y, 17.75 + 0.3 * (y + 35))
    temporal = ~occipital & (z < sylvian) & (temporal_depth > -4)
    frontal = ~occipital & ~temporal & (y > -10 - 0.55 * np.maximum(z - 25, 0))
    lobe = np.select([frontal, temporal, occipital], [0, 2, 3], default=1)
    return _LOBE_LABELS[(x >= 0).astype(np.intp), lobe]


def _cortex(x, y, z, envelope, temporal_depth, scale: float, gyri: Callable) -> np.ndarray:
    """Labels for points inside the cerebrum: CSF / cortex (by lobe) / white matter by depth.

    Depth is the distance to the nearest CSF boundary: the outer surface, the interhemispheric fissure
    (down to the corpus callosum in the middle, through the whole brain in front and behind) or the
    Sylvian fissure. A smooth random 'gyral' field h thickens the cortex around its zero set (sulci,
    lined with CSF) and thins it elsewhere (gyral crowns with white matter reaching up).
    """
    floor = 28 - 68 * np.clip(np.maximum(np.maximum(-42 - y, y - 28), 0) / 12, 0, 1)
    fissure = np.maximum(np.abs(x) - IHF_HALF, floor - z)
    sylvian = np.maximum(np.maximum(np.abs(z - (2 - 0.45 * y)) - SYLVIAN_HALF, SYLVIAN_MEDIAL - np.abs(x)),
                         np.maximum(y - 22, -38 - y))
    depth = np.minimum(np.minimum(envelope - CSF_OUTER, fissure), sylvian)
    labels = np.full(x.shape, LABELS["white_matter"], dtype=np.uint8)
    band = depth < scale * (GM_CROWN + GM_SULCUS)
    h = gyri(x[band], y[band], z[band])
    thickness = scale * (GM_CROWN + GM_SULCUS * np.exp(-(h / 0.6) ** 2))
    d = depth[band]
    cls = np.where(d < thickness, _lobe_labels(x[band], y[band], z[band], temporal_depth[band]),
                   LABELS["white_matter"]).astype(np.uint8)
    cls[(d < 0) | ((np.abs(h) < SULCUS_HALF) & (d < thickness - SULCUS_FLOOR))] = LABELS["csf"]
    labels[band] = cls
    return labels


def _cerebellum(x, y, z, depth, scale: float, gyri: Callable) -> np.ndarray:
    """Labels inside the cerebellum: folded cortex (left/right) over a white-matter core, folded
    with the same random field as the cerebral cortex (coarser than real folia)."""
    h = gyri(x, y, z)
    thickness = scale * CEREBELLAR_GM * (0.5 + np.exp(-(h / 0.6) ** 2))
    labels = np.where(x < 0, LABELS["cerebellar_cortex_L"], LABELS["cerebellar_cortex_R"]).astype(np.uint8)
    labels[depth >= thickness] = LABELS["white_matter"]
    labels[(np.abs(h) < SULCUS_HALF) & (depth < thickness - SULCUS_FLOOR)] = LABELS["csf"]
    return labels


def render(space: Space, anatomy: Anatomy, gyri: Callable) -> tuple[np.ndarray, np.ndarray]:
    """Label map (uint8, `LABELS`) and the signed distance to the brain's outer surface (mm, + inside).

    `gyri(x, y, z)` is the subject's smooth unit-variance folding field. The distance is only
    computed near the brain (elsewhere -inf); the T1 head shell is drawn from it.
    """
    labels = np.zeros(space.shape, dtype=np.uint8)
    outer = np.full(space.shape, -np.inf, dtype=np.float32)
    shell = HEAD_LAYERS[-1][0] + 1
    region = _around(space, (anatomy.cerebrum, *anatomy.temporal), shell)
    if region is not None:
        x, y, z = space.take(region)
        cerebrum = anatomy.cerebrum.depth(x, y, z)
        temporal = np.maximum(anatomy.temporal[0].depth(x, y, z), anatomy.temporal[1].depth(x, y, z))
        envelope = np.maximum(cerebrum, temporal)
        np.maximum(outer[region], envelope, out=outer[region])
        inside = envelope > 0
        view = labels[region]
        view[inside] = _cortex(x[inside], y[inside], z[inside], envelope[inside], temporal[inside],
                               anatomy.cortex_scale, gyri)

    region = _around(space, anatomy.cerebellum, shell)
    if region is not None:
        x, y, z = space.take(region)
        depth = np.max([e.depth(x, y, z) for e in anatomy.cerebellum], axis=0)
        np.maximum(outer[region], depth, out=outer[region])
        view = labels[region]
        view[depth > -CSF_MARGIN] = LABELS["csf"]
        inside = depth > 0
        view[inside] = _cerebellum(x[inside], y[inside], z[inside], depth[inside], anatomy.cortex_scale, gyri)

    for capsule in anatomy.brainstem:
        region = _around(space, [capsule], shell)
        if region is not None:
            x, y, z = space.take(region)
            depth = capsule.depth(x, y, z)
            np.maximum(outer[region], depth, out=outer[region])
            view = labels[region]
            above = z > BRAINSTEM_CUT
            view[above & (depth > -CSF_MARGIN) & (view == 0)] = LABELS["csf"]
            view[above & (depth > 0)] = LABELS["brainstem"]

    for label, shape in anatomy.structures:
        region = space.region(*shape.bounds())
        if region is not None:
            view = labels[region]
            view[shape.depth(*space.take(region)) > 0] = label
    for vein in anatomy.veins:
        region = space.region(*vein.bounds())
        if region is not None:
            view = labels[region]
            view[(vein.depth(*space.take(region)) > 0) & (view > 0)] = LABELS["veins"]
    return labels, outer


def head_t1w(space: Space, outer: np.ndarray) -> np.ndarray:
    """T1-weighted intensity of the tissues outside the brain (float32, 0 = air), for the T1 only:
    dura/CSF, skull tables around the diploe, scalp (by distance outside the brain surface) and a
    neck below the brain."""
    t1w = np.zeros(space.shape, dtype=np.float32)
    region = space.region((-90, -110, -200), (90, 80, NECK_TOP))
    if region is not None:
        x, y, z = space.take(region)
        neck = ((x / 58) ** 2 + ((y + 22) / 66) ** 2 < 1) & (z < NECK_TOP)
        t1w[region][neck] = NECK_T1W
    for edge, value in reversed(HEAD_LAYERS):
        t1w[outer > -edge] = value
    t1w[outer > 0] = TISSUES["brainstem"].t1w  # brain outside the mask: the cord below the cut
    return t1w
