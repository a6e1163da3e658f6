"""The one emitter (output.py): every format's exact text, streaming, what a terminal is shown,
and the format a command picks."""

import io
import json
import sys

import pytest

from ravana_db.errors import InputError
from ravana_db.output import Format, Progress, emit, message, pick, width

ROW = {"id": 1, "text": "green [bold]tea[/] café", "meta": {"a": 1}, "blob": b"\x00\x01",
       "none": None}


def emitted(rows, fmt, **options):
    out = io.StringIO()
    emit(rows, fmt, out=out, **options)
    return out.getvalue()


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self):
        return True


def test_json_is_an_array_of_objects_in_key_order():
    assert emitted([ROW, {"id": 2}], Format.json) == (
        '[\n  {"id": 1, "text": "green [bold]tea[/] café", "meta": {"a": 1}, '
        '"blob": {"$base64": true, "encoded": "AAE="}, "none": null},\n  {"id": 2}\n]\n')
    assert emitted([], Format.json) == "[]\n"


def test_one_record_in_json_is_an_indented_object():
    assert emitted([{"key": "tea", "n": {"a": 1}}], Format.json, one=True) == (
        '{\n  "key": "tea",\n  "n": {\n    "a": 1\n  }\n}\n')


def test_jsonl_is_a_line_per_row_with_the_columns_asked_for():
    text = emitted([ROW, {"id": 2, "text": "x"}], Format.jsonl, columns=["text", "id"])
    assert text == '{"text": "green [bold]tea[/] café", "id": 1}\n{"text": "x", "id": 2}\n'
    assert emitted([{"id": 3}], Format.jsonl, columns=["id", "gone"]) == \
        '{"id": 3, "gone": null}\n'


def test_csv_cells_are_plain_text_and_never_formulas():
    text = emitted([ROW, {"id": "=1+2", "text": "-x", "meta": -3, "blob": "@SUM(A1)",
                          "none": "+1"}], Format.csv)
    assert text == ('id,text,meta,blob,none\r\n'
                    '1,green [bold]tea[/] café,"{""a"": 1}",AAE=,\r\n'
                    "'=1+2,'-x,-3,'@SUM(A1),'+1\r\n")
    assert emitted([{"a": 1, "b": 2}], Format.csv, columns=["b"]) == "b\r\n2\r\n"
    assert emitted([], Format.csv) == ""


def test_rows_are_written_as_they_come():
    """A reader waiting on each answer gets it before the next row is even made."""
    for fmt in (Format.json, Format.jsonl, Format.csv):
        out, seen = io.StringIO(), []

        def rows(out=out, seen=seen):
            yield {"id": 1}
            seen.append(out.getvalue())
            yield {"id": 2}

        emit(rows(), fmt, out=out, live=True)
        assert "1" in seen[0] and "2" not in seen[0], (fmt, seen)


def test_an_error_before_the_first_row_leaves_nothing_written():
    def failing():
        raise InputError("no such thing")
        yield  # a generator

    for fmt in Format:
        out = io.StringIO()
        with pytest.raises(InputError):
            emit(failing(), fmt, out=out)
        assert out.getvalue() == "", fmt


def test_a_table_shows_stored_text_literally(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    table = emitted([{"id": 1, "text": "[red]alarm[/] \x1b]0;PWNED\x07 done"}], Format.table)
    assert "[red]alarm[/] \\x1b]0;PWNED\\x07 done" in table  # markup as typed, controls escaped
    assert "\x1b" not in table and "\x07" not in table
    assert table.split()[:2] == ["id", "text"]


def test_a_table_of_one_record_has_a_line_per_field(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    table = emitted([{"key": "tea", "n": {"a": 1, "b": "x"}, "none": None}], Format.table,
                    one=True)
    assert [line.split() for line in table.splitlines() if line.strip()] == [
        ["key", "tea"], ["n.a", "1"], ["n.b", "x"], ["none"]]


def test_an_empty_table_prints_nothing():
    assert emitted([], Format.table, title="nothing here") == ""


def test_a_table_title_comes_first(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    table = emitted([{"run": "consolidate-run-0001"}], Format.table, title="[b]runs[/b]")
    assert [line.strip() for line in table.splitlines() if line.strip()][:2] == [
        "[b]runs[/b]", "run"]


def test_pick_follows_the_flags_then_the_terminal(monkeypatch):
    assert pick("csv") is Format.csv
    assert pick(None, True) is Format.json
    assert pick("json", True) is Format.json
    with pytest.raises(InputError, match="--json and --format csv disagree"):
        pick("csv", True)
    monkeypatch.setattr(sys, "stdout", io.StringIO())  # a pipe
    assert pick(None) is Format.json
    assert pick(None, default="jsonl") is Format.jsonl
    monkeypatch.setattr(sys, "stdout", Terminal())
    assert pick(None, default="jsonl") is Format.table


def test_a_message_is_one_escaped_line_on_stderr(capsys):
    message("stored \x1b[2J row\tdone")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "stored \\x1b[2J row\tdone\n")


def test_width_is_the_terminals_or_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "123")
    assert width(io.StringIO()) == 123
    monkeypatch.delenv("COLUMNS")
    assert width(io.StringIO()) == 80


def test_progress_is_silent_off_a_terminal_and_when_quiet(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with Progress("embedding", total=3) as bar:
        bar(2)
        bar(1, total=4)
    assert sys.stderr.getvalue() == "" and not bar.enabled
    monkeypatch.setattr(sys, "stderr", Terminal())
    with Progress("embedding", quiet=True) as bar:
        bar(1)
    assert sys.stderr.getvalue() == "" and not bar.enabled


def test_progress_on_a_terminal_draws_on_stderr_only(monkeypatch, capsys):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with Progress("embedding", total=2) as bar:
        bar(1)
        bar(1)
    assert bar.enabled and "embedding" in terminal.getvalue()
    assert capsys.readouterr().out == ""


def test_a_command_streams_json_lines_in_a_pipe(cli):
    result = cli("log", "memory", "--stdin", "--format", "jsonl",
                 input='{"key": "tea", "text": "Green tea."}\n{"key": "sky", "text": "Blue."}\n')
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["kind"], r["line"], r["key"], r["status"]) for r in lines] == [
        ("memory", 1, "tea", "inserted"), ("memory", 2, "sky", "inserted")]
