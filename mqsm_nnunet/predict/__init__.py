"""Prediction: mQSMPredictor (nnU-Net's sliding window giving the QSM beside the segmentation) and the
QSM's export to native space, below both training and `mqsm_predict` (`cli`: in-house staging, model-folder
checks, cases without a T1, outputs published in the user's label ids).
"""
