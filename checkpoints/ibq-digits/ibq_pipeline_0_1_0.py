# Shipped by ibq-hf 0.1.0 from ibq_hf/pipeline.py (generated at save time; edit the package, not this file).
"""`IBQPipeline`: class-conditional image generation with the IBQ AR model and tokenizer (diffusers).

``class labels --transformer.generate--> token ids [B, grid²] --vqvae.decode_indices--> pixels [B, 3, H, W]``.

Load with ``IBQPipeline.from_pretrained(dir_or_repo)``. A saved folder also carries this module and the ones it
needs (:mod:`ibq_hf.remote_code`), so without ibq-hf ``DiffusionPipeline.from_pretrained(folder,
trust_remote_code=True)`` loads the same pipeline; the package itself never runs that shipped copy. Images come out of the
decoder unclamped (roughly [-1, 1]); the pipeline clamps them to [-1, 1], maps them to [0, 1] and, for PIL
output, converts to uint8 by *rounding* ``255·x``. The original IBQ sampling script truncates instead, which
darkens every pixel by half a level on average.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import BaseOutput

from .ibq_class_labels_0_1_0 import ClassLabels, class_id2label, has_class_names, label_ids, resolve_class_labels
from .ibq_hub_utils_0_1_0 import HubSaveMixin, sampling_defaults, write_pipeline_card
from .ibq_image_processing_0_1_0 import ImageInput, images_to_tensor, postprocess_images
from .ibq_imagenet_labels_0_1_0 import IMAGENET_NUM_CLASSES
from . import ibq_modeling_ar_0_1_0 as modeling_ar, ibq_modeling_vq_0_1_0 as modeling_vq
from .ibq_loading_0_1_0 import quiet_small_load, resolve_pretrained
from .ibq_modeling_ar_0_1_0 import IBQARForImageGeneration
from .ibq_modeling_vq_0_1_0 import IBQVQModel
from .ibq_remote_code_0_1_0 import package_module

__all__ = [
    "OUTPUT_TYPES",
    "IBQPipeline",
    "IBQReconstructionOutput",
    "ImagePipelineOutput",
    "reconstruct",
]

#: Values of ``output_type``: PIL images, float numpy [B, H, W, 3] in [0, 1], float tensors [B, 3, H, W] in
#: [0, 1], or the sampled token ids [B, grid, grid] ("latent").
OUTPUT_TYPES = ("pil", "np", "pt", "latent")



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
# The pipeline
# ---------------------------------------------------------------------------------------------------------------


class IBQPipeline(HubSaveMixin, DiffusionPipeline):
    r"""Class-conditional image generation with IBQ: an AR model samples token ids, the tokenizer decodes them.

    Parameters:
        vqvae ([`IBQVQModel`]): the IBQ tokenizer; its codebook size must equal the transformer's vocabulary.
        transformer ([`IBQARForImageGeneration`]): the class-conditional AR model over token ids.

    Class labels: ints in ``[0, num_classes)`` (also as digit strings), or names (:meth:`resolve_class_labels`).
    Names come from the transformer config's ``id2label`` when it names every class (custom models), else from the
    ImageNet-1k table when ``num_classes == 1000`` (ids in sorted-WordNet-id order, as DiT / LlamaGen / IBQ); other
    models accept ids only.

    Saving (``save_pretrained`` / ``push_to_hub``, :class:`~ibq_hf.hub_utils.HubSaveMixin`) writes safetensors and
    a model card (:meth:`write_model_card`); a push uploads the folder only once it is complete on disk.
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
        return class_id2label(self.transformer.config)

    def _num_classes(self) -> int:
        return self.transformer.config.num_classes if self.transformer is not None else 0

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of class names (case- and whitespace-insensitive), the DiT convention.

        Each comma-separated synonym of ``id2label`` is a name (``"tench"`` and ``"Tinca tinca"`` are both 0).
        Unknown names raise with the closest matches; names shared by two classes (ImageNet's "crane" is a bird
        and a machine) raise with the candidate ids.
        """
        return label_ids(label, self.id2label, self._num_classes())

    def resolve_class_labels(
        self, class_labels: ClassLabels, names_where: str = "pipe.id2label"
    ) -> list[int]:
        """What ``pipe(class_labels=...)`` generates: ids, digit strings (``"207"``, ``"207: golden retriever"``),
        names, or a list / 1-D integer tensor / array of them → a flat list of ids in ``[0, num_classes)``.

        A string of digits is always an id. ``names_where`` names where the user reads the class names in the
        error for an unknown name (e.g. a demo's class picker). See :mod:`ibq_hf.class_labels`.
        """
        if self.transformer is None:
            self._check_components()
        return resolve_class_labels(class_labels, self.id2label, self._num_classes(), names_where)

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
        jacobi_window: int | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images of the given classes.

        Args:
            class_labels: a class id, a class name, or a list of them (``[207, "golden retriever"]``); a 1-D
                integer tensor also works. See :meth:`resolve_class_labels`.
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
                (``guidance_schedule``, ``guidance_cutoff``, ``cache_implementation``, ``compile_config``,
                ``logits_processor``, ``streamer``).
            step_callback: called as ``step_callback(step, tokens)`` after each sampled token (``tokens``
                [B, step + 1], the ids so far); the progress bar advances by the same mechanism, per call, so
                concurrent calls (e.g. a demo server) never move each other's bars.
            jacobi_window: speculative Jacobi decoding: verify this many draft tokens per forward pass (fewer
                passes, the same sampling distribution; greedy decoding gives the same tokens). ``None`` takes the
                generation config's value (default 0 = sequential). A seed gives a different image with and
                without it, the same image for the same window. See ``docs/jacobi_decoding.md``.

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
        ids = [i for i in self.resolve_class_labels(class_labels) for _ in range(num_images_per_prompt)]
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
            "step_callback", "jacobi_window",
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
                jacobi_window=jacobi_window,
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

    # save_pretrained / push_to_hub come from HubSaveMixin: safetensors only, the card written after the weights,
    # a push only once the folder is complete on disk.
    _safetensors_only = True
    _shipped_artefact = "pipeline"

    def write_model_card(self, save_directory: str | os.PathLike, **facts: Any) -> Path:
        """Write ``README.md`` (Hub model card: license, tags, a runnable usage snippet) describing this pipeline.

        ``facts`` as in :func:`ibq_hf.hub_utils.write_pipeline_card` (``name``, ``source_file``, ``size``,
        ``base_model``, ``reported``, ``trained``, ``dataset``, ``title``, ``description``); the class names and
        the sampling defaults come from the transformer.
        """
        config = self.transformer.config
        id2label = self.id2label
        if config.num_classes == IMAGENET_NUM_CLASSES and not has_class_names(config):
            class_names, first = "imagenet", None
        elif id2label:
            class_names, first = "config", id2label[0].split(",")[0].strip()
        else:
            class_names, first = None, None
        facts.setdefault("sampling", sampling_defaults(self.transformer.generation_config))
        return write_pipeline_card(
            save_directory,
            self.vqvae.config,
            config,
            num_parameters=sum(p.numel() for p in self.transformer.parameters()),
            downsample_factor=self.vqvae.downsample_factor,
            class_names=class_names,
            first_class_name=first,
            **facts,
        )

# diffusers copies only the files a module imports itself; these complete the set it needs.
from .ibq_errors_0_1_0 import __name__ as _ibq_errors_0_1_0  # noqa: F401
from .ibq_imagenet_classes_0_1_0 import __name__ as _ibq_imagenet_classes_0_1_0  # noqa: F401
from .ibq_configuration_ar_0_1_0 import __name__ as _ibq_configuration_ar_0_1_0  # noqa: F401
from .ibq_generation_ar_0_1_0 import __name__ as _ibq_generation_ar_0_1_0  # noqa: F401
from .ibq_jacobi_decoding_0_1_0 import __name__ as _ibq_jacobi_decoding_0_1_0  # noqa: F401
from .ibq_quantizer_0_1_0 import __name__ as _ibq_quantizer_0_1_0  # noqa: F401
from .ibq_sampling_0_1_0 import __name__ as _ibq_sampling_0_1_0  # noqa: F401
from .ibq_vanilla_quantizer_0_1_0 import __name__ as _ibq_vanilla_quantizer_0_1_0  # noqa: F401
from .ibq_vq_blocks_0_1_0 import __name__ as _ibq_vq_blocks_0_1_0  # noqa: F401
