"""Typed exceptions.

Every error that reaches a user names where the problem is (file, row, field), the bad value and
what was expected. The CLI prints ``str(error)`` without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class SvevalError(Exception):
    """Base class of every error sveval raises on purpose."""


class SpecError(SvevalError):
    """A parameter or registry file is invalid.

    Parameters
    ----------
    path : file that holds the problem
    problems : list of ``(field, value, message)`` tuples, one per problem found
    """

    def __init__(self, path: Path | str | None, problems: list[tuple[str, Any, str]]):
        self.path = Path(path) if path is not None else None
        self.problems = list(problems)
        super().__init__(self._render())

    def _render(self) -> str:
        where = str(self.path) if self.path is not None else "<parameters>"
        lines = [f"{where}: {len(self.problems)} problem(s) found"]
        for field, value, message in self.problems:
            shown = "" if value is _MISSING else f" (got {value!r})"
            lines.append(f"  - field '{field}'{shown}: {message}")
        return "\n".join(lines)


class _Missing:
    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return "<missing>"


_MISSING = _Missing()
MISSING = _MISSING


class DataError(SvevalError, ValueError):
    """Input data is missing, malformed or does not cover what an evaluation asks for.

    Parameters
    ----------
    message : what is wrong and what was expected
    path : the data file, if one is involved
    row : 1-based data row (header excluded) when a single row is at fault
    column : column at fault, if any
    """

    def __init__(
        self,
        message: str,
        path: Path | str | None = None,
        row: int | None = None,
        column: str | None = None,
    ):
        self.path = Path(path) if path is not None else None
        self.row = row
        self.column = column
        self.message = message
        where = []
        if self.path is not None:
            where.append(str(self.path))
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + message)


class EstimationError(SvevalError, ValueError):  # also a ValueError, as the numerical code it wraps
    """A model could not be fitted (too few points, no variation, failed convergence)."""


class OptionError(SvevalError, ValueError):
    """An option passed to a design or model function is not one it accepts (the Python API's
    equivalent of a parameter-file error; also a ValueError for callers that catch those)."""


class PublishError(SvevalError):
    """The site or the returns could not be produced."""


class DisclosureError(SvevalError):
    """A published table would reveal a suppressed cell or record-level data."""
