"""A pydantic ``ValidationError`` as the one line a user reads (what, where, how to fix), made here for every
caller: the first error with its location and pydantic's message (without the "Value error, " prefix a
validator's ValueError gets), and "(and N more)" when there are more. Each caller chooses where the line says
the problem is: a config file and key (``validation_line``), or a command's option (``option_line``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


@dataclass(frozen=True)
class FirstError:
    """The first error of a ValidationError, and how many follow it."""

    loc: tuple[str | int, ...]
    msg: str
    type: str
    input: Any
    others: int

    @property
    def key(self) -> str:
        """The location as a dotted key (``data.path``, ``trl.bf16``); "" for a check across fields."""
        return ".".join(str(p) for p in self.loc)

    @property
    def more(self) -> str:
        return f" (and {self.others} more)" if self.others else ""


def first_error(e: ValidationError) -> FirstError:
    first = e.errors()[0]
    return FirstError(loc=tuple(first.get("loc", ())), type=first.get("type", ""), input=first.get("input"),
                      msg=str(first.get("msg", "invalid")).removeprefix("Value error, "), others=e.error_count() - 1)


def validation_line(e: ValidationError, where: str = "", *, no_key: str = "", message: str | None = None,
                    more: bool = True) -> str:
    """``<where>: <key>: <message>[ (and N more)]``. A check across fields has no key (its message names the
    keys itself): ``no_key`` stands there, or nothing. ``message`` replaces pydantic's."""
    err = first_error(e)
    parts = [p for p in (where, err.key or no_key) if p]
    return ": ".join([*parts, message or err.msg]) + (err.more if more else "")


def option_line(e: ValidationError, secret: Callable[[str], bool] = lambda _: False) -> str:
    """``--<option>: <message> (got <value>)[ (and N more)]``: a command's config fields are its options, so
    the option is named, not the pydantic path; a short scalar value is repeated unless ``secret(value)``
    (a token pasted into an option is refused without being shown)."""
    err = first_error(e)
    names = [p for p in err.loc if isinstance(p, str)]
    if not names:  # a check across fields: its message names the options itself
        return f"{err.msg}{err.more}"
    got = err.input
    shown = f" (got {got!r})" if isinstance(got, int | float | str) and len(repr(got)) <= 40 else ""
    if isinstance(got, str) and secret(got):
        shown = ""
    return f"--{names[-1].replace('_', '-')}: {err.msg}{shown}{err.more}"
