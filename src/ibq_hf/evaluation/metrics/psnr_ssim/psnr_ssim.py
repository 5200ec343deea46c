"""`evaluate` module "psnr_ssim" of ibq-hf: a thin wrapper over `ibq_hf.evaluation.hf_metrics.PSNRSSIMMetric`.

Load offline with ``evaluate.load(ibq_hf.evaluation.metric_path("psnr_ssim"))``; init options go to ``evaluate.load``.
"""

import ibq_hf.evaluation.hf_metrics as _impl


class PsnrSsim(_impl.PSNRSSIMMetric):
    """See `ibq_hf.evaluation.hf_metrics.PSNRSSIMMetric`."""
