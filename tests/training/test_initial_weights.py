"""A training started from a checkpoint takes every tensor whose name and shape match, the
segmentation outputs included (nnU-Net's -pretrained_weights leaves those at random)."""
import pytest
import torch

from mqsm_nnunet.training.initial_weights import load_matching_weights


class _Net(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.encoder = torch.nn.Conv3d(2, 4, 3)
        self.seg_layers = torch.nn.Conv3d(4, classes, 1)


def test_matching_tensors_are_copied_and_the_rest_left(tmp_path):
    source, same, other = _Net(5), _Net(5), _Net(7)
    path = tmp_path / "checkpoint.pth"
    torch.save({"network_weights": source.state_dict()}, path)
    assert load_matching_weights(same, path) == (4, 4)
    for name, tensor in same.state_dict().items():
        torch.testing.assert_close(tensor, source.state_dict()[name])     # seg_layers too
    before = other.seg_layers.weight.clone()
    assert load_matching_weights(other, path) == (2, 4)                    # another label set: encoder only
    torch.testing.assert_close(other.encoder.weight, source.encoder.weight)
    torch.testing.assert_close(other.seg_layers.weight, before)


def test_a_checkpoint_that_fits_nothing_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pth"
    torch.save({"network_weights": {"elsewhere.weight": torch.zeros(3)}}, path)
    with pytest.raises(ValueError, match="fits the network"):
        load_matching_weights(_Net(5), path)
    torch.save({"something": 1}, path)
    with pytest.raises(ValueError, match="network_weights"):
        load_matching_weights(_Net(5), path)
    with pytest.raises(FileNotFoundError):
        load_matching_weights(_Net(5), tmp_path / "missing.pth")
