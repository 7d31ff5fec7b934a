"""User-facing errors: one line, naming the file, the place and what was expected."""

from __future__ import annotations

from verifier.errors import UserError

__all__ = ["UserError", "RenderError"]


class RenderError(UserError):
    """The recipe is valid but cannot be rendered (e.g. the script would be too long)."""
