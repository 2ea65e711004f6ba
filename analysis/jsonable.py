"""Report values as JSON holds them.

A score can be undefined (an NMI over one class, an AUROC with one class in the
test split, a precision of a model that never calls): it is nan or None while
computed, skipped by means, and written as null, so the JSON stays standard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from torch import Tensor


def is_defined(x: Any) -> bool:
    """False for None, nan and infinities; True for any other value."""
    return x is not None and not (isinstance(x, float) and not math.isfinite(x))


def mean_defined(values: Iterable[Any]) -> float | None:
    """Mean of the defined values (bools count as 0 / 1); None when there are none."""
    vals = [v for v in values if is_defined(v)]
    return sum(vals) / len(vals) if vals else None


def jsonable(x: Any) -> Any:
    """A JSON-safe copy: nan and infinities -> None, tensors -> lists, tuples ->
    lists, dict keys -> str (recursively)."""
    return _copy(x, undefined_as_none=True)


def plain(x: Any) -> Any:
    """The copy of `x` JSON reads back: as jsonable, but nan and infinities kept (as
    JSON's NaN and Infinity, which Python's json reads back)."""
    return _copy(x, undefined_as_none=False)


def _copy(x: Any, undefined_as_none: bool) -> Any:
    if isinstance(x, dict):
        return {str(k): _copy(v, undefined_as_none) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_copy(v, undefined_as_none) for v in x]
    if isinstance(x, Tensor):
        return _copy(x.tolist(), undefined_as_none)
    if undefined_as_none and isinstance(x, float) and not math.isfinite(x):
        return None
    return x


__all__ = ["is_defined", "jsonable", "mean_defined", "plain"]
