"""`ravana-db log KIND`: store records of one kind, from options or as JSON lines on stdin.

The commands are made from the pydantic models on first use, so that commands other than
`log` never pay for importing pydantic.
"""

import sys
from typing import Annotated

import typer
import typer.core
import typer.main

from ..errors import InputError, RecordError
from ..output import Format, Progress, emit, pick
from .common import Command, JsonFlag, app, load_embedder, notice, open_database

EXAMPLES = {
    "action": "ravana-db log action --action-name search --params '{\"q\": \"llm\"}' "
              "--status success --result '{\"hits\": 3}'",
    "mood": "ravana-db log mood --mood-vector '{\"curious\": 0.8, \"calm\": 0.4}'",
    "situation": "ravana-db log situation --situation-type curiosity --prompt 'Why is the sky "
                 "blue?' --context '{\"topic\": \"physics\"}'",
    "decision": "ravana-db log decision --situation-id 1 --raw-response 'Read about Rayleigh "
                "scattering'",
    "experiment": "ravana-db log experiment --hypothesis 'Caching halves latency' "
                  "--results '{\"speedup\": 1.9}'",
    "summary": "ravana-db log summary --summary-text 'Markets fell on rate fears.' "
               "--category compression",
    "memory": "ravana-db log memory --text 'The user prefers short answers' --key pref-1 "
              "--importance 0.8   (or: ravana-db log memory --stdin < memories.jsonl)",
    "vltm": "ravana-db log vltm --memory-type critical_failure --compressed-content "
            "'Deploys on Friday broke the build' --importance-score 0.9",
    "pattern": "ravana-db log pattern --pattern-type temporal --pattern-description "
               "'Failures cluster after midnight' --confidence-score 0.7",
    "knowledge": "ravana-db log knowledge --knowledge-domain performance --knowledge-summary "
                 "'Batch writes in one transaction' --confidence-level 0.9",
}
# The options every kind takes; the options of its fields follow them.
StdinFlag = Annotated[bool, typer.Option(
    "--stdin", help="read many records as JSON lines from stdin")]
LogFormatOption = Annotated[Format | None, typer.Option(
    "--format", "-f", help="print the records with their status (inserted, updated, existing) "
    "as table, json, jsonl or csv [default: their ids, one a line]")]


class LogGroup(typer.core.TyperGroup):
    """The `log` group: a command per kind of record, made when asked for."""

    def list_commands(self, ctx):
        return list(EXAMPLES)

    def get_command(self, ctx, name):
        from ..models import KINDS

        return log_command(name, KINDS[name]) if name in KINDS else None


log_app = typer.Typer(cls=LogGroup, no_args_is_help=True, help="Store records: one from "
                      "options, or many as JSON lines with --stdin (one transaction).")
app.add_typer(log_app, name="log")


def log_command(kind, model):
    """The `log KIND` command: --stdin, --format and --json, then an option per field of the
    kind's model (a string, which the model checks)."""
    one = typer.Typer(add_completion=False, rich_markup_mode=None)

    @one.command(kind, cls=Command, help=f"{model.__doc__}\n\nExample: {EXAMPLES[kind]}")
    def store(ctx: typer.Context, stdin: StdinFlag = False, fmt: LogFormatOption = None,
              json_flag: JsonFlag = False):
        given = ctx.obj.get("fields", {})
        fields = {name: given[name] for name in model.model_fields if name in given}
        log_records(ctx, kind=kind, model=model, stdin=stdin, fmt=fmt, json_flag=json_flag,
                    fields=fields)

    command = typer.main.get_command(one)
    at = len(command.params) - 2  # before --db and --quiet, which Command adds last
    command.params[at:at] = [field_option(name, field)
                             for name, field in model.model_fields.items()]
    return command


def field_option(name, field):
    """The option of one field of a record: `--action-name`; its value, when given, is kept in
    ctx.obj["fields"] (as --db after a command's name is kept in ctx.obj)."""
    from ..models import option_name  # pydantic is loaded only for `log`

    required = " [required]" if field.is_required() else ""
    return typer.core.TyperOption(
        param_decls=[option_name(name), name], expose_value=False,
        callback=keep_field, show_default=False, help=(field.description or "") + required)


def keep_field(ctx, param, value):
    """Keep a field given as an option, for the command."""
    if value is not None:
        ctx.obj.setdefault("fields", {})[param.name] = value


def log_records(ctx, *, kind, model, stdin, fmt, json_flag, fields):
    """Store the record of the options, or the records on stdin, in one transaction."""
    from ..store import write

    fmt = pick(fmt, json_flag) if fmt or json_flag else None
    records = read_records(model, stdin=stdin, fields=fields)
    db, _ = open_database(ctx)
    statements = ()
    if any(getattr(r, "from_", None) for _, r in records):
        from ..explain import source_node, source_statements

        found = {}  # each source looked up once, before anything is written
        for line, record in records:
            source = record.from_
            if source and source not in found:
                try:
                    found[source] = source_node(db, source)
                except InputError as e:
                    raise InputError(f"line {line}: {e}" if line is not None else str(e)) from None
        nodes = [found.get(record.from_) for _, record in records]

        def statements(results):  # the links, in the memories' own transaction
            return source_statements(nodes, [r["id"] for r in results])
    try:
        with Progress("embedding", quiet=ctx.obj["quiet"]) as bar:
            results = write(db, [r for _, r in records], embedder=load_embedder(ctx),
                            progress=bar, statements=statements)
    except RecordError as e:
        line = records[e.index][0]
        raise InputError(f"line {line}: {e}" if line is not None else str(e)) from None
    if not stdin and results[0]["status"] == "existing":  # a batch has its counts below
        notice(ctx, f"already stored as {kind} {results[0]['id']}")
    if fmt:
        emit(({"kind": kind, "line": line, **r} for (line, _), r in zip(records, results)), fmt)
    elif not ctx.obj["quiet"]:
        print("\n".join(str(r["id"]) for r in results))
    notice(ctx, counts(kind, results))


def read_records(model, *, stdin, fields):
    """(line number or None, record) of each record given, all validated before any is
    written: the JSON lines on stdin, or the one record of the options."""
    from ..lines import json_batch
    from ..models import validate

    if stdin and fields:
        raise InputError(f"give fields as options or as JSON lines with --stdin, not both "
                         f"(got --{next(iter(fields)).replace('_', '-')})")
    if stdin:
        return [(number, validate(model, value, line=number))
                for number, value in json_batch(sys.stdin.buffer)]
    return [(None, validate(model, fields, options=True))]


def counts(kind, results):
    """The line that counts the records by status: `memory: 2 inserted, 1 existing`."""
    tally = {}
    for r in results:
        tally[r["status"]] = tally.get(r["status"], 0) + 1
    return f"{kind}: " + ", ".join(f"{n} {status}" for status, n in tally.items())
