"""`evaluate` module "lpips" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.LPIPSMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("lpips"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class Lpips(_impl.LPIPSMetric):
    """See `ibq_hf.evaluation.hf_metrics.LPIPSMetric`."""
