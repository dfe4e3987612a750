"""One small metadata filter language, shared by every store.

A filter is a mapping from field to condition; several fields are ANDed::

    {"lang": "en"}                          # equality
    {"lang": {"$in": ["en", "de"]}}         # any of
    {"year": {"$gte": 2019, "$lt": 2024}}   # numeric range (any of $gt, $gte, $lt, $lte)
    {"doc_id": "a.md"}                      # the document id; other keys name metadata fields

A field holding a list matches when any element matches (as in Qdrant). Nested metadata is
addressed with dots (``"author.name"``). Unknown operators and wrongly typed values raise
:class:`~sbert_retrieval.errors.InvalidFilterError`; filters are applied inside the search,
never to its results afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sbert_retrieval.errors import InvalidFilterError

__all__ = ["RANGE_OPERATORS", "Condition", "Filter", "FilterLike", "parse_filter"]

RANGE_OPERATORS = ("$gt", "$gte", "$lt", "$lte")
_OPERATORS = ("$eq", "$in", *RANGE_OPERATORS)
Scalar = str | int | bool


@dataclass(frozen=True)
class Condition:
    """One field's condition.

    Attributes:
        field: ``"doc_id"`` or a (dotted) metadata field.
        equals: Values of which one must match (``$eq`` gives one, ``$in`` several); ``None``
            for a range condition.
        range: ``(operator, number)`` pairs, all of which must hold; empty for equality.
    """

    field: str
    equals: tuple[Scalar, ...] | None = None
    range: tuple[tuple[str, float], ...] = ()

    @property
    def payload_path(self) -> tuple[str, ...]:
        """Where the field lives in a stored payload."""
        if self.field == "doc_id":
            return ("doc_id",)
        return ("metadata", *self.field.split("."))

    def matches(self, payload: Mapping[str, Any]) -> bool:
        """Whether a payload satisfies this condition."""
        value: Any = payload
        for part in self.payload_path:
            if not isinstance(value, Mapping) or part not in value:
                return False
            value = value[part]
        values = value if isinstance(value, list) else [value]
        return any(self._matches_value(v) for v in values)

    def _matches_value(self, value: Any) -> bool:
        if self.equals is not None:
            # bool is an int in Python; never let True match 1.
            return any(type(value) is type(e) and value == e for e in self.equals)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        checks = {
            "$gt": lambda bound: value > bound,
            "$gte": lambda bound: value >= bound,
            "$lt": lambda bound: value < bound,
            "$lte": lambda bound: value <= bound,
        }
        return all(checks[op](bound) for op, bound in self.range)


@dataclass(frozen=True)
class Filter:
    """A conjunction of :class:`Condition`; build it with :func:`parse_filter`."""

    conditions: tuple[Condition, ...]

    def matches(self, payload: Mapping[str, Any]) -> bool:
        """Whether a payload satisfies every condition."""
        return all(c.matches(payload) for c in self.conditions)


FilterLike = Filter | Mapping[str, Any]


def _check_scalar(field: str, value: Any) -> Scalar:
    if isinstance(value, (str, int, bool)):
        return value
    raise InvalidFilterError(
        f"filter on {field!r}: equality values must be str, int or bool, got {value!r}"
    )


def parse_filter(spec: FilterLike | None) -> Filter | None:
    """Validate a filter mapping; ``None`` and ``{}`` mean no filter.

    Raises:
        InvalidFilterError: An unknown operator, an empty ``$in``, or a value of the wrong type.
    """
    if spec is None or isinstance(spec, Filter):
        return spec
    if not isinstance(spec, Mapping):
        raise InvalidFilterError(f"a filter must be a mapping of field to condition, got {spec!r}")
    conditions: list[Condition] = []
    for field, condition in spec.items():
        if (
            not isinstance(field, str)
            or not field
            or field.startswith("$")
            or '"' in field
            or "" in field.split(".")
        ):
            raise InvalidFilterError(
                "filter field names must be non-empty strings of dot-separated non-empty parts,"
                f" without '$' at the start or '\"', got {field!r}"
            )
        if not isinstance(condition, Mapping):
            conditions.append(Condition(field, equals=(_check_scalar(field, condition),)))
            continue
        unknown = [op for op in condition if op not in _OPERATORS]
        if unknown or not condition:
            raise InvalidFilterError(
                f"filter on {field!r}: unknown operator(s) {unknown or '(none given)'}; valid: "
                f"{', '.join(_OPERATORS)}"
            )
        ranges = [(op, v) for op, v in condition.items() if op in RANGE_OPERATORS]
        equality = [op for op in condition if op in ("$eq", "$in")]
        if equality and (ranges or len(equality) > 1):
            raise InvalidFilterError(f"filter on {field!r}: combine $eq/$in with nothing else")
        if equality == ["$eq"]:
            conditions.append(Condition(field, equals=(_check_scalar(field, condition["$eq"]),)))
        elif equality == ["$in"]:
            values = condition["$in"]
            if not isinstance(values, (list, tuple)) or not values:
                raise InvalidFilterError(f"filter on {field!r}: $in needs a non-empty list")
            conditions.append(
                Condition(field, equals=tuple(_check_scalar(field, v) for v in values))
            )
        else:
            for op, bound in ranges:
                if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                    raise InvalidFilterError(
                        f"filter on {field!r}: {op} needs a number, got {bound!r}"
                    )
            try:
                bounds = tuple((op, float(b)) for op, b in ranges)
            except OverflowError:
                raise InvalidFilterError(
                    f"filter on {field!r}: a range bound is too large for a float"
                ) from None
            conditions.append(Condition(field, range=bounds))
    return Filter(tuple(conditions)) if conditions else None
