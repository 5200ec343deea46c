"""Atomic ``Trainer`` checkpoints: a kill during a save never leaves a half-written ``checkpoint-N``.

transformers' ``Trainer._save_checkpoint`` writes straight into ``<run>/checkpoint-N``; a process killed
mid-save leaves a folder that ``resume_from_checkpoint="latest"`` would pick up. The mixin below makes
Trainer write into a staging folder, flushes it to disk and renames it into place.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ibq_hf.file_utils import fsync_dir, fsync_tree

__all__ = ["STAGING_DIR_NAME", "AtomicCheckpointMixin"]

STAGING_DIR_NAME = ".staging-checkpoint"  # never matches Trainer's ``^checkpoint-\d+$``


class AtomicCheckpointMixin:
    """Mix into a ``transformers.Trainer`` subclass (before ``Trainer`` in the bases)."""

    _staging_root: str | None = None

    def _get_output_dir(self, trial: Any) -> str:
        # While a checkpoint is saved, Trainer writes it under the staging root instead of the run folder.
        return self._staging_root if self._staging_root is not None else super()._get_output_dir(trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Write ``checkpoint-N`` to ``<run>/.staging-checkpoint/`` and rename it into place when complete.

        A kill at any point leaves either the previous set of checkpoints or the new, complete one: the only
        step that makes ``checkpoint-N`` visible is a ``rename`` (atomic on POSIX). An existing folder of the same
        name (a re-save after resuming) is swapped out the same way.
        """
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(run_dir, STAGING_DIR_NAME)
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)  # leftovers of a save that crashed
            os.makedirs(staging_root)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            final = os.path.join(run_dir, name)
            _publish(os.path.join(staging_root, name), final, staging_root)
            best = self.state.best_model_checkpoint
            if best is not None and best.startswith(staging_root):
                self.state.best_model_checkpoint = os.path.join(run_dir, os.path.relpath(best, staging_root))
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=False,
            )
        self.accelerator.wait_for_everyone()


def _publish(staged: str, final: str, staging_root: str) -> None:
    """Make ``staged`` visible as ``final`` with renames only (an old ``final`` is moved aside first)."""
    if not os.path.isdir(staged):
        raise FileNotFoundError(f"Checkpoint staging folder {staged} is missing; the save did not complete.")
    fsync_tree(staged)
    if os.path.exists(final):
        os.replace(final, os.path.join(staging_root, "replaced-" + os.path.basename(final)))
    os.replace(staged, final)
    fsync_dir(os.path.dirname(final) or ".")
