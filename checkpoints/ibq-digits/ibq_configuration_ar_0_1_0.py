# Shipped by ibq-hf 0.1.0 from ibq_hf/models/configuration_ar.py (generated at save time; edit the package, not this file).
"""Configuration of the IBQ class-conditional AR model (`IBQARConfig`) and its released sizes.

The AR model is SEED-Voken's LlamaGen-style decoder with VAR-style adaLN (reference §4). Field names follow
transformers conventions (``hidden_size``, ``num_hidden_layers``, ...) so the transformers ``Cache`` classes and
tooling understand the config; :data:`ORIGINAL_CONFIG_KEYS` says which original ``GPT(...)`` argument each one
comes from, and :func:`config_from_original` (used by the converter) builds a config through it. :func:`preset_name`
is the one test of "is this a released size".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import GenerationConfig, PreTrainedConfig

# The four released ImageNet-256 models (reference §4.1). All use head_dim 64, vocab 16384, 1000 classes, 16×16.
IBQ_AR_PRESETS: dict[str, dict[str, Any]] = {
    "B": {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16, "adaln_gamma_init": 1e-3},
    "L": {"hidden_size": 1280, "num_hidden_layers": 20, "num_attention_heads": 20, "adaln_gamma_init": 1e-3},
    "XL": {"hidden_size": 1536, "num_hidden_layers": 24, "num_attention_heads": 24, "adaln_gamma_init": 1e-4},
    "XXL": {
        "hidden_size": 1920,
        "num_hidden_layers": 30,
        "num_attention_heads": 30,
        "adaln_gamma_init": 1e-5,
    },
}

# Sampling settings of the paper's FID protocol per size (reference §5.3): top-k 0, top-p 1.0, constant CFG.
IBQ_AR_RECOMMENDED_SAMPLING: dict[str, dict[str, float]] = {
    "B": {"temperature": 1.10, "guidance_scale": 2.25},
    "L": {"temperature": 1.00, "guidance_scale": 2.0},
    "XL": {"temperature": 1.15, "guidance_scale": 2.35},
    "XXL": {"temperature": 1.20, "guidance_scale": 2.85},
}

#: HF field <- original ``src/IBQ/modules/transformer/llama.py::GPT`` argument: the one table the converter reads
#: (:func:`config_from_original`). ``grid_size`` comes from ``block_size`` = grid², ``intermediate_size`` is derived
#: from ``multiple_of`` / ``ffn_dim_multiplier`` as in the original.
ORIGINAL_CONFIG_KEYS: dict[str, str] = {
    "vocab_size": "vocab_size",
    "num_classes": "class_num",
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "multiple_of": "multiple_of",
    "ffn_dim_multiplier": "ffn_dim_multiplier",
    "rope_base": "rope_base",
    "rms_norm_eps": "norm_eps",
    "resid_dropout": "resid_dropout_p",
    "ffn_dropout": "ffn_dropout_p",
    "attention_dropout": "attn_dropout_p",
    "token_dropout": "token_drop",
    "initializer_range": "initalizer_range",
    "adaln_gamma_init": "alng",
}


# Fields a saved config must state because the weights depend on them: loading a ``config.json`` without one of
# them raises instead of silently using the "B" default (``grid_size`` and ``num_attention_heads`` are not even
# visible in the weight shapes). ``intermediate_size`` may be given as ``multiple_of`` (+ ``ffn_dim_multiplier``)
# instead. The other fields (dropouts, label dropout, init) only matter for training and default to the
# reference's values (§4).
REQUIRED_CONFIG_FIELDS: tuple[str, ...] = (
    "vocab_size",
    "num_classes",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "grid_size",
    "rope_base",
    "rms_norm_eps",
)

_INT_FIELDS = (
    "vocab_size",
    "num_classes",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "multiple_of",
    "grid_size",
)
_FLOAT_FIELDS = (
    "ffn_dim_multiplier",
    "rope_base",
    "rms_norm_eps",
    "resid_dropout",
    "ffn_dropout",
    "attention_dropout",
    "token_dropout",
    "class_dropout_prob",
    "initializer_range",
    "adaln_gamma_init",
)


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of ``k`` that is ``>= n`` (the original FFN-width rounding)."""
    return n if n % k == 0 else n + k - (n % k)


def swiglu_hidden_size(
    hidden_size: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None
) -> int:
    """SwiGLU width of the original: find_multiple(int(2·4C/3) [· multiplier], multiple_of)."""
    hidden = int(2 * (4 * hidden_size) / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return find_multiple(hidden, multiple_of)


@strict
class IBQARConfig(PreTrainedConfig):
    r"""Configuration of :class:`~ibq_hf.IBQARForImageGeneration`.

    Defaults are the "B" model (343M parameters). Use :meth:`from_preset` for the released sizes
    ("B", "L", "XL", "XXL") or pass fields directly for small models. Every attribute below is also a
    keyword argument of the constructor.

    Attributes:
        vocab_size: number of image-token ids (the tokenizer's codebook size).
        num_classes: number of real classes; the class embedding has ``num_classes + 1`` rows, the last one is the
            null (unconditional) class used by classifier-free guidance.
        hidden_size: model width C (``n_embd``).
        num_hidden_layers: number of adaLN transformer blocks (``n_layer``).
        num_attention_heads: attention heads (``n_head``); ``hidden_size / num_attention_heads`` must be a
            multiple of 4 because the 2-D RoPE splits each head into row and column halves of rotation pairs.
        intermediate_size: SwiGLU width; ``None`` derives it like the original (``multiple_of``,
            ``ffn_dim_multiplier``).
        multiple_of: the derived SwiGLU width is rounded up to a multiple of this (256).
        ffn_dim_multiplier: optional factor on the derived SwiGLU width before rounding (``None``: none).
        grid_size: side of the image-token grid; a sequence holds the class token plus ``grid_size**2`` tokens.
        rope_base: RoPE base (10000).
        rms_norm_eps: RMSNorm epsilon (1e-5).
        resid_dropout: dropout after the attention output projection (0.1).
        ffn_dropout: dropout after the SwiGLU output projection (0.1).
        attention_dropout: dropout on attention probabilities (0.0).
        token_dropout: feature dropout on the whole embedded sequence (original ``token_drop``, 0.1). It is *not*
            label dropout.
        class_dropout_prob: probability, in training mode, of replacing a class label by the null class (the
            original hard-codes 0.1 in ``LabelEmbedder``).
        initializer_range: std of the normal init of linears and embeddings (0.02).
        adaln_gamma_init: ``alng``: factor on the gamma rows of every block's adaLN linear at init.
    """

    model_type = "ibq_ar"

    vocab_size: int = 16384
    num_classes: int = 1000
    hidden_size: int = 1024
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    intermediate_size: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | None = None
    grid_size: int = 16
    rope_base: float = 10000.0
    rms_norm_eps: float = 1e-5
    resid_dropout: float = 0.1
    ffn_dropout: float = 0.1
    attention_dropout: float = 0.0
    token_dropout: float = 0.1
    class_dropout_prob: float = 0.1
    initializer_range: float = 0.02
    adaln_gamma_init: float = 1e-3

    def __post_init__(self, **kwargs: Any) -> None:
        self._check_types()
        if self.intermediate_size is None:
            self.intermediate_size = swiglu_hidden_size(
                self.hidden_size, self.multiple_of, self.ffn_dim_multiplier
            )
        self._check_values()
        super().__post_init__(**kwargs)

    def _check_types(self) -> None:
        """Integers where the architecture needs integers, finite real numbers elsewhere (a ``config.json`` edited by
        hand can hold ``"128"`` or ``2.5``; without this they fail deep inside the model or silently round)."""
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if name == "intermediate_size" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise ValueError(
                    f"IBQARConfig.{name} must be an integer, got {value!r} ({type(value).__name__}); write it "
                    f"without quotes or decimals in config.json, e.g. {name}: 16."
                )
            setattr(self, name, int(value))  # numpy integers → int (JSON-serialisable)
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if name == "ffn_dim_multiplier" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(
                    f"IBQARConfig.{name} must be a finite number, got {value!r} ({type(value).__name__})."
                )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> Any:
        """Build a config from a saved ``config.json`` dict, refusing one that lacks a field the weights need.

        transformers fills absent fields with the class defaults (the "B" model), so a config without
        ``grid_size`` would load as a 16×16 grid and sample garbage; :data:`REQUIRED_CONFIG_FIELDS` must be in the
        file (or passed as keyword overrides). ``IBQARConfig()`` and keyword construction keep their defaults.
        """
        given = {k for source in (config_dict, kwargs) for k, v in source.items() if v is not None}
        missing = [name for name in REQUIRED_CONFIG_FIELDS if name not in given]
        if "intermediate_size" in missing and "multiple_of" in given:
            # derived from multiple_of (and ffn_dim_multiplier), as the original does
            missing.remove("intermediate_size")
        if missing:
            where = kwargs.get("name_or_path") or config_dict.get("_name_or_path")
            raise ValueError(
                f"The saved IBQARConfig{f' of {where}' if where else ''} lacks {missing}: these fields decide what "
                "the weights compute and have no safe default. Add them to config.json (re-save the model with "
                "save_pretrained, or copy them from the config the weights were trained with)."
            )
        return super().from_dict(config_dict, **kwargs)

    def _check_values(self) -> None:
        positive = ("vocab_size", "num_classes", "hidden_size", "num_hidden_layers", "num_attention_heads")
        for name in (*positive, "intermediate_size", "grid_size", "multiple_of"):
            if getattr(self, name) <= 0:
                raise ValueError(f"IBQARConfig.{name} must be a positive integer, got {getattr(self, name)}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); pick a head count that divides the width."
            )
        if self.head_dim % 4 != 0:
            raise ValueError(
                f"head_dim = hidden_size / num_attention_heads = {self.head_dim} must be a multiple of 4: the 2-D "
                "RoPE rotates pairs of dims and gives half of the pairs to rows and half to columns."
            )
        for name in (
            "resid_dropout",
            "ffn_dropout",
            "attention_dropout",
            "token_dropout",
            "class_dropout_prob",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"IBQARConfig.{name} is a probability and must lie in [0, 1], got {value}.")

    @property
    def head_dim(self) -> int:
        """Width of one attention head (64 in all released models)."""
        return self.hidden_size // self.num_attention_heads

    @property
    def num_image_tokens(self) -> int:
        """Image tokens per sample (``grid_size**2``, 256 for the released models)."""
        return self.grid_size * self.grid_size

    @property
    def null_class_id(self) -> int:
        """Class id of the unconditional (null) class: ``num_classes``."""
        return self.num_classes

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> IBQARConfig:
        """Config of a released size ("B", "L", "XL", "XXL"); keyword overrides replace preset fields."""
        key = name.upper()
        if key not in IBQ_AR_PRESETS:
            raise ValueError(f"Unknown IBQ AR preset {name!r}; choose one of {sorted(IBQ_AR_PRESETS)}.")
        return cls(**{**IBQ_AR_PRESETS[key], **overrides})


#: The fields that make a config one of the released sizes (what the weights and ``config.json`` hold).
PRESET_FIELDS: tuple[str, ...] = (
    "vocab_size",
    "num_classes",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "grid_size",
)


def preset_name(config: Any, fields: Iterable[str] = PRESET_FIELDS) -> str | None:
    """Name of the released size ("B", "L", "XL", "XXL") whose ``fields`` all equal ``config``'s, else ``None``.

    ``config`` is an :class:`IBQARConfig`, any object with those attributes, or a mapping of field values. Callers
    that see less compare fewer fields: the converter what weight shapes show (no head count, no grid), the
    training schedule only width, depth and heads (a size's recipe on another dataset).
    """
    fields = tuple(fields)

    def value(name: str) -> Any:
        return config.get(name) if isinstance(config, Mapping) else getattr(config, name, None)

    for name in IBQ_AR_PRESETS:
        reference = IBQARConfig.from_preset(name)
        if all(value(field) == getattr(reference, field) for field in fields):
            return name
    return None


def config_from_original(params: Mapping[str, Any]) -> IBQARConfig:
    """An :class:`IBQARConfig` from original ``GPT(...)`` arguments, through :data:`ORIGINAL_CONFIG_KEYS`.

    Values are used as given (``block_size`` must be a square); the strict converter
    (:func:`ibq_hf.conversion.ar.ar_config_from_original_params`) fills the original's defaults, checks types and
    refuses unsupported settings first.
    """
    fields = {field: params[key] for field, key in ORIGINAL_CONFIG_KEYS.items() if key in params}
    if "block_size" in params:
        fields["grid_size"] = math.isqrt(int(params["block_size"]))
    return IBQARConfig(**fields)


def recommended_generation_config(name: str) -> GenerationConfig:
    """Generation defaults used for the paper's FID numbers for size ``name`` (reference §5.3)."""
    key = name.upper()
    if key not in IBQ_AR_RECOMMENDED_SAMPLING:
        raise ValueError(
            f"Unknown IBQ AR preset {name!r}; choose one of {sorted(IBQ_AR_RECOMMENDED_SAMPLING)}."
        )
    return GenerationConfig(do_sample=True, top_k=0, top_p=1.0, **IBQ_AR_RECOMMENDED_SAMPLING[key])
