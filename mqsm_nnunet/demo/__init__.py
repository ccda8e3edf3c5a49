"""`mqsm_demo`: the whole pipeline on the synthetic cohort (`run`), its registration arm (`registration`)
and its summary and verdicts (`summary`).
"""
