"""The console scripts, one module each, over the library's functions (setup.cfg's entry points):
`phantom` (mqsm_phantom), `convert` (mqsm_convert), `plan_and_preprocess` (mqsm_plan_and_preprocess),
`predict` (mqsm_predict), `iron` (mqsm_iron), `evaluate` (mqsm_evaluate), `register` (mqsm_register),
`demo` (mqsm_demo). How each ends (errors, warnings, interrupts): `mqsm_nnunet.command`.
"""
