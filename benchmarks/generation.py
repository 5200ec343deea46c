"""Generation speed of IBQARForImageGeneration: dynamic vs static cache vs static + torch.compile, against a
straightforward gpt-fast-style loop with a preallocated KV cache (the original ``sample_IBQ`` structure).

All settings generate the same number of images with classifier-free guidance (doubled batch), temperature 1.0,
top-k 0, top-p 1.0. tokens/s counts image tokens of the returned images (not the doubled rows).

Examples::

    python benchmarks/generation.py                                  # mid size: baseline, dynamic, static
    python benchmarks/generation.py --settings baseline,static,static+compile
    python benchmarks/generation.py --sizes B --num-images 1         # preset B (minutes on a CPU)

    python benchmarks/generation.py --device cuda --dtypes float32,bfloat16 --settings dynamic,static+compile
    python benchmarks/generation.py --quick                          # tiny model, 16 tokens (smoke run)

Results are merged into ``benchmarks/results/generation.json`` (one entry per size, setting, dtype and device;
entries of other sizes or devices are kept).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _common import RESULTS_DIR, machine_info, merge_results, parse_choices, resolve_device, utc_now
from transformers import CompileConfig

from ibq_hf.models.configuration_ar import IBQARConfig
from ibq_hf.models.modeling_ar import IBQARForImageGeneration, apply_rotary_emb_2d, rope_2d_cos_sin

# Released-model shape (vocab 16384, 1000 classes, 16×16 grid) unless a size overrides it.
SIZES = {
    "tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "multiple_of": 32,
             "vocab_size": 256, "grid_size": 4},
    "mid": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8},
    "B": IBQARConfig.from_preset("B").to_diff_dict(),
}  # fmt: skip
SETTINGS = ("baseline", "dynamic", "static", "static+compile")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_OUTPUT = RESULTS_DIR / "generation.json"


def build_model(size: str, device: torch.device, dtype: str = "float32") -> IBQARForImageGeneration:
    """Random model of the given size; the zero-initialised head is replaced so that logits are not uniform."""
    fields = {k: v for k, v in SIZES[size].items() if k in IBQARConfig.__dataclass_fields__}
    config = IBQARConfig(**{"vocab_size": 16384, "num_classes": 1000, "grid_size": 16, **fields})
    torch.manual_seed(0)
    model = IBQARForImageGeneration(config)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.02)
    return model.eval().to(device, DTYPES[dtype])


class BaselineLoop:
    """gpt-fast-style decoding: preallocated k/v tensors per layer, written at ``pos`` and attended in full with a
    mask row; adaLN modulations recomputed at every step, multinomial sampling — the reference's loop structure."""

    def __init__(self, model: IBQARForImageGeneration, rows: int) -> None:
        self.model = model
        cfg = model.config
        self.steps = cfg.num_image_tokens
        length = self.steps  # class token + steps - 1 fed-back tokens
        shape = (rows, cfg.num_attention_heads, length, cfg.head_dim)
        dtype, device = model.dtype, model.device
        self.k_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in model.blocks]
        self.v_cache = [torch.zeros(shape, dtype=dtype, device=device) for _ in model.blocks]
        self.cos, self.sin = rope_2d_cos_sin(
            torch.arange(length, device=device), cfg.grid_size, cfg.head_dim, cfg.rope_base
        )
        self.mask = torch.tril(torch.ones(length, length, dtype=torch.bool, device=device))

    def _forward(self, x: torch.Tensor, labels: torch.Tensor, pos: int) -> torch.Tensor:
        model, cfg = self.model, self.model.config
        rows, C, H, D = x.shape[0], cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
        cond = model.class_emb.embedding_table(labels)
        cos, sin = self.cos[pos : pos + 1], self.sin[pos : pos + 1]
        for i, blk in enumerate(model.blocks):
            g1, g2, s1, s2, b1, b2 = blk.ada_lin(cond).view(-1, 1, 6, C).unbind(2)
            h = blk.attention_norm(x) * (1 + s1) + b1
            q, k, v = (t.transpose(1, 2) for t in blk.attention.wqkv(h).view(rows, 1, 3, H, D).unbind(2))
            q, k = apply_rotary_emb_2d(q, cos, sin), apply_rotary_emb_2d(k, cos, sin)
            self.k_cache[i][:, :, pos] = k[:, :, 0]
            self.v_cache[i][:, :, pos] = v[:, :, 0]
            o = F.scaled_dot_product_attention(
                q, self.k_cache[i], self.v_cache[i], attn_mask=self.mask[pos : pos + 1]
            )
            x = x + g1 * blk.attention.wo(o.transpose(1, 2).reshape(rows, 1, C))
            x = x + g2 * blk.feed_forward(blk.ffn_norm(x) * (1 + s2) + b2)
        return model.head(model.head_nm(x, cond))[:, -1]

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, guidance_scale: float, do_sample: bool = True) -> torch.Tensor:
        batch = labels.shape[0]
        null = torch.full_like(labels, self.model.config.num_classes)
        rows_labels = torch.cat([labels, null])
        x = self.model.class_emb.embedding_table(rows_labels)[:, None]
        out = []
        for step in range(self.steps):
            logits = self._forward(x, rows_labels, step).float()
            c, u = logits[:batch], logits[batch:]
            logits = u + guidance_scale * (c - u)
            if do_sample:
                ids = torch.multinomial(torch.softmax(logits, dim=-1), 1)
            else:
                ids = logits.argmax(-1, keepdim=True)
            out.append(ids)
            x = self.model.tok_emb(torch.cat([ids, ids]))
        return torch.cat(out, dim=1)


def run_setting(model, setting: str, labels: torch.Tensor, guidance: float, repeats: int) -> dict:
    """Time ``repeats`` calls after one warm-up call (which includes compilation for static+compile)."""
    if setting == "baseline":
        loop = BaselineLoop(model, rows=2 * labels.shape[0])

        def call():
            return loop.generate(labels, guidance)
    else:
        kwargs = {"cache_implementation": "dynamic" if setting == "dynamic" else "static"}
        if setting == "static+compile":
            mode = "reduce-overhead" if model.device.type == "cuda" else "default"
            kwargs["compile_config"] = CompileConfig(fullgraph=True, mode=mode)

        def call():
            return model.generate(labels, guidance_scale=guidance, **kwargs)

    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    start = time.perf_counter()
    call()
    sync()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    images = labels.shape[0]
    tokens = images * model.config.num_image_tokens
    return {
        "setting": setting,
        "num_images": images,
        "rows": 2 * images,
        "guidance_scale": guidance,
        "first_call_s": round(first, 3),
        "seconds": round(seconds, 3),
        "all_seconds": [round(t, 3) for t in times],
        "tokens_per_s": round(tokens / seconds, 1),
        "images_per_s": round(images / seconds, 4),
        "ms_per_step": round(1000 * seconds / model.config.num_image_tokens, 2),
    }


def check_baseline_agrees(model, labels: torch.Tensor, guidance: float) -> bool:
    """Greedy tokens of the baseline loop and of generate() must agree (same model, same math)."""
    baseline = BaselineLoop(model, rows=2 * labels.shape[0]).generate(labels, guidance, do_sample=False)
    ours = model.generate(labels, guidance_scale=guidance, do_sample=False)
    return bool(torch.equal(baseline, ours))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=None, help=f"comma list of {sorted(SIZES)} (default: mid)")
    parser.add_argument(
        "--settings",
        default=None,
        help=f"comma list of {SETTINGS} (default: no compile; quick: baseline,dynamic,static)",
    )
    parser.add_argument(
        "--num-images", type=int, default=None, help="images per call (default: tiny 2, mid 4, B 1)"
    )
    parser.add_argument(
        "--dtypes", default="float32", help=f"comma list of {sorted(DTYPES)} (weights and activations)"
    )
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed calls after the warm-up (median; default 2, quick 1)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--no-check", action="store_true", help="skip the baseline-vs-generate greedy check")
    parser.add_argument("--quick", action="store_true", help="tiny model (16 tokens per image), seconds")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ("tiny" if args.quick else "mid")
    args.settings = args.settings or "baseline,dynamic,static"
    args.repeats = args.repeats or (1 if args.quick else 2)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtypes = parse_choices(parser, args.dtypes, DTYPES, "dtype")
    sizes = parse_choices(parser, args.sizes, SIZES, "size")
    settings = parse_choices(parser, args.settings, SETTINGS, "setting")

    entries: list[dict[str, Any]] = []
    for size in sizes:
        for dtype in dtypes:
            entries += run_size(args, size, dtype, settings, device)
    payload = merge_results(
        args.output,
        "generation",
        machine_info(device),
        entries,
        key=("size", "setting", "dtype", "device"),
        defaults={"dtype": "float32", "device": "cpu"},
    )
    print(f"wrote {args.output}")
    return payload


def run_size(
    args: argparse.Namespace, size: str, dtype: str, settings: list[str], device: torch.device
) -> list[dict[str, Any]]:
    """Every setting for one model size and dtype, with the speed-up over the baseline loop."""
    model = build_model(size, device, dtype)
    images = args.num_images or {"tiny": 2, "mid": 4}.get(size, 1)
    labels = torch.arange(images, device=device) * 97 % model.config.num_classes
    params = sum(p.numel() for p in model.parameters())
    agrees = None if args.no_check else check_baseline_agrees(model, labels, args.guidance_scale)
    print(f"[{size} {dtype}] {params:,} parameters, {images} images, greedy baseline == generate: {agrees}")
    entries = []
    for setting in settings:
        torch.manual_seed(0)
        result = run_setting(model, setting, labels, args.guidance_scale, args.repeats)
        result |= {
            "size": size,
            "dtype": dtype,
            "parameters": params,
            "device": str(device),
            "baseline_agrees": agrees,
            "torch_threads": torch.get_num_threads(),
            "measured_at": utc_now(),
        }
        entries.append(result)
        print(
            f"[{size} {dtype}] {setting:>15}: {result['tokens_per_s']:8.1f} tokens/s  "
            f"{result['images_per_s']:.4f} images/s  ({result['ms_per_step']} ms/step, "
            f"first call {result['first_call_s']} s)",
            flush=True,
        )
    base = next((e for e in entries if e["setting"] == "baseline"), None)
    if base:
        for entry in entries:
            entry["speedup_vs_baseline"] = round(entry["tokens_per_s"] / base["tokens_per_s"], 2)
    return entries


if __name__ == "__main__":
    main()
