# Shipped by ibq-hf 0.1.0 from ibq_hf/models/modeling_vq.py (generated at save time; edit the package, not this file).
"""`IBQVQModel`: the IBQ image tokenizer as a diffusers model.

``encoder → quant_conv → IBQQuantizer → post_quant_conv → decoder`` with the original module names,
so ``state_dict()`` keys equal the released generator's (543 tensors for the ImageNet configs).
Images are ``[B, 3, H, W]`` in ``[-1, 1]``; a 256² image gives a 16×16 grid of code indices.
"""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import AutoencoderMixin
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from .ibq_errors_0_1_0 import CheckpointKeyError
from .ibq_hub_utils_0_1_0 import IBQTokenizerHubMixin
from .ibq_loading_0_1_0 import quiet_small_load, resolve_pretrained
from .ibq_quantizer_0_1_0 import IBQQuantizer
from .ibq_vanilla_quantizer_0_1_0 import VanillaVectorQuantizer
from .ibq_vq_blocks_0_1_0 import Decoder, Encoder

__all__ = [
    "DEFAULT_TILE_TOKENS",
    "TOKENIZER_PRESETS",
    "IBQVQDecoderOutput",
    "IBQVQEncoderOutput",
    "IBQVQModel",
    "IBQVQModelOutput",
]

_IMAGENET_ARCH = {
    "in_channels": 3,
    "out_channels": 3,
    "resolution": 256,
    "ch": 128,
    "ch_mult": (1, 1, 2, 2, 4),
    "num_res_blocks": 4,
    "attn_resolutions": (16,),
    "dropout": 0.0,
    "z_channels": 256,
    "embed_dim": 256,
    "beta": 0.25,
    "use_entropy_loss": True,
    "entropy_temperature": 0.01,
    "sample_minimization_weight": 1.0,
    "batch_maximization_weight": 1.0,
}

#: The released ImageNet-256 tokenizers (reference §1.2): identical but for the codebook size.
TOKENIZER_PRESETS: dict[str, dict] = {
    f"imagenet-{k}": {**_IMAGENET_ARCH, "num_embeddings": k} for k in (1024, 8192, 16384, 262144)
}

# Inputs whose values reach beyond this are almost certainly not in [-1, 1] (e.g. [0, 255]).
_RANGE_WARN_LIMIT = 1.5

#: Default tile side of :meth:`IBQVQModel.enable_tiling`, in tokens (×``downsample_factor`` pixels). Measured on the
#: bundled digits tokenizer (docs/tokenizer.md): 8- and 16-token tiles lose 4.5 and 2 dB of reconstruction PSNR at
#: 512², 32-token tiles at most 0.4 dB (512², 1024²); a tile of the training size (16 tokens for the released
#: models) is too small.
DEFAULT_TILE_TOKENS = 32

#: Config fields a saved tokenizer must state: they decide the weight layout and the default input size (the
#: loss, dropout and quantizer-implementation fields default to the released tokenizers' values).
REQUIRED_CONFIG_FIELDS: tuple[str, ...] = (
    "in_channels",
    "out_channels",
    "resolution",
    "ch",
    "ch_mult",
    "num_res_blocks",
    "attn_resolutions",
    "z_channels",
    "embed_dim",
    "num_embeddings",
)
_INT_FIELDS = ("in_channels", "out_channels", "resolution", "ch", "num_res_blocks", "z_channels", "embed_dim",
               "num_embeddings")  # fmt: skip


def _check_config_types(values: dict) -> None:
    """Integers where the architecture needs them (a hand-edited ``config.json`` may hold ``"128"``)."""

    def is_int(v: object) -> bool:
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    for name in _INT_FIELDS:
        if not is_int(values[name]):
            raise ValueError(
                f"IBQVQModel config field {name} must be an integer, got {values[name]!r} "
                f"({type(values[name]).__name__}); write it without quotes or decimals."
            )
    for name in ("ch_mult", "attn_resolutions"):
        value = values[name]
        if isinstance(value, (str, bytes)) or not all(is_int(v) for v in value):
            raise ValueError(f"IBQVQModel config field {name} must be a list of integers, got {value!r}.")


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of size ``tile`` covering ``[0, length)``, each overlapping its neighbours by ``≥ overlap``.

    The fewest tiles with stride at most ``tile - overlap``, spread evenly so that the first starts at 0 and the
    last ends at ``length`` (every tile has full size; no thin remainder tile).
    """
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    gaps = -(-(length - tile) // stride)  # ceil: number of steps between first and last tile
    return [round(i * (length - tile) / gaps) for i in range(gaps + 1)]


def _blend_window(
    starts: list[int], tile: int, length: int, scale: int, device: torch.device
) -> list[torch.Tensor]:
    """Per-tile 1-D blending weights (in output units: grid units × ``scale``) along one axis.

    A tile's weight ramps linearly from ~0 to 1 across the part it shares with the previous tile and back down
    across the part it shares with the next one; elsewhere it is 1. Weights are strictly positive, and the
    caller divides by their sum, so overlapping tiles cross-fade and every output position gets weight 1.
    """
    size = min(tile, length) * scale
    position = torch.arange(size, device=device, dtype=torch.float32) + 0.5
    windows = []
    for i, start in enumerate(starts):
        window = torch.ones(size, device=device)
        if i > 0:  # shared with the previous tile: [start, previous end)
            lead = (starts[i - 1] + tile - start) * scale
            window = torch.minimum(window, position / lead)
        if i < len(starts) - 1:  # shared with the next tile: [next start, end)
            trail = (start + tile - starts[i + 1]) * scale
            window = torch.minimum(window, (size - position) / trail)
        windows.append(window)
    return windows


def _tiled_apply(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    scale_in: int,
    scale_out: int,
) -> torch.Tensor:
    """``fn`` on overlapping square tiles of ``x`` ``[B, C, H, W]``, cross-faded into one output.

    Sizes are counted on the latent grid: ``tile`` and ``overlap`` are grid positions, one grid position is
    ``scale_in`` elements of ``x`` and ``scale_out`` elements of ``fn``'s output (encode: pixels in, latents out,
    ``scale_in = f``, ``scale_out = 1``; decode: the reverse). Returns ``[B, C_out, H/scale_in·scale_out, ...]``.
    """
    grid_h, grid_w = x.shape[-2] // scale_in, x.shape[-1] // scale_in
    rows, cols = _tile_starts(grid_h, tile, overlap), _tile_starts(grid_w, tile, overlap)
    row_w = _blend_window(rows, tile, grid_h, scale_out, x.device)
    col_w = _blend_window(cols, tile, grid_w, scale_out, x.device)
    tile_h, tile_w = min(tile, grid_h), min(tile, grid_w)
    out = norm = None
    for r, wr in zip(rows, row_w):
        for c, wc in zip(cols, col_w):
            y = fn(x[..., r * scale_in : (r + tile_h) * scale_in, c * scale_in : (c + tile_w) * scale_in])
            if out is None:  # accumulate in fp32 at least (a bf16 sum of cross-faded tiles loses bits)
                acc = torch.promote_types(y.dtype, torch.float32)
                out = y.new_zeros(*y.shape[:2], grid_h * scale_out, grid_w * scale_out, dtype=acc)
                norm = torch.zeros(grid_h * scale_out, grid_w * scale_out, device=y.device)
            weight = wr[:, None] * wc[None, :]
            rs, cs = (
                slice(r * scale_out, (r + tile_h) * scale_out),
                slice(c * scale_out, (c + tile_w) * scale_out),
            )
            out[..., rs, cs] += y * weight
            norm[rs, cs] += weight
    return (out / norm).to(y.dtype)


@dataclass
class IBQVQEncoderOutput(BaseOutput):
    """Output of :meth:`IBQVQModel.encode`.

    Args:
        latents: ``[B, embed_dim, h, w]`` quantized latents (straight-through to the encoder and codebook).
        indices: ``[B, h, w]`` int64 code indices (raster order when flattened).
        quant_loss: the quantizer's loss (codebook + commitment terms).
        sample_entropy: mean per-token entropy (``None`` when ``use_entropy_loss`` is off).
        avg_entropy: entropy of the batch-mean code distribution (``None`` when off).
        entropy_loss: the weighted entropy loss (``None`` when off).
    """

    latents: torch.Tensor
    indices: torch.Tensor
    quant_loss: torch.Tensor | None = None
    sample_entropy: torch.Tensor | None = None
    avg_entropy: torch.Tensor | None = None
    entropy_loss: torch.Tensor | None = None


@dataclass
class IBQVQDecoderOutput(BaseOutput):
    """Output of :meth:`IBQVQModel.decode`: ``sample [B, 3, H, W]``, unclamped (roughly [-1, 1])."""

    sample: torch.Tensor


@dataclass
class IBQVQModelOutput(BaseOutput):
    """Output of :meth:`IBQVQModel.forward`: the reconstruction and everything a training step needs."""

    sample: torch.Tensor
    indices: torch.Tensor
    quant_loss: torch.Tensor | None = None
    sample_entropy: torch.Tensor | None = None
    avg_entropy: torch.Tensor | None = None
    entropy_loss: torch.Tensor | None = None
    latents: torch.Tensor | None = None


class IBQVQModel(IBQTokenizerHubMixin, ModelMixin, AutoencoderMixin, ConfigMixin):
    r"""The IBQ visual tokenizer (taming-style VQGAN generator with the IBQ quantizer).

    Parameters:
        in_channels (`int`, defaults to 3): image channels.
        out_channels (`int`, defaults to 3): reconstructed image channels.
        resolution (`int`, defaults to 256): training resolution; decides which levels get attention
            (a level at resolution ``r`` has attention iff ``r`` is in ``attn_resolutions``). Other input
            sizes work as long as they are divisible by the downsampling factor.
        ch (`int`, defaults to 128): base channel width.
        ch_mult (`tuple[int]`, defaults to (1, 1, 2, 2, 4)): width multipliers per level; ``len(ch_mult) - 1``
            stride-2 downsamplings.
        num_res_blocks (`int`, defaults to 4): residual blocks per encoder level (decoder: one more).
        attn_resolutions (`tuple[int]`, defaults to (16,)): resolutions with attention blocks.
        dropout (`float`, defaults to 0.0): dropout inside residual blocks.
        z_channels (`int`, defaults to 256): encoder output width.
        embed_dim (`int`, defaults to 256): code width (``quant_conv``: z_channels → embed_dim).
        num_embeddings (`int`, defaults to 16384): codebook size.
        beta (`float`, defaults to 0.25): codebook-term weight of the quantization loss.
        use_entropy_loss (`bool`, defaults to True): compute the entropy terms.
        entropy_temperature (`float`, defaults to 0.01): temperature of the entropy softmax.
        sample_minimization_weight (`float`, defaults to 1.0): weight of the per-token entropy term.
        batch_maximization_weight (`float`, defaults to 1.0): weight of the batch-mean entropy term.
        quantizer_chunk_size (`int`, *optional*): codebook chunk of the memory-efficient quantizer
            path; ``None`` chooses automatically (see :class:`~ibq_hf.IBQQuantizer`).
        quantizer_type (`str`, defaults to ``"ibq"``): ``"ibq"`` (the product) or ``"vanilla"``, the VQGAN
            nearest-code baseline (:class:`~ibq_hf.models.vanilla_quantizer.VanillaVectorQuantizer`) for
            experiments that change only the quantizer; it ignores the entropy settings.

    Memory savers (diffusers' ``AutoencoderMixin``, off by default): :meth:`enable_slicing` runs the encoder and
    decoder one image at a time (outputs equal the unsliced ones); :meth:`enable_tiling` runs them on overlapping
    tiles of ``tile_sample_min_size`` pixels (default :data:`DEFAULT_TILE_TOKENS` tokens: 512 px for the released
    models) cross-faded in latent / pixel space. The
    quantizer always sees the whole latent grid, so tiled token ids are well defined. Tiling is approximate:
    attention and GroupNorm see one tile instead of the whole image (figures in ``docs/tokenizer.md``).
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["quantize"]
    _keep_in_fp32_modules = ["quantize"]
    _no_split_modules = ["ResnetBlock", "AttnBlock", "IBQQuantizer", "VanillaVectorQuantizer"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        resolution: int = 256,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
        num_res_blocks: int = 4,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        z_channels: int = 256,
        embed_dim: int = 256,
        num_embeddings: int = 16384,
        beta: float = 0.25,
        use_entropy_loss: bool = True,
        entropy_temperature: float = 0.01,
        sample_minimization_weight: float = 1.0,
        batch_maximization_weight: float = 1.0,
        quantizer_chunk_size: int | None = None,
        quantizer_type: str = "ibq",
    ) -> None:
        super().__init__()
        _check_config_types(
            {
                "in_channels": in_channels,
                "out_channels": out_channels,
                "resolution": resolution,
                "ch": ch,
                "ch_mult": ch_mult,
                "num_res_blocks": num_res_blocks,
                "attn_resolutions": attn_resolutions,
                "z_channels": z_channels,
                "embed_dim": embed_dim,
                "num_embeddings": num_embeddings,
            }
        )
        arch = {
            "ch": ch,
            "ch_mult": tuple(ch_mult),
            "num_res_blocks": num_res_blocks,
            "attn_resolutions": tuple(attn_resolutions),
            "resolution": resolution,
            "z_channels": z_channels,
            "dropout": dropout,
        }
        self.encoder = Encoder(in_channels=in_channels, **arch)
        self.decoder = Decoder(out_channels=out_channels, **arch)
        if quantizer_type == "ibq":
            self.quantize = IBQQuantizer(
                num_embeddings,
                embed_dim,
                beta=beta,
                use_entropy_loss=use_entropy_loss,
                entropy_temperature=entropy_temperature,
                sample_minimization_weight=sample_minimization_weight,
                batch_maximization_weight=batch_maximization_weight,
                chunk_size=quantizer_chunk_size,
            )
        elif quantizer_type == "vanilla":
            if use_entropy_loss:
                raise ValueError(
                    "quantizer_type='vanilla' has no entropy loss; pass use_entropy_loss=False with it."
                )
            self.quantize = VanillaVectorQuantizer(num_embeddings, embed_dim, beta=beta)
        else:
            raise ValueError(f"quantizer_type must be 'ibq' or 'vanilla', got {quantizer_type!r}.")
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, kernel_size=1)
        self._warned_input_range = False
        # Read by diffusers' AutoencoderMixin (enable_/disable_slicing, enable_/disable_tiling) and by the
        # tiled paths; the attribute names are diffusers' (AutoencoderKL), so code tuning them works here too.
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = DEFAULT_TILE_TOKENS * 2 ** (len(ch_mult) - 1)
        self.tile_overlap_factor = 0.25

    # -- presets ------------------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, name: str | int, **overrides) -> IBQVQModel:
        """A randomly initialised tokenizer with a released architecture.

        ``name`` is ``"imagenet-1024"``, ``"imagenet-8192"``, ``"imagenet-16384"``, ``"imagenet-262144"``
        or just the codebook size. Keyword arguments override config fields.
        """
        key = f"imagenet-{name}" if isinstance(name, int) or str(name).isdigit() else str(name)
        if key not in TOKENIZER_PRESETS:
            raise ValueError(f"Unknown tokenizer preset {name!r}; choose one of {sorted(TOKENIZER_PRESETS)}.")
        return cls(**{**TOKENIZER_PRESETS[key], **overrides})

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """diffusers' config → ``__init__`` arguments, refusing a config that lacks an architecture field.

        diffusers fills absent fields with the ``__init__`` defaults (the ImageNet architecture), which for a
        saved tokenizer means weights loaded into the wrong layout or the wrong default resolution; every field
        of :data:`REQUIRED_CONFIG_FIELDS` must be in ``config.json`` (or passed as a keyword). Constructing the
        model directly keeps the defaults.
        """
        present = {k for k, v in config_dict.items() if v is not None} | set(kwargs)
        missing = [name for name in REQUIRED_CONFIG_FIELDS if name not in present]
        if missing:
            raise ValueError(
                f"The saved IBQVQModel config lacks {missing}: these fields decide the weight layout and have no "
                "safe default. Add them to config.json (re-save the tokenizer with save_pretrained, or re-run "
                "the conversion)."
            )
        # `auto_map` points stock diffusers at the code saved next to the weights (ibq_hf.remote_code); it is
        # no constructor argument.
        config_dict = {k: v for k, v in config_dict.items() if k != "auto_map"}
        return super().extract_init_dict(config_dict, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """``ModelMixin.from_pretrained`` that refuses incomplete weights instead of warning.

        diffusers only logs missing or unexpected keys and leaves those parameters randomly
        initialised; a tokenizer with a random layer silently produces garbage, so any mismatch raises
        :class:`~ibq_hf.errors.CheckpointKeyError` listing the keys (a mis-shaped key raises diffusers'
        ``ValueError`` naming it). ``output_loading_info=True`` asks for the report instead, as in transformers:
        it returns ``(model, loading_info)`` and raises nothing for missing or unexpected keys.

        A path that looks local and does not exist raises :class:`~ibq_hf.errors.ModelFolderNotFoundError`; a repo
        id that cannot be loaded offline raises :class:`~ibq_hf.errors.HubModelUnavailableError`
        (:func:`ibq_hf.models.loading.resolve_pretrained`). Loads of small weights show no progress bars.
        """
        pretrained_model_name_or_path = resolve_pretrained(
            pretrained_model_name_or_path, "IBQ tokenizer (IBQVQModel)", "config.json", kwargs
        )
        return_info = kwargs.pop("output_loading_info", False)
        with quiet_small_load(pretrained_model_name_or_path, kwargs):
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        if return_info:
            return model, info
        missing, unexpected = info.get("missing_keys", []), info.get("unexpected_keys", [])
        mismatched = info.get("mismatched_keys", [])
        if missing or unexpected or mismatched:
            raise CheckpointKeyError(
                f"IBQVQModel weights in {pretrained_model_name_or_path}",
                missing=missing,
                unexpected=unexpected,
                mismatched=mismatched,
                hint="The weight file is incomplete or belongs to another architecture; re-save it with "
                "save_pretrained or re-run the conversion.",
            )
        return model

    @classmethod
    def load_tokenizer(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        local_files_only: bool = False,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> IBQVQModel:
        """The tokenizer of a pipeline (its ``vqvae/`` subfolder, without loading the AR model) or of a tokenizer.

        ``name_or_path`` is a local folder or a Hub repo id holding either a saved :class:`~ibq_hf.IBQPipeline`
        (``model_index.json``: the tokenizer is read from ``vqvae/``) or a saved tokenizer (``config.json``).
        Other keyword arguments (``cache_dir``, ``token``, ``subfolder``, ...) go to :meth:`from_pretrained`; an
        explicit ``subfolder`` skips the detection. A missing folder raises
        :class:`~ibq_hf.errors.ModelFolderNotFoundError`, a folder holding neither file says so, and an uncached
        repo id offline raises :class:`~ibq_hf.errors.HubModelUnavailableError`.
        """
        kwargs = {"revision": revision, "local_files_only": local_files_only, "dtype": dtype, **kwargs}
        if kwargs.get("subfolder"):
            return cls.from_pretrained(name_or_path, **kwargs)
        # A missing local folder or an unreachable, uncached repo id fails here, in one sentence (and an unreachable
        # but cached repo switches kwargs to local_files_only).
        location = resolve_pretrained(
            name_or_path, "IBQ pipeline or tokenizer", ("model_index.json", "config.json"), kwargs
        )
        if Path(location).is_dir():
            is_pipeline = (Path(location) / "model_index.json").is_file()
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                hf_hub_download(
                    os.fspath(location),
                    "model_index.json",
                    revision=revision,
                    cache_dir=kwargs.get("cache_dir"),
                    token=kwargs.get("token"),
                    local_files_only=kwargs["local_files_only"],
                )
                is_pipeline = True
            except EntryNotFoundError:  # includes "not in the local cache" offline: try the tokenizer layout
                is_pipeline = False
        if is_pipeline:
            return cls.from_pretrained(location, subfolder="vqvae", **kwargs)
        return cls.from_pretrained(location, **kwargs)

    def to(self, *args, **kwargs):
        """``Module.to`` that keeps the quantizer (the codebook) in fp32 when casting, without diffusers' warning.

        diffusers' ``ModelMixin.to`` warns on every dtype cast and then casts ``_keep_in_fp32_modules`` too; here a
        floating-point cast (``model.to(torch.bfloat16)``, ``pipe.to(torch.float32)``) leaves them in fp32, as
        ``from_pretrained(..., dtype=...)`` does, so nothing needs a warning.
        """
        dtype = kwargs.get("dtype", next((a for a in args if isinstance(a, torch.dtype)), None))
        if dtype is None or not dtype.is_floating_point or getattr(self, "is_quantized", False):
            return super().to(*args, **kwargs)  # device moves, and diffusers' own errors
        rest = [a for a in args if not isinstance(a, torch.dtype)]
        others = {k: v for k, v in kwargs.items() if k != "dtype"}
        if rest or "device" in others:
            super().to(*rest, **others)
        nn.Module.to(self, dtype)
        for name, module in self.named_modules():
            if name and name.split(".")[-1] in (self._keep_in_fp32_modules or ()):
                module.float()
        return self

    # -- properties ---------------------------------------------------------------------------------

    @property
    def downsample_factor(self) -> int:
        """Pixels per latent position along each axis (16 for the released models)."""
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def num_embeddings(self) -> int:
        return self.config.num_embeddings

    # -- slicing and tiling -------------------------------------------------------------------------

    def enable_tiling(
        self, tile_sample_size: int | None = None, tile_overlap_factor: float | None = None
    ) -> None:
        r"""Encode and decode images larger than ``tile_sample_size`` pixels as overlapping tiles (less memory).

        Args:
            tile_sample_size (`int`, *optional*): tile side in pixels, a multiple of :attr:`downsample_factor`;
                defaults to the current ``tile_sample_min_size`` (initially :data:`DEFAULT_TILE_TOKENS` tokens, 512
                px for the released models). Inputs no larger than one tile run untiled.
            tile_overlap_factor (`float`, *optional*): fraction of a tile shared with each neighbour, in
                ``[0, 1)``; defaults to the current ``tile_overlap_factor`` (initially 0.25). Tiles are
                cross-faded linearly over the shared part.

        The encoder tiles the pixels and cross-fades the pre-quantization latents; the quantizer then runs once
        on the whole latent grid (token ids and the batch entropy terms are those of one grid). The decoder tiles
        the latents and cross-fades the pixels. Attention and GroupNorm see one tile, so the result is close to,
        not equal to, the untiled one.
        """
        super().enable_tiling()
        if tile_sample_size is not None:
            self.tile_sample_min_size = tile_sample_size
        if tile_overlap_factor is not None:
            self.tile_overlap_factor = tile_overlap_factor
        self._tile_grid()  # fail now, not at the first large image

    def _tile_grid(self) -> tuple[int, int]:
        """``(tile, overlap)`` in latent positions, from ``tile_sample_min_size`` and ``tile_overlap_factor``."""
        size, factor, f = self.tile_sample_min_size, self.tile_overlap_factor, self.downsample_factor
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < f or size % f:
            raise ValueError(
                f"tile_sample_min_size must be a positive multiple of the downsampling factor {f} (pixels per "
                f"token), got {size!r}; e.g. enable_tiling(tile_sample_size={max(f, int(size) // f * f)})."
            )
        if not 0 <= factor < 1:
            raise ValueError(
                f"tile_overlap_factor must be in [0, 1) (the fraction of a tile shared with a neighbour), got {factor!r}."
            )
        tile = int(size) // f
        return tile, min(round(tile * factor), tile - 1)

    def _tiles(self, grid_h: int, grid_w: int) -> bool:
        return self.use_tiling and max(grid_h, grid_w) > self._tile_grid()[0]

    def _encode_unquantized(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``quant_conv(encoder(x))`` for ``[b, 3, H, W]``, tiled when tiling is on and the image is large."""
        f = self.downsample_factor
        if self._tiles(pixel_values.shape[-2] // f, pixel_values.shape[-1] // f):
            tile, overlap = self._tile_grid()
            return _tiled_apply(
                lambda x: self.quant_conv(self.encoder(x)),
                pixel_values,
                tile,
                overlap,
                scale_in=f,
                scale_out=1,
            )
        return self.quant_conv(self.encoder(pixel_values))

    def _decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """``decoder(post_quant_conv(z))`` for ``[b, D, h, w]``, tiled when tiling is on and the grid is large."""
        if self._tiles(*latents.shape[-2:]):
            tile, overlap = self._tile_grid()
            return _tiled_apply(
                lambda z: self.decoder(self.post_quant_conv(z)),
                latents,
                tile,
                overlap,
                scale_in=1,
                scale_out=self.downsample_factor,
            )
        return self.decoder(self.post_quant_conv(latents))

    # -- validation ---------------------------------------------------------------------------------

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(
                f"pixel_values must be a torch.Tensor of shape [B, {self.config.in_channels}, H, W], "
                f"got {type(pixel_values).__name__}."
            )
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D [B, C, H, W], got shape {tuple(pixel_values.shape)}; "
                "add a batch dimension with pixel_values.unsqueeze(0) for a single image."
            )
        if pixel_values.shape[1] != self.config.in_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but the tokenizer expects "
                f"{self.config.in_channels} (shape {tuple(pixel_values.shape)}); convert images to RGB and "
                "use channels-first layout [B, C, H, W]."
            )
        h, w = pixel_values.shape[-2:]
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(
                f"Image size {h}x{w} is not divisible by the downsampling factor {f}; resize or crop to a "
                f"multiple of {f} (e.g. {max(f, h // f * f)}x{max(f, w // f * f)})."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be a floating-point tensor in [-1, 1], got dtype {pixel_values.dtype}; "
                "convert uint8 images with x.float() / 127.5 - 1."
            )
        # One fp32 reduction: a NaN or inf anywhere makes the sum non-finite (then count exactly). Without this
        # check one NaN pixel turns every code index into 0 and decodes to a normal-looking image.
        if (
            pixel_values.numel()
            and not torch.compiler.is_compiling()
            and not torch.isfinite(pixel_values.sum(dtype=torch.float32))
        ):
            bad = int((~torch.isfinite(pixel_values)).sum())
            if bad:
                raise ValueError(
                    f"pixel_values contains {bad} non-finite value(s) (NaN or inf) out of {pixel_values.numel()}; "
                    "the tokenizer cannot encode them. Check how the images were loaded or normalised (e.g. a "
                    "division by a zero range) and pass finite values in [-1, 1]."
                )
        if not self._warned_input_range and pixel_values.numel():
            lo, hi = float(pixel_values.min()), float(pixel_values.max())
            if lo < -_RANGE_WARN_LIMIT or hi > _RANGE_WARN_LIMIT:
                self._warned_input_range = True
                warnings.warn(
                    f"pixel_values range [{lo:.3g}, {hi:.3g}] is far outside [-1, 1], the range the tokenizer "
                    "was trained on; scale uint8 images with x / 127.5 - 1.",
                    UserWarning,
                    stacklevel=3,
                )

    def _check_indices(self, indices: torch.Tensor) -> None:
        if not isinstance(indices, torch.Tensor) or indices.ndim != 3:
            shape = tuple(indices.shape) if isinstance(indices, torch.Tensor) else type(indices).__name__
            raise ValueError(
                f"indices must have shape [B, h, w], got {shape}; reshape raster-order tokens [B, h*w] "
                "with indices.view(B, h, w)."
            )
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise ValueError(f"indices must be an integer tensor, got dtype {indices.dtype}.")
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= self.config.num_embeddings:
                raise ValueError(
                    f"indices must lie in [0, {self.config.num_embeddings}) for this codebook, got values in "
                    f"[{lo}, {hi}]; were they produced by a tokenizer with a different codebook size?"
                )

    # -- API ----------------------------------------------------------------------------------------

    def _encode_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``[B, D, h, w]`` of the whole batch (one image at a time when slicing)."""
        self._check_pixels(pixel_values)
        if self.use_slicing and pixel_values.shape[0] > 1:
            return torch.cat([self._encode_unquantized(x) for x in pixel_values.split(1)])
        return self._encode_unquantized(pixel_values)

    @apply_forward_hook
    def encode(self, pixel_values: torch.Tensor, return_dict: bool = True) -> IBQVQEncoderOutput | tuple:
        """Encode and quantize ``[B, 3, H, W]`` images: latents ``[B, D, h, w]``, indices ``[B, h, w]``, losses.

        This is the training path (softmax over the codebook, losses, gradients to every code). For
        inference-only tokenization use :meth:`tokenize`, which is much cheaper.
        """
        q = self.quantize(self._encode_latents(pixel_values))
        if not return_dict:
            return q.quantized, q.indices, q.quant_loss, q.sample_entropy, q.avg_entropy, q.entropy_loss
        return IBQVQEncoderOutput(
            latents=q.quantized,
            indices=q.indices,
            quant_loss=q.quant_loss,
            sample_entropy=q.sample_entropy,
            avg_entropy=q.avg_entropy,
            entropy_loss=q.entropy_loss,
        )

    @apply_forward_hook
    @torch.no_grad()
    def tokenize(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` of ``[B, 3, H, W]`` images in ``[-1, 1]`` (no softmax, no loss, no grad)."""
        return self.quantize.nearest_indices(self._encode_latents(pixel_values))

    @apply_forward_hook
    def decode(self, latents: torch.Tensor, return_dict: bool = True) -> IBQVQDecoderOutput | tuple:
        """Decode quantized latents ``[B, embed_dim, h, w]`` to images ``[B, 3, h·f, w·f]`` (not clamped)."""
        if latents.ndim != 4 or latents.shape[1] != self.config.embed_dim:
            raise ValueError(
                f"latents must have shape [B, {self.config.embed_dim}, h, w], got {tuple(latents.shape)}; "
                "to decode code indices use decode_indices."
            )
        # Codes are fp32 (the quantizer is kept in fp32); feed the decoder its compute dtype. Norm layers
        # hold it even under layerwise casting (diffusers never casts them to the storage dtype).
        latents = latents.to(self.decoder.norm_out.weight.dtype)
        if self.use_slicing and latents.shape[0] > 1:
            sample = torch.cat([self._decode_latents(z) for z in latents.split(1)])
        else:
            sample = self._decode_latents(latents)
        if not return_dict:
            return (sample,)
        return IBQVQDecoderOutput(sample=sample)

    @apply_forward_hook
    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Decode code indices ``[B, h, w]`` to images ``[B, 3, h·f, w·f]`` (not clamped; inference: no grad).

        Indices carry no gradient, so this builds no graph; for a decoder loss use ``decode(quantize.lookup(i))``.
        """
        self._check_indices(indices)
        return self.decode(self.quantize.lookup(indices)).sample

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> IBQVQModelOutput | tuple:
        """Reconstruct ``[B, 3, H, W]`` images; returns the reconstruction, indices and quantizer losses."""
        enc = self.encode(pixel_values)
        sample = self.decode(enc.latents).sample
        if not return_dict:
            return sample, enc.indices, enc.quant_loss, enc.sample_entropy, enc.avg_entropy, enc.entropy_loss
        return IBQVQModelOutput(
            sample=sample,
            indices=enc.indices,
            quant_loss=enc.quant_loss,
            sample_entropy=enc.sample_entropy,
            avg_entropy=enc.avg_entropy,
            entropy_loss=enc.entropy_loss,
            latents=enc.latents,
        )

# diffusers copies only the files a module imports itself; these complete the set it needs.
from .ibq_remote_code_0_1_0 import __name__ as _ibq_remote_code_0_1_0  # noqa: F401
