"""What shoal's classes take from ``typing`` at run time, without ``typing``.

Importing ``typing`` costs a script ~3 ms (``python -X importtime``), more
than a small map, and ``multiprocessing.Pool`` does not import it. shoal's
modules import it for type checkers only (under ``TYPE_CHECKING``), where
their generic classes derive from ``typing.Generic[T]``. At run time they
derive from :class:`Generic` here, which only lets them be subscripted
(``IMapIterator[int]``, as an annotation evaluated at run time does).
"""

from __future__ import annotations

import types
from collections.abc import Callable

# What run-time bases are subscripted with (``Iterator[T]``): the
# subscription is never read, so any object serves.
T = "T"


class Generic:
    """A base that makes a class subscriptable, as ``typing.Generic`` does."""

    __slots__ = ()

    def __class_getitem__(cls, params: object) -> types.GenericAlias:
        return types.GenericAlias(cls, params)


def overload(func: Callable[..., object]) -> Callable[..., object]:
    """``typing.overload`` at run time: the definition after the overloads
    replaces them."""
    return func
