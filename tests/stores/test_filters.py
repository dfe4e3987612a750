"""The metadata filter language: parsing, validation messages and matching semantics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sbert_retrieval.errors import InvalidFilterError, SbertRetrievalError
from sbert_retrieval.stores.filters import (
    RANGE_OPERATORS,
    Condition,
    Filter,
    parse_filter,
)


def _payload(doc_id: str = "doc", **metadata: Any) -> dict[str, Any]:
    return {"doc_id": doc_id, "metadata": metadata}


def _matches(spec: Mapping[str, Any], payload: Mapping[str, Any]) -> bool:
    parsed = parse_filter(spec)
    assert parsed is not None
    return parsed.matches(payload)


# --------------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, {}])
def test_no_filter(spec: Any) -> None:
    assert parse_filter(spec) is None


def test_filter_passes_through() -> None:
    parsed = parse_filter({"a": 1})
    assert parsed is not None
    assert parse_filter(parsed) is parsed


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"lang": "en"}, Condition("lang", equals=("en",))),
        ({"n": 3}, Condition("n", equals=(3,))),
        ({"flag": True}, Condition("flag", equals=(True,))),
        ({"lang": {"$eq": "en"}}, Condition("lang", equals=("en",))),
        ({"lang": {"$in": ["en", "de"]}}, Condition("lang", equals=("en", "de"))),
        ({"lang": {"$in": ("en",)}}, Condition("lang", equals=("en",))),
        ({"n": {"$in": [1, True, "1"]}}, Condition("n", equals=(1, True, "1"))),
        ({"year": {"$gte": 2019}}, Condition("year", range=(("$gte", 2019.0),))),
        (
            {"year": {"$gt": 2019, "$lt": 2024.5}},
            Condition("year", range=(("$gt", 2019.0), ("$lt", 2024.5))),
        ),
        (
            {"x": {"$gt": -1.5, "$gte": 0, "$lt": 10, "$lte": 9}},
            Condition("x", range=(("$gt", -1.5), ("$gte", 0.0), ("$lt", 10.0), ("$lte", 9.0))),
        ),
        ({"doc_id": "a.md"}, Condition("doc_id", equals=("a.md",))),
        ({"author.name": "Ann"}, Condition("author.name", equals=("Ann",))),
    ],
)
def test_accepted_forms(spec: dict[str, Any], expected: Condition) -> None:
    assert parse_filter(spec) == Filter((expected,))


def test_several_fields_are_anded_in_order() -> None:
    parsed = parse_filter({"a": 1, "b": {"$in": ["x"]}, "c": {"$lt": 5}})
    assert parsed is not None
    assert [c.field for c in parsed.conditions] == ["a", "b", "c"]
    assert parsed.matches(_payload(a=1, b="x", c=4))
    assert not parsed.matches(_payload(a=1, b="x", c=5))
    assert not parsed.matches(_payload(a=2, b="x", c=4))


def test_payload_paths() -> None:
    assert Condition("doc_id", equals=("x",)).payload_path == ("doc_id",)
    assert Condition("a.b.c", equals=("x",)).payload_path == ("metadata", "a", "b", "c")
    assert Condition("lang", equals=("x",)).payload_path == ("metadata", "lang")


@pytest.mark.parametrize(
    ("spec", "message_parts"),
    [
        ("lang=en", ["must be a mapping", "'lang=en'"]),
        ([("lang", "en")], ["must be a mapping"]),
        (42, ["must be a mapping"]),
        ({1: "x"}, ["field names", "1"]),
        ({"": "x"}, ["field names", "''"]),
        ({"$and": [{"a": 1}]}, ["field names", "'$and'"]),
        ({"$or": "x"}, ["field names", "'$or'"]),
        (
            {"a": {"$ne": 1}},
            ["'a'", "unknown operator", "$ne", "valid: $eq, $in, $gt, $gte, $lt, $lte"],
        ),
        ({"a": {"$regex": "x", "$eq": 1}}, ["unknown operator", "$regex", "valid:"]),
        ({"a": {"eq": 1}}, ["unknown operator", "'eq'", "valid:"]),
        ({"a": {}}, ["'a'", "(none given)", "valid:"]),
        ({"a": {"$in": []}}, ["'a'", "$in needs a non-empty list"]),
        ({"a": {"$in": ()}}, ["$in needs a non-empty list"]),
        ({"a": {"$in": "en"}}, ["$in needs a non-empty list"]),
        ({"a": {"$in": {"en": 1}}}, ["$in needs a non-empty list"]),
        ({"a": {"$in": None}}, ["$in needs a non-empty list"]),
        ({"a": {"$in": [1.5]}}, ["'a'", "equality values must be str, int or bool", "1.5"]),
        ({"a": {"$in": [["x"]]}}, ["equality values must be str, int or bool"]),
        ({"a": {"$in": [None]}}, ["equality values must be str, int or bool", "None"]),
        ({"a": None}, ["equality values must be str, int or bool", "None"]),
        ({"a": 1.5}, ["equality values must be str, int or bool"]),
        ({"a": ["x", "y"]}, ["equality values must be str, int or bool"]),
        ({"a": {"$eq": [1]}}, ["equality values must be str, int or bool"]),
        ({"a": {"$eq": {"b": 1}}}, ["equality values must be str, int or bool"]),
        ({"y": {"$gt": "2019"}}, ["'y'", "$gt needs a number", "'2019'"]),
        ({"y": {"$gte": True}}, ["$gte needs a number", "True"]),
        ({"y": {"$lt": None}}, ["$lt needs a number"]),
        ({"y": {"$lte": [1]}}, ["$lte needs a number"]),
        ({"y": {"$eq": 1, "$gt": 0}}, ["'y'", "combine $eq/$in with nothing else"]),
        ({"y": {"$in": [1], "$lt": 5}}, ["combine $eq/$in with nothing else"]),
        ({"y": {"$eq": 1, "$in": [1]}}, ["combine $eq/$in with nothing else"]),
    ],
)
def test_invalid_filters(spec: Any, message_parts: list[str]) -> None:
    with pytest.raises(InvalidFilterError) as info:
        parse_filter(spec)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SbertRetrievalError)
    for part in message_parts:
        assert part in str(info.value)


def test_second_field_error_names_that_field() -> None:
    with pytest.raises(InvalidFilterError, match="'b'"):
        parse_filter({"a": 1, "b": {"$in": []}})


def test_huge_integer_bound_is_an_invalid_filter() -> None:
    with pytest.raises(InvalidFilterError):
        parse_filter({"y": {"$lt": 10**400}})


def test_non_finite_bounds_are_accepted_and_behave_like_floats() -> None:
    # Documented behaviour: inf works as an open bound; NaN parses but matches nothing.
    assert _matches({"y": {"$lt": float("inf")}}, _payload(y=10**300))
    assert not _matches({"y": {"$gt": float("nan")}}, _payload(y=1))


# --------------------------------------------------------------------------------------------
# matching
# --------------------------------------------------------------------------------------------


def test_doc_id_is_the_payload_id_not_a_metadata_field() -> None:
    payload = {"doc_id": "real", "metadata": {"doc_id": "fake", "lang": "en"}}
    assert _matches({"doc_id": "real"}, payload)
    assert not _matches({"doc_id": "fake"}, payload)
    assert _matches({"doc_id": {"$in": ["x", "real"]}}, payload)
    assert _matches({"lang": "en"}, payload)
    assert not _matches(
        {"lang": "en"}, {"doc_id": "real", "lang": "en"}
    )  # top level is not metadata


def test_dotted_fields_reach_nested_metadata() -> None:
    payload = _payload(author={"name": "Ann", "affiliation": {"country": "NZ"}}, tags=["x"])
    assert _matches({"author.name": "Ann"}, payload)
    assert _matches({"author.affiliation.country": {"$in": ["AU", "NZ"]}}, payload)
    assert not _matches({"author.name": "Bob"}, payload)
    assert not _matches({"author.missing": "Ann"}, payload)
    assert not _matches({"author.name.first": "Ann"}, payload)  # through a string
    assert not _matches({"tags.0": "x"}, payload)  # lists are not indexed by dots
    # a literal dotted key is not reachable (dots always mean nesting)
    assert not _matches({"a.b": 1}, {"doc_id": "d", "metadata": {"a.b": 1}})


def test_list_valued_metadata_matches_any_element() -> None:
    payload = _payload(tags=["red", "green"], years=[2001, 2015], mixed=["1", 1, True])
    assert _matches({"tags": "green"}, payload)
    assert _matches({"tags": {"$in": ["blue", "red"]}}, payload)
    assert not _matches({"tags": "blue"}, payload)
    assert _matches({"years": {"$gt": 2010}}, payload)
    assert not _matches({"years": {"$gt": 2015}}, payload)
    # every bound must hold for the same element
    assert not _matches({"years": {"$gt": 2001, "$lt": 2015}}, payload)
    assert _matches({"years": {"$gte": 2001, "$lt": 2002}}, payload)
    assert not _matches({"tags": "x"}, _payload(tags=[]))
    assert not _matches({"tags": "x"}, _payload(tags=[["x"]]))  # no recursion into nested lists


def test_bool_and_int_are_not_confused() -> None:
    assert not _matches({"flag": 1}, _payload(flag=True))
    assert not _matches({"flag": True}, _payload(flag=1))
    assert not _matches({"n": 0}, _payload(n=False))
    assert _matches({"flag": True}, _payload(flag=True))
    assert _matches({"n": 1}, _payload(n=1))
    assert not _matches({"n": {"$in": [True]}}, _payload(n=[1, 1.0]))
    # ranges never match booleans
    assert not _matches({"flag": {"$gte": 0}}, _payload(flag=True))
    assert not _matches({"flag": {"$lte": 1}}, _payload(flag=False))


def test_strings_and_numbers_are_not_confused() -> None:
    assert not _matches({"year": "2020"}, _payload(year=2020))
    assert not _matches({"year": 2020}, _payload(year="2020"))
    assert not _matches({"year": {"$gte": 2000}}, _payload(year="2020"))
    # equality is type-strict: an int filter does not match a float value
    assert not _matches({"year": 2020}, _payload(year=2020.0))
    assert _matches({"year": {"$gte": 2020, "$lte": 2020}}, _payload(year=2020.0))


def test_missing_field_or_null_never_matches() -> None:
    assert not _matches({"lang": "en"}, _payload())
    assert not _matches({"lang": {"$lt": 1}}, _payload())
    assert not _matches({"lang": "en"}, _payload(lang=None))
    assert not _matches({"lang": "en"}, {"doc_id": "d"})  # no metadata at all
    assert not _matches({"lang": "en"}, {"doc_id": "d", "metadata": None})
    assert not _matches({"doc_id": "d"}, {"metadata": {}})


@pytest.mark.parametrize(
    ("op", "inside", "edge", "outside"),
    [
        ("$gt", 6, 5, 4),
        ("$gte", 6, 5, 4),
        ("$lt", 4, 5, 6),
        ("$lte", 4, 5, 6),
    ],
)
def test_range_bounds_inclusive_and_exclusive(
    op: str, inside: float, edge: float, outside: float
) -> None:
    spec = {"v": {op: 5}}
    assert _matches(spec, _payload(v=inside))
    assert _matches(spec, _payload(v=edge)) is op.endswith("e")
    assert not _matches(spec, _payload(v=outside))
    assert _matches({"v": {op: 5.0}}, _payload(v=float(inside)))


def test_range_with_float_bounds_and_int_values() -> None:
    assert _matches({"score": {"$gt": 0.5, "$lte": 1}}, _payload(score=1))
    assert _matches({"score": {"$gt": 0.5, "$lte": 1}}, _payload(score=0.75))
    assert not _matches({"score": {"$gt": 0.5, "$lte": 1}}, _payload(score=0.5))
    assert _matches({"big": {"$gt": 2**53}}, _payload(big=2**53 + 1))  # exact int/float compare


# --------------------------------------------------------------------------------------------
# property: Filter.matches agrees with a straightforward reference implementation
# --------------------------------------------------------------------------------------------

_MISSING = object()


def _reference_lookup(payload: Any, field: str) -> Any:
    path = ["doc_id"] if field == "doc_id" else ["metadata", *field.split(".")]
    node = payload
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _reference_value_ok(value: Any, condition: Mapping[str, Any] | Any) -> bool:
    if not isinstance(condition, Mapping):
        condition = {"$eq": condition}
    if "$eq" in condition or "$in" in condition:
        wanted = [condition["$eq"]] if "$eq" in condition else list(condition["$in"])
        return any(type(value) is type(w) and value == w for w in wanted)
    if type(value) not in (int, float):
        return False
    for op, bound in condition.items():
        ok = {
            "$gt": value > bound,
            "$gte": value >= bound,
            "$lt": value < bound,
            "$lte": value <= bound,
        }[op]
        if not ok:
            return False
    return True


def reference_matches(spec: Mapping[str, Any], payload: Any) -> bool:
    for field, condition in spec.items():
        value = _reference_lookup(payload, field)
        if value is _MISSING:
            return False
        candidates = value if isinstance(value, list) else [value]
        if not any(_reference_value_ok(v, condition) for v in candidates):
            return False
    return True


_FIELDS = ["doc_id", "a", "b", "a.x", "a.x.y", "b.z"]
_scalars = st.one_of(
    st.sampled_from(["en", "de", "", "1", "doc"]),
    st.integers(-3, 3),
    st.booleans(),
)
_numbers = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))
_values = st.recursive(
    st.one_of(_scalars, _numbers, st.none()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
    ),
    max_leaves=8,
)
_metadata = st.dictionaries(st.sampled_from(["a", "b", "c"]), _values, max_size=3)
_payloads = st.one_of(
    st.fixed_dictionaries(
        {"doc_id": st.sampled_from(["doc", "1", "en"]), "metadata": _metadata},
    ),
    st.fixed_dictionaries({"metadata": _metadata}),
)


@st.composite
def _conditions(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["bare", "$eq", "$in", "range"]))
    if kind == "bare":
        return draw(_scalars)
    if kind == "$eq":
        return {"$eq": draw(_scalars)}
    if kind == "$in":
        return {"$in": draw(st.lists(_scalars, min_size=1, max_size=4))}
    ops = draw(st.lists(st.sampled_from(RANGE_OPERATORS), min_size=1, max_size=4, unique=True))
    return {op: draw(_numbers) for op in ops}


_specs = st.dictionaries(st.sampled_from(_FIELDS), _conditions(), max_size=3)


@settings(max_examples=200, deadline=None)
@given(spec=_specs, payload=_payloads)
def test_matches_agrees_with_reference(spec: dict[str, Any], payload: dict[str, Any]) -> None:
    parsed = parse_filter(spec)
    if not spec:
        assert parsed is None
        return
    assert parsed is not None
    assert parsed.matches(payload) is reference_matches(spec, payload)
    for condition in parsed.conditions:
        assert condition.matches(payload) is reference_matches(
            {condition.field: spec[condition.field]}, payload
        )
