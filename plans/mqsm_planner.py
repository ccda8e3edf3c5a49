"""Re-export of the planner class; the implementation lives in `mqsm_nnunet.planning`."""
from mqsm_nnunet.planning import PLANS_NAME, mQSMPlanner

__all__ = ["mQSMPlanner", "PLANS_NAME"]
