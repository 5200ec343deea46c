"""Run under ``accelerate launch --multi_gpu --num_processes N`` by ``test_stream_training.py``.

Trains both trainers (tokenizer GAN, AR on the fly) on a folder of numbered images, records which ids every rank
trained on at every step, then resumes each run from its first checkpoint (in the same processes) and records
again. Writes ``<out>/<trainer>_rank<r>.json``: ``{"full": [[ids of micro-batch, ...] per step], "resumed": ...,
"resumed_from": step, "weights_equal": bool}``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ibq_hf import IBQARConfig, IBQARForImageGeneration, IBQVQModel
from ibq_hf.data import collate_images, load_image_dataset
from ibq_hf.training.ar_trainer import IBQARTrainer, IBQARTrainingArguments
from ibq_hf.training.distributed import check_ranks_in_sync
from ibq_hf.training.tokenizer_trainer import (
    IBQTokenizerTrainer,
    IBQTokenizerTrainingArguments,
    build_tokenizer_gan,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from numbered_images import batch_ids

TOKENIZER = {
    "resolution": 16, "ch": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (8,),
    "z_channels": 32, "embed_dim": 16, "num_embeddings": 64,
}  # fmt: skip
COMMON = {
    "max_steps": 3, "save_steps": 1, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
    "use_cpu": True, "report_to": [], "disable_tqdm": True, "seed": 0, "dataloader_num_workers": 0,
}  # fmt: skip


def recording(cls: type) -> type:
    class Recording(cls):
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
            self.seen.append([batch_ids(b) for b in batches])
            return batches, num_items

    return Recording


def tokenizer_trainer(stream, out: Path) -> IBQTokenizerTrainer:
    args = IBQTokenizerTrainingArguments(output_dir=str(out), disc_ndf=8, disc_num_layers=2, **COMMON)
    torch.manual_seed(0)
    gan = build_tokenizer_gan(IBQVQModel(**TOKENIZER), args, no_lpips=True)
    trainer = recording(IBQTokenizerTrainer)(
        model=gan, args=args, train_dataset=stream, data_collator=collate_images
    )
    trainer.seen = []
    return trainer


def ar_trainer(stream, out: Path) -> IBQARTrainer:
    args = IBQARTrainingArguments(output_dir=str(out), remove_unused_columns=False, **COMMON)
    torch.manual_seed(0)
    tokenizer = IBQVQModel(**TOKENIZER)
    config = IBQARConfig(
        vocab_size=64, num_classes=2, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, grid_size=8,
        multiple_of=32,
    )  # fmt: skip
    trainer = recording(IBQARTrainer)(
        model=IBQARForImageGeneration(config), args=args, train_dataset=stream, data_collator=collate_images,
        frozen_tokenizer=tokenizer,
    )  # fmt: skip
    trainer.seen = []
    return trainer


def main(data: str, out: str) -> None:
    out_dir = Path(out)
    for name, build in (("tokenizer", tokenizer_trainer), ("ar", ar_trainer)):
        stream = load_image_dataset(train_data_dir=data, resolution=16, seed=0)
        full = build(stream, out_dir / name / "full")
        full.train()
        # parameters agree; the discriminator's BatchNorm statistics and LeCam EMAs stay per rank by design
        check_ranks_in_sync(full.model.parameters())
        resumed = build(
            load_image_dataset(train_data_dir=data, resolution=16, seed=0), out_dir / name / "resumed"
        )
        resumed.train(resume_from_checkpoint=str(out_dir / name / "full" / "checkpoint-1"))
        a, b = full.model.state_dict(), resumed.model.state_dict()
        record = {
            "full": full.seen,
            "resumed": resumed.seen,
            "resumed_from": 1,
            "weights_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
            "world_size": full.args.world_size,
        }
        rank = full.args.process_index
        (out_dir / f"{name}_rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
