"""MkDocs hook: render the Sphinx roles used in the docstrings (:class:`X`, :meth:`~a.b.Y`) as plain code.

The docstrings are written for Sphinx-style readers too; mkdocstrings renders a role literally
(``:meth:<code>~a.b.Y</code>``), so the prefix is dropped from the generated HTML and, as in Sphinx, a
leading ``~`` shortens the name to its last component. A paragraph ending in the reStructuredText literal-block
marker (``Example::``) ends in a single colon, since the indented block already renders as code.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|data|exc|obj):<code>(~?)([^<]*)</code>")


def _plain(match: re.Match[str]) -> str:
    tilde, name = match.groups()
    return f"<code>{name.rsplit('.', 1)[-1] if tilde else name}</code>"


def on_page_content(html: str, **kwargs: object) -> str:
    return _ROLE.sub(_plain, html).replace("::</p>", ":</p>")
