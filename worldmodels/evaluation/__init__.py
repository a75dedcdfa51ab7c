"""The evaluation of a policy and of its world model in imagination: open-loop error, imagined vs real return, videos."""
