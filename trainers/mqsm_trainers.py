"""mQSM trainers for `nnUNetv2_train ... -tr <name>` (set nnUNet_extTrainer to this folder).

The classes live in the installed package: nnU-Net drops the modules it imported from this folder
after the lookup, and its spawn pools must be able to pickle the trainer by its real module. The
benchmarks' own trainers are in `benchmarks/trainers/` (benchmarks/benchmark_trainers.py).
"""
from mqsm_nnunet.training.qsm_only import mQSMTrainer_QSM, mQSMTrainer_QSM_tiny
from mqsm_nnunet.training.trainer import mQSMTrainer
from mqsm_nnunet.training.variants import (mQSMTrainer_inputFusionMap, mQSMTrainer_paperLoss, mQSMTrainer_SA,
                                           mQSMTrainer_tiny, mQSMTrainer_tiny_inputFusionMap,
                                           mQSMTrainer_tiny_paperLoss, mQSMTrainer_tiny_SA, mQSMTrainer_tiny_UNet,
                                           mQSMTrainer_UNet)

__all__ = ["mQSMTrainer", "mQSMTrainer_UNet", "mQSMTrainer_SA", "mQSMTrainer_paperLoss", "mQSMTrainer_inputFusionMap",
           "mQSMTrainer_tiny", "mQSMTrainer_tiny_UNet", "mQSMTrainer_tiny_SA", "mQSMTrainer_tiny_paperLoss",
           "mQSMTrainer_tiny_inputFusionMap", "mQSMTrainer_QSM", "mQSMTrainer_QSM_tiny"]
