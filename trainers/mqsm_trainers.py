"""mQSM trainers for `nnUNetv2_train ... -tr <name>` (set nnUNet_extTrainer to this folder).

The classes live in the installed package: nnU-Net drops the modules it imported from this folder
after the lookup, and its spawn pools must be able to pickle the trainer by its real module.
"""
from mqsm_nnunet.training.qsm_only import mQSMTrainer_QSM, mQSMTrainer_QSM_tiny
from mqsm_nnunet.training.trainer import mQSMTrainer
from mqsm_nnunet.training.variants import (mQSMTrainer_paperLoss, mQSMTrainer_SA, mQSMTrainer_tiny,
                                           mQSMTrainer_tiny_paperLoss, mQSMTrainer_tiny_SA, mQSMTrainer_tiny_UNet,
                                           mQSMTrainer_inputFusionMap, mQSMTrainer_tiny_inputFusion,
                                           mQSMTrainer_tiny_inputFusionMap,
                                           mQSMTrainer_tiny_qsmMap, mQSMTrainer_tiny_qsmMapOnly,
                                           mQSMTrainer_tiny_wideT1,
                                           mQSMTrainer_UNet, nnUNetTrainer_tinyLength, nnUNetTrainer_tinyRecipe)

__all__ = ["mQSMTrainer", "mQSMTrainer_tiny", "mQSMTrainer_UNet", "mQSMTrainer_SA", "mQSMTrainer_paperLoss",
           "mQSMTrainer_tiny_UNet", "mQSMTrainer_tiny_SA", "mQSMTrainer_tiny_paperLoss", "mQSMTrainer_tiny_wideT1",
           "mQSMTrainer_tiny_qsmMap", "mQSMTrainer_tiny_inputFusion", "mQSMTrainer_inputFusionMap",
           "mQSMTrainer_tiny_inputFusionMap", "mQSMTrainer_tiny_qsmMapOnly", "nnUNetTrainer_tinyLength",
           "nnUNetTrainer_tinyRecipe", "mQSMTrainer_QSM", "mQSMTrainer_QSM_tiny"]
