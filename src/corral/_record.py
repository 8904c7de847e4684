"""``Record``: the base of corral's internal mutable records (``Call``, ``Result``, the
engine's ``Slot``s, deadlines, function entries, ...), in place of ``@dataclass``.

A dataclass costs its module ``import dataclasses``, which imports ``inspect`` (with ``ast``,
``dis``, ``tokenize``), and ~0.1-0.7 ms per class to compile its methods from source at every
import: in the coordinator at every first ``map``, and in every fork server (issue 15,
start-up). The public records (``Task``, ``Outcome``, ``Failure``, ``Report``) and the options
stay dataclasses: users may call ``dataclasses.replace`` or ``fields`` on them.
"""

from __future__ import annotations

from typing import Any


class Record:
    """A mutable record with ``__slots__``, its ``repr`` and ``==`` by fields, as a dataclass
    gives them. A subclass lists its fields in ``__slots__``, in field order (hence unsorted),
    and writes its ``__init__``."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable: as a dataclass with eq=True

    def _values(self) -> tuple[Any, ...]:
        names: tuple[str, ...] = self.__slots__
        return tuple(getattr(self, name) for name in names)

    def __repr__(self) -> str:
        names: tuple[str, ...] = self.__slots__
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__qualname__}({fields})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Record):
            return NotImplemented
        return self._values() == other._values()
