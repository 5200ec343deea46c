"""The vanilla VQ baseline: nearest code by L2, selected-code straight-through, codebook + β·commitment loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ibq_hf import IBQQuantizer
from ibq_hf.models.vanilla_quantizer import VanillaVectorQuantizer, nearest_code_indices_l2


def _quantizer(k: int = 16, d: int = 4, beta: float = 0.25) -> VanillaVectorQuantizer:
    torch.manual_seed(0)
    q = VanillaVectorQuantizer(k, d, beta=beta)
    with torch.no_grad():
        q.embedding.weight.normal_()  # spread codes so several are selected
    return q


def test_indices_are_the_l2_nearest_codes_and_tiling_does_not_change_them():
    q = _quantizer(k=37, d=5)
    z = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(1))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    expected = torch.cdist(flat, q.embedding.weight).argmin(dim=1)
    out = q(z)
    assert torch.equal(out.indices.reshape(-1), expected)
    assert torch.equal(q.nearest_indices(z).reshape(-1), expected)
    # Tiny tiles: several code chunks and token blocks, same answer.
    assert torch.equal(nearest_code_indices_l2(flat, q.embedding.weight, max_tile_elements=7), expected)
    # The L2 nearest code differs from IBQ's argmax of z·E on some tokens (codes of different norms).
    assert not torch.equal((flat @ q.embedding.weight.t()).argmax(dim=1), expected)


def test_value_loss_and_gradients_match_the_formulation():
    beta = 0.3
    q = _quantizer(beta=beta)
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(2), requires_grad=True)
    out = q(z)
    flat = z.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    e = q.embedding.weight.detach()
    selected = e[out.indices.reshape(-1)]
    # Forward value is the selected code.
    torch.testing.assert_close(out.quantized.permute(0, 2, 3, 1).reshape(-1, 4), selected)
    # Loss: codebook term + β · commitment term.
    expected_loss = F.mse_loss(selected, flat) + beta * F.mse_loss(flat, selected)
    torch.testing.assert_close(out.quant_loss, expected_loss)
    assert out.entropy_loss is None and out.sample_entropy is None and out.avg_entropy is None

    # Straight-through: d(sum quantized)/dz is all ones (from z_q) plus the commitment gradient.
    (out.quantized.sum() + out.quant_loss).backward()
    n = flat.numel()
    commit_grad = beta * 2.0 * (flat - selected) / n
    expected_z_grad = 1.0 + commit_grad
    torch.testing.assert_close(z.grad.permute(0, 2, 3, 1).reshape(-1, 4), expected_z_grad)


def test_gradient_reaches_only_the_selected_codes():
    q = _quantizer(k=64)
    z = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(3))
    out = q(z)
    (out.quantized.square().sum() + out.quant_loss).backward()
    grad_rows = q.embedding.weight.grad.abs().sum(dim=1) > 0
    selected = torch.zeros(64, dtype=torch.bool)
    selected[out.indices.reshape(-1)] = True
    assert torch.equal(grad_rows, selected)
    assert int(selected.sum()) <= 4 < 64

    # IBQ on the same problem: every code gets gradient (the paper's point).
    ibq = IBQQuantizer(64, 4)
    with torch.no_grad():
        ibq.embedding.weight.copy_(q.embedding.weight)
    out_ibq = ibq(z)
    (out_ibq.quantized.square().sum() + out_ibq.quant_loss).backward()
    assert bool((ibq.embedding.weight.grad.abs().sum(dim=1) > 0).all())


def test_lookup_and_errors():
    q = _quantizer()
    idx = torch.tensor([[[0, 15], [3, 4]]])
    torch.testing.assert_close(q.lookup(idx)[0, :, 0, 1], q.embedding.weight[15])
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        q.lookup(torch.tensor([[[16]]]))
    with pytest.raises(ValueError, match="expects latents"):
        q(torch.randn(1, 3, 2, 2))


def test_tokenizer_with_the_vanilla_quantizer_round_trips_through_save_and_load(
    tmp_path, tiny_tokenizer_config
):
    from ibq_hf import IBQVQModel

    kwargs = {**tiny_tokenizer_config, "use_entropy_loss": False, "quantizer_type": "vanilla"}
    model = IBQVQModel(**kwargs)
    assert isinstance(model.quantize, VanillaVectorQuantizer)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    out = model(x)
    assert out.entropy_loss is None and out.quant_loss.ndim == 0
    model.save_pretrained(tmp_path)
    loaded = IBQVQModel.from_pretrained(tmp_path)
    assert isinstance(loaded.quantize, VanillaVectorQuantizer)
    assert torch.equal(loaded.tokenize(x), model.tokenize(x))
    with pytest.raises(ValueError, match="use_entropy_loss=False"):
        IBQVQModel(**{**kwargs, "use_entropy_loss": True})
    with pytest.raises(ValueError, match="'ibq' or 'vanilla'"):
        IBQVQModel(**{**kwargs, "quantizer_type": "fsq"})
