"""`IBQPipeline`: class-conditional image generation with the IBQ AR model and tokenizer (diffusers).

``class labels --transformer.generate--> token ids [B, grid²] --vqvae.decode_indices--> pixels [B, 3, H, W]``.

Load with ``IBQPipeline.from_pretrained(dir_or_repo)``. ``DiffusionPipeline.from_pretrained`` cannot resolve a
pipeline class that lives outside diffusers, so always load through this class. Images come out of the
decoder unclamped (roughly [-1, 1]); the pipeline clamps them to [-1, 1], maps them to [0, 1] and, for PIL
output, converts to uint8 by *rounding* ``255·x``. The original IBQ sampling script truncates instead, which
darkens every pixel by half a level on average.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput
from huggingface_hub import HfApi

from .hub_utils import write_model_card
from .image_processing import ImageInput, images_to_tensor, numpy_to_pil, postprocess_images
from .imagenet_labels import IMAGENET_NUM_CLASSES, imagenet_id2label
from .models import modeling_ar, modeling_vq
from .models.loading import quiet_small_load, resolve_pretrained
from .models.modeling_ar import IBQARForImageGeneration
from .models.modeling_vq import IBQVQModel

__all__ = [
    "OUTPUT_TYPES",
    "IBQPipeline",
    "IBQReconstructionOutput",
    "ImagePipelineOutput",
    "images_to_tensor",
    "numpy_to_pil",
    "postprocess_images",
    "reconstruct",
    "upload_folder_to_hub",
]

#: Values of ``output_type``: PIL images, float numpy [B, H, W, 3] in [0, 1], float tensors [B, 3, H, W] in
#: [0, 1], or the sampled token ids [B, grid, grid] ("latent").
OUTPUT_TYPES = ("pil", "np", "pt", "latent")

# Weight files that are not safetensors never leave the machine with a push.
_PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"]
_DEFAULT_LABEL = re.compile(r"^LABEL_\d+$")

# Folders saved before the architecture step record these module paths for their components in model_index.json;
# diffusers loads a component only from a module that is already imported, so the old names alias today's modules.
LEGACY_COMPONENT_MODULES = {"ibq_hf.models.ar_model": modeling_ar, "ibq_hf.models.vq_model": modeling_vq}
for _old_path, _module in LEGACY_COMPONENT_MODULES.items():
    sys.modules.setdefault(_old_path, _module)

ClassLabels = int | str | Sequence[int | str] | torch.Tensor | np.ndarray


@dataclass
class IBQReconstructionOutput(BaseOutput):
    """Output of :meth:`IBQPipeline.reconstruct`.

    Args:
        images: reconstructions in the requested ``output_type`` (PIL list, numpy [B, H, W, 3] or tensor
            [B, 3, H, W], both in [0, 1]).
        indices: the code indices [B, h, w] (int64) the reconstructions were decoded from.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    indices: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by generation and reconstruction
# ---------------------------------------------------------------------------------------------------------------


def _onload(module: torch.nn.Module | None) -> None:
    """Move a module with an accelerate offload hook onto its execution device.

    ``enable_model_cpu_offload`` hooks ``forward``; the pipeline calls ``generate``/``tokenize``/
    ``decode_indices`` instead, so it triggers the hook itself (what diffusers' ``apply_forward_hook`` does).
    """
    hook = getattr(module, "_hf_hook", None)
    if hook is not None and hasattr(hook, "pre_forward"):
        hook.pre_forward(module)


def _module_device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _compute_dtype(vqvae: IBQVQModel) -> torch.dtype:
    # The codebook stays fp32 (`_keep_in_fp32_modules`); the convolutions carry the compute dtype.
    return vqvae.encoder.conv_in.weight.dtype


@torch.no_grad()
def reconstruct(
    vqvae: IBQVQModel,
    images: ImageInput,
    resolution: int | None = None,
    output_type: str = "pil",
    return_dict: bool = True,
    protocol: str = "reference",
) -> IBQReconstructionOutput | tuple:
    """Tokenize and decode images with ``vqvae`` alone (no AR model): reconstructions + code indices.

    Args:
        vqvae: the tokenizer.
        images: see :func:`images_to_tensor` (PIL in any mode, numpy or torch; uint8, or float in [0, 1]).
        resolution: resize the shorter side and centre-crop to ``resolution``² first with the IBQ reference
            evaluation protocol (bilinear without antialias, :func:`ibq_hf.image_processing.resize_crop`:
            uint8/PIL pictures get exactly the pixels of ``ibq-hf evaluate tokenizer``); ``None`` keeps the size,
            which must be divisible by the tokenizer's downsampling factor (16 for the released models).
        protocol: the preprocessing protocol for ``resolution`` (:data:`ibq_hf.image_processing.PROTOCOLS`);
            ``"pretrain"`` for the Pretrain tokenizers.
        output_type: "pil", "np" or "pt" (see :data:`OUTPUT_TYPES`).
        return_dict: return :class:`IBQReconstructionOutput` or a tuple ``(images, indices)``.

    Returns:
        Reconstructions (clamped, rounded for PIL as in :class:`IBQPipeline`) and indices [B, h, w].
    """
    if output_type not in OUTPUT_TYPES[:3]:
        raise ValueError(
            f"output_type must be one of {OUTPUT_TYPES[:3]} for reconstruct, got {output_type!r}; the code "
            "indices are always returned as .indices."
        )
    pixels = images_to_tensor(images, resolution, protocol=protocol)
    factor = vqvae.downsample_factor
    h, w = pixels.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"Image size {h}x{w} is not divisible by the tokenizer's downsampling factor {factor}; pass "
            f"resolution=N (a multiple of {factor}, e.g. {vqvae.config.resolution}) to resize and centre-crop."
        )
    _onload(vqvae)
    pixels = pixels.to(_module_device(vqvae), _compute_dtype(vqvae))
    indices = vqvae.tokenize(pixels)
    result = postprocess_images(vqvae.decode_indices(indices), output_type)
    if not return_dict:
        return result, indices
    return IBQReconstructionOutput(images=result, indices=indices)


# ---------------------------------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------------------------------


def _normalize_name(name: str) -> str:
    return " ".join(name.split()).casefold()


def _has_meaningful_id2label(config: Any) -> bool:
    """True when ``config.id2label`` names every class (not transformers' placeholder ``LABEL_i`` entries)."""
    id2label = getattr(config, "id2label", None) or {}
    if len(id2label) != config.num_classes:
        return False
    if sorted(str(k) for k in id2label) != sorted(str(i) for i in range(config.num_classes)):
        return False
    return not all(_DEFAULT_LABEL.match(str(v)) for v in id2label.values())


# ---------------------------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------------------------


class IBQPipeline(DiffusionPipeline):
    r"""Class-conditional image generation with IBQ: an AR model samples token ids, the tokenizer decodes them.

    Parameters:
        vqvae ([`IBQVQModel`]): the IBQ tokenizer; its codebook size must equal the transformer's vocabulary.
        transformer ([`IBQARForImageGeneration`]): the class-conditional AR model over token ids.

    Class labels: ints in ``[0, num_classes)``, or names. Names come from the transformer config's ``id2label``
    when it names every class (custom models), else from the ImageNet-1k table when ``num_classes == 1000``
    (ids in sorted-WordNet-id order, as DiT / LlamaGen / IBQ); other models accept ids only.
    """

    model_cpu_offload_seq = "transformer->vqvae"
    _optional_components: list[str] = []

    def __init__(self, vqvae: IBQVQModel, transformer: IBQARForImageGeneration) -> None:
        super().__init__()
        self.register_modules(vqvae=vqvae, transformer=transformer)
        if vqvae is not None and transformer is not None:
            self._check_components()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> IBQPipeline:
        """``DiffusionPipeline.from_pretrained`` with a clear answer when the folder or repo is not there.

        A path that looks local (``./x``, ``/x``, a home-folder path, or a name whose parent folder exists) and does
        not exist raises :class:`~ibq_hf.errors.ModelFolderNotFoundError` ("folder not found: ..."); a repo id that
        cannot be loaded offline raises :class:`~ibq_hf.errors.HubModelUnavailableError`, which says how to point at
        a local folder. Loads of small weights show no progress bars. Pass ``dtype=`` for half precision.
        """
        location = resolve_pretrained(
            pretrained_model_name_or_path, "IBQ pipeline", "model_index.json", kwargs
        )
        with quiet_small_load(location, kwargs):
            return super().from_pretrained(location, **kwargs)

    # ---- components ---------------------------------------------------------------------------------------

    def _check_components(self) -> None:
        if self.transformer is None:
            raise ValueError(
                "This IBQPipeline has no transformer, so it cannot generate; load one with "
                "IBQPipeline.from_pretrained(...) or use reconstruct() for tokenizer-only work."
            )
        if self.vqvae is None:
            raise ValueError("This IBQPipeline has no vqvae (tokenizer) to decode token ids with.")
        codebook, vocab = self.vqvae.config.num_embeddings, self.transformer.config.vocab_size
        if codebook != vocab:
            raise ValueError(
                f"The tokenizer's codebook has {codebook} codes but the transformer's vocabulary has {vocab} "
                "token ids: they were not trained together. Load the tokenizer the AR model was trained on "
                "(the official AR models use the 16384-code tokenizer embedded in their checkpoint)."
            )

    # ---- labels -------------------------------------------------------------------------------------------

    @property
    def id2label(self) -> dict[int, str]:
        """``{class id: "name, synonym, ..."}`` of the transformer's classes (empty when they have no names)."""
        if self.transformer is None:
            return {}
        config = self.transformer.config
        if _has_meaningful_id2label(config):
            return {int(k): str(v) for k, v in sorted(config.id2label.items(), key=lambda kv: int(kv[0]))}
        if config.num_classes == IMAGENET_NUM_CLASSES:
            return imagenet_id2label()
        return {}

    def _label_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        for class_id, names in self.id2label.items():
            for name in names.split(","):
                key = _normalize_name(name)
                if key and class_id not in index.setdefault(key, []):
                    index[key].append(class_id)
        return index

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of class names (case- and whitespace-insensitive), the DiT convention.

        Each comma-separated synonym of ``id2label`` is a name (``"tench"`` and ``"Tinca tinca"`` are both 0).
        Unknown names raise with the closest matches; names shared by two classes (ImageNet's "crane" is a bird
        and a machine) raise with the candidate ids.
        """
        names = [label] if isinstance(label, str) else list(label)
        index = self._label_index()
        num_classes = self.transformer.config.num_classes if self.transformer is not None else 0
        if not index:
            raise ValueError(
                f"This model's {num_classes} classes have no names (its config has no id2label and it is not an "
                f"ImageNet-1k model); pass class ids in [0, {num_classes}) instead of {names[0]!r}."
            )
        id2label = self.id2label
        ids = []
        for name in names:
            if not isinstance(name, str):
                raise TypeError(f"Class names must be strings, got {type(name).__name__} ({name!r}).")
            matches = index.get(_normalize_name(name))
            if matches is None:
                close = difflib.get_close_matches(_normalize_name(name), list(index), n=5, cutoff=0.6)
                hint = (
                    "Did you mean " + ", ".join(f"{c!r} ({index[c][0]})" for c in close) + "?"
                    if close
                    else "No similar name exists."
                )
                raise ValueError(
                    f"Unknown class name {name!r}. {hint} The names are listed in pipe.id2label; class ids in "
                    f"[0, {num_classes}) work too."
                )
            if len(matches) > 1:
                options = "; ".join(f"{i}: {id2label[i]!r}" for i in matches)
                raise ValueError(f"Class name {name!r} is ambiguous ({options}); pass the class id instead.")
            ids.append(matches[0])
        return ids

    def _resolve_class_labels(self, class_labels: ClassLabels) -> list[int]:
        """ints / names / lists / tensors → a flat list of class ids, range-checked."""
        if class_labels is None:
            raise ValueError(
                "class_labels is required: pass a class id, a class name or a list of them, e.g. "
                "pipe(class_labels=[3]) (names: pipe.id2label)."
            )
        if isinstance(class_labels, (torch.Tensor, np.ndarray)):
            if class_labels.ndim > 1 or class_labels.dtype in (torch.bool, np.bool_):
                raise ValueError(
                    f"class_labels must be a 0-d or 1-d integer tensor/array, got shape {tuple(class_labels.shape)} "
                    f"and dtype {class_labels.dtype}."
                )
            if (isinstance(class_labels, torch.Tensor) and class_labels.is_floating_point()) or (
                isinstance(class_labels, np.ndarray) and not np.issubdtype(class_labels.dtype, np.integer)
            ):
                raise ValueError(f"class_labels must hold integer class ids, got dtype {class_labels.dtype}.")
            class_labels = class_labels.tolist()
        if isinstance(class_labels, (int, str, np.integer)):
            items = [class_labels]
        elif isinstance(class_labels, Sequence):
            items = list(class_labels)
        else:
            raise TypeError(
                f"class_labels must be a class id, a class name, a list of them or a 1-D integer tensor, got "
                f"{type(class_labels).__name__} ({class_labels!r})."
            )
        if not items:
            raise ValueError("class_labels is empty: pass at least one class id or name.")
        num_classes = self.transformer.config.num_classes
        ids = []
        for item in items:
            if isinstance(item, str):
                ids += self.get_label_ids(item)
            elif isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_)):
                if not 0 <= int(item) < num_classes:
                    raise ValueError(
                        f"Class label {int(item)} is out of range: this model has {num_classes} classes, ids 0 to "
                        f"{num_classes - 1}."
                    )
                ids.append(int(item))
            else:
                raise TypeError(
                    f"class_labels entries must be int class ids or str class names, got {type(item).__name__} "
                    f"({item!r})."
                )
        return ids

    # ---- generation ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        class_labels: ClassLabels,
        guidance_scale: float | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        do_sample: bool | None = None,
        generation_kwargs: Mapping[str, Any] | None = None,
        step_callback: Callable[[int, torch.LongTensor], None] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images of the given classes.

        Args:
            class_labels: a class id, a class name, or a list of them (``[207, "golden retriever"]``); a 1-D
                integer tensor also works. See :meth:`get_label_ids` for names.
            guidance_scale: classifier-free guidance scale (> 1 enables guidance, 1.0 disables it).
            temperature: sampling temperature.
            top_k: keep the k most likely ids per step (0 = off).
            top_p: nucleus sampling mass (1.0 = off).
            num_images_per_prompt: images per class label; the batch is ``[a, a, b, b]`` for labels ``[a, b]``
                and 2.
            generator: one ``torch.Generator`` for the batch, or a list with one per image (length
                ``len(class_labels) × num_images_per_prompt``). With a list, an image depends only on its class,
                its generator's seed and the settings, never on the rest of the batch.
            output_type: "pil" (list of PIL images), "np" (float32 [B, H, W, 3] in [0, 1]), "pt" (float32
                [B, 3, H, W] in [0, 1]) or "latent" (the token ids, int64 [B, grid, grid]).
            return_dict: return an :class:`ImagePipelineOutput` or a tuple ``(images,)``.
            do_sample: sample (default) or take the arg-max at every step.
            generation_kwargs: further arguments of :meth:`IBQARForImageGeneration.generate`
                (``guidance_schedule``, ``guidance_cutoff``, ``cache_implementation``, ``compile_config``).
            step_callback: called as ``step_callback(step, tokens)`` after each sampled token (``tokens``
                [B, step + 1], the ids so far); the progress bar advances by the same mechanism, per call, so
                concurrent calls (e.g. a demo server) never move each other's bars.

        Unset sampling arguments come from ``pipe.transformer.generation_config`` (for converted models: the
        paper's temperature and guidance scale of that size).

        Returns:
            :class:`ImagePipelineOutput` whose ``images`` are in ``output_type``'s format.
        """
        self._check_components()
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if (
            isinstance(num_images_per_prompt, bool)
            or not isinstance(num_images_per_prompt, (int, np.integer))
            or num_images_per_prompt < 1
        ):
            raise ValueError(
                f"num_images_per_prompt must be a positive int (images per class label), got "
                f"{num_images_per_prompt!r} ({type(num_images_per_prompt).__name__})."
            )
        num_images_per_prompt = int(num_images_per_prompt)
        ids = [i for i in self._resolve_class_labels(class_labels) for _ in range(num_images_per_prompt)]
        batch = len(ids)
        if isinstance(generator, (list, tuple)) and len(generator) != batch:
            raise ValueError(
                f"Got {len(generator)} generators for {batch} images ({batch // num_images_per_prompt} class "
                f"labels × num_images_per_prompt={num_images_per_prompt}); pass one generator per image or a "
                "single generator."
            )
        extra = dict(generation_kwargs or {})
        own = {
            "class_labels", "guidance_scale", "temperature", "top_k", "top_p", "do_sample", "generator",
            "step_callback",
        }  # fmt: skip
        clashing = sorted(set(extra) & own)
        if clashing:
            raise ValueError(f"Pass {clashing} as pipeline arguments, not inside generation_kwargs.")

        device = self._execution_device
        grid = self.transformer.config.grid_size
        with self.progress_bar(total=grid * grid) as bar:

            def on_step(step: int, tokens: torch.LongTensor) -> None:
                bar.update(1)
                if step_callback is not None:
                    step_callback(step, tokens)

            _onload(self.transformer)
            tokens = self.transformer.generate(
                torch.tensor(ids, dtype=torch.long, device=device),
                guidance_scale=guidance_scale,
                do_sample=do_sample,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                step_callback=on_step,
                **extra,
            )
        indices = tokens.view(batch, grid, grid)
        if output_type == "latent":
            images = indices
        else:
            _onload(self.vqvae)
            pixels = self.vqvae.decode_indices(indices.to(_module_device(self.vqvae)))
            images = postprocess_images(pixels, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def reconstruct(
        self,
        images: ImageInput,
        resolution: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        protocol: str = "reference",
    ) -> IBQReconstructionOutput | tuple:
        """Tokenize and decode ``images`` with the pipeline's tokenizer only; see :func:`reconstruct`."""
        if self.vqvae is None:
            raise ValueError("This IBQPipeline has no vqvae (tokenizer) to reconstruct images with.")
        output = reconstruct(self.vqvae, images, resolution, output_type, return_dict, protocol)
        self.maybe_free_model_hooks()
        return output

    # ---- Hub ----------------------------------------------------------------------------------------------

    def write_model_card(
        self,
        save_directory: str | os.PathLike,
        *,
        title: str | None = None,
        description: str | None = None,
        source: str | None = None,
        base_model: str | None = None,
        metrics: str | None = None,
        repo_id: str | None = None,
    ) -> Path:
        """Write ``README.md`` (Hub model card with license, tags, usage) describing this pipeline."""
        vq, ar = self.vqvae.config, self.transformer.config
        factor = self.vqvae.downsample_factor
        side = ar.grid_size * factor
        n_params = sum(p.numel() for p in self.transformer.parameters())
        id2label = self.id2label
        if ar.num_classes == IMAGENET_NUM_CLASSES and not _has_meaningful_id2label(ar):
            labels_repr, labels_text = (
                '[207, "otter"]',
                "ImageNet-1k class ids (0-999, sorted WordNet ids) or names",
            )
        elif id2label:
            first = id2label[0].split(",")[0].strip()
            labels_repr = f"[{first!r}, {min(1, ar.num_classes - 1)}]"
            labels_text = "class ids or the names in `pipe.id2label`"
        else:
            labels_repr, labels_text = f"[0, {min(1, ar.num_classes - 1)}]", "class ids"
        name = repo_id or Path(save_directory).resolve().name
        usage = (
            "import torch\n"
            "from ibq_hf.pipeline import IBQPipeline\n\n"
            f'pipe = IBQPipeline.from_pretrained("{name}")\n'
            "generators = [torch.Generator().manual_seed(seed) for seed in range(2)]  # one per image\n"
            f"images = pipe(class_labels={labels_repr}, generator=generators).images\n"
            'images[0].save("sample.png")'
        )
        description = description or (
            f"Class-conditional image generation with IBQ: an autoregressive transformer ({n_params:,} parameters, "
            f"{ar.num_hidden_layers} layers) samples a {ar.grid_size}×{ar.grid_size} grid of token ids for one of "
            f"{ar.num_classes} classes ({labels_text}), and the IBQ tokenizer ({vq.num_embeddings}-code codebook) "
            f"decodes it to a {side}×{side} image. Load it with `ibq_hf` (`IBQPipeline.from_pretrained`; "
            "`DiffusionPipeline.from_pretrained` cannot import a pipeline class outside diffusers)."
        )
        return write_model_card(
            save_directory,
            title=title or f"IBQ class-conditional pipeline ({side}×{side}, {ar.num_classes} classes)",
            description=description,
            usage=usage,
            library_name="diffusers",
            tags=["ibq_hf", "image-generation", "class-conditional", "autoregressive"],
            source=source,
            base_model=base_model,
            metrics=metrics,
        )

    def _save_local(
        self,
        save_directory: str | os.PathLike,
        variant: str | None,
        max_shard_size: int | str | None,
        model_card: Mapping[str, Any] | None,
        repo_id: str | None,
    ) -> None:
        super().save_pretrained(
            save_directory,
            safe_serialization=True,
            variant=variant,
            max_shard_size=max_shard_size,
            push_to_hub=False,
        )
        # A `repo_id` in `model_card` names the model in the card's usage snippet (e.g. the final folder name
        # when saving into a staging folder); the push's repo id otherwise.
        self.write_model_card(save_directory, **{"repo_id": repo_id, **dict(model_card or {})})

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        model_card: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Save ``model_index.json``, ``vqvae/``, ``transformer/`` (safetensors) and a model card, offline.

        With ``push_to_hub=True`` the folder is uploaded *after* it is complete on disk (``repo_id`` defaults to
        the folder name; ``commit_message``, ``private``, ``token``, ``create_pr`` are passed on), so a failed
        upload never costs the local copy. ``model_card`` holds extra card fields (``source``, ``base_model``,
        ``metrics``, ``title``, ``description``). Returns the commit info of the push, else ``None``.
        """
        if not safe_serialization:
            raise ValueError(
                "ibq-hf saves safetensors only (no pickled weights); drop safe_serialization=False."
            )
        push_keys = ("repo_id", "commit_message", "private", "token", "create_pr")
        push_args = {k: kwargs.pop(k) for k in push_keys if k in kwargs}
        if kwargs:
            raise TypeError(f"Unexpected save_pretrained arguments: {sorted(kwargs)}.")
        if push_args and not push_to_hub:
            raise ValueError(f"{sorted(push_args)} only apply with push_to_hub=True.")
        repo_id = push_args.pop("repo_id", None)
        self._save_local(save_directory, variant, max_shard_size, model_card, repo_id)
        if not push_to_hub:
            return None
        return upload_folder_to_hub(
            save_directory, repo_id or Path(save_directory).resolve().name, **push_args
        )

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        model_card: Mapping[str, Any] | None = None,
    ) -> Any:
        """Save to a temporary folder (as :meth:`save_pretrained` does) and upload it to ``repo_id``.

        To keep a local copy, use ``save_pretrained(dir, push_to_hub=True, repo_id=...)`` or save first and
        upload the folder with :func:`upload_folder_to_hub`. Returns the commit info.
        """
        if not safe_serialization:
            raise ValueError(
                "ibq-hf saves safetensors only (no pickled weights); drop safe_serialization=False."
            )
        with tempfile.TemporaryDirectory() as tmp:
            self._save_local(tmp, variant, None, model_card, repo_id)
            return upload_folder_to_hub(
                tmp,
                repo_id,
                commit_message=commit_message or "Upload IBQPipeline with ibq-hf",
                private=private,
                token=token,
                create_pr=create_pr,
            )


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload a saved folder (pipeline or model) to the Hub: create the repo if needed, then one commit.

    Pickled weight files (``*.bin``, ``*.pt``, ``*.ckpt``, ...) are never uploaded. Returns the commit info.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to upload: {folder} is not a folder. Save the model there first.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=repo_url.repo_id,
        folder_path=folder,
        commit_message=commit_message or f"Upload {folder.name} with ibq-hf",
        create_pr=create_pr,
        ignore_patterns=_PICKLE_PATTERNS,
    )
