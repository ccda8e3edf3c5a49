"""The paper's comparison arm: a template's labels carried to each subject by ANTs registration
(`ants`); the command `mqsm_register` is `mqsm_nnunet/cli/register.py`.
"""
