"""`evaluate` module "inception_score" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.InceptionScoreMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("inception_score"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class InceptionScore(_impl.InceptionScoreMetric):
    """See `ibq_hf.evaluation.hf_metrics.InceptionScoreMetric`."""
