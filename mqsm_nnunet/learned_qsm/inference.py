"""The learned QSM on whole volumes: the shipped pretrained net and one subject's map.

`reconstruct` starts from TV-ADMM with the rule's alpha (`qsm.parameter_rules`: from the field alone,
what a user would run), crops to the brain's box (every source lies in the mask), runs the unrolled net
(`learned_qsm.unrolled_net`) and puts the map back on the field's grid, 0 outside the mask.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mqsm_nnunet.learned_qsm.unrolled_net import DipoleOperator, UnrolledQSMNet
from mqsm_nnunet.learned_qsm.pretraining import mask_box
from mqsm_nnunet.qsm import baselines, parameter_rules

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "qsm_net"
WEIGHTS_NAME, RECORD_NAME = "weights.pt", "record.json"


@dataclass(frozen=True)
class FieldMap:
    """One subject's local field (ppm) with its mask and geometry, voxel order."""

    field: np.ndarray
    mask: np.ndarray
    voxel_size: tuple[float, float, float]
    b0_dir: tuple[float, float, float]


def save_pretrained(net: UnrolledQSMNet, folder: str | os.PathLike, record: dict) -> None:
    """The weights and sizes (`WEIGHTS_NAME`) and the record of how they were made (`RECORD_NAME`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"sizes": net.sizes(), "state_dict": net.state_dict()}, folder / WEIGHTS_NAME)
    (folder / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")


def load_pretrained(folder: str | os.PathLike = PRETRAINED_DIR) -> UnrolledQSMNet:
    """The net saved by `save_pretrained` (default: the one shipped in the package), on the CPU, in eval mode.

    Raises:
        FileNotFoundError: no weights in `folder`.
    """
    path = Path(folder) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained QSM weights (scripts/pretrain_qsm_net.py makes them)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = UnrolledQSMNet(**saved["sizes"])
    net.load_state_dict(saved["state_dict"])
    return net.eval()


def tv_start(subject: FieldMap) -> np.ndarray:
    """TV-ADMM with the rule's alpha: the map the net starts from."""
    alpha = parameter_rules.tuned_parameters(subject.field, subject.voxel_size, subject.b0_dir, subject.mask,
                                             ["tv_admm"])["tv_admm"]
    return baselines.tv_admm(subject.field, subject.voxel_size, subject.b0_dir, subject.mask, **alpha)


def box_tensors(subject: FieldMap, start: np.ndarray, device: torch.device):
    """(the mask's box, [field, mask, start] on it as (1, 1, *S) tensors, the box's dipole operator)."""
    box = mask_box(subject.mask)
    tensors = [torch.from_numpy(np.ascontiguousarray(a[box], dtype=np.float32))[None, None].to(device)
               for a in (subject.field * (subject.mask != 0), subject.mask != 0, start)]
    return box, tensors, DipoleOperator(tensors[0].shape[2:], subject.voxel_size, subject.b0_dir, device)


def on_grid(values: torch.Tensor, subject: FieldMap, box) -> np.ndarray:
    """A (1, 1, *S) map of the mask's box back on the field's grid, float32, 0 outside the mask."""
    chi = np.zeros(subject.field.shape, dtype=np.float32)
    chi[box] = values[0, 0].detach().float().cpu().numpy()
    return np.where(subject.mask != 0, chi, 0.0).astype(np.float32)


def reconstruct(net: UnrolledQSMNet, field: np.ndarray, mask: np.ndarray, voxel_size: Sequence[float],
                b0_dir: Sequence[float], start: np.ndarray | None = None,
                device: torch.device | str = "cpu") -> np.ndarray:
    """The learned QSM (ppm, float32, 0 outside the mask) of one local field (ppm).

    `start`: the TV-ADMM map when the caller has it (else computed here by the rule).
    """
    subject = FieldMap(np.asarray(field, dtype=np.float32), np.asarray(mask) != 0,
                       tuple(float(v) for v in voxel_size), tuple(float(v) for v in b0_dir))
    device = torch.device(device)
    start = tv_start(subject) if start is None else start
    box, (f, m, x0), dipole = box_tensors(subject, start, device)
    was_training = net.training
    net.eval()
    with torch.no_grad():
        chi = net(f, m, x0, dipole)
    net.train(was_training)
    return on_grid(chi, subject, box)
