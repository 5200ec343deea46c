"""``Trainer`` glue for image streams: per-rank batches, the stream position in checkpoints, exact resume.

Mixed into both trainers of this package (before ``Trainer`` in the bases). With an
:class:`~ibq_hf.data.ImageStream` as ``train_dataset``:

* **sharding**: every rank builds its own batches (`ImageBatches`: rank ``r`` decodes examples ``r, r + N, ...``
  of each global micro-batch), in a plain ``DataLoader`` that accelerate neither shards again nor dispatches from
  rank 0. The global batch is ``per_device_train_batch_size × N × gradient_accumulation_steps``; the tail of a
  pass is carried over into the next pass.
* **resume**: each checkpoint holds ``data_state.json`` = the (pass, offset) where the next global micro-batch
  starts, plus the settings that define the order. A resume restarts the stream there (no replayed batches, no
  decoding of skipped ones) and restores the RNG after the DataLoader iterator is created, as ``Trainer`` does
  after its own fast-forward, so the run continues bitwise as if uninterrupted — across pass boundaries and
  with a shuffle buffer.

For every dataset (streams and the extracted-codes path alike): resuming a run that already reached
``max_steps`` trains nothing (``Trainer`` alone would train one more step).
"""

from __future__ import annotations

import json
import os
from typing import Any

from torch.utils.data import DataLoader
from transformers.utils import logging

from ibq_hf.data import STREAM_POSITION_KEY, ImageBatches, ImageStream

logger = logging.get_logger(__name__)

__all__ = ["DATA_STATE_NAME", "StreamResumeMixin"]

DATA_STATE_NAME = "data_state.json"


class StreamResumeMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer`` in the bases)."""

    _stream_batches: ImageBatches | None = None
    _stream_position: tuple[int, int] | None = None
    _stream_rng_checkpoint: str | None = None

    # ---- data loader -------------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """For an ``ImageStream``: this rank's endless batches (`ImageStream.batches`), not sharded again."""
        stream = self.train_dataset
        if not isinstance(stream, ImageStream):
            self._stream_batches = None
            return super().get_train_dataloader()
        a = self.args
        self._stream_batches = stream.batches(
            self._train_batch_size,
            collate_fn=self.data_collator,
            rank=a.process_index,
            world_size=a.world_size,
        )
        params: dict[str, Any] = {"batch_size": None, "num_workers": a.dataloader_num_workers}
        params["pin_memory"] = a.dataloader_pin_memory
        if a.dataloader_num_workers > 0:
            params["persistent_workers"] = a.dataloader_persistent_workers
            params["prefetch_factor"] = a.dataloader_prefetch_factor
            params["multiprocessing_context"] = a.dataloader_multiprocessing_context
        return DataLoader(self._stream_batches, **params)

    # ---- resume ------------------------------------------------------------------------------------------

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint: str | None,
        trial: Any,
    ) -> tuple[int, int]:
        epochs_trained, skip = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if self._stream_batches is None:
            return epochs_trained, skip
        start = (0, 0)
        if resume_from_checkpoint is not None and not self.args.ignore_data_skip:
            start = self._read_stream_position(resume_from_checkpoint)
            self._stream_rng_checkpoint = resume_from_checkpoint
        self._stream_batches.start = start
        self._stream_position = start
        return epochs_trained, 0  # placed by its position: Trainer must not replay (decode) skipped batches

    def _read_stream_position(self, checkpoint: str) -> tuple[int, int]:
        path = os.path.join(checkpoint, DATA_STATE_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{checkpoint} has no {DATA_STATE_NAME} (it was not written by an image-stream run of this "
                "version), so the data position is unknown; pass --ignore_data_skip to restart the stream "
                "from its beginning."
            )
        with open(path) as f:
            state = json.load(f)
        saved = state.get("order", {})
        now = self.train_dataset.order_settings()
        changed = {k: (saved.get(k), v) for k, v in now.items() if k in saved and saved[k] != v}
        if changed:
            logger.warning(
                "Resuming an image stream whose order settings changed (%s): the data continues from pass %s, "
                "offset %s of a different sequence, so the run will not match the uninterrupted one.",
                ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()),
                state["pass"],
                state["offset"],
            )
        return int(state["pass"]), int(state["offset"])

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """Take the stream position off the batches; after a resume, restore the RNG once the iterator exists."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self._stream_batches is not None:
            for batch in batch_samples:
                position = batch.pop(STREAM_POSITION_KEY)
                self._stream_position = (int(position[0]), int(position[1]))
            if self._stream_rng_checkpoint is not None:
                # Creating the DataLoader iterator drew from the global RNG (its base seed); the uninterrupted run
                # drew that before step 0. Same fix as Trainer's own after a fast-forward.
                self._load_rng_state(self._stream_rng_checkpoint)
                self._stream_rng_checkpoint = None
        return batch_samples, num_items

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if self._stream_batches is None or self._stream_position is None or not self.args.should_save:
            return
        a = self.args
        state = {
            "pass": self._stream_position[0],
            "offset": self._stream_position[1],
            "order": self.train_dataset.order_settings(),
            "world_size": a.world_size,
            "per_device_train_batch_size": a.per_device_train_batch_size,
            "gradient_accumulation_steps": a.gradient_accumulation_steps,
        }
        with open(os.path.join(output_dir, DATA_STATE_NAME), "w") as f:
            json.dump(state, f, indent=2)

    # ---- loop --------------------------------------------------------------------------------------------

    def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> None:
        """Report ``epoch`` as data passes (pass + offset / examples per pass) before logs and checkpoints."""
        if self._stream_batches is not None and self._stream_position is not None:
            epoch, offset = self._stream_position
            total = self.train_dataset.num_examples
            self.state.epoch = epoch + (offset / total if total else 0.0)
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """Nothing left to do when a resumed run has already reached ``max_steps`` (a finished run)."""
        if self.state.global_step >= self.state.max_steps:
            logger.info("Step %d of %d: the run is complete, nothing to train.", self.state.global_step,
                        self.state.max_steps)  # fmt: skip
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)
