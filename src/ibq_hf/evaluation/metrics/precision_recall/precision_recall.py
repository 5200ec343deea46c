"""`evaluate` module "precision_recall" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.PrecisionRecallMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("precision_recall"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class PrecisionRecall(_impl.PrecisionRecallMetric):
    """See `ibq_hf.evaluation.hf_metrics.PrecisionRecallMetric`."""
