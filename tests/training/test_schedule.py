"""TaskPolyLR: nnU-Net's poly decay per parameter group, each with its own base rate and frozen epochs."""
import pytest
import torch

from mqsm_nnunet.training.schedule import TaskPolyLR


def _optimizer() -> torch.optim.Optimizer:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a], "name": "segmentation", "initial_lr": 0.01},
                            {"params": [b], "name": "reconstruction", "initial_lr": 0.002}], lr=0.01)


def test_each_group_decays_from_its_own_base_rate_and_is_zero_while_frozen():
    optimizer = _optimizer()
    schedule = TaskPolyLR(optimizer, 10, lambda task, epoch: task == "segmentation" and epoch < 3)
    seen = []
    for epoch in range(10):
        schedule.step(epoch)
        seen.append(schedule.get_last_lr())
    assert [s[0] for s in seen[:3]] == [0.0, 0.0, 0.0]
    for epoch in (3, 7, 9):   # closed form 0.01 * (1 - e / 10) ** 0.9, by hand
        assert seen[epoch][0] == pytest.approx(0.01 * (1 - epoch / 10) ** 0.9)
    assert seen[0][1] == pytest.approx(0.002) and seen[5][1] == pytest.approx(0.002 * 0.5 ** 0.9)
    assert all(a > b for a, b in zip([s[1] for s in seen], [s[1] for s in seen][1:]))   # strictly decaying


def test_groups_without_name_or_base_rate_are_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="name"):
        TaskPolyLR(optimizer, 10, lambda task, epoch: False)
    with pytest.raises(ValueError, match="num_epochs"):
        TaskPolyLR(_optimizer(), 0, lambda task, epoch: False)
