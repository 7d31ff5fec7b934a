"""User-facing errors: one line, naming the file, the place and what was expected."""

from __future__ import annotations

from verifier.errors import UserError

__all__ = ["UserError", "UserErrors", "RenderError"]


class UserErrors(UserError):
    """Several mistakes found in one input, all reported at once (one line each)."""

    def __init__(self, errors: list[UserError]):
        self.errors = list(errors)
        first = self.errors[0]
        super().__init__(first.message, first.file, first.line, first.key)
        self.args = ("\n".join(self.lines()),)

    def lines(self) -> list[str]:
        return [e.format() for e in self.errors]

    def __str__(self) -> str:
        return "\n".join(self.lines())


class RenderError(UserError):
    """The recipe is valid but cannot be rendered (e.g. the script would be too long)."""
