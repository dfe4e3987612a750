"""The metadata filter language: parsing, validation messages, matching semantics, and the
Qdrant and SQL translations agreeing with :meth:`Filter.matches` (property tests)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import QdrantClient, models
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc

from sbert_retrieval.errors import InvalidFilterError, SbertRetrievalError
from sbert_retrieval.stores.filters import (
    FIELD_OPERATORS,
    MAX_DEPTH,
    RANGE_OPERATORS,
    AnyOf,
    Condition,
    Filter,
    compile_label_select,
    compile_sql,
    has_value,
    parse_filter,
    payload_fields,
    sql_int,
)
from sbert_retrieval.stores.qdrant import to_qdrant_filter


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
        ({"a.$and": 1}, Condition("a.$and", equals=(1,))),  # a nested key, not an operator
        ({"lang": {"$ne": "en"}}, Condition("lang", equals=("en",), negated=True)),
        ({"n": {"$nin": [1, True]}}, Condition("n", equals=(1, True), negated=True)),
        ({"n": {"$ne": 1, "$nin": ("x",)}}, Condition("n", equals=(1, "x"), negated=True)),
        ({"lang": {"$exists": True}}, Condition("lang", exists=True)),
        ({"lang": {"$exists": False}}, Condition("lang", exists=False)),
        ({"$and": [{"lang": "en"}]}, Condition("lang", equals=("en",))),
        ({"$and": [{"$and": [{}, {"lang": "en"}]}]}, Condition("lang", equals=("en",))),
    ],
)
def test_accepted_forms(spec: dict[str, Any], expected: Condition) -> None:
    assert parse_filter(spec) == Filter((expected,))


def test_several_fields_are_anded_in_order() -> None:
    parsed = parse_filter({"a": 1, "b": {"$in": ["x"]}, "c": {"$lt": 5}})
    assert parsed is not None
    assert [c.field for c in parsed.conditions if isinstance(c, Condition)] == ["a", "b", "c"]
    assert len(parsed.conditions) == 3
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
        ({"$not": {"a": 1}}, ["field names", "'$not'", "valid: $and, $or"]),
        ({"$nor": [{"a": 1}]}, ["field names", "'$nor'", "valid: $and, $or"]),
        ({"$or": "x"}, ["$or needs a non-empty list of filters", "'x'", "valid: $and, $or"]),
        ({"$or": []}, ["$or needs a non-empty list of filters"]),
        ({"$and": {"a": 1}}, ["$and needs a non-empty list of filters"]),
        ({"$and": None}, ["$and needs a non-empty list of filters"]),
        ({"$or": [1]}, ["must be a mapping", "1"]),
        ({"$or": [{"a": 1}, {"b": {"$bad": 1}}]}, ["'b'", "unknown operator", "'$bad'"]),
        ({"$and": [{"$or": [{"a": {"$in": []}}]}]}, ["'a'", "$in needs a non-empty list"]),
        (
            {"a": {"$not": 1}},
            ["'a'", "unknown operator", "$not", "valid: " + ", ".join(FIELD_OPERATORS)],
        ),
        (
            {"a": {"$regex": "x"}},
            ["valid: $eq, $in, $ne, $nin, $gt, $gte, $lt, $lte, $exists"],
        ),
        ({"a": {"$ne": [1]}}, ["'a'", "equality values must be str, int or bool"]),
        ({"a": {"$ne": None}}, ["equality values must be str, int or bool", "None"]),
        ({"a": {"$ne": 1.5}}, ["equality values must be str, int or bool", "1.5"]),
        ({"a": {"$nin": []}}, ["'a'", "$nin needs a non-empty list"]),
        ({"a": {"$nin": "x"}}, ["$nin needs a non-empty list"]),
        ({"a": {"$nin": [1, {"b": 2}]}}, ["equality values must be str, int or bool"]),
        ({"a": {"$exists": 1}}, ["'a'", "$exists needs true or false", "1"]),
        ({"a": {"$exists": "yes"}}, ["$exists needs true or false", "'yes'"]),
        ({"a": {"$exists": None}}, ["$exists needs true or false"]),
        ({"a": {"$exists": True, "$gt": "1"}}, ["$gt needs a number"]),
        ({"a": {"$eq": 1, "$ne": 2}}, ["combine $eq/$in with nothing else", "$ne"]),
        ({"a": {"$in": [1], "$exists": True}}, ["combine $eq/$in with nothing else"]),
        ({"a": {"$in": [1], "$nin": [2]}}, ["combine $eq/$in with nothing else"]),
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


def test_operators_of_one_field_are_anded_conditions() -> None:
    parsed = parse_filter({"y": {"$gte": 1, "$nin": [3], "$exists": True, "$lt": 9.5}})
    assert parsed == Filter(
        (
            Condition("y", equals=(3,), negated=True),
            Condition("y", range=(("$gte", 1.0), ("$lt", 9.5))),
            Condition("y", exists=True),
        )
    )


def test_or_and_and_structure() -> None:
    a, b = Condition("a", equals=(1,)), Condition("b", equals=("x",))
    assert parse_filter({"$or": [{"a": 1}, {"b": "x"}]}) == Filter(
        (AnyOf((Filter((a,)), Filter((b,)))),)
    )
    assert parse_filter({"a": 1, "$and": [{"b": "x"}, {"$or": [{"a": 1}]}]}) == Filter(
        (a, b, AnyOf((Filter((a,)),)))
    )
    # {} inside $or is the empty conjunction: it matches everything
    parsed = parse_filter({"$or": [{}, {"a": 1}]})
    assert parsed == Filter((AnyOf((Filter(()), Filter((a,)))),))
    assert parsed.matches({})
    # parsed filters can stand in a list
    assert parse_filter({"$or": [Filter((a,))]}) == Filter((AnyOf((Filter((a,)),)),))
    # $and of nothing but empty filters is no filter
    assert parse_filter({"$and": [{}, {}]}) is None


def test_nesting_depth_is_limited() -> None:
    spec: dict[str, Any] = {"a": 1}
    for _ in range(MAX_DEPTH):
        spec = {"$or": [spec]}
    assert parse_filter(spec) is not None
    with pytest.raises(InvalidFilterError, match=f"deeper than {MAX_DEPTH}"):
        parse_filter({"$and": [spec]})


def test_condition_rejects_contradictory_attributes() -> None:
    with pytest.raises(ValueError, match="existence"):
        Condition("a", equals=(1,), exists=True)
    with pytest.raises(ValueError, match="existence"):
        Condition("a", exists=False, negated=True)
    with pytest.raises(ValueError, match="not both"):
        Condition("a", equals=(1,), range=(("$gt", 0.0),))
    assert Condition("a").matches(_payload(a=2.5))  # no bounds: any number (kept for callers)


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
# $ne, $nin, $exists, $or, $and
# --------------------------------------------------------------------------------------------

# (name, metadata, holds {"a": {"$exists": true}}, holds {"a": {"$ne": 1}})
SHAPES: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("missing", {}, False, True),
    ("null", {"a": None}, False, True),
    ("empty list", {"a": []}, False, True),
    ("list of nulls", {"a": [None, None]}, False, True),
    ("null and 1", {"a": [None, 1]}, True, False),
    ("empty object", {"a": {}}, True, True),
    ("object", {"a": {"x": 1}}, True, True),
    ("object holding null", {"a": {"x": None}}, True, True),
    ("list in a list", {"a": [[]]}, True, True),
    ("object in a list", {"a": [{}]}, True, True),
    ("empty string", {"a": ""}, True, True),
    ("zero", {"a": 0}, True, True),
    ("false", {"a": False}, True, True),
    ("true", {"a": True}, True, True),  # a bool never equals an int
    ("float one", {"a": 1.0}, True, True),  # nor does a float
    ("one", {"a": 1}, True, False),
    ("list with one", {"a": [2, 1]}, True, False),
    ("list without one", {"a": [2, "1"]}, True, True),
]


@pytest.mark.parametrize(
    ("name", "metadata", "exists", "ne_one"), SHAPES, ids=[s[0] for s in SHAPES]
)
def test_exists_and_ne_on_every_shape(
    name: str, metadata: dict[str, Any], exists: bool, ne_one: bool
) -> None:
    payload = {"doc_id": "d", "metadata": metadata}
    assert _matches({"a": {"$exists": True}}, payload) is exists
    assert _matches({"a": {"$exists": False}}, payload) is not exists
    assert has_value(metadata.get("a")) is exists
    assert _matches({"a": {"$ne": 1}}, payload) is ne_one
    assert _matches({"a": {"$nin": [1]}}, payload) is ne_one
    assert _matches({"a": {"$nin": [1, "1"]}}, payload) is (ne_one and name != "list without one")
    assert _matches({"a": {"$ne": 1}}, payload) is not _matches({"a": 1}, payload)


def test_exists_reaches_nested_fields() -> None:
    payload = _payload(author={"name": "Ann", "born": None, "tags": []})
    assert _matches({"author": {"$exists": True}}, payload)
    assert _matches({"author.name": {"$exists": True}}, payload)
    assert not _matches({"author.born": {"$exists": True}}, payload)
    assert not _matches({"author.tags": {"$exists": True}}, payload)
    assert not _matches({"author.name.first": {"$exists": True}}, payload)
    assert _matches({"author.missing": {"$exists": False}}, payload)
    assert not _matches({"a.b": {"$exists": True}}, {"doc_id": "d", "metadata": {"a.b": 1}})


def test_doc_id_operators() -> None:
    payload = {"doc_id": "real", "metadata": {"doc_id": "fake"}}
    assert _matches({"doc_id": {"$ne": "fake"}}, payload)
    assert not _matches({"doc_id": {"$nin": ["x", "real"]}}, payload)
    assert _matches({"doc_id": {"$exists": True}}, payload)
    assert _matches({"doc_id": {"$exists": False}}, {"metadata": {"doc_id": "fake"}})
    assert _matches({"doc_id": {"$ne": "real"}}, {"metadata": {}})


def test_ne_and_nin_on_lists_need_every_element_to_differ() -> None:
    payload = _payload(tags=["red", "green"])
    assert not _matches({"tags": {"$ne": "red"}}, payload)
    assert _matches({"tags": {"$ne": "blue"}}, payload)
    assert not _matches({"tags": {"$nin": ["blue", "green"]}}, payload)
    assert _matches({"tags": {"$nin": ["blue", "black"]}}, payload)
    assert _matches({"tags": {"$ne": "red"}}, _payload(tags=[["red"]]))  # one level only


def test_combined_operators_of_one_field() -> None:
    spec = {"year": {"$gte": 2000, "$lt": 2010, "$ne": 2005}}
    assert _matches(spec, _payload(year=2004))
    assert not _matches(spec, _payload(year=2005))
    assert not _matches(spec, _payload(year=2010))
    # the range holds for one element, $ne for all of them
    assert not _matches(spec, _payload(year=[2001, 2005]))
    assert _matches(spec, _payload(year=[1990, 2001]))
    assert _matches({"lang": {"$exists": True, "$nin": ["en"]}}, _payload(lang="de"))
    assert not _matches({"lang": {"$exists": True, "$nin": ["en"]}}, _payload())


def test_or_and_and() -> None:
    spec = {"$or": [{"lang": "en"}, {"year": {"$lt": 2000}}]}
    assert _matches(spec, _payload(lang="en", year=2020))
    assert _matches(spec, _payload(lang="de", year=1999))
    assert not _matches(spec, _payload(lang="de", year=2020))
    both = {"$and": [{"tags": "a"}, {"tags": "b"}]}
    assert _matches(both, _payload(tags=["b", "a"]))
    assert not _matches(both, _payload(tags=["a"]))
    nested = {"lang": "en", "$or": [{"$and": [{"a": 1}, {"b": 2}]}, {"c": {"$exists": False}}]}
    assert _matches(nested, _payload(lang="en", a=1, b=2, c=3))
    assert _matches(nested, _payload(lang="en"))
    assert not _matches(nested, _payload(lang="en", a=1, c=3))
    assert not _matches(nested, _payload(lang="de"))


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


def _reference_equal(value: Any, wanted: Any) -> bool:
    return type(value) is type(wanted) and value == wanted


def _reference_in_range(value: Any, bounds: Mapping[str, float]) -> bool:
    if type(value) not in (int, float):
        return False
    for op, bound in bounds.items():
        ok = {
            "$gt": value > bound,
            "$gte": value >= bound,
            "$lt": value < bound,
            "$lte": value <= bound,
        }[op]
        if not ok:
            return False
    return True


def _reference_field(value: Any, condition: Any) -> bool:
    candidates = [] if value is _MISSING else value if isinstance(value, list) else [value]
    if not isinstance(condition, Mapping):
        condition = {"$eq": condition}
    if "$eq" in condition or "$in" in condition:
        wanted = [condition["$eq"]] if "$eq" in condition else list(condition["$in"])
        return any(_reference_equal(v, w) for v in candidates for w in wanted)
    excluded = ([condition["$ne"]] if "$ne" in condition else []) + list(condition.get("$nin", []))
    if any(_reference_equal(v, x) for v in candidates for x in excluded):
        return False
    if "$exists" in condition:
        present = value is not _MISSING and value is not None
        if isinstance(value, list):
            present = any(v is not None for v in value)
        if present is not condition["$exists"]:
            return False
    bounds = {op: b for op, b in condition.items() if op in RANGE_OPERATORS}
    return not bounds or any(_reference_in_range(v, bounds) for v in candidates)


def reference_matches(spec: Mapping[str, Any], payload: Any) -> bool:
    for field, condition in spec.items():
        if field == "$or":
            ok = any(reference_matches(part, payload) for part in condition)
        elif field == "$and":
            ok = all(reference_matches(part, payload) for part in condition)
        else:
            ok = _reference_field(_reference_lookup(payload, field), condition)
        if not ok:
            return False
    return True


_FIELDS = ["doc_id", "a", "b", "a.x", "a.x.y", "b.z"]
_scalars = st.one_of(
    st.sampled_from(["en", "de", "", "1", "doc"]),
    st.integers(-3, 3),
    st.booleans(),
)
_numbers = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))


def _value_strategy(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.one_of(leaves, st.none()),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.dictionaries(
                st.sampled_from(["x", "x", "y", "z", "z", "x.y", ""]), inner, max_size=3
            ),
        ),
        max_leaves=8,
    )


def _payload_strategy(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    # "a.x" and "doc_id" as metadata keys: neither is reachable by the fields of that name
    keys = st.sampled_from(["a", "a", "a", "b", "b", "c", "a.x", "doc_id", "$a"])
    metadata = st.dictionaries(keys, _value_strategy(leaves), max_size=3)
    return st.one_of(
        st.fixed_dictionaries(
            {"doc_id": st.sampled_from(["doc", "1", "en"]), "metadata": metadata},
        ),
        st.fixed_dictionaries({"metadata": metadata}),
    )


_payloads = _payload_strategy(st.one_of(_scalars, _numbers))


def _condition_strategy(
    scalars: st.SearchStrategy[Any], numbers: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    @st.composite
    def conditions(draw: st.DrawFn) -> Any:
        kind = draw(st.sampled_from(["bare", "$eq", "$in", "$exists", "operators", "operators"]))
        if kind == "$exists":
            return {"$exists": draw(st.booleans())}
        if kind == "bare":
            return draw(scalars)
        if kind == "$eq":
            return {"$eq": draw(scalars)}
        if kind == "$in":
            return {"$in": draw(st.lists(scalars, min_size=1, max_size=4))}
        others = [*RANGE_OPERATORS, "$ne", "$nin", "$exists"]
        ops = draw(st.lists(st.sampled_from(others), min_size=1, max_size=4, unique=True))
        condition: dict[str, Any] = {}
        for op in ops:
            if op == "$ne":
                condition[op] = draw(scalars)
            elif op == "$nin":
                condition[op] = draw(st.lists(scalars, min_size=1, max_size=3))
            elif op == "$exists":
                condition[op] = draw(st.booleans())
            else:
                condition[op] = draw(numbers)
        return condition

    return conditions()


def _filter_strategy(conditions: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.dictionaries(st.sampled_from(_FIELDS), conditions, min_size=1, max_size=3)
    return st.recursive(
        st.one_of(fields, fields, fields, st.just({})),
        lambda inner: st.builds(
            lambda base, op, parts: {**base, op: parts},
            st.dictionaries(st.sampled_from(_FIELDS), conditions, max_size=1),
            st.sampled_from(["$or", "$and"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        max_leaves=6,
    )


_specs = _filter_strategy(_condition_strategy(_scalars, _numbers))


@settings(max_examples=300, deadline=None)
@given(spec=_specs, payload=_payloads)
def test_matches_agrees_with_reference(spec: dict[str, Any], payload: dict[str, Any]) -> None:
    parsed = parse_filter(spec)
    if parsed is None:  # no filter: everything matches
        assert reference_matches(spec, payload)
        return
    assert parsed.matches(payload) is reference_matches(spec, payload)
    for clause in parsed.conditions if "$and" not in spec else ():  # $and adds its own
        if isinstance(clause, Condition):
            entry = spec[clause.field]
            # a field's entry holds when each of its conditions does
            if not (isinstance(entry, Mapping) and len(entry) > 1):
                assert clause.matches(payload) is reference_matches({clause.field: entry}, payload)


# --------------------------------------------------------------------------------------------
# Qdrant: local mode evaluates the translation exactly as Filter.matches
# --------------------------------------------------------------------------------------------

_COLLECTION = "filters"


@pytest.fixture(scope="module")
def qdrant() -> QdrantClient:
    return QdrantClient(location=":memory:")


def _qdrant_hits(
    client: QdrantClient, payloads: list[dict[str, Any]], specs: list[Any]
) -> list[set[int]]:
    """The ids (list positions) of the payloads each filter selects in Qdrant's local mode.

    Every filter is also sent through the gRPC and JSON forms (what a server receives) and
    back, and must select the same points.
    """
    if client.collection_exists(_COLLECTION):
        client.delete_collection(_COLLECTION)
    client.create_collection(
        _COLLECTION, vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE)
    )
    client.upsert(
        _COLLECTION,
        [models.PointStruct(id=i, vector=[1.0, 0.0], payload=p) for i, p in enumerate(payloads)],
    )
    results = []
    for spec in specs:
        translated = to_qdrant_filter(spec)
        forms = [
            translated,
            None
            if translated is None
            else GrpcToRest.convert_filter(RestToGrpc.convert_filter(translated)),
            None
            if translated is None
            else models.Filter.model_validate_json(
                translated.model_dump_json(by_alias=True, exclude_none=True)
            ),
        ]
        found = [
            {
                int(point.id)
                for point in client.scroll(
                    _COLLECTION, scroll_filter=form, limit=len(payloads) + 1
                )[0]
            }
            for form in forms
        ]
        assert found[1] == found[0] and found[2] == found[0], spec
        results.append(found[0])
    return results


def _expected(payloads: list[dict[str, Any]], spec: Any) -> set[int]:
    parsed = parse_filter(spec)
    return {i for i, p in enumerate(payloads) if parsed is None or parsed.matches(p)}


# Filters over every shape of SHAPES; the property tests below draw many more.
SHAPE_FILTERS: list[dict[str, Any]] = [
    {"a": {"$exists": True}},
    {"a": {"$exists": False}},
    {"a.x": {"$exists": True}},
    {"a": {"$ne": 1}},
    {"a": {"$nin": [1, "1", True]}},
    {"a": {"$ne": False}},
    {"a": {"$in": [0, ""]}},
    {"a": {"$gte": 0, "$ne": 1}},
    {"a": {"$lt": 1.5, "$exists": True}},
    {"doc_id": {"$ne": "missing"}},
    {"doc_id": {"$nin": ["missing", "null"]}, "a": {"$exists": True}},
    {"doc_id": {"$exists": True}, "$or": [{"a": 1}, {"a": {"$exists": False}}]},
    {"$or": [{"a": {"$gt": 1}}, {"a": {"$ne": 2}}]},
    {"$or": [{}, {"a": 1}]},
    {"$and": [{"a": {"$exists": True}}, {"a": {"$ne": ""}}]},
]


def _shape_payloads() -> list[dict[str, Any]]:
    return [{"doc_id": name, "metadata": metadata} for name, metadata, _, _ in SHAPES] + [
        {"metadata": {"a": 1}}
    ]


def test_qdrant_agrees_on_every_shape(qdrant: QdrantClient) -> None:
    payloads = _shape_payloads()
    got = _qdrant_hits(qdrant, payloads, SHAPE_FILTERS)
    for spec, hits in zip(SHAPE_FILTERS, got, strict=True):
        assert hits == _expected(payloads, spec), spec


def test_qdrant_translation_structure() -> None:
    ne = to_qdrant_filter({"lang": {"$ne": "en"}})
    assert ne is not None and ne.must == [] and ne.must_not is not None
    (excluded,) = ne.must_not
    assert isinstance(excluded, models.FieldCondition) and excluded.key == "metadata.lang"
    assert excluded.match == models.MatchValue(value="en")
    exists = to_qdrant_filter({"lang": {"$exists": True}})
    assert exists is not None and exists.must_not is None and exists.must is not None
    (present,) = exists.must
    assert isinstance(present, models.FieldCondition)
    assert isinstance(present.match, models.MatchExcept) and present.match.except_ == []
    absent = to_qdrant_filter({"lang": {"$exists": False}})
    assert absent is not None and absent.must_not == [present]
    either = to_qdrant_filter({"$or": [{"a": 1}, {"b": 2, "c": 3}]})
    assert either is not None and either.must is not None
    (alternatives,) = either.must
    assert isinstance(alternatives, models.Filter) and alternatives.should is not None
    first, second = alternatives.should
    assert isinstance(first, models.FieldCondition) and first.key == "metadata.a"
    assert isinstance(second, models.Filter) and isinstance(second.must, list)
    assert len(second.must) == 2


_qdrant_payloads = st.lists(_payloads, min_size=1, max_size=8)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads=_qdrant_payloads, specs=st.lists(_specs, min_size=1, max_size=4))
def test_qdrant_local_mode_agrees_with_matches(
    qdrant: QdrantClient, payloads: list[dict[str, Any]], specs: list[dict[str, Any]]
) -> None:
    for spec, hits in zip(specs, _qdrant_hits(qdrant, payloads, specs), strict=True):
        assert hits == _expected(payloads, spec), spec


# --------------------------------------------------------------------------------------------
# SQL: compile_sql over payload_fields rows selects exactly what Filter.matches selects
# --------------------------------------------------------------------------------------------

SQL_SCHEMA = """
CREATE TABLE points (label INTEGER PRIMARY KEY, id TEXT, doc_id TEXT);
CREATE TABLE fields (
    label INTEGER NOT NULL, key TEXT NOT NULL, kind INTEGER NOT NULL, value NOT NULL
);
CREATE INDEX fields_lookup ON fields(key, kind, value, label);
"""


def _sql_database(payloads: list[dict[str, Any]]) -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SQL_SCHEMA)
    for label, payload in enumerate(payloads):
        doc_id = payload.get("doc_id")
        db.execute(
            "INSERT INTO points (label, id, doc_id) VALUES (?, ?, ?)",
            (label, f"p{label}", doc_id if isinstance(doc_id, str) else None),
        )
        db.executemany(
            "INSERT INTO fields (label, key, kind, value) VALUES (?, ?, ?, ?)",
            [(label, *row) for row in payload_fields(payload)],
        )
    return db


def _sql_hits(db: sqlite3.Connection, spec: Any) -> set[int]:
    parsed = parse_filter(spec)
    if parsed is None:
        return {label for (label,) in db.execute("SELECT label FROM points")}
    expression, params = compile_sql(parsed)
    assert expression.count("?") == len(params)
    hits = {
        label for (label,) in db.execute(f"SELECT p.label FROM points p WHERE {expression}", params)
    }
    # The fields-only form, where the filter has one, selects the same labels.
    select = compile_label_select(parsed)
    if select is not None:
        statement, select_params = select
        assert statement.count("?") == len(select_params)
        assert {label for (label,) in db.execute(statement, select_params)} == hits, spec
    return hits


def test_label_select_covers_positive_metadata_filters_only() -> None:
    compiles = [{"lang": "en"}, {"lang": {"$in": ["en", 2]}, "year": {"$gte": 2001}}, {"a.b": 1}]
    falls_back = [
        {"doc_id": "d"},
        {"lang": {"$ne": "en"}},
        {"lang": {"$nin": ["en"]}},
        {"lang": {"$exists": True}},
        {"$or": [{"lang": "en"}, {"year": 1}]},
        {"lang": "en", "doc_id": "d"},
    ]
    for spec in compiles:
        assert compile_label_select(parse_filter(spec)) is not None, spec  # type: ignore[arg-type]
    for spec in falls_back:
        assert compile_label_select(parse_filter(spec)) is None, spec  # type: ignore[arg-type]


def test_payload_fields_rows() -> None:
    payload = {
        "doc_id": "d",
        "metadata": {
            "lang": "en",
            "year": 2020,
            "score": 0.5,
            "flag": True,
            "tags": ["a", None, 2, False, {"x": 1}, ["b"]],
            "author": {"name": "Ann", "born": None, "odd.key": 1, "": 2, "$x": 3},
            "none": None,
            "empty": [],
            "nulls": [None],
            "big": 2**64,
            "nan": math.nan,
            "a.b": 1,
            "doc_id": {"x": "y"},
            "$top": 1,
        },
    }
    assert payload_fields(payload) == [
        ("lang", 0, "en"),
        ("year", 1, 2020),
        ("score", 2, 0.5),
        ("flag", 3, 1),
        ("tags", 0, "a"),
        ("tags", 1, 2),
        ("tags", 3, 0),
        ("tags", 4, 0),  # one marker for the object and the list inside the list
        ("author", 4, 0),
        ("author.name", 0, "Ann"),
        ("author.$x", 1, 3),
        ("big", 1, sql_int(2**64)),
        ("nan", 4, 0),
        ("doc_id.x", 0, "y"),
    ]
    assert payload_fields({"doc_id": "d"}) == []
    assert payload_fields({"doc_id": "d", "metadata": ["x"]}) == []


def test_sql_int_keeps_int64_and_orders_the_rest() -> None:
    for n in (0, -1, 2**63 - 1, -(2**63)):
        assert sql_int(n) == n
    huge = sorted([2**63, 2**64 + 1, 16**20, 10**40, -(2**63) - 1, -(2**64), -(10**40), -(16**20)])
    texts = [sql_int(n) for n in huge]
    assert all(isinstance(t, str) for t in texts)
    assert texts == sorted(texts) and len(set(texts)) == len(texts)
    assert isinstance(sql_int(10**5000), str)  # no limit on digits (decimal str() has one)


@settings(max_examples=200, deadline=None)
@given(a=st.integers(), b=st.integers())
def test_sql_int_text_order_is_numeric_order(a: int, b: int) -> None:
    from sbert_retrieval.stores.filters import _int_text

    assert (_int_text(a) < _int_text(b)) is (a < b)
    assert (_int_text(a) == _int_text(b)) is (a == b)


@pytest.mark.parametrize(
    ("spec", "plan"),
    [
        ({"lang": "en"}, "fields_lookup (key=? AND kind=? AND value=?)"),
        ({"lang": {"$in": ["en", "de"]}}, "fields_lookup (key=? AND kind=? AND value=?)"),
        ({"lang": {"$nin": ["en", 1]}}, "fields_lookup (key=? AND kind=? AND value=?)"),
        (
            {"year": {"$gte": 2000, "$lt": 2010}},
            "fields_lookup (key=? AND kind=? AND value>? AND value<?)",
        ),
        ({"year": {"$gt": 2000}}, "fields_lookup (key=? AND kind=? AND value>? AND value<?)"),
        ({"year": {"$exists": True}}, "fields_lookup (key=?)"),
        ({"year": {"$exists": False}}, "fields_lookup (key=?)"),
        (
            {"$or": [{"lang": "en"}, {"year": {"$lt": 0}}]},
            "fields_lookup (key=? AND kind=? AND value=?)",
        ),
    ],
)
def test_sql_uses_the_index(spec: dict[str, Any], plan: str) -> None:
    db = _sql_database(
        [{"doc_id": f"d{i}", "metadata": {"lang": "en", "year": 2000 + i}} for i in range(50)]
    )
    parsed = parse_filter(spec)
    assert parsed is not None
    expression, params = compile_sql(parsed)
    steps = [
        row[3]
        for row in db.execute(
            f"EXPLAIN QUERY PLAN SELECT p.label FROM points p WHERE {expression}", params
        )
    ]
    assert any(plan in step for step in steps), steps
    assert not any(step.startswith("SCAN fields") for step in steps), steps


def test_sql_doc_id_uses_the_column() -> None:
    expression, params = compile_sql(parse_filter({"doc_id": {"$in": ["a", 1, True]}}))  # type: ignore[arg-type]
    assert expression == "p.doc_id IN (?)" and params == ["a"]
    expression, params = compile_sql(parse_filter({"doc_id": {"$ne": "a"}}))  # type: ignore[arg-type]
    assert expression == "(p.doc_id IS NULL OR NOT p.doc_id IN (?))" and params == ["a"]
    assert compile_sql(parse_filter({"doc_id": {"$gt": 1}})) == ("0", [])  # type: ignore[arg-type]
    assert compile_sql(parse_filter({"doc_id": {"$exists": True}})) == ("p.doc_id IS NOT NULL", [])  # type: ignore[arg-type]


def test_sql_agrees_on_every_shape() -> None:
    payloads = _shape_payloads()
    db = _sql_database(payloads)
    for spec in SHAPE_FILTERS:
        assert _sql_hits(db, spec) == _expected(payloads, spec), spec


_BIG_INTS = [
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**63 + 1,
    -(2**63),
    -(2**63) - 1,
    2**64,
    2**64 + 1,
    10**30,
]
_BIG_BOUNDS = [2.0**53, 2.0**63, -(2.0**63), 2.0**64, 1e30, -1e30, 1e300, math.inf, -math.inf]


def test_sql_compares_huge_ints_exactly() -> None:
    values = [*_BIG_INTS, *(-n for n in _BIG_INTS), 0, 1.5, 2.0**64, math.inf, -math.inf, math.nan]
    payloads = [_payload(v=v) for v in values]
    db = _sql_database(payloads)
    for op in RANGE_OPERATORS:
        for bound in [*_BIG_BOUNDS, math.nan, 0.5]:
            spec: dict[str, Any] = {"v": {op: bound}}
            assert _sql_hits(db, spec) == _expected(payloads, spec), spec
    for n in _BIG_INTS:
        for other in ({"v": n}, {"v": {"$ne": -n}}, {"v": {"$in": [n, True]}}):
            assert _sql_hits(db, other) == _expected(payloads, other), other
    enormous = [_payload(v=10**5000), _payload(v=-(10**5000))]
    db = _sql_database(enormous)
    assert _sql_hits(db, {"v": {"$gt": 1e308}}) == {0}
    assert _sql_hits(db, {"v": {"$lt": -1e308}}) == {1}
    assert _sql_hits(db, {"v": 10**5000}) == {0}


_sql_scalars = st.one_of(
    _scalars, _scalars, _scalars, st.sampled_from(_BIG_INTS), st.integers(-(2**70), 2**70)
)
_sql_numbers = st.one_of(_numbers, st.sampled_from([*_BIG_BOUNDS, math.nan]))
_sql_payloads = st.lists(
    _payload_strategy(
        st.one_of(_sql_scalars, _sql_numbers, st.sampled_from([-(2**64), float(2**63)]))
    ),
    min_size=1,
    max_size=10,
)
_sql_specs = _filter_strategy(_condition_strategy(_sql_scalars, _sql_numbers))


@settings(max_examples=300, deadline=None)
@given(payloads=_sql_payloads, specs=st.lists(_sql_specs, min_size=1, max_size=4))
def test_sql_agrees_with_matches(
    payloads: list[dict[str, Any]], specs: list[dict[str, Any]]
) -> None:
    db = _sql_database(payloads)
    for spec in specs:
        assert _sql_hits(db, spec) == _expected(payloads, spec), spec
