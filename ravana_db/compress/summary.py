"""The extractive summary: a text's sentences, the most representative and non-redundant kept.

Sentences are picked by maximal marginal relevance (Carbonell and Goldstein 1998) around the
centroid of their vectors (centroid-based summarisation, Radev et al. 2004), within a character
budget, a near-duplicate of a chosen sentence never chosen too, and put back in source order.
No LLM: the same input gives the same summary.
"""

import re

BUDGET = 1200  # characters of the compression summary's sentences
MIN_WORDS = 3  # shorter sentences ("Done.") are chosen only when nothing else is there
LAMBDA = 0.7  # MMR: weight of relevance against redundancy
DUPLICATE = 0.8  # a sentence this similar to a chosen one is never chosen too (a paraphrase)


def cite(sentence, ids):
    """A line of the compression summary: the sentence and the summaries it came from."""
    return f"{sentence} [{', '.join(map(str, ids))}]"


CITED = re.compile(r"(.*) \[([0-9]+(?:, [0-9]+)*)\]")


def cited(text):
    """The (sentence, [summary ids]) lines of an extractive compression summary."""
    return [(m[1], [int(i) for i in m[2].split(", ")])
            for m in map(CITED.fullmatch, text.splitlines()) if m]


def extract(sources, embedder, *, budget=BUDGET):
    """The extractive summary of (id, text) summaries, in source order.

    Returns:
        (sentence, [ids of the summaries holding it]) pairs: every sentence is one of theirs,
        whitespace collapsed; a sentence in several summaries is one candidate citing them
        all (and weighs more in the centroid).
    """
    units = {}
    for id, text in sources:
        for sentence in sentences(text):
            ids = units.setdefault(sentence, [])
            if id not in ids:
                ids.append(id)
    if not units:
        return []
    candidates = [(s, ids) for s, ids in units.items() if len(s.split()) >= MIN_WORDS]
    candidates = candidates or list(units.items())
    vectors = embedder.embed([s for s, _ in candidates])
    chosen = select(vectors, [len(s) for s, _ in candidates], budget=budget,
                    weights=[len(ids) for _, ids in candidates])
    if not chosen:  # not one sentence fits: the most central one (chosen first), cut
        best = select(vectors, [0] * len(candidates), budget=0,
                      weights=[len(ids) for _, ids in candidates])[0]
        return [(cut(candidates[best][0], budget), candidates[best][1])]
    return [candidates[i] for i in sorted(chosen)]


BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+")
BULLET = re.compile(r"^\s*(?:[-*•·]|[0-9]{1,3}[.)])\s+")


def sentences(text):
    """The sentences of a text, in order, whitespace collapsed. A line ends one; so does `.`,
    `!` or `?` before a space and a word that does not start in lower case (`e.g. this`
    stays whole). List bullets are dropped; pieces without a letter or digit too."""
    found = []
    for line in text.splitlines():
        line, start = BULLET.sub("", line), 0
        for match in BOUNDARY.finditer(line):
            rest = line[match.end():]
            if rest and not rest[0].islower():
                found.append(line[start:match.end()])
                start = match.end()
        found.append(line[start:])
    return [" ".join(s.split()) for s in found if any(c.isalnum() for c in s)]


def select(vectors, lengths, *, budget, weights=None, lam=LAMBDA, duplicate=DUPLICATE):
    """Maximal marginal relevance within a budget: which sentences to keep.

    Relevance is the cosine similarity to the (weighted) centroid of all the sentences;
    each step takes the sentence with the best lam * relevance - (1 - lam) * (similarity to
    the closest one taken), among those that still fit. Deterministic: ties go to the earlier.

    Args:
        vectors: unit vectors, one per sentence.
        lengths: the sentences' lengths; the ones kept, a separator apart, fit the budget.
        weights: how much each sentence counts in the centroid (default 1).
        duplicate: a sentence at least this similar to one taken is never taken.

    Returns:
        Indexes of the sentences kept, in the order chosen.
    """
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float64)
    lengths = np.asarray(lengths)
    count = len(lengths)
    if not count:
        return []
    weights = np.ones(count) if weights is None else np.asarray(weights, dtype=np.float64)
    centroid = weights @ vectors
    norm = np.linalg.norm(centroid)
    relevance = vectors @ (centroid / norm) if norm > 0 else np.zeros(count)
    redundancy = np.zeros(count)
    open_ = np.ones(count, dtype=bool)
    chosen, left = [], budget
    while True:
        fits = open_ & (lengths <= left)
        if not fits.any():
            return chosen
        score = np.where(fits, lam * relevance - (1 - lam) * redundancy, -np.inf)
        best = int(np.argmax(score))
        chosen.append(best)
        left -= lengths[best] + 1
        similarity = vectors @ vectors[best]
        redundancy = np.maximum(redundancy, similarity)
        open_ &= similarity < duplicate
        open_[best] = False


def cut(text, budget):
    """text cut to at most budget characters, at a word, with an ellipsis."""
    if len(text) <= budget:
        return text
    head = text[:max(budget - 1, 1)]
    return (head.rsplit(" ", 1)[0] if " " in head else head).rstrip() + "…"

