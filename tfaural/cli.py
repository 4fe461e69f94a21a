"""Small parsers shared by the command-line tools of tfaural and beam_jobs."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tfaural.errors import ParameterError

__all__ = ["parse_index_list"]

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def parse_index_list(spec: str, *, flag: str, valid: Sequence[int]) -> tuple[int, ...]:
    """Parses ``'all'``, ``'1,5'``, ``'1-5'`` or ``'1-3,7'`` into sorted unique integers, each in ``valid``.

    Args:
        spec: The flag's value.
        flag: The flag's name, for messages (e.g. ``"--layers"``).
        valid: The allowed values (``'all'`` means all of them).

    Returns:
        The chosen values, ascending.

    Raises:
        ParameterError: On a malformed spec, an empty selection or a value outside ``valid``.
    """
    allowed = sorted(set(int(v) for v in valid))
    text = str(spec).strip()
    if text.lower() == "all":
        if not allowed:
            raise ParameterError(f"{flag} all: there is nothing to choose from")
        return tuple(allowed)
    chosen: set[int] = set()
    for part in text.split(","):
        match = _RANGE.match(part)
        if not match:
            raise ParameterError(f"{flag} {spec!r} is invalid: expected 'all', a list such as 1,5, a range such as "
                                 "1-5, or both (1-3,7)")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if hi < lo:
            raise ParameterError(f"{flag} {spec!r}: the range {lo}-{hi} is empty; write it low-high")
        chosen.update(range(lo, hi + 1))
    outside = sorted(chosen - set(allowed))
    if outside:
        raise ParameterError(f"{flag} {spec!r} names {outside[:10]}, which do not exist: expected values in "
                             f"{_describe_range(allowed)}")
    return tuple(sorted(chosen))


def _describe_range(values: Sequence[int]) -> str:
    if values and list(values) == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ",".join(str(v) for v in values)
