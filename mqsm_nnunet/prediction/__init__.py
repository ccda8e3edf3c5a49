"""nnU-Net's predictor giving the QSM beside the segmentation, and the QSM's way back to native space.

Below both `training/` (final validation writes each validation case's QSM) and `inference/`
(mqsm_predict), so neither imports the other.
"""
