"""Scoring predictions against references: `evaluate` (what `mqsm_evaluate` computes: QSM and
segmentation tables over folders, on the metrics of `mqsm_nnunet.metrics`) and `scoring` (held-out
scores for the demo and the benchmarks).
"""
