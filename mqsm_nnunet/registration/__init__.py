"""The paper's comparison arm: a template's labels carried to each subject by ANTs registration
(`ants`: one registration; `fusion`: several templates fused; `cohort`: a whole cohort written out);
the command `mqsm_register` is `mqsm_nnunet/cli/register.py`.
"""
