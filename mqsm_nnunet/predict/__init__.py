"""Prediction: mQSMPredictor (nnU-Net's sliding window giving the QSM beside the segmentation), the
QSM's export to native space, staging of in-house subject folders, model-folder checks, cases without
a T1, the outputs published in the user's label ids, and one folder of cases through a model
(`folder`); below both training (final validation) and `mqsm_predict` (`mqsm_nnunet/cli/predict.py`).
"""
