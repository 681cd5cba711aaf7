"""Render the cards the scripts write (model card, data card) from `scripts/templates/*.md`.

The templates are `string.Template`s: `$name` is replaced by `str(values["name"])`, `$$` is
a literal `$`, and a placeholder without a value is an error rather than a silent blank.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

TEMPLATES = Path(__file__).parent / "templates"


def render(name: str, values: dict[str, Any]) -> str:
    """Fill `scripts/templates/<name>` with `values`.

    Args:
        name: The template's file name, e.g. "teacher_card.md".
        values: A value for every placeholder; extra keys are ignored.

    Returns:
        The filled text.

    Raises:
        KeyError: A placeholder has no value.
    """
    return string.Template((TEMPLATES / name).read_text()).substitute(values)
