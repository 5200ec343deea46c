"""Exponential moving average of model parameters (the reference's LitEma, reference §3.4).

Update after every optimiser step: ``shadow ← shadow − (1 − decay)·(shadow − param)`` with a constant
decay of 0.999 (no warm-up), over the parameters that require grad. Buffers (BatchNorm statistics) are
not averaged, as in the reference. The reference keeps one EMA over generator + discriminator; build one
`EMAModel` per network for the same effect.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

__all__ = ["EMAModel"]


class EMAModel:
    """Shadow copies of a model's trainable parameters, keyed by parameter name.

    Example::

        ema = EMAModel(vqmodel)
        for batch in loader:
            ...; optimizer.step(); ema.step(vqmodel)
        ema.store(vqmodel); ema.copy_to(vqmodel); evaluate(vqmodel); ema.restore(vqmodel)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must lie in [0, 1], got {decay}.")
        self.decay = decay
        self.num_updates = 0
        # Shadows start as copies of the parameters (reference §1.7), on the same device and dtype.
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad
        }
        self._stored: dict[str, torch.Tensor] | None = None

    def _params(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = {name: p for name, p in model.named_parameters() if name in self.shadow}
        missing = sorted(set(self.shadow) - set(params))
        if missing:
            raise ValueError(
                f"The model lacks {len(missing)} parameter(s) this EMA tracks, e.g. {missing[:5]}; "
                "pass the same model (architecture) the EMAModel was built from."
            )
        return params

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """One EMA update from the model's current parameters."""
        one_minus_decay = 1.0 - self.decay
        for name, param in self._params(model).items():
            shadow = self.shadow[name]
            if shadow.dtype != param.dtype or shadow.device != param.device:
                shadow = self.shadow[name] = shadow.to(device=param.device, dtype=param.dtype)
            shadow.sub_(one_minus_decay * (shadow - param))
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the averaged weights into ``model`` (e.g. before saving the EMA tokenizer)."""
        for name, param in self._params(model).items():
            param.copy_(self.shadow[name])

    @torch.no_grad()
    def store(self, model: nn.Module) -> None:
        """Remember the live weights, to `restore` them after evaluating with the EMA weights."""
        self._stored = {name: p.detach().clone() for name, p in self._params(model).items()}

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Put back the live weights saved by `store` (after evaluating or saving with the EMA weights)."""
        if self._stored is None:
            raise ValueError("EMAModel.restore() called without a preceding store(model).")
        for name, param in self._params(model).items():
            param.copy_(self._stored[name])
        self._stored = None

    def state_dict(self) -> dict[str, Any]:
        """``decay``, ``num_updates`` and the ``shadow`` tensors by parameter name, for checkpoints."""
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; the parameter names and shapes must match exactly."""
        shadow = state["shadow"]
        missing, unexpected = sorted(set(self.shadow) - set(shadow)), sorted(set(shadow) - set(self.shadow))
        bad = sorted(k for k in set(shadow) & set(self.shadow) if shadow[k].shape != self.shadow[k].shape)
        if missing or unexpected or bad:
            raise ValueError(
                f"EMA state does not match this model: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"mis-shaped {bad[:5]}. Load the EMA state saved for the same architecture."
            )
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        self.shadow = {k: v.detach().clone().to(device=self.shadow[k].device) for k, v in shadow.items()}
