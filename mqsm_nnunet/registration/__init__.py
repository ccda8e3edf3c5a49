"""The paper's comparison arm: a template's labels carried to each subject by ANTs registration
(`ants`), and `mqsm_register` (`cli`).
"""
