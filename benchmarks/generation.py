"""Generation speed of IBQARForImageGeneration: dynamic vs static cache vs static + torch.compile, against a
straightforward gpt-fast-style loop with a preallocated KV cache (the original ``sample_IBQ`` structure).

All settings generate the same number of images with classifier-free guidance (doubled batch), temperature 1.0,
top-k 0, top-p 1.0. tokens/s counts image tokens of the returned images (not the doubled rows).

Examples::

    python benchmarks/generation.py                                  # mid size: baseline, dynamic, static
    python benchmarks/generation.py --settings baseline,static,static+compile
    python benchmarks/generation.py --sizes B --num-images 1         # preset B (minutes on a CPU)

Results are merged into ``benchmarks/results/generation.json`` (one entry per size and setting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from transformers import CompileConfig

from ibq_hf.models.ar_model import IBQARForImageGeneration, apply_rotary_emb_2d, rope_2d_cos_sin
from ibq_hf.models.configuration_ar import IBQARConfig

SIZES = {
    "mid": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8},
    "B": IBQARConfig.from_preset("B").to_diff_dict(),
}
SETTINGS = ("baseline", "dynamic", "static", "static+compile")
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "generation.json"


def build_model(size: str, device: torch.device) -> IBQARForImageGeneration:
    """Random model of the given size; the zero-initialised head is replaced so that logits are not uniform."""
    fields = {k: v for k, v in SIZES[size].items() if k in IBQARConfig.__dataclass_fields__}
    config = IBQARConfig(**{**fields, "vocab_size": 16384, "num_classes": 1000, "grid_size": 16})
    torch.manual_seed(0)
    model = IBQARForImageGeneration(config)
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.02)
    return model.eval().to(device)


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


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def merge_results(path: Path, machine: dict, entries: list[dict]) -> dict:
    data = json.loads(path.read_text()) if path.is_file() else {"results": []}
    keys = {(e["size"], e["setting"], e["device"]) for e in entries}
    kept = [e for e in data.get("results", []) if (e["size"], e["setting"], e.get("device")) not in keys]
    data["results"] = kept + entries
    data["machine"] = machine
    data["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="mid", help=f"comma list of {sorted(SIZES)} (default: mid)")
    parser.add_argument(
        "--settings",
        default="baseline,dynamic,static",
        help=f"comma list of {SETTINGS} (default: no compile)",
    )
    parser.add_argument("--num-images", type=int, default=None, help="images per call (default: mid 4, B 1)")
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed calls after the warm-up (median reported)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-check", action="store_true", help="skip the baseline-vs-generate greedy check")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for name in sizes:
        if name not in SIZES:
            parser.error(f"unknown size {name!r}; choose from {sorted(SIZES)}")
    for name in settings:
        if name not in SETTINGS:
            parser.error(f"unknown setting {name!r}; choose from {SETTINGS}")

    entries = []
    for size in sizes:
        model = build_model(size, device)
        images = args.num_images or (4 if size == "mid" else 1)
        labels = torch.arange(images, device=device) * 97 % 1000
        params = sum(p.numel() for p in model.parameters())
        agrees = None if args.no_check else check_baseline_agrees(model, labels, args.guidance_scale)
        print(f"[{size}] {params:,} parameters, {images} images, greedy baseline == generate: {agrees}")
        for setting in settings:
            torch.manual_seed(0)
            result = run_setting(model, setting, labels, args.guidance_scale, args.repeats)
            result |= {"size": size, "parameters": params, "device": str(device), "baseline_agrees": agrees}
            entries.append(result)
            print(
                f"[{size}] {setting:>15}: {result['tokens_per_s']:8.1f} tokens/s  {result['images_per_s']:.4f} "
                f"images/s  ({result['ms_per_step']} ms/step, first call {result['first_call_s']} s)"
            )
        base = next((e for e in entries if e["size"] == size and e["setting"] == "baseline"), None)
        if base:
            for entry in entries:
                if entry["size"] == size:
                    entry["speedup_vs_baseline"] = round(entry["tokens_per_s"] / base["tokens_per_s"], 2)
    merge_results(args.output, machine_info(device), entries)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
