"""Planning as a script: `python plans/mqsm_plan_and_preprocess.py -d ID` is `mqsm_plan_and_preprocess -d ID`
(the planner: `mqsm_nnunet.planning.mQSMPlanner`; the command: `mqsm_nnunet.cli.plan_and_preprocess`)."""
import sys

from mqsm_nnunet.cli.plan_and_preprocess import main

if __name__ == "__main__":
    sys.exit(main())
