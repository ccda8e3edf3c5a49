"""The mutual-attention matrix of a trained model on one case (the paper's Fig. 4).

MutualTransformer keeps its last MA matrix when `store_attention` is set; a forward hook averages
it over every sliding-window patch of a normal nnU-Net prediction of the case.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from mqsm_nnunet.network.mtrans import MutualTransformer


def mutual_attention_of_case(model_folder: Path, channel_files: Sequence[Path], fold: int | str = 0,
                             checkpoint: str = "checkpoint_final.pth") -> np.ndarray | None:
    """Mean (C1 x C2: T1-stream x QSM-stream channels) mutual attention of the deepest mTrans block over
    the case's patches.

    Returns None when the model has no mutual attention (the U-Net and U-Net+SA ablations).
    """
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), [fold], checkpoint_name=checkpoint)
    blocks = [m for m in predictor.network.modules() if isinstance(m, MutualTransformer) and m.attention == "mtrans"]
    if not blocks:
        return None
    block = blocks[-1]
    block.store_attention = True
    matrices: list[np.ndarray] = []
    handle = block.register_forward_hook(
        lambda module, inputs, output: matrices.append(module.last_mutual_attention.float().mean(0).cpu().numpy()))
    try:
        image, properties = SimpleITKIO().read_images([str(p) for p in channel_files])
        predictor.predict_single_npy_array(image, properties)
    finally:
        handle.remove()
        block.store_attention = False
    return np.mean(matrices, axis=0)
