"""Model cards for everything ibq-hf saves (converted checkpoints, trained models, pipelines).

Cards are written with ``huggingface_hub.ModelCard`` so their YAML header is what the Hub expects;
writing one never touches the network.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

PAPER_URL = "https://arxiv.org/abs/2412.02692"
ORIGINAL_REPO = "https://github.com/TencentARC/SEED-Voken"

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

## About IBQ

IBQ (Index Backpropagation Quantization, [paper]({{ paper_url }})) trains a visual tokenizer whose
whole codebook receives gradient through a straight-through softmax over code indices. This model
was saved with [ibq-hf](https://github.com/ibq-hf/ibq-hf), a Hugging Face-native implementation;
the original research code is [SEED-Voken]({{ original_repo }}).

## License

{{ license_text }}
"""


def metrics_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render a small markdown table (used for reported numbers in cards)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(
    save_directory: str | os.PathLike,
    *,
    title: str,
    description: str,
    usage: str,
    library_name: str,
    tags: Sequence[str] = (),
    source: str | None = None,
    base_model: str | None = None,
    metrics: str | None = None,
    license: str = "apache-2.0",
    license_text: str = "Apache-2.0, the license of the original IBQ weights and code.",
    pipeline_tag: str | None = "unconditional-image-generation",
    extra_card_data: Mapping[str, object] | None = None,
) -> Path:
    """Write ``README.md`` (a Hub model card) into ``save_directory`` and return its path."""
    data = ModelCardData(
        license=license,
        library_name=library_name,
        tags=list(dict.fromkeys(["ibq", "ibq_hf", *tags])),
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
        paper_url=PAPER_URL,
        original_repo=ORIGINAL_REPO,
        license_text=license_text,
    )
    path = Path(save_directory) / "README.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    card.save(path)
    return path
