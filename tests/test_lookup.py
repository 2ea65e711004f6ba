"""The lookup tool over each kind of knowledge base: mapping, object with
attribute(), CSV and JSON tables (long and wide), and unknown keys."""

from __future__ import annotations

import json

import pytest

from glassbox.archs.tools import Lookup, ToolRegistry
from glassbox.archs.tools.lookup import AttributeKB, TableKB, as_knowledge_base

FACTS = {
    "paris": {"country": "france", "population": 2102650},
    "rome": {"country": "italy", "founded": "-753"},
    "New York": {"country": "usa"},
}


def test_nested_mapping():
    lookup = Lookup(FACTS)
    assert lookup.run("paris country").text == "france"
    assert lookup.run("rome country").value == "italy"
    assert lookup.run("  paris   population ").value == 2102650
    assert lookup.run("paris population").text == "2102650"
    assert lookup.run("New York | country").text == "usa"
    assert lookup.run("New   York|country").text == "usa"  # whitespace collapsed


def test_flat_mapping_and_digit_tokens():
    lookup = Lookup(
        {("paris", "population"): 2102650, ("rome", "founded"): "-753"}, digit_tokens=True
    )
    assert lookup.run("paris population").text == "2 1 0 2 6 5 0"
    assert lookup.run("rome founded").text == "- 7 5 3"


@pytest.mark.parametrize(
    "arguments, message",
    [
        ("berlin country", "unknown entity 'berlin'"),
        ("paris mayor", "entity 'paris' has no relation 'mayor'"),
        ("paris mayor", "it has: country, population"),
        ("paris", "expected 'ENTITY RELATION'"),
        ("", "expected 'ENTITY RELATION'"),
        ("New York country", "expected 'ENTITY RELATION'"),
        ("paris | ", "expected 'ENTITY RELATION'"),
        ("a | b | c", "expected 'ENTITY RELATION'"),
    ],
)
def test_unknown_or_malformed_is_an_error_result(arguments, message):
    result = Lookup(FACTS).run(arguments)
    assert not result.ok and result.value is None and result.text is None
    assert result.error.startswith("lookup: ")
    assert message in result.error, result.error


class FakeGraph:
    """The shape of the skill suite's KnowledgeGraph: attribute(entity, relation),
    plus lists of entity objects and relation names."""

    class Entity:
        def __init__(self, name):
            self.name = name

    def __init__(self):
        self.facts = {("e1", "color"): "red", ("e1", "size"): "big", ("e2", "color"): "blue"}
        self.entities = [self.Entity("e1"), self.Entity("e2"), self.Entity("e3")]
        self.relations = ["color", "size"]
        self.calls = []

    def attribute(self, entity, relation):
        self.calls.append((entity, relation))
        return self.facts[(entity, relation)]


def test_object_with_attribute_method():
    graph = FakeGraph()
    lookup = Lookup(graph)
    assert isinstance(lookup.kb, AttributeKB)
    assert lookup.run("e1 size").text == "big"
    assert lookup.run("e2 color").text == "blue"
    assert graph.calls == [("e1", "size"), ("e2", "color")]
    assert "unknown entity 'e9'" in lookup.run("e9 color").error
    assert "unknown relation 'weight'" in lookup.run("e1 weight").error
    # a known entity and relation without a fact: attribute() raised KeyError
    assert "no fact ('e2', 'size')" in lookup.run("e2 size").error
    assert "no fact ('e3', 'color')" in lookup.run("e3 color").error


def test_attribute_object_without_listings():
    class Bare:
        def attribute(self, entity, relation):
            return {"x": {"r": 7}}.get(entity, {}).get(relation)  # None when unknown

    lookup = Lookup(Bare(), name="kg", digit_tokens=True)
    assert lookup.run("x r").text == "7"
    result = lookup.run("y r")
    assert not result.ok and result.error == "kg: no fact ('y', 'r') in Bare"


def test_long_csv(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text(
        "Relation,entity,value\ncapital,france,paris\ncapital,italy,rome\n\npop,italy,59\n"
    )
    lookup = Lookup(path, name="table")
    assert lookup.run("france capital").text == "paris"
    assert lookup.run("italy pop").text == "59"
    assert "unknown entity 'spain'" in lookup.run("spain capital").error
    assert "no relation 'pop'" in lookup.run("france pop").error


def test_wide_csv(tmp_path):
    path = tmp_path / "cities.csv"
    path.write_text('city,country,population\nparis,france,2102650\n"New York",usa,\n')
    lookup = Lookup(str(path))
    assert lookup.run("paris population").text == "2102650"
    assert lookup.run("New York | country").text == "usa"
    # an empty cell: no such fact
    assert "no relation 'population'" in lookup.run("New York | population").error


def test_json_tables(tmp_path):
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps({"paris": {"country": "france", "big": True}}))
    long = tmp_path / "long.json"
    long.write_text(json.dumps([{"entity": "paris", "relation": "country", "value": "france"}]))
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps([{"entity": "paris", "country": "france", "mayor": None}]))
    for path in (nested, long, wide):
        lookup = Lookup(path)
        assert lookup.run("paris country").text == "france", path
        assert "unknown entity 'rome'" in lookup.run("rome country").error
    assert Lookup(nested).run("paris big").text == "true"
    assert "no relation 'mayor'" in Lookup(wide).run("paris mayor").error


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.csv", "", "empty CSV"),
        ("short.csv", "entity\nparis\n", "expected the columns entity, relation, value"),
        ("ragged.csv", "entity,relation,value\nparis,country\n", "line 2 has 2 cells"),
        ("twice.csv", "entity,relation,value\na,r,1\na,r,2\n", "given twice"),
        ("bad.json", "{not json", "not valid JSON"),
        ("scalar.json", "3", "expected an object"),
        ("rows.json", '{"paris": "france"}', "must be a mapping of relation -> value"),
        ("records.json", '[{"name": "paris"}]', "record 0 must be an object with an 'entity' key"),
        ("table.txt", "x", "must be a .csv or .json file"),
    ],
)
def test_malformed_tables_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        TableKB.from_file(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_and_bad_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        as_knowledge_base(tmp_path / "nope.csv")
    with pytest.raises(TypeError, match="cannot use a int as a knowledge base"):
        as_knowledge_base(3)


def test_two_knowledge_bases_in_one_registry(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("entity,relation,value\nalice,age,31\n")
    registry = ToolRegistry([Lookup(FakeGraph()), Lookup(path, name="table", digit_tokens=True)])
    assert registry.call("lookup e1 color").text == "red"
    assert registry.call("table alice age").text == "3 1"
    assert "unknown entity 'e1'" in registry.call("table e1 color").error
