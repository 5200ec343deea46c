"""`evaluate` module "codebook_usage" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.CodebookUsageMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("codebook_usage"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class CodebookUsage(_impl.CodebookUsageMetric):
    """See `ibq_hf.evaluation.hf_metrics.CodebookUsageMetric`."""
