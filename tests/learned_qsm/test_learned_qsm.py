"""The learned QSM: supervised steps that must lower the error against the truth, the box sampling's
physics, the shipped weights on a held-out anatomy, the streak guard of fine-tuning, and the pool's
determinism."""
import json

import numpy as np
import pytest
import torch

from mqsm_nnunet import physics
from mqsm_nnunet.metrics import nrmse_demeaned
from mqsm_nnunet.learned_qsm import finetuning, inference
from mqsm_nnunet.learned_qsm.unrolled_net import UnrolledQSMNet
from mqsm_nnunet.learned_qsm.pretraining import sample_box, supervised_step
from mqsm_nnunet.learned_qsm.simulated_fields import HELD_OUT_ANATOMIES, FieldExample, draw_example, training_anatomies
from mqsm_nnunet.phantom.field_imperfections import FieldImperfections
from mqsm_nnunet.phantom.label_maps import embedded_anatomies, label_map_stem, load_anatomy
from mqsm_nnunet.phantom.real_subject import make_real_subject
from mqsm_nnunet.phantom.subject import make_subject
from mqsm_nnunet.qsm import baselines, parameter_rules

HELD_OUT = "anatomy_06"


TINY = (32, 32, 24), (6.0, 6.0, 6.0)     # the end-to-end tests' grid: the whole head, fast


def _example(seed: int = 0) -> FieldExample:
    subject = make_subject(0, *TINY, seed=seed)
    mask = subject.mask > 0
    alpha = parameter_rules.tuned_parameters(subject.field, TINY[1], subject.b0_dir, mask, ["tv_admm"])["tv_admm"]
    tv = baselines.tv_admm(subject.field, TINY[1], subject.b0_dir, mask, **alpha).astype(np.float32)
    return FieldExample(subject.field, mask, subject.chi, tv, TINY[1], subject.b0_dir, "geometric")


def _train(example: FieldExample, lr: float, steps: int = 12) -> tuple[float, float]:
    torch.manual_seed(0)
    net = UnrolledQSMNet(n_steps=2, width=8)
    before = nrmse_demeaned(inference.reconstruct(net, example.field, example.mask, example.voxel_size,
                                                example.b0_dir, example.tv), example.chi, example.mask)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        supervised_step(net, sample_box(example, rng, crop=64), optimizer, torch.device("cpu"), mixed_precision=False)
    after = nrmse_demeaned(inference.reconstruct(net, example.field, example.mask, example.voxel_size,
                                               example.b0_dir, example.tv), example.chi, example.mask)
    return before, after


def test_supervised_steps_lower_the_error_against_the_truth():
    example = _example()
    before, after = _train(example, lr=3e-3)
    assert before == pytest.approx(nrmse_demeaned(example.tv, example.chi, example.mask), abs=1e-3)  # starts at TV
    assert after < before - 1.0, (before, after)


def test_with_a_learning_rate_of_zero_nothing_moves():
    before, after = _train(_example(), lr=0.0, steps=3)
    assert after == pytest.approx(before, abs=1e-4)


def test_a_box_field_is_the_field_of_its_own_sources():
    """Inside the box the field equals the dipole field of the box's chi (plus the example's noise)."""
    subject = make_subject(0, *TINY, seed=1, noise=0.0)
    field = physics.forward_field(subject.chi, TINY[1], subject.b0_dir) * (subject.mask > 0)
    example = FieldExample(field.astype(np.float32), subject.mask > 0, subject.chi, subject.chi, TINY[1],
                           subject.b0_dir, "geometric")
    box = sample_box(example, np.random.default_rng(0), crop=16)
    own = physics.forward_field(box.chi[0, 0].numpy(), box.voxel_size, box.b0_dir) * box.mask[0, 0].numpy()
    full = physics.forward_field(example.chi, TINY[1], subject.b0_dir)
    assert np.abs(box.field[0, 0].numpy() - own).max() < 0.02 * np.abs(full).max()


def test_pool_examples_are_reproducible_and_never_held_out(tmp_path):
    assert not {label_map_stem(p) for p in training_anatomies()} & set(HELD_OUT_ANATOMIES)
    anatomy = load_anatomy(training_anatomies()[0])
    first, again = draw_example(anatomy, 3, 5), draw_example(anatomy, 3, 5)
    np.testing.assert_array_equal(first.field, again.field)
    first.save(tmp_path / "e.npz")
    loaded = FieldExample.load(tmp_path / "e.npz")
    np.testing.assert_array_equal(loaded.tv, first.tv)
    assert loaded.b0_dir == first.b0_dir and not list(tmp_path.glob("*.partial*"))


@pytest.fixture(scope="module")
def held_out_subject():
    path = next(p for p in embedded_anatomies() if label_map_stem(p) == HELD_OUT)
    return make_real_subject(load_anatomy(path), 0, 31, b0_dir=(0.1, 0.95, 0.3), deform=False)


def test_shipped_net_beats_its_tv_start_on_a_held_out_anatomy(held_out_subject):
    record = json.loads((inference.PRETRAINED_DIR / inference.RECORD_NAME).read_text())
    for key in ("command", "seed", "steps", "machine", "held_out", "best"):
        assert key in record
    assert HELD_OUT in record["held_out"]
    s = held_out_subject
    mask = s.mask > 0
    start = inference.tv_start(inference.FieldMap(s.field, mask, (2.0,) * 3, s.b0_dir))
    chi = inference.reconstruct(inference.load_pretrained(), s.field, mask, (2.0,) * 3, s.b0_dir, start)
    tv, ours = nrmse_demeaned(start, s.chi, mask), nrmse_demeaned(chi, s.chi, mask)
    assert ours < 0.95 * tv, (ours, tv)


def test_cone_energy_sees_streaks_along_the_magic_angle():
    rng = np.random.default_rng(0)
    chi = rng.normal(size=(24, 24, 24))
    streaks = physics.tkd(rng.normal(size=(24, 24, 24)), (1.0,) * 3, (0, 0, 1), threshold=0.02)
    assert finetuning.cone_energy(chi + streaks, (1.0,) * 3, (0, 0, 1)) > 2 * finetuning.cone_energy(chi, (1.0,) * 3, (0, 0, 1))


def test_guard_rejects_streaky_finetuning_on_a_field_with_edge_phase():
    """Edge phase no dipole explains: data consistency without the anchor, at a high learning rate,
    fits it with streaks and loses points; the guard must reject that map, while the default
    fine-tuning stays within half a point of the pretrained map."""
    path = next(p for p in embedded_anatomies() if label_map_stem(p) == HELD_OUT)
    s = make_real_subject(load_anatomy(path), 1, 31, voxel_size=(3.0,) * 3, deform=False,
                          imperfections=FieldImperfections(background=0.1, edge=0.4))
    mask = s.mask > 0
    subject = inference.FieldMap(s.field, mask, (3.0,) * 3, s.b0_dir)
    start = inference.tv_start(subject)
    net = inference.load_pretrained()

    def error(model) -> float:
        return nrmse_demeaned(inference.reconstruct(model, s.field, mask, (3.0,) * 3, s.b0_dir, start), s.chi, mask)

    pretrained = error(net)
    streaky, accepted = finetuning.finetune(net, [subject], steps=6, lr=1e-3, anchor_weight=0.0, starts=[start])
    assert error(streaky) > pretrained + 2.0       # the unguarded map is worse ...
    assert accepted == [False]                     # ... and the guard sees it
    tuned, accepted = finetuning.finetune(net, [subject], steps=6, starts=[start])
    assert error(tuned if accepted[0] else net) < pretrained + 0.5
