"""The second duplicate check: two texts that say the same thing in other words.

It runs only on pairs the first stage already found (a shared SimHash band, cosine at least
MIN_COSINE) and that the strict check (duplicates.check) told apart. The hard guards are
absolute: the numbers, names and other capitalised words, dates, negations and function
words (pronouns, prepositions, quantifiers, auxiliaries) must be the same words in the same
order. Of the content words, at most MAX_PAIRS, and at most one in WORDS_PER_PAIR, may differ,
each replaced one for one (nothing added or dropped) by a word of the same lemma or one
whose first (most frequent) WordNet sense is the same synset ("finished" / "completed":
finish.v.01 is complete.v.01). A second or later sense is never enough: a rare sense makes
"run" a synonym of "campaign" and "bank" of "rely".
"""

import difflib

from . import duplicates, wordnet

MIN_COSINE = 0.9  # the look-alike links' own threshold: the pairs the first stage yields
MAX_PAIRS = 2
WORDS_PER_PAIR = 3
MAX_CHARS = 2000  # longer texts are left to the strict check (bounded work per pair)
FUNCTION = frozenset("""
i me my mine myself we us our ours you your yours he him his she her hers it its they them
their theirs this these those who whom whose which what where when why how there here
to from in on at by for with of off over under above below before after between into onto
out up down through during since until till against among across behind beyond near via
per than as about around along toward towards upon within inside outside
and or but nor so yet if because although though unless while whereas either neither both
all some any every each few many much more most less least several only even just still
already again also once twice first last next previous other another same such
will would shall should can could may might must be have do get
now then today tomorrow yesterday tonight ago soon later early late always never sometimes
often usually ever seldom rarely daily weekly monthly yearly
""".split())
DATES = frozenset("""
january february march april may june july august september october november december
jan feb mar apr jun jul aug sep sept oct nov dec monday tuesday wednesday thursday friday
saturday sunday mon tue tues wed thu thur thurs fri sat sun morning afternoon evening night
noon midnight weekend week month year hour minute second am pm
""".split())


def check(a, b, *, similarity):
    """Whether texts a and b say the same thing, by the second check.

    Args:
        similarity: the cosine similarity of their vectors (below MIN_COSINE: never).

    Returns:
        (bool, evidence): evidence is a dict: rule ("same meaning" or why not), pairs
        ([[word a, word b, how]]), cosine.
    """
    evidence = {"rule": "", "pairs": [], "cosine": round(float(similarity), 4)}
    why, pairs = _differences(a, b, similarity)
    for (_, wa, fa), (_, wb, fb) in pairs if why is None else []:
        how = same_word(wa, wb) if not (fa or fb) else None
        if how is None:
            why = f"words differ: {wa} / {wb}"
            break
        evidence["pairs"].append([wa, wb, how])
    evidence["rule"] = why or "same meaning"
    if why is not None:
        evidence["pairs"] = []
    return why is None, evidence


def _differences(a, b, similarity):
    """(why not, None) when a guard fails, else (None, the differing canonical word pairs)."""
    if not isinstance(a, str) or not isinstance(b, str):
        return "not text", None
    if similarity < MIN_COSINE:
        return f"cosine below {MIN_COSINE}", None
    if len(a) > MAX_CHARS or len(b) > MAX_CHARS:
        return f"longer than {MAX_CHARS} characters", None
    ca, cb = duplicates.canonical(a), duplicates.canonical(b)
    if not ca or not cb:
        return "no content words", None
    for name, pick in (("numbers", _numbers), ("names", _names), ("negations", _negations)):
        if pick(ca) != pick(cb):
            return f"{name} differ", None
    ka, kb = [k for k, _, _ in ca], [k for k, _, _ in cb]
    pairs = []
    matcher = difflib.SequenceMatcher(a=ka, b=kb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if op != "replace" or i2 - i1 != j2 - j1:
            return "words added or dropped", None
        pairs += list(zip(ca[i1:i2], cb[j1:j2]))
    if not pairs:
        return "same words (the strict check's case)", None
    if len(pairs) > MAX_PAIRS or len(pairs) * WORDS_PER_PAIR > min(len(ca), len(cb)):
        return f"{len(pairs)} of {min(len(ca), len(cb))} words differ", None
    return None, pairs


def same_word(a, b):
    """How words a and b (lower case) mean the same, or None: "same lemma X" or "same first
    sense X.p.01 = Y.p.01". Function words, dates, negations and numbers never do."""
    for w in (a, b):
        if w in FUNCTION or w in DATES or w in duplicates.NEGATIONS or not w.isalpha():
            return None
    shared = wordnet.all_lemmas(a) & wordnet.all_lemmas(b)
    if shared:
        pos, lemma = min(shared)
        return f"same lemma {lemma}.{pos}"
    senses_b = wordnet.first_senses(b)
    for (pos, offset), lemma in sorted(wordnet.first_senses(a).items()):
        other = senses_b.get((pos, offset))
        if other is not None:
            return f"same first sense {lemma}.{pos}.01 = {other}.{pos}.01"
    return None


def _numbers(words):
    return [k for k, _, _ in words if duplicates.is_number(k)]


def _names(words):
    return [s for _, s, fixed in words if fixed]


def _negations(words):
    return [s for _, s, _ in words if s in duplicates.NEGATIONS]


def describe(evidence):
    """The evidence as one line for memory_merge.reason and the reports."""
    pairs = "; ".join(f"{a} / {b}: {how}" for a, b, how in evidence["pairs"])
    return f"{evidence['rule']} (cosine {evidence['cosine']:.3f}): {pairs}"


def duplicate(a, b, *, similarity):
    """Whether a and b are duplicates by either check: the strict one, then this one."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    if duplicates.check(a, b)[0]:
        return True
    return check(a, b, similarity=similarity)[0]
