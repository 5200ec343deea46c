"""IBQQuantizer: the chunked path against the dense reference, losses against direct formulas, usage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ibq_hf.models.quantizer import (
    ChunkedIBQFunction,
    CodebookUsage,
    IBQQuantizer,
    codebook_usage,
    dense_ibq,
    nearest_code_indices,
)


def _inputs(num_tokens: int, num_codes: int, dim: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(num_tokens, dim, generator=g, dtype=dtype)
    codebook = torch.randn(num_codes, dim, generator=g, dtype=dtype)
    # Upstream gradients for z_q and z_q2 and weights for the entropy terms.
    w_q = torch.randn(num_tokens, dim, generator=g, dtype=dtype)
    w_q2 = torch.randn(num_tokens, dim, generator=g, dtype=dtype)
    return z, codebook, w_q, w_q2


def _run(kind, z, codebook, w_q, w_q2, tau, chunk=None, token_block=None):
    """Outputs and gradients of a loss touching every output of the quantizer function."""
    z = z.detach().clone().requires_grad_()
    codebook = codebook.detach().clone().requires_grad_()
    if kind == "dense":
        z_q, z_q2, ind, hs, ha = dense_ibq(z, codebook, True, tau)
    else:
        z_q, z_q2, ind, hs, ha = ChunkedIBQFunction.apply(z, codebook, True, tau, chunk, token_block)
    loss = (z_q * w_q).sum() + (z_q2 * w_q2).sum() + 0.7 * hs - 1.3 * ha
    loss.backward()
    return {
        "z_q": z_q.detach(),
        "ind": ind,
        "hs": hs.detach(),
        "ha": ha.detach(),
        "dz": z.grad,
        "dE": codebook.grad,
    }


# (tokens, codes, dim, chunk, token block): one chunk, K not divisible by the chunk, odd token counts,
# token blocks that do not divide T, and a 65536-entry codebook.
CASES = [
    (45, 37, 8, 37, 45),
    (45, 1000, 8, 300, 16),
    (33, 1000, 8, 7, 5),
    (31, 65536, 8, 5000, 8),
    (31, 65536, 8, 65536, 3),
]


@pytest.mark.parametrize("num_tokens,num_codes,dim,chunk,token_block", CASES)
def test_chunked_equals_dense_exactly_in_float64(num_tokens, num_codes, dim, chunk, token_block):
    """In float64 the only difference is summation order: agreement to ~1e-10 proves the formulas."""
    inputs = _inputs(num_tokens, num_codes, dim)
    ref = _run("dense", *inputs, tau=0.01)
    out = _run("chunked", *inputs, tau=0.01, chunk=chunk, token_block=token_block)
    assert torch.equal(out["ind"], ref["ind"])
    assert torch.equal(out["z_q"], inputs[1][ref["ind"]])
    for key in ("z_q", "hs", "ha", "dz", "dE"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10, msg=key)


@pytest.mark.parametrize("num_tokens,num_codes,dim,chunk,token_block", CASES)
@pytest.mark.parametrize("tau", [1.0, 0.01])
def test_chunked_fp32_is_as_accurate_as_dense_fp32(num_tokens, num_codes, dim, chunk, token_block, tau):
    """fp32 parity: both paths are compared with the float64 truth; the chunked path must be within
    the dense path's own fp32 round-off (at τ = 0.01 logits are scaled by 100, which amplifies it)."""
    z64, e64, w_q, w_q2 = _inputs(num_tokens, num_codes, dim)
    truth = _run("dense", z64, e64, w_q, w_q2, tau=tau)
    f32 = [t.float() for t in (z64, e64, w_q, w_q2)]
    dense = _run("dense", *f32, tau=tau)
    chunked = _run("chunked", *f32, tau=tau, chunk=chunk, token_block=token_block)
    assert torch.equal(chunked["ind"], truth["ind"])
    for key in ("hs", "ha", "dz", "dE"):
        scale = truth[key].abs().max().item()
        err_dense = (dense[key].double() - truth[key]).abs().max().item() / scale
        err_chunked = (chunked[key].double() - truth[key]).abs().max().item() / scale
        assert err_chunked <= 2 * err_dense + 5e-6, (key, err_chunked, err_dense)


def test_module_dense_and_chunked_agree(tiny_tokenizer_config):
    torch.manual_seed(0)
    q = IBQQuantizer(
        1000, 16, use_entropy_loss=True, entropy_temperature=1.0, chunk_size=300, max_tile_elements=4096
    )
    z = torch.randn(3, 16, 5, 7, requires_grad=True)
    results = {}
    for impl in ("dense", "chunked"):
        q.zero_grad()
        z.grad = None
        out = q(z, implementation=impl)
        (out.quant_loss + 0.05 * out.entropy_loss).backward()
        results[impl] = (out, z.grad.clone(), q.embedding.weight.grad.clone())
    (d, dz_d, de_d), (c, dz_c, de_c) = results["dense"], results["chunked"]
    assert torch.equal(d.indices, c.indices)
    assert d.indices.shape == (3, 5, 7) and d.quantized.shape == (3, 16, 5, 7)
    for name in ("quantized", "quant_loss", "sample_entropy", "avg_entropy", "entropy_loss"):
        torch.testing.assert_close(getattr(c, name), getattr(d, name), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dz_c, dz_d, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(de_c, de_d, rtol=1e-4, atol=1e-7)


def test_auto_picks_chunked_for_large_problems():
    q = IBQQuantizer(4096, 8, dense_max_elements=10_000)
    assert q.resolve_implementation(2) == "dense"
    assert q.resolve_implementation(3) == "chunked"
    assert IBQQuantizer(16, 8, chunk_size=8).resolve_implementation(1) == "chunked"


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_every_code_receives_gradient(implementation):
    """The point of IBQ: codes never selected still get gradient through the softmax."""
    torch.manual_seed(0)
    q = IBQQuantizer(64, 8)
    z = torch.randn(1, 8, 2, 2)  # 4 tokens: at most 4 of 64 codes are selected
    out = q(z, implementation=implementation)
    out.quant_loss.backward()
    grad_norms = q.embedding.weight.grad.norm(dim=1)
    assert torch.unique(out.indices).numel() <= 4
    assert (grad_norms > 0).all()


def test_quant_loss_value_and_beta_placement():
    """Forward value is (2 + β)·mse(E[ind], z); β scales only the gradient reaching the codebook."""
    torch.manual_seed(0)
    z = torch.randn(2, 8, 3, 3)
    for beta in (0.25, 1.0):
        q = IBQQuantizer(32, 8, beta=beta)
        out = q(z)
        flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
        mse = ((q.embedding.weight[out.indices.reshape(-1)] - flat) ** 2).mean()
        torch.testing.assert_close(out.quant_loss, (2 + beta) * mse)


def test_entropy_terms_match_a_direct_formula():
    torch.manual_seed(0)
    tau = 0.5
    q = IBQQuantizer(
        50,
        8,
        use_entropy_loss=True,
        entropy_temperature=tau,
        sample_minimization_weight=0.3,
        batch_maximization_weight=2.0,
    )
    z = torch.randn(2, 8, 3, 4)
    logits = (z.permute(0, 2, 3, 1).reshape(-1, 8) @ q.embedding.weight.t()).double().detach().numpy() / tau
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    h_sample = float(np.mean(-(p * np.log(p)).sum(1)))
    p_bar = p.mean(0)
    h_avg = float(-(p_bar * np.log(p_bar + 1e-5)).sum())
    for impl in ("dense", "chunked"):
        out = q(z, implementation=impl)
        assert out.sample_entropy.item() == pytest.approx(h_sample, rel=1e-5)
        assert out.avg_entropy.item() == pytest.approx(h_avg, rel=1e-5)
        assert out.entropy_loss.item() == pytest.approx(0.3 * h_sample - 2.0 * h_avg, rel=1e-5)


def test_entropy_terms_are_none_when_disabled():
    out = IBQQuantizer(16, 4, use_entropy_loss=False)(torch.randn(1, 4, 2, 2))
    assert out.sample_entropy is None and out.avg_entropy is None and out.entropy_loss is None
    assert out.quant_loss is not None


def test_inference_argmax_matches_dense_indices():
    torch.manual_seed(0)
    q = IBQQuantizer(3000, 16, max_tile_elements=1000)
    z = torch.randn(2, 16, 5, 3)
    dense = q(z, implementation="dense").indices
    assert torch.equal(q.nearest_indices(z), dense)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 16)
    assert torch.equal(
        nearest_code_indices(flat, q.embedding.weight, max_tile_elements=97), dense.reshape(-1)
    )


def test_lookup_returns_code_vectors():
    q = IBQQuantizer(10, 4)
    idx = torch.tensor([[[1, 2], [3, 9]]])
    out = q.lookup(idx)
    assert out.shape == (1, 4, 2, 2)
    torch.testing.assert_close(out[0, :, 1, 1], q.embedding.weight[9])


@pytest.mark.parametrize("implementation", ["dense", "chunked"])
def test_fp32_logits_under_bf16_autocast(implementation):
    torch.manual_seed(0)
    q = IBQQuantizer(200, 16, use_entropy_loss=True)
    z = torch.randn(2, 16, 3, 3).bfloat16()
    reference = q(z.float(), implementation=implementation)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z, implementation=implementation)
    assert out.quant_loss.dtype == torch.float32 and out.entropy_loss.dtype == torch.float32
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.indices, reference.indices)
    torch.testing.assert_close(out.quant_loss, reference.quant_loss)


def test_chunked_path_never_materialises_tokens_by_codebook():
    """The largest allocation of a chunked forward+backward stays far below one [T, K] tensor."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    num_tokens, num_codes = 512, 8192
    q = IBQQuantizer(num_codes, 16, use_entropy_loss=True, max_tile_elements=2**16)
    z = torch.randn(2, 16, 16, 16, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = q(z, implementation="chunked")
        (out.quant_loss + out.entropy_loss).backward()
    largest = max(e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0)
    full = num_tokens * num_codes * 4
    assert largest <= full // 8, (largest, full)
    # the dense path does allocate it (sanity check of the measurement)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        q(z, implementation="dense")
    assert max(e.cpu_memory_usage for e in prof.events()) >= full


def test_bad_inputs_raise_clear_errors():
    q = IBQQuantizer(16, 4)
    with pytest.raises(ValueError, match=r"\[B, D, H, W\]"):
        q(torch.randn(4, 4))
    with pytest.raises(ValueError, match="expects 4 latent channels, got 3"):
        q(torch.randn(1, 3, 2, 2))
    with pytest.raises(ValueError, match="implementation"):
        q(torch.randn(1, 4, 2, 2), implementation="fast")
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        q.lookup(torch.tensor([[[16]]]))
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        q.lookup(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="chunk_size"):
        IBQQuantizer(16, 4, chunk_size=0)


def test_deterministic_given_seed():
    torch.manual_seed(3)
    a = IBQQuantizer(100, 8)
    torch.manual_seed(3)
    b = IBQQuantizer(100, 8)
    z = torch.randn(1, 8, 4, 4)
    assert torch.equal(a.embedding.weight, b.embedding.weight)
    oa, ob = a(z, implementation="chunked"), b(z, implementation="chunked")
    assert torch.equal(oa.indices, ob.indices) and torch.equal(oa.quant_loss, ob.quant_loss)


# -- codebook usage ----------------------------------------------------------------------------------


def test_codebook_usage_on_known_index_sets():
    stats = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert stats["used"] == 2 and stats["utilization"] == 0.5
    assert stats["perplexity"] == pytest.approx(2.0)
    uniform = codebook_usage(torch.arange(8).repeat(3), 8)
    assert uniform["utilization"] == 1.0 and uniform["perplexity"] == pytest.approx(8.0)
    collapsed = codebook_usage(torch.zeros(10, dtype=torch.long), 8)
    assert collapsed["used"] == 1 and collapsed["perplexity"] == pytest.approx(1.0)
    skewed = codebook_usage(torch.tensor([0, 0, 0, 1]), 4)
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert skewed["perplexity"] == pytest.approx(expected)


def test_codebook_usage_accumulator():
    usage = CodebookUsage(6)
    usage.update(torch.tensor([[0, 1], [1, 1]]))
    usage.update(torch.tensor([5]))
    other = CodebookUsage(6)
    other.update(torch.tensor([2]))
    usage.merge(other)
    assert usage.counts.tolist() == [1, 3, 1, 0, 0, 1]
    assert usage.compute()["used"] == 4
    assert usage.compute()["utilization"] == pytest.approx(4 / 6)
    usage.all_reduce()  # no process group: a no-op
    usage.reset()
    assert usage.compute() == {"used": 0, "utilization": 0.0, "perplexity": 0.0}
    with pytest.raises(ValueError):
        usage.update(torch.tensor([6]))
