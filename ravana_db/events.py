"""Events: group recent articles from several feeds into the stories they tell.

Single-pass incremental clustering, as in topic detection and tracking (TDT: Allan, Papka and
Lavrenko 1998; Yang, Pierce and Carbonell 1998). Each article not yet in a cluster, in time
order, is compared with the centroids of the clusters active within `window_days` of its time:
it joins the most similar one, or starts its own cluster (whose id is the article's id, so ids
are stable). Similarity is the cosine of the article's vector with the cluster's centroid,
discounted by how long the cluster has been quiet (exp(-gap / window), the TDT time penalty:
it keeps a later development or a look-alike story apart from an older one; bench/events_eval.py
shows it helping on the labelled headlines and on stories held out from tuning).

A cluster with enough articles from enough distinct sources is an event. Planning (reads and
numpy) happens first; then one store.write upserts the events and, in the same transaction,
records each article's cluster and the event's links.
"""

import math
import re
from collections import Counter, deque
from datetime import datetime, timezone

from .errors import InputError
from .search.query import STOPWORDS
from .store import write
from .times import format_time
from .vectors import one as vector_of

# The middle of the flat region of B-cubed F1 against the threshold on the labelled headlines
# (bench/events_eval.py): neighbouring thresholds score nearly the same.
THRESHOLD = 0.45
DAY = 86400
KEYWORDS = 5
CHUNK = 500  # ids per `IN (...)` list
# Words that headlines use about anything: never what sets a story apart.
COMMON = STOPWORDS | frozenset(
    "after again against ahead all also amid another any back before being between both "
    "could day days during each first here just last like made make many may more most much "
    "must near new news next now off one only other out over own report reports said same "
    "says say set should since some still such take takes three through two under until up "
    "very via what's while week year years yet monday tuesday wednesday thursday friday "
    "saturday sunday today yesterday tomorrow".split())
# Letters, with inner apostrophes (don't) but not a possessive 's (Turkey's: Turkey, s).
WORD = re.compile(r"[^\W\d_]+(?:['’](?!s\b)[^\W\d_]+)*")

TIME = "coalesce(unixepoch(d.ts, 'subsec'), unixepoch(a.fetched_at, 'subsec'))"
SOURCE = "coalesce(nullif(trim(a.source), ''), 'feed ' || a.feed_id)"
PENDING = f"""
SELECT a.id, a.title, a.summary, {SOURCE}, {TIME}, v.embedding
FROM article a
JOIN doc d ON d.kind = 'article' AND d.ref = CAST(a.id AS TEXT)
JOIN doc_vec v ON v.doc_id = d.id
WHERE a.cluster_id IS NULL
"""
# Driven by the articles' time index (doc.ts is the article's published, else fetched_at):
# `+d.kind`, as in that partial index's condition, lets the planner use it and keeps it from
# walking every article through the (kind, ref) index instead.
WINDOW = f"""
SELECT a.id, {TIME}, a.cluster_id, a.title, a.summary, v.embedding
FROM doc d
JOIN article a ON a.id = CAST(d.ref AS INTEGER)
JOIN doc_vec v ON v.doc_id = d.id
WHERE d.ts BETWEEN ? AND ? AND +d.kind = 'article' AND a.cluster_id IS NOT NULL
"""
MEMBERS = f"""
SELECT a.id, a.cluster_id, a.title, a.summary, {SOURCE}, {TIME}, v.embedding
FROM article a
JOIN doc d ON d.kind = 'article' AND d.ref = CAST(a.id AS TEXT)
LEFT JOIN doc_vec v ON v.doc_id = d.id
WHERE a.cluster_id IN ({{}})
"""
ASSIGN = "UPDATE article SET cluster_id = ? WHERE id = ? AND cluster_id IS NULL"
LINK = """
INSERT OR IGNORE INTO event_article(event_id, article_id)
SELECT e.id, a.id FROM article a JOIN event e ON e.cluster_id = a.cluster_id
WHERE a.cluster_id IN ({})
"""
# Another detect() may have placed these articles between our reads and our write: an event
# whose cluster then breaks the rule (too few articles or sources) is dropped.
BROKEN = f"""
DELETE FROM event WHERE cluster_id IN ({{0}}) AND cluster_id NOT IN (
    SELECT a.cluster_id FROM article a WHERE a.cluster_id IN ({{0}})
    GROUP BY a.cluster_id HAVING count(*) >= ? AND count(DISTINCT {SOURCE}) >= ?)
"""


def detect(db, *, embedder, window_days=3, min_articles=2, min_sources=2, threshold=THRESHOLD):
    """Put every article that has a vector but no cluster into one, and store the events.

    Incremental: only unclustered articles are placed (a later article joins an existing
    cluster or starts one); running it again with nothing new changes nothing.

    Args:
        embedder: embeds the events' text (outside the write lock).
        window_days: a cluster is a candidate while it has an article within this many days
            of the new one; it is also the time constant of the quiet-cluster discount.
        min_articles, min_sources: what makes a cluster an event (sources: `article.source`,
            else the feed).
        threshold: least similarity for an article to join a cluster.

    Returns:
        Counts: articles (clustered now), clusters_joined (clusters that existed before this
        run and got articles), clusters_started, events_created, events_updated (events that
        got articles; their description and keywords may change), waiting_for_vectors
        (unclustered articles without a vector yet: placed by a later run).
    """
    from .index import recorded_model
    from .models import Event

    if not window_days > 0:
        raise InputError(f"window_days: {window_days!r} must be more than 0")
    dim = recorded_model(db)[1]  # a blob of another size (another client's) is no vector
    pending = sorted((Member(id, title, summary, source, t, vector_of(blob, dim))
                      for id, title, summary, source, t, blob in db.execute(PENDING)
                      if t is not None),
                     key=lambda m: (m.time, m.id))
    unclustered = db.execute("SELECT count(*) FROM article WHERE cluster_id IS NULL").fetchone()[0]
    report = {"articles": len(pending), "clusters_joined": 0, "clusters_started": 0,
              "events_created": 0, "events_updated": 0,
              "waiting_for_vectors": unclustered - len(pending)}
    if not pending:
        return report
    span = window_days * DAY
    bounds = [_iso(pending[0].time - span), _iso(pending[-1].time + span)]
    window = [(id, t, cluster, title, summary, vector_of(blob, dim))
              for id, t, cluster, title, summary, blob in db.execute(WINDOW, bounds)
              if t is not None]
    assigned = plan([(m.id, m.time, m.vector) for m in pending],
                    [(id, t, cluster, v) for id, t, cluster, *_, v in window],
                    span=span, threshold=threshold)

    new = {m.id: m for m in pending}
    touched = sorted(set(assigned.values()))
    members = {cluster: [] for cluster in touched}
    for chunk in _chunks(touched):
        for id, cluster, title, summary, source, t, blob in db.execute(
                MEMBERS.format(_marks(chunk)), chunk):
            vector = None if blob is None else vector_of(blob, dim)
            members[cluster].append(Member(id, title, summary, source, t, vector))
    stored = {cluster for cluster, found in members.items() if found}
    for id, cluster in assigned.items():
        members[cluster].append(new[id])
    report["clusters_joined"] = len(stored)
    report["clusters_started"] = len(touched) - len(stored)

    # Background for keywords: the words of every article in the window, and of the new ones
    # (counted one article at a time: a set per article would hold every long text's words).
    df, documents = Counter(), len(window) + len(new)
    for title, summary in [(w[3], w[4]) for w in window] + [(m.title, m.summary)
                                                             for m in new.values()]:
        df.update(_words(title, summary))
    events = []
    for cluster, found in members.items():
        if len(found) < min_articles or len({m.source for m in found}) < min_sources:
            continue
        description, words = describe(found, df, documents)
        first = min(m.time for m in found if m.time is not None)
        events.append(Event(cluster_id=cluster, description=description, keywords=words,
                            timestamp=_iso(first)))

    statements = [(ASSIGN, [cluster, id]) for id, cluster in assigned.items()]
    for chunk in _chunks([e.cluster_id for e in events]):
        statements.append((LINK.format(_marks(chunk)), chunk))
        statements.append((BROKEN.format(_marks(chunk)),
                           [*chunk, *chunk, min_articles, min_sources]))
    results = write(db, events, embedder=embedder, statements=statements)
    statuses = Counter(r["status"] for r in results)
    report["events_created"] = statuses["inserted"]
    report["events_updated"] = statuses["updated"] + statuses["existing"]
    return report


class Member:
    """An article of a cluster, as describe() needs it."""

    __slots__ = ("id", "title", "summary", "source", "time", "vector")

    def __init__(self, id, title, summary, source, time, vector):
        self.id, self.title, self.summary = id, title, summary
        self.source, self.time, self.vector = source, time, vector


class Clusters:
    """The clusters plan() slides along time: per cluster, the sum of the vectors of its
    articles inside the window (its centroid, unnormalised) and that sum's length, how many
    articles, and the latest one's time; slots are rows, ids the clusters' ids."""

    def __init__(self, size, dim):
        import numpy as np

        self.sums = np.zeros((size, dim), dtype=np.float32)
        self.lengths = np.ones(size, dtype=np.float32)
        self.counts = np.zeros(size, dtype=np.int64)
        self.latest = np.full(size, -np.inf)
        self.ids, self.slots = [], {}

    def slot(self, cluster):
        """The row of a cluster, given one when first seen."""
        if cluster not in self.slots:
            self.slots[cluster] = len(self.ids)
            self.ids.append(cluster)
        return self.slots[cluster]

    def move(self, s, vector, *, sign):
        """Add (sign 1) or take out (-1) an article's vector."""
        import numpy as np

        self.sums[s] += sign * vector
        self.counts[s] += sign
        self.lengths[s] = max(float(np.sqrt(self.sums[s] @ self.sums[s])), 1e-6)

    def seen(self, s, t):
        """Note an article's time in a cluster."""
        self.latest[s] = max(self.latest[s], t)

    def nearest(self, vector, t, *, span, threshold, decay):
        """The row of the most similar active cluster, if similar enough, else None."""
        import numpy as np

        n = len(self.ids)
        active = np.flatnonzero(self.counts[:n])
        if not active.size:
            return None
        if 2 * active.size > n:  # mostly active: one pass beats a gathered copy
            similarity = (self.sums[:n] @ vector)[active] / self.lengths[active]
        else:
            similarity = (self.sums[active] @ vector) / self.lengths[active]
        if decay:
            similarity *= np.exp(-np.maximum(0.0, t - self.latest[active]) / span)
        top = int(np.argmax(similarity))
        return int(active[top]) if similarity[top] >= threshold else None


def plan(pending, window, *, span, threshold, decay=True):
    """Single-pass clustering: which cluster each pending article goes to.

    Args:
        pending: (article id, epoch seconds, unit vector) of unclustered articles, in time order.
        window: (article id, epoch seconds, cluster id, unit vector) of clustered articles
            within `span` of the pending ones, in any order.
        span: seconds; a cluster is a candidate while it has an article within span of the
            new one, and its similarity is discounted by exp(-quiet time / span).
        threshold: least (discounted) cosine similarity to join.
        decay: discount quiet clusters (False: plain centroid similarity, for comparison).

    Returns:
        {article id: cluster id}; a new cluster's id is its first article's id.
    """
    if not pending:
        return {}
    window = sorted(window, key=lambda w: w[1])
    clusters = Clusters(len(pending) + len({w[2] for w in window}), pending[0][-1].shape[0])
    placed = deque()  # (time, slot, vector) of pending articles placed so far, in time order
    enter = leave = 0
    assigned = {}
    for id, t, vector in pending:
        # Slide the window to [t - span, t + span]: articles enter, then the oldest leave.
        while enter < len(window) and window[enter][1] <= t + span:
            _, time, cluster, v = window[enter]
            clusters.move(clusters.slot(cluster), v, sign=1)
            clusters.seen(clusters.slots[cluster], time)
            enter += 1
        while leave < enter and window[leave][1] < t - span:
            clusters.move(clusters.slots[window[leave][2]], window[leave][3], sign=-1)
            leave += 1
        while placed and placed[0][0] < t - span:
            _, s, v = placed.popleft()
            clusters.move(s, v, sign=-1)
        best = clusters.nearest(vector, t, span=span, threshold=threshold, decay=decay)
        if best is None:
            best = clusters.slot(id)
        clusters.move(best, vector, sign=1)
        clusters.seen(best, t)
        placed.append((t, best, vector))
        assigned[id] = clusters.ids[best]
    return assigned


def describe(members, df, documents):
    """An event's description and keywords.

    Args:
        members: the cluster's Member rows (vector None: not used for the centroid).
        df: how many background documents hold each word; documents: how many there are.

    Returns:
        (the headline closest to the centroid, cleaned; its distinctive words, by tf-idf,
        comma-separated, or None).
    """
    import numpy as np

    # Sorted by id: the same members always give the same sums, so the same description.
    # Every cluster described holds a new article, which has a vector.
    voters = sorted((m for m in members if m.vector is not None), key=lambda m: m.id)
    vectors = np.stack([m.vector for m in voters])
    scores = vectors @ vectors.sum(axis=0)
    central = voters[int(np.argmax(scores))]
    return clean(central.title, central.source), keywords(members, df, documents)


def keywords(members, df, documents, n=KEYWORDS):
    """The words that set a cluster apart: in how many of its articles a word appears, times
    its inverse document frequency in the background; shared by at least two articles (one
    when the cluster has one). Each word as people write it, not a stem."""
    counts, forms = Counter(), {}
    for m in members:
        counts.update(_words(m.title, m.summary))
        for text in (m.title, m.summary or ""):
            for position, match in enumerate(WORD.finditer(text)):
                # A sentence's first word is capitalised whatever it is: it says nothing.
                if position:
                    forms.setdefault(match.group().casefold(), Counter())[match.group()] += 1
    least = min(2, len(members))
    scored = [(c * math.log(max(documents, c) / max(df.get(w, 0), c)), w)
              for w, c in counts.items() if c >= least]
    best = [w for score, w in sorted(scored, key=lambda s: (-s[0], s[1])) if score > 0][:n]
    return ", ".join(_form(w, forms) for w in best) or None


def clean(title, source=None):
    """A headline as a description: whitespace collapsed, a trailing ' - Outlet' or
    ' | Outlet' naming its own source removed."""
    text = " ".join(title.split())
    if source:
        for separator in (" - ", " | ", " – ", " — "):
            head, sep, tail = text.rpartition(separator)
            if sep and head and tail.casefold() == source.strip().casefold():
                return head
    return text


def _words(title, summary):
    """The content words of an article, in lower case, once each."""
    text = f"{title}\n{summary or ''}".casefold()
    return {w for w in WORD.findall(text) if len(w) > 1 and w not in COMMON}


def _form(word, forms):
    """How people write the word: lower case if anyone did, else the commonest form."""
    written = forms.get(word)
    if not written or word in written:
        return word
    return written.most_common(1)[0][0]


# The stored times' range (years 1 to 9999): a window reaching past it stops at its end.
FIRST = datetime(1, 1, 1, tzinfo=timezone.utc).timestamp()
LAST = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc).timestamp()


def _iso(epoch):
    """Epoch seconds as a stored time, clamped to years 1 to 9999: an article dated at either
    end (or a time another client wrote) is a time like any other, never an error."""
    return format_time(datetime.fromtimestamp(min(max(epoch, FIRST), LAST), timezone.utc))


def _chunks(items):
    for start in range(0, len(items), CHUNK):
        yield items[start:start + CHUNK]


def _marks(items):
    return ", ".join("?" * len(items))
