"""models.py: what `log` accepts. Anything SQLite cannot store is one line, exit 2, nothing
written: lone surrogates, NaN and infinities, JSON nested too deep, blank text."""

import json

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from ravana_db.fields import MAX_DEPTH
from ravana_db.models import KINDS, Record

# A valid record of each kind, which the tests spoil one field at a time.
BASE = {
    "action": {"action_name": "a"},
    "mood": {"mood_vector": {"calm": 0.5}},
    "situation": {"situation_type": "t", "prompt": "p"},
    "decision": {"raw_response": "r"},
    "experiment": {"hypothesis": "h"},
    "summary": {"summary_text": "s"},
    "memory": {"text": "m"},
    "vltm": {"memory_type": "code_pattern", "compressed_content": "c"},
    "pattern": {"pattern_type": "causal", "pattern_description": "d",
                "confidence_score": 0.5},
    "knowledge": {"knowledge_domain": "d", "knowledge_summary": "s", "confidence_level": 0.5},
}


def nested(depth):
    return "[" * depth + "]" * depth


def rejected(cli, rows, kind, line, expected):
    """`log KIND --stdin` of line is exit 2, one line naming `expected`, nothing written."""
    table = KINDS[kind].table
    cli("init")
    result = cli("log", kind, "--stdin", input=line + "\n")
    assert result.exit_code == 2, result.stdout
    assert result.stderr.startswith("error: line 1: ") and result.stderr.count("\n") == 1, \
        result.stderr
    assert expected in result.stderr
    assert rows(table) == []


# 1. Lone surrogates, as JSON escapes: valid JSON, but no UTF-8 for them, so no SQLite text.
SURROGATES = [
    ("memory", '{"text": "a\\ud800b"}', "text: not valid Unicode"),
    ("memory", '{"text": "ok", "key": "k\\udc00"}', "key: not valid Unicode"),
    ("memory", '{"text": "ok", "source": "\\udfff"}', "source: not valid Unicode"),
    ("memory", '{"text": "ok", "metadata": {"a\\ud800": 1}}', "metadata: not valid Unicode"),
    ("memory", '{"text": "ok", "metadata": {"a": [{"b": "\\ud800"}]}}',
     "metadata: not valid Unicode at $.a[0].b"),
    ("memory", '{"text": "ok", "metadata": "{\\"a\\": \\"\\\\ud800\\"}"}',
     "metadata: not valid Unicode at $.a"),
    ("action", '{"action_name": "a", "params": {"q": "\\ud800"}}', "params: not valid Unicode"),
    ("action", '{"action_name": "a", "result": "\\ud800"}', "result: not valid Unicode"),
    ("action", '{"action_name": "a", "result": "[\\"\\\\ud800\\"]"}', "result: not valid"),
    ("mood", '{"mood_vector": {"calm\\ud800": 0.5}}', "mood_vector: not valid Unicode"),
    ("situation", '{"situation_type": "t", "prompt": "p", "context": {"\\ud800": {}}}',
     "context: not valid Unicode"),
    ("experiment", '{"hypothesis": "h", "results": ["\\ud800"]}', "results: not valid"),
    ("summary", '{"summary_text": "s", "source": "\\ud800"}', "source: not valid Unicode"),
    ("vltm", '{"memory_type": "code_pattern", "compressed_content": {"text": "\\ud800"}}',
     "compressed_content: not valid Unicode"),
    ("vltm", '{"memory_type": "code_pattern", "compressed_content": "x\\ud800"}',
     "compressed_content: not valid Unicode"),
    ("vltm", ('{"memory_type": "code_pattern", "compressed_content": "c", '
              '"metadata_info": {"k": "\\ud800"}}'), "metadata_info: not valid Unicode"),
    ("vltm", ('{"memory_type": "code_pattern", "compressed_content": "c", '
              '"related_memories": ["\\ud800"]}'), "related_memories: not valid Unicode"),
    ("pattern", ('{"pattern_type": "causal", "pattern_description": "d", '
                 '"confidence_score": 0.5, "pattern_data": {"\\udbff": 1}}'),
     "pattern_data: not valid Unicode"),
    ("knowledge", ('{"knowledge_domain": "d", "knowledge_summary": "s", '
                   '"confidence_level": 0.5, "knowledge_structure": {"a": "\\ud800"}}'),
     "knowledge_structure: not valid Unicode"),
    ("knowledge", ('{"knowledge_domain": "d\\ud800", "knowledge_summary": "s", '
                   '"confidence_level": 0.5}'), "knowledge_domain: not valid Unicode"),
]


@pytest.mark.parametrize("kind,line,expected", SURROGATES)
def test_lone_surrogates_anywhere_are_rejected(cli, rows, kind, line, expected):
    rejected(cli, rows, kind, line, expected)


def test_a_surrogate_in_an_option_is_rejected(cli, rows):
    cli("init")
    result = cli("log", "memory", "--text", "ok", "--key", "k\udc80")  # undecodable argv byte
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --key: not valid Unicode")
    assert result.stderr.count("\n") == 1 and rows("memory") == []


# 2. Nesting deeper than MAX_DEPTH, as a value or as a string of JSON text.
DEEP = [
    ("memory", f'{{"text": "ok", "metadata": {json.dumps(nested(3000))}}}', "metadata"),
    ("memory", f'{{"text": "ok", "metadata": {{"a": {nested(MAX_DEPTH)}}}}}', "metadata"),
    ("action", f'{{"action_name": "a", "result": {json.dumps(nested(3000))}}}', "result"),
    ("action", f'{{"action_name": "a", "result": {nested(MAX_DEPTH + 1)}}}', "result"),
    ("experiment", f'{{"hypothesis": "h", "results": {json.dumps(nested(100))}}}', "results"),
    ("vltm", json.dumps({"memory_type": "code_pattern",
                         "compressed_content": f'{{"a": {nested(3000)}}}'}),
     "compressed_content"),
    # A value 3000 deep: the stdin line reader refuses it (json.loads recurses).
    ("memory", f'{{"text": "ok", "metadata": {{"a": {nested(3000)}}}}}', None),
]


@pytest.mark.parametrize("kind,line,field", DEEP)
def test_json_nested_too_deep_is_rejected(cli, rows, kind, line, field):
    expected = f"{field}: nested deeper than {MAX_DEPTH} levels" if field else "nested"
    rejected(cli, rows, kind, line, expected)


def test_json_nested_to_the_limit_is_stored(cli, rows):
    line = json.dumps({"action_name": "a", "result": nested(MAX_DEPTH)})
    assert cli("log", "action", "--stdin", input=line + "\n").exit_code == 0
    assert rows("actionlog")[0]["result"] == nested(MAX_DEPTH)


# 3. NaN and infinities are not JSON (SQLite's json_valid refuses them); huge integers are.
NON_FINITE = [
    ("memory", '{"text": "ok", "metadata": {"x": NaN}}', "metadata: NaN at $.x"),
    ("memory", '{"text": "ok", "metadata": "{\\"x\\": [1, Infinity]}"}',
     "metadata: Infinity at $.x[1]"),
    ("mood", '{"mood_vector": {"calm": -Infinity}}', "mood_vector: -Infinity at $.calm"),
    ("mood", '{"mood_vector": "{\\"calm\\": NaN}"}', "mood_vector: NaN at $.calm"),
    ("action", '{"action_name": "a", "result": NaN}', "result: NaN"),
    ("action", '{"action_name": "a", "result": "1e400"}', "result: Infinity"),
    ("experiment", '{"hypothesis": "h", "results": {"r": [Infinity]}}',
     "results: Infinity at $.r[0]"),
    ("memory", '{"text": "ok", "importance": NaN}', "importance: NaN"),
]


@pytest.mark.parametrize("kind,line,expected", NON_FINITE)
def test_nan_and_infinities_are_rejected(cli, rows, kind, line, expected):
    rejected(cli, rows, kind, line, f"{expected} is not a finite number")


def test_huge_integers_in_json_are_stored(cli, rows):
    huge = {"big": 10**30, "small": -(10**30), "list": [2**64]}
    line = json.dumps({"action_name": "a", "params": huge, "result": json.dumps(huge)})
    assert cli("log", "action", "--stdin", input=line + "\n").exit_code == 0
    (row,) = rows("actionlog")
    assert json.loads(row["params"]) == huge and json.loads(row["result"]) == huge


# 4. Blank text never gets a search vector; text that is not blank is stored as given.
BLANK = [
    ("memory", "text"), ("memory", "memory_type"), ("action", "action_name"),
    ("situation", "prompt"), ("decision", "raw_response"), ("experiment", "hypothesis"),
    ("summary", "summary_text"), ("pattern", "pattern_description"),
    ("knowledge", "knowledge_summary"), ("knowledge", "knowledge_domain"),
]


@pytest.mark.parametrize("kind,field", BLANK)
@pytest.mark.parametrize("blank", ["", " ", "\t\n", "\u3000"])
def test_blank_text_is_rejected(cli, rows, kind, field, blank):
    line = json.dumps({**BASE[kind], field: blank})
    rejected(cli, rows, kind, line, f"{field}: must not be blank")


def test_text_is_stored_unstripped(cli, rows):
    line = json.dumps({"text": "  two spaces either side  \n"})
    assert cli("log", "memory", "--stdin", input=line + "\n").exit_code == 0
    assert rows("memory")[0]["text"] == "  two spaces either side  \n"


# 5. Identities are tuples of columns (articles will be found by (feed_id, guid)).
def test_identity_is_a_tuple_of_columns():
    assert Record.identity == ()
    assert {kind: model.identity for kind, model in KINDS.items()} == {
        "action": ("id",), "mood": ("id",), "situation": ("id",), "decision": ("id",),
        "experiment": ("id",), "summary": ("content_hash",), "memory": ("key",),
        "vltm": ("memory_id",), "pattern": ("pattern_id",), "knowledge": ("knowledge_id",)}
    for model in KINDS.values():
        assert set(model.identity) <= set(model.model_fields)


# Any JSON in any field: stored, or one line and exit 2 with nothing written.


class Deep:
    """JSON text nested `depth` levels, spliced into a line as is (json.dumps would recurse)."""

    def __init__(self, depth):
        self.text = nested(depth)

    def __repr__(self):
        return f"Deep({len(self.text) // 2})"


def dumps(value):
    """JSON text as the CLI reads it: NaN, infinities and \\ud800 escapes kept, Deep spliced."""
    deep = []

    def mark(v):
        deep.append(v.text)
        return f"\0deep{len(deep) - 1}\0"

    text = json.dumps(value, allow_nan=True, ensure_ascii=True, default=mark)
    for i, raw in enumerate(deep):
        text = text.replace(json.dumps(f"\0deep{i}\0"), raw, 1)
    return text


TEXT = st.text(alphabet=st.characters(blacklist_categories=()), max_size=12)
SCALAR = (st.none() | st.booleans() | st.integers()
          | st.sampled_from([10**30, -(10**30), 2**63, 2**64, 10**400])
          | st.floats() | TEXT)
JSON = st.recursive(
    SCALAR | st.builds(Deep, st.integers(MAX_DEPTH - 2, 3000)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8)
# Objects and text too, as most fields want them: more records get past validation.
# Each value as itself or as a string of its JSON text (as the original stored JSON).
VALUE = st.tuples(JSON | st.dictionaries(TEXT, JSON, max_size=3) | TEXT, st.booleans()).map(
    lambda p: dumps(p[0]) if p[1] else p[0])


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_any_json_in_any_field_is_stored_or_rejected_cleanly(cli, rows, kind, data):
    cli("init")
    model = KINDS[kind]
    table = model.table
    fields = st.sampled_from(list(model.model_fields))
    if model.json_fields:  # JSON fields twice as often: most other fields refuse most JSON
        fields |= st.sampled_from(model.json_fields)
    spoilt = data.draw(st.dictionaries(fields, VALUE, min_size=1, max_size=2))
    line = dumps({**BASE[kind], **spoilt})
    note(f"line: {line[:2000]}")
    before = rows(table)
    result = cli("log", kind, "--stdin", "--format", "json", input=line + "\n")
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 2), result.stderr
    if result.exit_code == 0:
        (out,) = json.loads(result.stdout)
        assert len(rows(table)) == len(before) + (out["status"] == "inserted")
    else:
        assert result.stderr.startswith("error: line 1: ") and result.stderr.count("\n") == 1
        assert rows(table) == before
