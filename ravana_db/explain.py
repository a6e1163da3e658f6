"""Provenance: where a row came from and what was made of it, with the run that made each link.

`explain(db, ref)` returns a plain nested dict (the emitter draws it): a node is
{kind, id, key?, text, time, links: [{relation, direction, run?, time?, node}]}, and, when
its links were not followed, `cut` ("depth", "seen": shown elsewhere in the tree) and, when
a relation has more links than a node shows, `more` ([{relation, direction, count}]).

The hops, source to derived: feed -> article (article.feed_id), article -> event
(event_article), article -> memory (provenance, `log memory --from`), memory -> memory
(merged_into and memory_merge's run), memory ~ memory (memory_link), memory -> vltm,
vltm or log row -> pattern, pattern -> knowledge (provenance, written by consolidate),
summary -> compression summary (the citations in its text). The root follows its links both
ways; a node reached from a source goes on to its sources, one reached from what was derived
goes on to what was derived from it; a related memory is shown, not followed.
"""

import re

from .errors import InputError
from .text import one_line

# kind: (table, uuid column or None, key column or None, text SQL, time SQL)
KINDS = {
    "memory": ("memory", None, "key", "text", "created_at"),
    "article": ("article", None, None, "title", "coalesce(published, fetched_at)"),
    "event": ("event", None, None, "description", "timestamp"),
    "summary": ("summary", None, None, "summary_text", "timestamp"),
    "vltm": ("very_long_term_memories", "memory_id", None,
             "CASE WHEN NOT json_valid(compressed_content) THEN compressed_content ELSE "
             "coalesce(json_extract(compressed_content, '$.text'), compressed_content) END",
             "promoted_at"),
    "pattern": ("memory_patterns", "pattern_id", None, "pattern_description", "discovered_at"),
    "knowledge": ("strategic_knowledge", "knowledge_id", None, "knowledge_summary",
                  "last_updated"),
    "feed": ("feed", None, "url", "coalesce(title, url)", "last_fetched"),
    "action": ("actionlog", None, None, "action_name || ' (' || status || ')'", "timestamp"),
    "mood": ("moodlog", None, None, "mood_vector", "timestamp"),
    "situation": ("situationlog", None, None, "situation_type || ': ' || prompt", "timestamp"),
    "decision": ("decisionlog", None, None, "raw_response", "timestamp"),
    "experiment": ("experimentlog", None, None, "hypothesis", "timestamp"),
}
DEPTH = 4
FANOUT = 10  # links shown per node and relation; the rest counted in `more`
TEXT = 160  # characters of a node's one-line text
SOURCE, DERIVED, RELATED = "source", "derived", "related"
RUN = "SELECT consolidation_date FROM memory_consolidations WHERE consolidation_id = ?"
CITED = re.compile(r"\[(\d+(?:, *\d+)*)\]\s*$", re.M)


def parse(text):
    """(kind, value) of `[KIND:]ID|KEY`: without a kind, a memory (its id or key), or a feed
    when the text is a URL. Raises InputError for an empty ref or an unknown kind."""
    text = (text or "").strip()
    if not text:
        raise InputError("give what to explain: [KIND:]ID or a memory's KEY")
    kind, sep, rest = text.partition(":")
    if sep and kind in KINDS:
        if not rest.strip():
            raise InputError(f"give the {kind}'s id after '{kind}:'")
        return kind, rest
    if re.match(r"^https?://", text):
        return "feed", text
    return "memory", text


def find(db, kind, value):
    """The node of a row: by integer id, by UUID (vltm, pattern, knowledge), by key (a
    memory's key, a feed's URL). Raises InputError when there is none."""
    table, uuid, key, _, _ = KINDS[kind]
    for column in ("id", uuid, key):
        if column is None or column == "id" and not re.fullmatch(r"-?\d{1,18}", value):
            continue
        node = _node(db, kind, column, int(value) if column == "id" else value)
        if node is not None:
            return node
    raise InputError(f"no {kind} {value[:80]!r}" + ("..." if len(value) > 80 else ""))


def _node(db, kind, column, value):
    table, uuid, key, text, time = KINDS[kind]
    extra = ", ".join(c for c in (uuid, key) if c) or "NULL"
    row = db.execute(f"SELECT id, {text}, {time}, {extra} FROM {table} WHERE {column} = ?",
                     [value]).fetchone()
    if row is None:
        return None
    node = {"kind": kind, "id": row[0]}
    if uuid or key:
        node["key"] = row[3]
    node["text"] = one_line(row[1], TEXT)
    node["time"] = row[2]
    return node


def ref(node):
    """The node's id as provenance stores it: a UUID, else the integer id as text."""
    return node["key"] if KINDS[node["kind"]][1] else str(node["id"])


def explain(db, text, *, depth=DEPTH, fanout=FANOUT):
    """The provenance tree of the row `text` names ([KIND:]ID|KEY), `depth` links deep.

    Returns:
        The root node (see the module's doc).
    """
    if depth < 0:
        raise InputError(f"depth: {depth} is not 0 or more")
    kind, value = parse(text)
    try:
        root = find(db, kind, value)
    except InputError:
        prefix, sep, _ = value.partition(":")
        if kind == "memory" and sep and re.fullmatch(r"[a-z_]{1,40}", prefix):
            raise InputError(f"no memory with the key {value[:80]!r}, and {prefix!r} is not "
                             f"a kind: {', '.join(KINDS)}") from None
        raise
    seen = {(root["kind"], root["id"])}
    _expand(db, root, {SOURCE, DERIVED, RELATED}, depth=depth, fanout=fanout, seen=seen,
            hops=hops_of(db))
    return root


def _expand(db, node, directions, *, depth, fanout, seen, hops):
    node["links"] = []
    if depth == 0:
        node["cut"] = "depth"
        return
    groups = {}
    for link in links(db, node, fanout=fanout, directions=directions, hops=hops):
        groups.setdefault((link["relation"], link["direction"]), []).append(link)
    for (relation, direction), group in groups.items():
        total = len(group) + sum(link.pop("uncounted", 0) for link in group)
        shown = group[:fanout]
        if total > len(shown):
            node.setdefault("more", []).append(
                {"relation": relation, "direction": direction, "count": total - len(shown)})
        for link in shown:
            child = link["node"]
            key = (child["kind"], child["id"])
            if key in seen:
                child["links"], child["cut"] = [], "seen"
            elif direction == RELATED:
                seen.add(key)
                child["links"], child["cut"] = [], "related"
            else:
                seen.add(key)
                _expand(db, child, {direction}, depth=depth - 1, fanout=fanout, seen=seen,
                        hops=hops)
            node["links"].append(link)


def links(db, node, *, fanout=FANOUT, directions=(SOURCE, DERIVED, RELATED), hops=None):
    """The links of a node in the directions asked: [{relation, direction, run, time, node}],
    at most fanout + 1 per relation, the first of a relation noting how many more there are
    (`uncounted`). hops: hops_of(db), asked once per tree."""
    found = []
    for kind, direction, hop in hops or hops_of(db):
        if kind in (None, node["kind"]) and direction in directions:
            found += hop(db, node, fanout)
    return found


def _link(relation, direction, node, *, run=None, time=None):
    link = {"relation": relation, "direction": direction}
    if run is not None:
        link["run"] = run
    if time is not None:
        link["time"] = time
    link["node"] = node
    return link


def _counted(found, total):
    """found, its first link noting how many more there are than found (`uncounted`)."""
    if found and total > len(found):
        found[0]["uncounted"] = total - len(found)
    return found


def _run_time(db, run):
    row = db.execute(RUN, [run]).fetchone() if run else None
    return row[0] if row else None


def _articles_of_feed(db, node, fanout):
    rows = db.execute("SELECT id FROM article WHERE feed_id = ? ORDER BY id LIMIT ?",
                      [node["id"], fanout + 1]).fetchall()
    found = [_link("fetched", DERIVED, n, time=n["time"])
             for (i,) in rows if (n := _node(db, "article", "id", i))]
    total = len(found) if len(rows) <= fanout else db.execute(
        "SELECT count(*) FROM article WHERE feed_id = ?", [node["id"]]).fetchone()[0]
    return _counted(found, total)


def _feed_of_article(db, node, fanout=None):
    row = db.execute("SELECT feed_id, fetched_at FROM article WHERE id = ?",
                     [node["id"]]).fetchone()
    feed = row and row[0] is not None and _node(db, "feed", "id", row[0])
    return [_link("fetched", SOURCE, feed, time=row[1])] if feed else []


def _events_of_article(db, node, fanout):
    return _events(db, "article_id", "event_id", "event", DERIVED, node, fanout)


def _articles_of_event(db, node, fanout):
    return _events(db, "event_id", "article_id", "article", SOURCE, node, fanout)


def _events(db, this, other, kind, direction, node, fanout):
    rows = db.execute(f"SELECT {other} FROM event_article WHERE {this} = ? ORDER BY {other} "
                      f"LIMIT ?", [node["id"], fanout + 1]).fetchall()
    found = [_link("clustered", direction, n) for (i,) in rows if (n := _node(db, kind, "id", i))]
    total = len(found) if len(rows) <= fanout else db.execute(
        f"SELECT count(*) FROM event_article WHERE {this} = ?", [node["id"]]).fetchone()[0]
    return _counted(found, total)


def _merge_run(db, memory_id, survivor_id):
    """(run, time) of the latest merge of a memory into the survivor."""
    row = db.execute(
        "SELECT m.consolidation_id, c.consolidation_date FROM memory_merge m LEFT JOIN "
        "memory_consolidations c USING (consolidation_id) WHERE m.memory_id = ? "
        "AND m.survivor_id = ? AND m.role = 'merged' ORDER BY c.consolidation_date DESC "
        "LIMIT 1", [memory_id, survivor_id]).fetchone()
    return row or (None, None)


def _merged_into(db, node, fanout=None):
    row = db.execute("SELECT merged_into FROM memory WHERE id = ?", [node["id"]]).fetchone()
    survivor = row and row[0] is not None and _node(db, "memory", "id", row[0])
    if not survivor:
        return []
    run, time = _merge_run(db, node["id"], survivor["id"])
    return [_link("merged", DERIVED, survivor, run=run, time=time)]


def _merged_from(db, node, fanout):
    rows = db.execute("SELECT id FROM memory WHERE merged_into = ? ORDER BY id LIMIT ?",
                      [node["id"], fanout + 1]).fetchall()
    found = []
    for (i,) in rows:
        run, time = _merge_run(db, i, node["id"])
        found.append(_link("merged", SOURCE, _node(db, "memory", "id", i), run=run, time=time))
    total = len(found) if len(rows) <= fanout else db.execute(
        "SELECT count(*) FROM memory WHERE merged_into = ?", [node["id"]]).fetchone()[0]
    return _counted(found, total)


def _linked(db, node, fanout):
    rows = db.execute(
        "SELECT related_id, consolidation_id, created_at FROM memory_link WHERE memory_id = ? "
        "UNION ALL SELECT memory_id, consolidation_id, created_at FROM memory_link "
        "WHERE related_id = ? LIMIT ?", [node["id"], node["id"], fanout + 1]).fetchall()
    found = [_link("linked", RELATED, n, run=run, time=time) for i, run, time in rows
             if (n := _node(db, "memory", "id", i))]
    total = len(found) if len(rows) <= fanout else db.execute(
        "SELECT (SELECT count(*) FROM memory_link WHERE memory_id = ?) + "
        "(SELECT count(*) FROM memory_link WHERE related_id = ?)",
        [node["id"], node["id"]]).fetchone()[0]
    return _counted(found, total)


def _cited(db, node, fanout):
    """A compression summary's sources: the summary ids its sentences cite."""
    ids = sorted({int(i) for m in CITED.finditer(_summary_text(db, node))
                  for i in m.group(1).split(",")})
    if not ids:
        return []
    run, time = _compressed_by(db, node["id"])
    found = [_link("compressed", SOURCE, n, run=run, time=time) for i in ids[:fanout + 1]
             if (n := _node(db, "summary", "id", i))]
    return _counted(found, len(ids))


def _summary_text(db, node):
    row = db.execute("SELECT summary_text FROM summary WHERE id = ? AND category = "
                     "'compression'", [node["id"]]).fetchone()
    return row[0] if row and isinstance(row[0], str) else ""


def _compressed_by(db, summary_id):
    """(run, time) of the compress run that wrote a compression summary. Runs are few: a
    scan of their records."""
    row = db.execute(
        "SELECT consolidation_id, consolidation_date FROM memory_consolidations WHERE "
        "CASE WHEN json_valid(consolidation_results) THEN "
        "json_extract(consolidation_results, '$.knowledge.summary_id') END = ? "
        "ORDER BY consolidation_date LIMIT 1", [summary_id]).fetchone()
    return row or (None, None)


def _compressed_in(db, node, fanout=None):
    """The compression summaries that cite a summary: among those written after it."""
    found = []
    for i, text in db.execute("SELECT id, summary_text FROM summary WHERE id > ? AND "
                              "category = 'compression' ORDER BY id", [node["id"]]):
        cited = {int(x) for m in CITED.finditer(text if isinstance(text, str) else "")
                 for x in m.group(1).split(",")}
        if node["id"] in cited:
            run, time = _compressed_by(db, i)
            found.append(_link("compressed", DERIVED, _node(db, "summary", "id", i),
                               run=run, time=time))
    return found


PROVENANCE = {
    SOURCE: ("SELECT from_kind, from_id, relation, run_id, created_at FROM provenance "
             "WHERE to_kind = ? AND to_id = ?"),
    DERIVED: ("SELECT to_kind, to_id, relation, run_id, created_at FROM provenance "
              "WHERE from_kind = ? AND from_id = ?"),
}


def stored(db):
    """Whether the file has the provenance table (a read-only file may predate m011)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                      "name = 'provenance'").fetchone() is not None


def _sources(db, node, fanout):
    return _provenance(db, node, SOURCE, fanout)


def _derived(db, node, fanout):
    return _provenance(db, node, DERIVED, fanout)


def _provenance(db, node, direction, fanout):
    """The links provenance stores: memory from article, vltm from memory, pattern from
    vltm or log rows, knowledge from patterns (its rows are ordered by the index)."""
    params = [node["kind"], ref(node)]
    by_relation, counts = {}, {}
    for kind, value, relation, run, time in db.execute(PROVENANCE[direction], params):
        counts[relation, kind] = counts.get((relation, kind), 0) + 1
        if counts[relation, kind] > fanout + 1 or kind not in KINDS:
            continue
        table, uuid = KINDS[kind][:2]
        other = _node(db, kind, uuid or "id", value if uuid else _integer(value))
        if other is not None:
            by_relation.setdefault((relation, kind), []).append(
                _link(relation, direction, other, run=run, time=time or _run_time(db, run)))
    return [link for key, found in by_relation.items()
            for link in _counted(found, counts[key])]


# (the node kind a hop starts from, None for any; its direction; the hop)
HOPS = (
    ("feed", DERIVED, _articles_of_feed),
    ("article", SOURCE, _feed_of_article),
    ("article", DERIVED, _events_of_article),
    ("event", SOURCE, _articles_of_event),
    ("memory", DERIVED, _merged_into),
    ("memory", SOURCE, _merged_from),
    ("memory", RELATED, _linked),
    ("summary", SOURCE, _cited),
    ("summary", DERIVED, _compressed_in),
    (None, SOURCE, _sources),
    (None, DERIVED, _derived),
)


def hops_of(db):
    """HOPS, without those that read provenance when the file lacks it (a read-only file may
    predate m011)."""
    if stored(db):
        return HOPS
    return tuple(h for h in HOPS if h[2] not in (_sources, _derived))


def _integer(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def source_node(db, text):
    """The row a memory says it came from (`log memory --from KIND:ID`). Raises InputError,
    before anything is written, when text is not KIND:ID or names no row."""
    kind, _, value = text.partition(":")
    if kind not in KINDS or not value:
        raise InputError(f"from: {text!r} is not KIND:ID (a kind: {', '.join(KINDS)})")
    return find(db, kind, value)


def source_statements(nodes, memory_ids):
    """The statements that record each memory as made from its row: nodes[i] (source_node's,
    or None) for memory_ids[i]. Plain data: they run in the memories' own transaction."""
    return [(("INSERT OR IGNORE INTO provenance(from_kind, from_id, to_kind, to_id, relation) "
              "VALUES (?, ?, 'memory', ?, 'remembered')"), [n["kind"], ref(n), str(m)])
            for n, m in zip(nodes, memory_ids) if n]


def flatten(root):
    """The tree as rows (for csv and jsonl): depth, relation, direction, run, link time, then
    the node's kind, id, key, text, time; the root first, then depth first."""
    out = []

    def walk(node, link, level):
        out.append({"depth": level, "relation": link.get("relation"),
                    "direction": link.get("direction"), "run": link.get("run"),
                    "link_time": link.get("time"), "kind": node["kind"], "id": node["id"],
                    "key": node.get("key"), "text": node["text"], "time": node["time"],
                    "cut": node.get("cut")})
        for child in node.get("links", []):
            walk(child["node"], child, level + 1)

    walk(root, {}, 0)
    return out
