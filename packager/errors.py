"""User-facing errors: one line, naming the file, the place and what was expected."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input. The CLI prints str(self) and exits with code 2."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(self.format())

    def format(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}".replace("\n", " ")

    def lines(self) -> list[str]:
        """What the CLI prints: one line per mistake."""
        return [self.format()]


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
