"""Start a training from a pretrained model's weights, the segmentation outputs included.

nnU-Net's `-pretrained_weights` leaves the segmentation output layers at random (they depend on the
label set); when the label set is the same (the demo fine-tuning the shipped real-anatomy model) they
are worth keeping. The short variants load every tensor whose name and shape match from the file
named by the plans entry `mqsm_short_training.initial_weights` (`short_training.py`).
"""
from __future__ import annotations

import os

import torch
from torch._dynamo import OptimizedModule
from torch.nn.parallel import DistributedDataParallel


def load_matching_weights(network: torch.nn.Module, path: str | os.PathLike) -> tuple[int, int]:
    """Copy into `network` every tensor of the checkpoint's `network_weights` whose name and shape
    match; returns (tensors copied, tensors in the network).

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: it has no `network_weights`, or nothing in it fits the network.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint (mqsm_short_training.initial_weights in the plans)")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(saved, dict) or "network_weights" not in saved:
        raise ValueError(f"{path}: not an nnU-Net checkpoint (no 'network_weights')")
    module = network.module if isinstance(network, DistributedDataParallel) else network
    module = module._orig_mod if isinstance(module, OptimizedModule) else module
    state = module.state_dict()
    matching = {k: v for k, v in saved["network_weights"].items() if k in state and state[k].shape == v.shape}
    if not matching:
        raise ValueError(f"{path}: no tensor of this checkpoint fits the network (another architecture?)")
    state.update(matching)
    module.load_state_dict(state)
    return len(matching), len(state)
