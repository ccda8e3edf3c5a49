"""The demo's steps: the whole pipeline on the synthetic cohort (`run`), its registration arm
(`registration`) and its summary and verdicts (`summary`); the command `mqsm_demo` is
`mqsm_nnunet/cli/demo.py`.
"""
