"""The mQSM planner (`mQSMPlanner`, plans `mQSMPlans`) and its `mqsm_plan_and_preprocess` command."""
