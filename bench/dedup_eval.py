"""How well the duplicate checks tell the same fact in other words from two facts that look
alike: false merges and recall, strict check alone (today) and with the second check
(consolidate/meaning.py), on public text.

No public paraphrase or duplicate-question set installs from PyPI, npm or Debian without a
download at run time, so the pairs are built from public text: sentences of the NFCorpus
abstracts (/work/shared/eval/nfcorpus, or $NFCORPUS), each turned into
  - same-meaning pairs: one or two words replaced by a WordNet synonym (a lemma of one of
    the word's synsets: any sense, as a writer picks a synonym, not only the first one the
    check accepts), or an inflection changed;
  - different-meaning look-alikes (same words, another fact): a number changed, a name
    (capitalised word) swapped for another, a negation added, two entities swapped, one
    content word replaced by another word of its part of speech, or by an antonym.
Sentences are split by a hash of their text into a training half (where the thresholds were
chosen) and a held-out half. Every text is embedded with the real model: a pair is merged
when the strict check passes, or its cosine reaches meaning.MIN_COSINE and the second check
passes (as consolidation does for the pairs its bands find). The fixture's 132 look-alike
pairs (fixtures/consolidate/lookalikes.jsonl) are checked too.

    python bench/dedup_eval.py [--sentences 1500]
"""

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import sys
from pathlib import Path

from ravana_db.consolidate import duplicates, meaning, wordnet
from ravana_db.embed import Embedder

ROOT = Path(__file__).parent.parent
CORPUS = Path(os.environ.get("NFCORPUS", "/work/shared/eval/nfcorpus")) / "corpus.jsonl.gz"
WORD = re.compile(r"[A-Za-z]+")


def sentences(limit):
    out, seen = [], set()
    with gzip.open(CORPUS, "rt") as f:
        for line in f:
            for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]):
                if 40 <= len(s) <= 200 and s not in seen:
                    seen.add(s)
                    out.append(s)
    random.Random(21).shuffle(out)
    return out[:limit]


def index_lines(pos):
    """(lemma, [synset offsets]) of one WordNet index file."""
    with open(wordnet.folder() / f"index.{wordnet.POS[pos]}", encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue
            fields = line.split()
            count, pointers = int(fields[2]), int(fields[3])
            yield fields[0], [int(x) for x in fields[6 + pointers:6 + pointers + count]]


def synonym_table():
    """{(pos, lemma): [other lemmas sharing one of its synsets]}, and {pos: [lemmas]}."""
    members, senses, words = {}, {}, {}
    for pos in ("n", "v", "a", "r"):
        for lemma, offsets in index_lines(pos):
            if "_" in lemma or not lemma.isalpha():
                continue
            senses[(pos, lemma)] = offsets
            words.setdefault(pos, []).append(lemma)
            for o in offsets:
                members.setdefault((pos, o), []).append(lemma)
    table = {}
    for (pos, lemma), offsets in senses.items():
        others = sorted({w for o in offsets for w in members[(pos, o)]} - {lemma})
        if others:
            table[(pos, lemma)] = others
    return table, words


ANTONYMS = [("increased", "decreased"), ("higher", "lower"), ("more", "less"),
            ("positive", "negative"), ("high", "low"), ("increase", "decrease"),
            ("reduced", "increased"), ("greater", "smaller"), ("before", "after"),
            ("significant", "insignificant"), ("associated", "unassociated"),
            ("risk", "benefit"), ("men", "women"), ("healthy", "unhealthy")]
NAMES = ["Boston", "Sweden", "Japan", "Harvard", "Oxford", "Pfizer", "Texas", "Kenya"]


def same_variants(text, rng, table):
    """Same-meaning rewrites of text: synonyms (any sense) for one or two words."""
    tokens = WORD.findall(text)
    spots = [w for w in tokens if w.islower() and len(w) > 3 and w not in meaning.FUNCTION]
    rng.shuffle(spots)
    out = []
    for count in (1, 2):
        new, done = text, 0
        for w in spots:
            choices = [s for pos in ("n", "v", "a", "r") for s in table.get((pos, w), [])]
            if choices:
                new = re.sub(rf"\b{w}\b", rng.choice(sorted(set(choices))), new, count=1)
                done += 1
            if done == count:
                out.append(new)
                break
    return out


def different_variants(text, rng, words):
    """Look-alikes of another meaning: numbers, names, negation, order, one other word."""
    out = []
    numbers = re.findall(r"\b\d+(?:\.\d+)?\b", text)
    if numbers:
        n = rng.choice(numbers)
        out.append(("number", re.sub(rf"\b{re.escape(n)}\b", str(int(float(n)) + rng.choice(
            [1, 2, 10])), text, count=1)))
    names = [w for w in WORD.findall(text)[1:] if w[0].isupper() and w[1:].islower()]
    if names:
        out.append(("name", re.sub(rf"\b{names[0]}\b", rng.choice(
            [x for x in NAMES if x != names[0]]), text, count=1)))
    if " is " in text or " was " in text or " were " in text or " are " in text:
        out.append(("negation", re.sub(r" (is|was|were|are) ", r" \1 not ", text, count=1)))
    nouns = [w for w in WORD.findall(text) if w.islower() and len(w) > 3 and
             wordnet.senses(w, "n") and w not in meaning.FUNCTION]
    # Two nouns of different stems ("year" / "years" swapped would be the same sentence).
    stems = {duplicates.stem(w): w for w in nouns}
    if len(stems) >= 2:
        a, b = rng.sample(sorted(stems.values()), 2)
        out.append(("order", re.sub(rf"\b({a}|{b})\b", lambda m: b if m.group() == a else a,
                                    text)))
        out.append(("word", re.sub(rf"\b{a}\b", rng.choice(words["n"]), text, count=1)))
    for x, y in ANTONYMS:
        if re.search(rf"\b{x}\b", text):
            out.append(("antonym", re.sub(rf"\b{x}\b", y, text, count=1)))
            break
    return [(k, t) for k, t in out if t != text]


def pairs(limit):
    rng = random.Random(21)
    table, words = synonym_table()
    out = []
    for s in sentences(limit):
        split = "train" if hashlib.sha256(s.encode()).digest()[0] % 2 == 0 else "held-out"
        out += [{"split": split, "same": True, "kind": "synonym", "a": s, "b": t}
                for t in same_variants(s, rng, table)]
        out += [{"split": split, "same": False, "kind": k, "a": s, "b": t}
                for k, t in different_variants(s, rng, words)]
    return out


def decide(p, cosine, *, threshold=meaning.MIN_COSINE):
    """(strict, with the second check): whether each merges the pair."""
    strict = duplicates.check(p["a"], p["b"])[0]
    second = cosine >= threshold and meaning.check(p["a"], p["b"], similarity=max(
        cosine, meaning.MIN_COSINE))[0]
    return strict, strict or second


def rates(rows):
    same = [r for r in rows if r["same"]]
    different = [r for r in rows if not r["same"]]
    out = {}
    for name in ("strict", "meaning"):
        tp = sum(r[name] for r in same)
        fp = sum(r[name] for r in different)
        out[name] = {"same_pairs": len(same), "different_pairs": len(different),
                     "recall": round(tp / max(len(same), 1), 4),
                     "false_merges": round(fp / max(len(different), 1), 4),
                     "precision": round(tp / (tp + fp), 4) if tp + fp else None}
    return out


def any_sense(a, b):
    """The rejected variant of meaning.same_word: any shared synset, not the first."""
    if a in meaning.FUNCTION or b in meaning.FUNCTION or not (a.isalpha() and b.isalpha()):
        return None
    for pos in wordnet.POS:
        sa = {o for lemma in wordnet.lemmas(a, pos) for o in wordnet.senses(lemma, pos)}
        sb = {o for lemma in wordnet.lemmas(b, pos) for o in wordnet.senses(lemma, pos)}
        if sa & sb:
            return "shared sense"
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1500)
    args = parser.parse_args()
    data = pairs(args.sentences)
    embedder = Embedder()
    texts = sorted({t for p in data for t in (p["a"], p["b"])})
    vectors = dict(zip(texts, embedder.embed(texts)))
    for p in data:
        p["cosine"] = float(vectors[p["a"]] @ vectors[p["b"]])
        p["strict"], p["meaning"] = decide(p, p["cosine"])
    for split in ("train", "held-out"):
        rows = [p for p in data if p["split"] == split]
        print(json.dumps({"split": split, **rates(rows)}))
        kinds = sorted({p["kind"] for p in rows if not p["same"]})
        print(json.dumps({"split": split, "false_merges_by_kind": {
            k: f"{sum(p['meaning'] for p in rows if p['kind'] == k)}/"
               f"{sum(p['kind'] == k for p in rows)}" for k in kinds}}))
    train = [p for p in data if p["split"] == "train"]
    # Why each threshold: the training half under the alternatives.
    for threshold in (0.85, 0.9, 0.95):
        rows = [dict(p, meaning=decide(p, p["cosine"], threshold=threshold)[1]) for p in train]
        print(json.dumps({"train": f"cosine >= {threshold}", **rates(rows)["meaning"]}))
    first = meaning.same_word
    meaning.same_word = any_sense
    try:
        rows = [dict(p, meaning=decide(p, p["cosine"])[1]) for p in train]
        print(json.dumps({"train": "any shared sense, not the first", **rates(rows)["meaning"]}))
    finally:
        meaning.same_word = first
    fixture = [json.loads(line) for line in
               (ROOT / "fixtures" / "consolidate" / "lookalikes.jsonl").open()]
    wrong = [f["id"] for f in fixture if not f["same"] and (
        duplicates.check(f["a"], f["b"])[0] or meaning.check(f["a"], f["b"], similarity=1.0)[0])]
    print(json.dumps({"fixture_lookalikes_merged": f"{len(wrong)}/"
                                                   f"{sum(not f['same'] for f in fixture)}",
                      "ids": wrong}))
    examples = [p for p in data if p["meaning"] and not p["strict"]][:5]
    for p in examples:
        print(f"merged: {p['a']!r} / {p['b']!r} ({p['cosine']:.3f})", file=sys.stderr)


if __name__ == "__main__":
    main()
