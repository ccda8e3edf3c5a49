"""The iron analysis under its first name: `mqsm_nnunet.analysis` holds it; this keeps
`from mqsm_nnunet.iron import run_iron_analysis, ...` and the `mqsm_iron` entry point working."""
from mqsm_nnunet.analysis import *  # noqa: F401,F403 (the public names, re-exported)
from mqsm_nnunet.analysis import __all__ as _analysis_names
from mqsm_nnunet.analysis.cli import main
from mqsm_nnunet.labels import read_labels

__all__ = [*_analysis_names, "read_labels", "main"]
