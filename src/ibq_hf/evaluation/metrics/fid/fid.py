"""`evaluate` module "fid" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.FIDMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("fid"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class Fid(_impl.FIDMetric):
    """See `ibq_hf.evaluation.hf_metrics.FIDMetric`."""
