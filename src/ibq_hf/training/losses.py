"""Tokenizer training losses (reference §3): PatchGAN discriminator, hinge / non-saturating adversarial losses
and the LeCam regulariser.

The perceptual term, LPIPS-VGG, is the package's one LPIPS implementation, `ibq_hf.lpips.LPIPS` (shared with
evaluation; also exported as ``ibq_hf.training.LPIPS``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "LeCamRegularizer",
    "NLayerDiscriminator",
    "hinge_d_loss",
    "non_saturating_g_loss",
]

# ----------------------------------------------------------------------------------------------------
# Discriminator
# ----------------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """pix2pix PatchGAN (reference §3.3): ``forward(x [B,3,H,W]) -> logits [B,1,h,w]`` (256² → 30×30).

    ndf 64, 3 strided layers, BatchNorm, LeakyReLU(0.2); keys ``main.{0,2,3,5,6,8,9,11}`` so reference
    checkpoints load as-is; 2,765,633 parameters. Init (reference §1.7): conv weights N(0, 0.02) with
    default biases, BatchNorm weight N(1, 0.02) and bias 0.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        kw, padw = 4, 1
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kw, stride=2, padding=padw),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kw, stride=2, padding=padw, bias=False),
                nn.BatchNorm2d(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kw, stride=1, padding=padw, bias=False),
            nn.BatchNorm2d(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kw, stride=1, padding=padw),
        ]
        self.main = nn.Sequential(*layers)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Conv2d):
            nn.init.normal_(module.weight, 0.0, 0.02)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, 0.02)
            nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


# ----------------------------------------------------------------------------------------------------
# Adversarial losses and LeCam
# ----------------------------------------------------------------------------------------------------


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: 0.5·(mean relu(1 − D(x)) + mean relu(1 + D(x̂))), means over batch×patches."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def non_saturating_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss of the reference: average each sample's patch logits **first** (m_b), then
    mean_b softplus(−m_b) (= BCE-with-logits against "real"). logits_fake: [B, ...]."""
    per_sample = logits_fake.reshape(logits_fake.shape[0], -1).mean(dim=1)
    return F.softplus(-per_sample).mean()


class LeCamRegularizer(nn.Module):
    """LeCam regulariser for the discriminator (reference §3.1):
    ``reg = mean(relu(D(x) − ema_fake)²) + mean(relu(ema_real − D(x̂))²)``.

    ``ema_real`` / ``ema_fake`` are EMAs (decay 0.999, init 0) of the batch-mean logits, updated **before**
    the regulariser is computed, as in the reference. Unlike the reference (host floats, lost on resume,
    per-rank), they are registered buffers, so they are saved in checkpoints, and with
    ``all_reduce=True`` the batch means are averaged over ranks first (a deviation, off by default).
    The EMAs update only in training mode (or when ``update=True`` is passed).
    """

    ema_real: torch.Tensor
    ema_fake: torch.Tensor

    def __init__(self, decay: float = 0.999, init: float = 0.0, all_reduce: bool = False) -> None:
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}.")
        self.decay = decay
        self.all_reduce = all_reduce
        self.register_buffer("ema_real", torch.tensor(float(init), dtype=torch.float32))
        self.register_buffer("ema_fake", torch.tensor(float(init), dtype=torch.float32))

    @torch.no_grad()
    def update(self, logits_real: torch.Tensor, logits_fake: torch.Tensor) -> None:
        """Fold the batch means of real and fake logits into the EMAs (rank-averaged if ``all_reduce``)."""
        means = torch.stack([logits_real.detach().float().mean(), logits_fake.detach().float().mean()])
        if self.all_reduce and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(means)
            means /= torch.distributed.get_world_size()
        means = means.to(self.ema_real.device)
        self.ema_real.mul_(self.decay).add_(means[0] * (1.0 - self.decay))
        self.ema_fake.mul_(self.decay).add_(means[1] * (1.0 - self.decay))

    def forward(
        self, logits_real: torch.Tensor, logits_fake: torch.Tensor, update: bool | None = None
    ) -> torch.Tensor:
        """LeCam loss ``mean relu(D(x) − ema_fake)² + mean relu(ema_real − D(x̂))²``.

        The EMAs are updated first when ``update`` is true (default: in training mode only).
        """
        if self.training if update is None else update:
            self.update(logits_real, logits_fake)
        ema_real = self.ema_real.to(logits_fake.dtype)
        ema_fake = self.ema_fake.to(logits_real.dtype)
        return F.relu(logits_real - ema_fake).pow(2).mean() + F.relu(ema_real - logits_fake).pow(2).mean()

    def extra_repr(self) -> str:
        return f"decay={self.decay}, all_reduce={self.all_reduce}"
