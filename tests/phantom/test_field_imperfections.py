"""Imperfect fields (`phantom.field_imperfections`): a residual background field that is harmonic and
smooth, non-dipolar phase that lives at the brain's edge, each of the asked size; nothing else of the
subject changes; a plain inversion suffers from them (what the stronger QSM must survive)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mqsm_nnunet.cli.phantom import main
from mqsm_nnunet.metrics import nrmse
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.label_maps import embedded_anatomies, load_anatomy
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.qsm.baselines import tkd

VOXEL = (3.0, 3.0, 3.0)


@pytest.fixture(scope="module")
def subjects():
    anatomy = load_anatomy(embedded_anatomies()[4])
    make = lambda **kw: make_real_subject(anatomy, 2, seed=9, voxel_size=VOXEL, noise=0.0, **kw)  # noqa: E731
    return {"clean": make(), "none": make(imperfections=FieldImperfections()),
            "background": make(imperfections=FieldImperfections(background=0.2)),
            "edge": make(imperfections=FieldImperfections(edge=0.3))}


def added(subjects, kind):
    return subjects[kind].field - subjects["clean"].field


def test_off_by_default_and_nothing_else_changes(subjects):
    clean = subjects["clean"]
    np.testing.assert_array_equal(subjects["none"].field, clean.field)
    for kind in ("background", "edge"):
        for role in ("t1", "chi", "labels", "mask"):
            np.testing.assert_array_equal(getattr(subjects[kind], role), getattr(clean, role))
        assert not np.array_equal(subjects[kind].field, clean.field)
        assert np.all(subjects[kind].field[clean.mask == 0] == 0)


def test_each_has_the_asked_size(subjects):
    mask = subjects["clean"].mask > 0
    sd = subjects["clean"].field[mask].std()
    assert np.sqrt(np.mean(added(subjects, "background")[mask] ** 2)) == pytest.approx(0.2 * sd, rel=1e-3)
    assert np.sqrt(np.mean(added(subjects, "edge")[mask] ** 2)) == pytest.approx(0.3 * sd, rel=1e-3)


def test_background_residual_is_harmonic_and_edge_phase_sits_at_the_edge(subjects):
    mask = subjects["clean"].mask > 0
    interior = ndimage.binary_erosion(mask, iterations=2)
    background, edge = added(subjects, "background"), added(subjects, "edge")
    laplacian = ndimage.laplace(background.astype(np.float64))
    # a degree-2 harmonic polynomial: its discrete Laplacian vanishes (float32 rounding aside), while
    # the dipole field's own does not
    assert np.abs(laplacian[interior]).max() < 1e-3 * np.abs(ndimage.laplace(subjects["clean"].field)[interior]).max()
    depth = ndimage.distance_transform_edt(mask, sampling=VOXEL)
    outer = mask & (depth <= 7.0)
    assert np.sum(edge[outer] ** 2) > 0.85 * np.sum(edge[mask] ** 2)
    assert outer.sum() < 0.6 * mask.sum()           # the outer 7 mm are not most of the brain


def test_a_plain_inversion_suffers_from_them(subjects):
    clean = subjects["clean"]
    mask = clean.mask > 0

    def error(subject):
        return nrmse(tkd(subject.field, VOXEL, subject.b0_dir, mask), clean.chi, mask)

    # measured: 41.8 % clean, 43.6 with a 20 % residual background, 49.2 with 30 % edge phase
    assert error(subjects["background"]) > error(clean) + 1
    assert error(subjects["edge"]) > error(clean) + 1


def test_cli_flags(tmp_path, capsys):
    assert main(["-o", str(tmp_path / "cohort"), "-n", "1", "--voxel-size", "4", "4", "4",
                 "--background-residual", "0.1", "--edge-phase", "0.2"]) == 0
    assert "residual background field 10 %, non-dipolar edge phase 20 %" in capsys.readouterr().out
    for flags in (["--geometric", "--edge-phase", "0.2"], ["--edge-phase", "-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["-o", str(tmp_path / "other"), "-n", "1", *flags])
        assert exit_info.value.code == 2
