"""Hub upload, model cards, and the one save step that writes files next to the weights.

* :func:`upload_folder_to_hub`: upload a folder that is already complete on disk (never pickled weights).
* One card builder per artefact: :func:`write_tokenizer_card`, :func:`write_ar_model_card`,
  :func:`write_pipeline_card`. Callers pass facts (where the weights came from, reported numbers, preprocessing
  protocol, training data); the builder owns the text. Cards are ``huggingface_hub.ModelCard`` files, so their
  YAML header is what the Hub expects; writing one never touches the network.
* :class:`HubSaveMixin` (with :class:`IBQTokenizerHubMixin` / :class:`IBQARHubMixin` for the two models): the one
  place where ``save_pretrained`` / ``push_to_hub`` write ibq-hf's extra files next to the weights: the model card
  and the code stock loaders run with ``trust_remote_code=True`` (:mod:`ibq_hf.remote_code`).

Foundation layer: this module imports ``huggingface_hub``, the standard library and :mod:`ibq_hf.remote_code`
only; configs and models are read by attribute (duck-typed), never imported.
"""

from __future__ import annotations

import contextvars
import inspect
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, ModelCard, ModelCardData

from .remote_code import package_version, write_code

__all__ = [
    "GENERATION_PIPELINE_TAG",
    "PICKLE_PATTERNS",
    "TOKENIZER_PIPELINE_TAG",
    "HubSaveMixin",
    "IBQARHubMixin",
    "IBQTokenizerHubMixin",
    "ReportedResults",
    "sampling_defaults",
    "upload_folder_to_hub",
    "write_ar_model_card",
    "write_pipeline_card",
    "write_tokenizer_card",
]

PAPER_URL = "https://arxiv.org/abs/2412.02692"
ORIGINAL_REPO = "https://github.com/TencentARC/SEED-Voken"

#: The Hub tasks the cards declare (``pipeline_tag``). The Hub has no class-conditional task: generation from a
#: class id, with no text or image input, is filed under unconditional generation; a tokenizer maps pictures to
#: code indices (features).
GENERATION_PIPELINE_TAG = "unconditional-image-generation"
TOKENIZER_PIPELINE_TAG = "image-feature-extraction"

#: Weight files that are not safetensors never leave the machine with an upload.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")

# ---------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------


def upload_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
) -> Any:
    """Upload a saved folder (pipeline, model or tokenizer) to the Hub: create the repo if needed, then one commit.

    The folder must be complete on disk first, so a failed upload (offline, no token, interrupted) loses nothing.
    Pickled weight files (:data:`PICKLE_PATTERNS`) are never uploaded. Returns the commit info.
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
        ignore_patterns=list(PICKLE_PATTERNS),
    )


# ---------------------------------------------------------------------------------------------------------------
# Cards: the shared renderer
# ---------------------------------------------------------------------------------------------------------------

_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ description }}

{% if source %}**Source:** {{ source }}
{% endif %}
{% if metrics %}## Reported results

{{ metrics }}
{% endif %}
## Usage

```python
{{ usage }}
```
{% if stock_usage %}
### Without ibq-hf

This repo also holds ibq-hf {{ version }}'s own modules (the `ibq_*.py` files, copied from the package when it was
saved; each names the package file it came from), so stock diffusers / transformers load it without installing
ibq-hf. The shipped code equals the source of ibq-hf {{ version }}. Nothing runs it unless you pass
`trust_remote_code=True`, which runs those files on your machine: read them (or compare them with that release)
first, and pin a `revision` you have read. With ibq-hf installed, the first snippet never runs them.

```python
{{ stock_usage }}
```
{% endif %}
## About IBQ

IBQ (Index Backpropagation Quantization, [paper]({{ paper_url }})) trains a visual tokenizer whose
whole codebook receives gradient through a straight-through softmax over code indices. This model
was saved with [ibq-hf](https://github.com/ibq-hf/ibq-hf), a Hugging Face-native implementation;
the original research code is [SEED-Voken]({{ original_repo }}).

## License

Apache-2.0, the license of the original IBQ weights and code.
"""

_TOKENIZER_RECIPE = (
    "reference recipe: L1 + LPIPS + 0.1·non-saturating GAN + quant + 0.05·entropy, hinge + LeCam PatchGAN, "
    "Adam (0.5, 0.9)"
)
_AR_RECIPE = (
    "reference recipe: AdamW (0.9, 0.95), VAR lr / weight-decay schedule, gradient clipping 1.0, 10 % class-label "
    "dropout for classifier-free guidance"
)


@dataclass(frozen=True)
class ReportedResults:
    """Numbers reported for released weights: who measured them on what (``note``), and the table.

    Example: ``ReportedResults("Reported by the authors for ImageNet 256×256", ("Model", "FID"), [("B", 2.88)])``.
    """

    note: str
    header: Sequence[str]
    rows: Sequence[Sequence[object]]

    def table(self) -> str:
        """The numbers as a markdown table."""
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


def _render_card(
    save_directory: str | os.PathLike,
    *,
    title: str,
    description: str,
    usage: str,
    library_name: str,
    tags: Sequence[str],
    source: str | None = None,
    base_model: str | None = None,
    metrics: str | None = None,
    pipeline_tag: str | None = None,
    extra_card_data: Mapping[str, object] | None = None,
    stock_usage: str | None = None,
) -> Path:
    """Write ``README.md`` into ``save_directory`` (atomically: a reader never sees half a card).

    ``stock_usage``: the snippet that loads the folder with stock libraries and ``trust_remote_code=True`` (only
    when the code is saved next to the weights, :mod:`ibq_hf.remote_code`).
    """
    data = ModelCardData(
        license="apache-2.0",
        library_name=library_name,
        # `custom_code`: the Hub's tag for repos whose loading runs code of their own (trust_remote_code=True).
        tags=list(dict.fromkeys(["ibq", "ibq_hf", *tags, *(["custom_code"] if stock_usage else [])])),
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        **dict(extra_card_data or {}),
    )
    card = ModelCard.from_template(
        data,
        template_str=_TEMPLATE,
        title=title,
        description=description,
        source=source,
        metrics=metrics,
        usage=usage.strip(),
        stock_usage=stock_usage.strip() if stock_usage else None,
        version=package_version(),
        paper_url=PAPER_URL,
        original_repo=ORIGINAL_REPO,
    )
    path = Path(save_directory) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".README.md.{os.getpid()}.partial")
    try:
        card.save(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _name(save_directory: str | os.PathLike, name: str | None) -> str:
    """The folder or repo id the usage snippet loads: ``name``, else the folder's own name."""
    return name or Path(save_directory).resolve().name


def _source(source_file: str | None, base_model: str | None, what: str) -> str | None:
    if source_file is None:
        return None
    where = f" from [{base_model}](https://huggingface.co/{base_model})" if base_model else ""
    return f"`{source_file}`{where} (original SEED-Voken {what})"


def _metrics(
    reported: ReportedResults | None, sampling: Mapping[str, Any] | None, settings_file: str
) -> str | None:
    """The reported numbers, and for AR models the sampling settings they were measured with."""
    if reported is None:
        return None
    text = reported.note
    if sampling:
        names = {
            "temperature": "temperature",
            "guidance_scale": "classifier-free guidance",
            "top_k": "top-k",
            "top_p": "top-p",
        }
        used = ", ".join(
            f"{label} {sampling[key]}" for key, label in names.items() if sampling.get(key) is not None
        )
        text += f" with {used}; these are the defaults in `{settings_file}`"
    return f"{reported.table()}\n\n{text}."


def _trained_text(script: str, recipe: str, dataset: str | None) -> str:
    return f" Trained with ibq-hf's `{script}` ({recipe})." + (
        f" Training data: `{dataset}`." if dataset else ""
    )


def _released_title(size: str | None) -> str | None:
    return f"IBQ-AR-{size}" if size else None


# ---------------------------------------------------------------------------------------------------------------
# Cards: one builder per artefact
# ---------------------------------------------------------------------------------------------------------------


def write_tokenizer_card(
    save_directory: str | os.PathLike,
    config: Any,
    *,
    num_parameters: int,
    name: str | None = None,
    source_file: str | None = None,
    base_model: str | None = None,
    ema_weights: bool | None = None,
    protocol: str | None = None,
    protocol_description: str | None = None,
    reported: ReportedResults | None = None,
    trained: bool = False,
    dataset: str | None = None,
    steps: int | None = None,
    ema_decay: float | None = None,
    title: str | None = None,
    description: str | None = None,
    shipped_code: bool = False,
) -> Path:
    """Model card of an :class:`~ibq_hf.IBQVQModel` (``config``: its config, read by attribute).

    Args:
        name: folder or repo id in the usage snippet (default: the folder's name).
        source_file: the original checkpoint it was converted from; ``base_model``: that checkpoint's Hub repo.
        ema_weights: whether the saved weights are the EMA ones (stated in the text when known).
        protocol: the preprocessing protocol its numbers were measured with, recorded as ``preprocessing_protocol``
            in the card's metadata (``ibq-hf evaluate tokenizer`` reads it); ``protocol_description`` says it in
            words. ``"pretrain"`` marks a general-domain Pretrain tokenizer.
        reported: the authors' numbers for these weights.
        trained: trained by ``examples/train_ibq.py`` (with ``dataset``, ``steps``, ``ema_decay``).
        title: replaces the generated title.
        description: replaces the generated description.
        shipped_code: the folder carries its code (:mod:`ibq_hf.remote_code`): show the stock-library snippet too.
    """
    k, resolution = config.num_embeddings, config.resolution
    factor = 2 ** (len(config.ch_mult) - 1)
    grid = resolution // factor
    pretrain = protocol == "pretrain"
    weights = {True: "EMA weights", False: "raw, non-EMA weights", None: None}[ema_weights]
    if source_file is not None and pretrain:
        text = (
            f'The general-domain ("Pretrain") IBQ visual tokenizer with a {k}-entry codebook, trained on about 200 M '
            "web images (CapFusion, LAION-COCO, CC12M, CC3M, LAION-HD, LAION-Aesthetic, JourneyDB): "
            f"{resolution}×{resolution} images ↔ {grid}×{grid} code indices."
        )
    else:
        text = (
            f"{'The' if source_file else 'An'} IBQ visual tokenizer ({num_parameters:,} parameters) with a {k}-entry "
            f"codebook: {resolution}×{resolution} images ↔ {grid}×{grid} code indices (downsampling {factor}×)."
        )
    if source_file is not None:
        text += " Converted from the official checkpoint" + (f" ({weights})." if weights else ".")
    elif trained:
        text += _trained_text("examples/train_ibq.py", _TOKENIZER_RECIPE, dataset)
        if ema_decay is not None:
            text += f" These are the EMA (decay {ema_decay}) weights" + (
                f" after {steps} steps." if steps else "."
            )
    if protocol is not None:
        text += (
            f"\n\n**Preprocessing (`{protocol}` protocol)**"
            + (f": {protocol_description}" if protocol_description else "")
            + ". Use the same pixels to reproduce its numbers: `ibq-hf evaluate tokenizer --model DIR --protocol "
            f'{protocol}`, or `ibq_hf.image_processing.images_to_tensor(pictures, {resolution}, protocol="{protocol}")` '
            "in Python."
        )
    repo = _name(save_directory, name)
    if pretrain:
        usage = (
            "import PIL.Image\n"
            "from ibq_hf import IBQVQModel\n"
            "from ibq_hf.image_processing import images_to_tensor\n\n"
            f'tokenizer = IBQVQModel.from_pretrained("{repo}").eval()\n'
            "# Resize + CenterCrop, PIL bilinear antialiased, [-1, 1]: the pixels this tokenizer saw\n"
            f'images = images_to_tensor([PIL.Image.open("photo.jpg")], {resolution}, protocol="pretrain")\n'
            f"indices = tokenizer.tokenize(images)          # [1, {grid}, {grid}] code indices\n"
            "reconstruction = tokenizer.decode_indices(indices).clamp(-1, 1)"
        )
    else:
        usage = (
            "import torch\n"
            "from ibq_hf import IBQVQModel\n\n"
            f'tokenizer = IBQVQModel.from_pretrained("{repo}").eval()\n'
            f"images = torch.rand(1, 3, {resolution}, {resolution}) * 2 - 1  # RGB in [-1, 1]\n"
            f"indices = tokenizer.tokenize(images)          # [1, {grid}, {grid}] code indices\n"
            "reconstruction = tokenizer.decode_indices(indices).clamp(-1, 1)"
        )
    stock_usage = (
        "import torch\n"
        "from diffusers import AutoModel\n\n"
        f'tokenizer = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()\n'
        f"images = torch.rand(1, 3, {resolution}, {resolution}) * 2 - 1  # RGB in [-1, 1]\n"
        "reconstruction = tokenizer.decode_indices(tokenizer.tokenize(images)).clamp(-1, 1)"
    )
    return _render_card(
        save_directory,
        stock_usage=stock_usage if shipped_code else None,
        title=title or f"IBQ {'Pretrain ' if pretrain else ''}tokenizer ({k} codes)",
        description=description or text,
        usage=usage,
        library_name="diffusers",
        tags=["image-tokenizer", "vector-quantization", "vq-model"],
        source=_source(source_file, base_model, "checkpoint"),
        base_model=base_model,
        metrics=_metrics(reported, None, ""),
        pipeline_tag=TOKENIZER_PIPELINE_TAG,
        extra_card_data={"preprocessing_protocol": protocol} if protocol is not None else None,
    )


def write_ar_model_card(
    save_directory: str | os.PathLike,
    config: Any,
    *,
    num_parameters: int,
    name: str | None = None,
    source_file: str | None = None,
    size: str | None = None,
    base_model: str | None = None,
    reported: ReportedResults | None = None,
    sampling: Mapping[str, Any] | None = None,
    trained: bool = False,
    dataset: str | None = None,
    title: str | None = None,
    description: str | None = None,
    shipped_code: bool = False,
) -> Path:
    """Model card of an :class:`~ibq_hf.IBQARForImageGeneration` (``config``: its config, read by attribute).

    Args:
        name: folder or repo id in the usage snippet (default: the folder's name).
        source_file: the original checkpoint it was converted from; ``size``: its released size ("B", ...);
            ``base_model``: the original's Hub repo.
        reported: the authors' numbers; ``sampling``: the generation defaults they were measured with (the ones
            in ``generation_config.json``: ``temperature``, ``guidance_scale``, ``top_k``, ``top_p``).
        trained: trained by ``examples/train_ar.py`` (on ``dataset``).
        title: replaces the generated title.
        description: replaces the generated description.
        shipped_code: the folder carries its code (:mod:`ibq_hf.remote_code`): show the stock-library snippet too.
    """
    grid, classes = config.grid_size, config.num_classes
    text = (
        f"A class-conditional IBQ autoregressive transformer ({num_parameters:,} parameters, {config.num_hidden_layers} "
        f"layers, width {config.hidden_size}) that samples {grid}×{grid} grids of IBQ tokenizer ids (codebook "
        f"{config.vocab_size}) for {classes} classes; decode them with the IBQ tokenizer (`IBQVQModel`) or use "
        "`IBQPipeline`."
    )
    if source_file is not None:
        text += f" Converted from `{source_file}` to the transformers format by ibq-hf."
    elif trained:
        text += _trained_text("examples/train_ar.py", _AR_RECIPE, dataset)
    labels = [207, 360] if classes == 1000 else list(range(min(2, classes)))
    usage = (
        "import torch\n"
        "from ibq_hf import IBQARForImageGeneration\n\n"
        f'model = IBQARForImageGeneration.from_pretrained("{_name(save_directory, name)}")\n'
        f"generators = [torch.Generator().manual_seed(seed) for seed in range({len(labels)})]  # one per image\n"
        f"token_ids = model.generate(class_labels={labels}, generator=generators)  # [{len(labels)}, "
        f"{grid * grid}] ids\n"
        f"# decode with the tokenizer the codes came from: vqvae.decode_indices(token_ids.view(-1, {grid}, {grid}))"
    )
    stock_usage = (
        "import torch\n"
        "from transformers import AutoModel\n\n"
        f'model = AutoModel.from_pretrained("{_name(save_directory, name)}", trust_remote_code=True)\n'
        f"generators = [torch.Generator().manual_seed(seed) for seed in range({len(labels)})]\n"
        f"token_ids = model.generate(class_labels={labels}, generator=generators)"
    )
    return _render_card(
        save_directory,
        stock_usage=stock_usage if shipped_code else None,
        title=title or _released_title(size) or f"IBQ AR model ({grid}×{grid} tokens, {classes} classes)",
        description=description or text,
        usage=usage,
        library_name="transformers",
        tags=["image-generation", "autoregressive", "class-conditional"]
        + (["imagenet"] if classes == 1000 else []),
        source=_source(source_file, base_model, "checkpoint"),
        base_model=base_model,
        metrics=_metrics(reported, sampling, "generation_config.json"),
        pipeline_tag=GENERATION_PIPELINE_TAG,
    )


def write_pipeline_card(
    save_directory: str | os.PathLike,
    vqvae_config: Any,
    transformer_config: Any,
    *,
    num_parameters: int,
    downsample_factor: int,
    class_names: str | None = None,
    first_class_name: str | None = None,
    name: str | None = None,
    source_file: str | None = None,
    size: str | None = None,
    base_model: str | None = None,
    reported: ReportedResults | None = None,
    sampling: Mapping[str, Any] | None = None,
    trained: bool = False,
    dataset: str | None = None,
    title: str | None = None,
    description: str | None = None,
    intro: str | None = None,
    shipped_code: bool = False,
) -> Path:
    """Model card of an :class:`~ibq_hf.IBQPipeline` (configs read by attribute).

    Args:
        num_parameters: the transformer's parameter count; ``downsample_factor``: the tokenizer's.
        class_names: ``"imagenet"`` (ImageNet-1k names), ``"config"`` (the transformer's ``id2label``, first one
            ``first_class_name``) or ``None`` (ids only).

    The other facts (``name``, ``source_file``, ``size``, ``base_model``, ``reported``, ``sampling``, ``trained``,
    ``dataset``, ``title``, ``description``, ``shipped_code``) are those of :func:`write_ar_model_card`, for the
    pipeline as a whole (a converted pipeline's tokenizer is the one embedded in the AR checkpoint). ``intro``: a
    paragraph put before the description (generated or given), e.g. what was measured with these weights.
    """
    vq, ar = vqvae_config, transformer_config
    side, classes = ar.grid_size * downsample_factor, ar.num_classes
    second = min(1, classes - 1)
    if class_names == "imagenet":
        labels_repr, labels_text = (
            '[207, "otter"]',
            "ImageNet-1k class ids (0-999, sorted WordNet ids) or names",
        )
    elif class_names == "config":
        # Classes named by digits ("0" … "9"): a string of digits is always an id, so show ids.
        named = first_class_name is not None and not str(first_class_name).strip().isdigit()
        labels_repr, labels_text = (
            f"[{first_class_name!r}, {second}]" if named else f"[0, {second}]",
            "class ids or the names in `pipe.id2label`",
        )
    else:
        labels_repr, labels_text = f"[0, {second}]", "class ids"
    text = (
        f"Class-conditional image generation with IBQ: an autoregressive transformer ({num_parameters:,} parameters, "
        f"{ar.num_hidden_layers} layers) samples a {ar.grid_size}×{ar.grid_size} grid of token ids for one of "
        f"{classes} classes ({labels_text}), and the IBQ tokenizer ({vq.num_embeddings}-code codebook) decodes it "
        f"to a {side}×{side} image. "
        + (
            "Load it with `ibq_hf` (`IBQPipeline.from_pretrained`) or, without the package, with "
            "`DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` (below)."
            if shipped_code
            else "Load it with `ibq_hf` (`IBQPipeline.from_pretrained`; `DiffusionPipeline.from_pretrained` cannot "
            "import a pipeline class outside diffusers unless the code is saved with the weights)."
        )
    )
    if source_file is not None:
        text += f" Converted from `{source_file}` (the AR model and the tokenizer embedded in it) by ibq-hf."
    elif trained:
        text += _trained_text("examples/train_ar.py", _AR_RECIPE, dataset)
    usage = (
        "import torch\n"
        "from ibq_hf import IBQPipeline\n\n"
        f'pipe = IBQPipeline.from_pretrained("{_name(save_directory, name)}")\n'
        "generators = [torch.Generator().manual_seed(seed) for seed in range(2)]  # one per image\n"
        f"images = pipe(class_labels={labels_repr}, generator=generators).images\n"
        'images[0].save("sample.png")'
    )
    default_title = (
        f"{_released_title(size)} pipeline ({side}×{side}, {classes} classes)"
        if size
        else f"IBQ class-conditional pipeline ({side}×{side}, {classes} classes)"
    )
    stock_usage = (
        "import torch\n"
        "from diffusers import DiffusionPipeline\n\n"
        f'pipe = DiffusionPipeline.from_pretrained("{_name(save_directory, name)}", trust_remote_code=True)\n'
        "generators = [torch.Generator().manual_seed(seed) for seed in range(2)]  # one per image\n"
        f"images = pipe(class_labels={labels_repr}, generator=generators).images"
    )
    return _render_card(
        save_directory,
        stock_usage=stock_usage if shipped_code else None,
        title=title or default_title,
        description=(f"{intro.strip()}\n\n" if intro else "") + (description or text),
        usage=usage,
        library_name="diffusers",
        tags=["image-generation", "class-conditional", "autoregressive"],
        source=_source(
            source_file, base_model, f"AR checkpoint with its embedded {vq.num_embeddings}-code tokenizer"
        ),
        base_model=base_model,
        metrics=_metrics(reported, sampling, "transformer/generation_config.json"),
        pipeline_tag=GENERATION_PIPELINE_TAG,
    )


def sampling_defaults(generation_config: Any) -> dict[str, Any]:
    """``temperature``, ``guidance_scale``, ``top_k``, ``top_p`` of a ``GenerationConfig`` (read by attribute)."""
    keys = ("temperature", "guidance_scale", "top_k", "top_p")
    return {k: getattr(generation_config, k) for k in keys if getattr(generation_config, k, None) is not None}


def _num_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------------------
# Saving: the one place that writes files next to the weights
# ---------------------------------------------------------------------------------------------------------------

# True while a HubSaveMixin.save_pretrained runs: the components a pipeline saves into its subfolders write no
# card of their own (the folder has one card, the pipeline's).
_SAVING: contextvars.ContextVar[bool] = contextvars.ContextVar("ibq_hf_saving", default=False)
_PUSH_ARGUMENTS = ("repo_id", "commit_message", "private", "token", "create_pr")


class HubSaveMixin:
    """``save_pretrained`` / ``push_to_hub`` that write ibq-hf's extra files (the model card) next to the weights.

    Put it first among the bases; the library class after it (diffusers ``DiffusionPipeline`` / ``ModelMixin``,
    transformers ``PreTrainedModel``) writes the weights. Subclasses implement :meth:`write_model_card`.

    * ``save_pretrained(dir, model_card={...})`` saves, then writes ``README.md`` from the card facts (see the
      ``write_*_card`` builders); with ``push_to_hub=True`` the folder is uploaded only once it is complete on disk
      (``repo_id`` defaults to the folder name; ``commit_message``, ``private``, ``token``, ``create_pr`` are passed
      on), so a failed upload never costs the local copy. Returns the commit info of the push, else ``None``.
    * ``push_to_hub(repo_id)`` saves into a temporary folder and uploads it, so the library's generic card never
      replaces ours.
    * A save nested in another (a pipeline saving its components) writes no card; neither does a process that is
      not the main one (``is_main_process=False``).
    * Both also write the code stock diffusers / transformers load with ``trust_remote_code=True``
      (:func:`ibq_hf.remote_code.write_code`: the package's modules, ``auto_map``, ``[module, class]`` entries);
      ``ship_code=False`` leaves it out.
    """

    #: Refuse ``safe_serialization=False`` (the pipeline); the models keep their library's choice.
    _safetensors_only: bool = False
    #: What :func:`ibq_hf.remote_code.write_code` ships next to the weights ("tokenizer", "ar", "pipeline").
    _shipped_artefact: str | None = None

    def write_model_card(self, save_directory: str | os.PathLike, **facts: Any) -> Path:
        """Write ``README.md`` describing this object into ``save_directory``; ``facts`` as in its card builder."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_model_card")

    def _check_serialization(self, safe_serialization: bool) -> None:
        if self._safetensors_only and not safe_serialization:
            raise ValueError(
                "ibq-hf saves safetensors only (no pickled weights); drop safe_serialization=False."
            )

    def _save_with_card(
        self,
        save_directory: str | os.PathLike,
        model_card: Mapping[str, Any] | None,
        repo_id: str | None,
        safe_serialization: bool,
        variant: str | None,
        max_shard_size: int | str | None,
        kwargs: dict[str, Any],
        ship_code: bool = True,
    ) -> None:
        parent = super().save_pretrained  # type: ignore[misc]
        accepted = inspect.signature(parent).parameters
        if "safe_serialization" in accepted:
            kwargs["safe_serialization"] = safe_serialization
        elif not safe_serialization:
            raise ValueError(f"{type(self).__name__} saves safetensors only; drop safe_serialization=False.")
        if variant is not None:
            kwargs["variant"] = variant
        if max_shard_size is not None:
            kwargs["max_shard_size"] = max_shard_size
        nested = _SAVING.get()
        token = _SAVING.set(True)
        try:
            parent(save_directory, **kwargs)
        finally:
            _SAVING.reset(token)
        if not nested and kwargs.get("is_main_process", True):
            ships = ship_code and self._shipped_artefact is not None
            facts: dict[str, Any] = {"shipped_code": ships, **({"name": repo_id} if repo_id else {})}
            # A `name` in `model_card` wins (e.g. the final folder name when saving into a staging folder).
            self.write_model_card(save_directory, **{**facts, **dict(model_card or {})})
            if ships:
                write_code(save_directory, self._shipped_artefact)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        model_card: Mapping[str, Any] | None = None,
        ship_code: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Save the weights and config, then the model card and the shipped code (offline); see the class docstring."""
        self._check_serialization(safe_serialization)
        push_args = {k: kwargs.pop(k) for k in _PUSH_ARGUMENTS if k in kwargs}
        if push_args and not push_to_hub:
            raise ValueError(f"{sorted(push_args)} only apply with push_to_hub=True.")
        repo_id = push_args.pop("repo_id", None)
        self._save_with_card(
            save_directory,
            model_card,
            repo_id,
            safe_serialization,
            variant,
            max_shard_size,
            kwargs,
            ship_code,
        )
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
        max_shard_size: int | str | None = None,
        model_card: Mapping[str, Any] | None = None,
        ship_code: bool = True,
    ) -> Any:
        """Save into a temporary folder (as :meth:`save_pretrained`, card included) and upload it to ``repo_id``.

        To keep a local copy, use ``save_pretrained(dir, push_to_hub=True, repo_id=...)``, or save first and upload
        the folder with :func:`upload_folder_to_hub`. Returns the commit info.
        """
        self._check_serialization(safe_serialization)
        with tempfile.TemporaryDirectory() as tmp:
            self._save_with_card(
                tmp, model_card, repo_id, safe_serialization, variant, max_shard_size, {}, ship_code
            )
            return upload_folder_to_hub(
                tmp,
                repo_id,
                commit_message=commit_message or f"Upload {type(self).__name__} with ibq-hf",
                private=private,
                token=token,
                create_pr=create_pr,
            )


class IBQTokenizerHubMixin(HubSaveMixin):
    """:class:`HubSaveMixin` for :class:`~ibq_hf.IBQVQModel`: its card is :func:`write_tokenizer_card`."""

    _shipped_artefact = "tokenizer"

    def write_model_card(self, save_directory: str | os.PathLike, **facts: Any) -> Path:
        """Write the tokenizer's ``README.md``; ``facts`` as in :func:`write_tokenizer_card`."""
        return write_tokenizer_card(
            save_directory,
            self.config,
            num_parameters=_num_parameters(self),
            **facts,  # type: ignore[attr-defined]
        )


class IBQARHubMixin(HubSaveMixin):
    """:class:`HubSaveMixin` for :class:`~ibq_hf.IBQARForImageGeneration`: its card is :func:`write_ar_model_card`,
    with the sampling defaults of its ``generation_config``."""

    _shipped_artefact = "ar"

    def write_model_card(self, save_directory: str | os.PathLike, **facts: Any) -> Path:
        """Write the AR model's ``README.md``; ``facts`` as in :func:`write_ar_model_card`."""
        facts.setdefault("sampling", sampling_defaults(getattr(self, "generation_config", None)))
        return write_ar_model_card(
            save_directory,
            self.config,
            num_parameters=_num_parameters(self),
            **facts,  # type: ignore[attr-defined]
        )
