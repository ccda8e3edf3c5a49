"""Scoring predictions against references: `evaluate` (`mqsm_evaluate`: QSM and segmentation tables over
folders, on the metrics of `mqsm_nnunet.metrics`) and `scoring` (held-out scores for the demo and benchmarks).
"""
