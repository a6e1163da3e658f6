"""JSON lines in: `ingest jsonl` (one table's rows, from a file or stdin) and `ingest dir` (an
`export all --format jsonl` folder, checked against its manifest)."""

import contextlib
import json
import os
from pathlib import Path

from ..errors import InputError
from ..export import EXPORT_VERSION, MANIFEST
from ..lines import json_lines
from ..tables import TABLES
from .loader import Loader, opened
from .target import check_table


def load_jsonl(db, table, source, *, embedder=None, progress=None):
    """Store the rows of one table, as `export TABLE --format jsonl` writes them.

    Every line is checked first (a bad one is an error and nothing is stored), the checked
    rows kept in a temporary file (stdin cannot be read twice, a file may change meanwhile);
    then they are written in batches, one transaction each. So memory stays flat whatever the
    input's size, and a run that stops keeps its batches: run again, it adds the rest.

    References by integer id (article.feed_id, decisionlog.situation_id, event_article) are
    this file's ids, checked to exist; `ingest dir` maps a whole export's instead.

    Args:
        source: a path, or a binary stream (stdin).

    Returns (report rows, notes).
    """
    name = check_table(table)
    with Loader(db, mapped=False) as loader:
        with (opened(source) if isinstance(source, (str, os.PathLike))
              else contextlib.nullcontext(source)) as stream:
            label = str(source) if stream is not source else ""
            loader.add(name, json_lines(stream, name=label))
        if not loader.reports[name]["read"]:
            raise InputError("no rows to ingest (expected one JSON object per line)")
        return loader.write(embedder=embedder, progress=progress), loader.notes


def load_dir(db, folder, *, embedder=None, progress=None):
    """Store an `export all --format jsonl` folder: every table its manifest lists, in its
    order, references mapped to the target's ids. Returns (report rows, notes)."""
    folder = Path(folder)
    manifest = _manifest(folder)
    with Loader(db, mapped=True) as loader:
        for entry in manifest["tables"]:
            with opened(folder / entry["file"]) as f:
                before = loader.reports.get(entry["table"], {}).get("read", 0)
                loader.add(entry["table"], json_lines(f, name=entry["file"]))
            read = loader.reports[entry["table"]]["read"] - before
            if isinstance(entry.get("rows"), int) and read != entry["rows"]:
                raise InputError(f"{entry['file']} holds {read} rows, {MANIFEST} says "
                                 f"{entry['rows']}: the export is incomplete; export it again")
        return loader.write(embedder=embedder, progress=progress), loader.notes


def _manifest(folder):
    """The checked manifest of an export folder."""
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder: give the folder `ravana-db export all "
                         "--output DIR` wrote")
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except FileNotFoundError:
        raise InputError(f"{folder} has no {MANIFEST}: give a folder that `ravana-db export "
                         "all --format jsonl --output DIR` wrote") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{folder / MANIFEST} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("tables"), list):
        raise InputError(f"{folder / MANIFEST} lists no tables: not an export's manifest")
    if manifest.get("export_version") != EXPORT_VERSION:
        raise InputError(f"{folder / MANIFEST}: export version "
                         f"{manifest.get('export_version')!r}, this ravana-db reads "
                         f"{EXPORT_VERSION}")
    if manifest.get("format") != "jsonl" or manifest.get("json_columns") != "text":
        raise InputError(f"{folder} holds a {manifest.get('format')} export: ingest dir reads "
                         "JSON lines (export all --format jsonl)")
    listed = []
    for entry in manifest["tables"]:
        name = entry.get("table") if isinstance(entry, dict) else None
        if name not in TABLES:
            raise InputError(f"{folder / MANIFEST} lists {name!r}, not a table of the agent's")
        if entry.get("file") != f"{name}.jsonl":
            raise InputError(f"{folder / MANIFEST}: {name}'s file must be {name}.jsonl, not "
                             f"{entry.get('file')!r}")
        if TABLES.index(name) < max(map(TABLES.index, listed), default=-1):
            raise InputError(f"{folder / MANIFEST} lists {name} after a table that refers to "
                             "it: not an export's order")
        listed.append(name)
    return manifest
