"""Errors that the CLI maps to exit statuses."""

from __future__ import annotations


class InputError(Exception):
    """Bad input from the user: the CLI exits with status 2.

    The message names the file (when there is one), the field and the expected form.
    """

    def __init__(self, message: str, *, path: str | None = None, field: str | None = None):
        self.message = message
        self.path = path
        self.field = field
        parts = []
        if path:
            parts.append(str(path))
        if field:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)

    def renamed(self, names: dict[str, str]) -> InputError:
        """The same error with its field renamed by `names` (the CLI shows its flags, the library its
        fields): a dotted field is renamed by its first part."""
        if not self.field:
            return self
        head, dot, rest = self.field.partition(".")
        if head not in names:
            return self
        new = type(self).__new__(type(self))
        InputError.__init__(new, self.message, path=self.path, field=names[head] + dot + rest)
        return new


class NotAvailableError(InputError):
    """An optional part (package, backend, device) that is absent here."""


class OutputError(Exception):
    """An output could not be written while the run was under way: the CLI exits 1 with one line
    that names the file and where the computed result was saved instead."""

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)
