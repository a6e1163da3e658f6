"""Which memories are duplicates: a strict check of the words, not a similarity score.

Look-alike sentences that mean different things ("flights from Paris to Rome" / "from Rome
to Paris") score 0.95 cosine and more, so similarity is only ever used to *find* look-alikes
to link. Two texts are duplicates when:
  - they are the same after normalising case, whitespace and punctuation; or
  - their content words agree one for one, in the same order (`canonical()`): a word may
    differ only by inflection (a light suffix stripper, irregular verbs listed), a close
    synonym from SYNONYMS, or be a stop word from STOP (articles and intensifiers only:
    negations, quantifiers and prepositions carry meaning and stay); numbers are compared
    as numbers; a capitalised word (a name) must be the very same word.
The duplicate key (the SHA-256 of the canonical words) finds candidates by an index lookup:
no pair of memories is ever compared unless their keys are equal. Look-alikes to link are
found the same way, without comparing pairs: rows whose SimHash signatures share a band of
bits (`band_pairs()`).
"""

import difflib
import hashlib
import re
import unicodedata

# Only words whose presence never changes a fact. Negations ("not", "no", "never",
# "without"), quantifiers ("all", "some", "every"), prepositions ("to", "from", "before",
# "after") and pronouns are content words.
STOP = frozenset("a an the that very really quite also indeed actually basically simply "
                 "please".split())
NEGATIONS = frozenset("not no never none nobody nothing neither nor without cannot".split())
IRREGULAR = {
    **dict.fromkeys(["is", "are", "was", "were", "am", "be", "been", "being"], "be"),
    **dict.fromkeys(["has", "have", "had", "having"], "have"),
    **dict.fromkeys(["does", "did", "do", "done", "doing"], "do"),
    **dict.fromkeys(["went", "gone", "goes", "going"], "go"),
    **dict.fromkeys(["made", "makes", "making"], "make"),
    **dict.fromkeys(["took", "taken", "takes", "taking"], "take"),
    **dict.fromkeys(["wrote", "written", "writes", "writing"], "write"),
    **dict.fromkeys(["broke", "broken", "breaks", "breaking"], "break"),
    **dict.fromkeys(["began", "begun", "begins", "beginning"], "begin"),
    **dict.fromkeys(["ran", "runs", "running"], "run"),
    **dict.fromkeys(["got", "gotten", "gets", "getting"], "get"),
    **dict.fromkeys(["said", "says", "saying"], "say"),
    **dict.fromkeys(["saw", "seen", "sees", "seeing"], "see"),
    **dict.fromkeys(["gave", "given", "gives", "giving"], "give"),
    **dict.fromkeys(["came", "comes", "coming"], "come"),
    **dict.fromkeys(["knew", "known", "knows", "knowing"], "know"),
    **dict.fromkeys(["thought", "thinks", "thinking"], "think"),
    **dict.fromkeys(["found", "finds", "finding"], "find"),
    **dict.fromkeys(["told", "tells", "telling"], "tell"),
    **dict.fromkeys(["sent", "sends", "sending"], "send"),
    **dict.fromkeys(["built", "builds", "building"], "build"),
    **dict.fromkeys(["bought", "buys", "buying"], "buy"),
    **dict.fromkeys(["lost", "loses", "losing"], "lose"),
    **dict.fromkeys(["chose", "chosen", "chooses", "choosing"], "choose"),
    **dict.fromkeys(["kept", "keeps", "keeping"], "keep"),
    **dict.fromkeys(["paid", "pays", "paying"], "pay"),
    **dict.fromkeys(["fell", "falls", "falling", "fallen"], "fall"),
    **dict.fromkeys(["won", "wins", "winning"], "win"),
    **dict.fromkeys(["ca", "can"], "can"), "wo": "will", "sha": "shall",
    **dict.fromkeys(["children", "child"], "child"),
    **dict.fromkeys(["people", "person"], "person"),
    **dict.fromkeys(["men", "man"], "man"), **dict.fromkeys(["women", "woman"], "woman"),
}
# Close synonyms only: never antonyms, never a broader or narrower word.
SYNONYMS = {
    "start": "begin commence", "big": "large huge", "fast": "quick rapid", "buy": "purchase",
    "help": "assist", "reply": "answer", "fix": "repair", "finish": "complete",
    "show": "display", "maybe": "perhaps", "often": "frequently", "car": "automobile",
    "use": "utilize utilise", "try": "attempt", "need": "require", "glad": "happy",
    "stop": "halt", "delete": "remove erase", "error": "mistake", "shut": "close",
    "enough": "sufficient", "hard": "difficult", "easy": "simple",
    "choose": "pick select", "ask": "request", "say": "state", "buyer": "purchaser",
    "whole": "entire", "allow": "permit", "idea": "notion", "speak": "talk",
    "job": "task", "rule": "regulation", "tell": "inform", "near": "close-by",
    "correct": "right", "wrong": "incorrect", "look": "appear", "get": "obtain",
    "percent": "per-cent pct %",
}
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero _ two three four five six seven eight nine ten eleven twelve".split()) if w != "_"}
NUMBER_WORDS.update({w: str(10 * i) for i, w in enumerate(
    "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()) if w != "_"})
KEEP_S = frozenset("news series species physics always perhaps was has does is this its thus "
                   "yes us bus gas plus minus lens bias analysis basis status process less "
                   "unless across chaos canvas atlas".split())
TOKEN = re.compile(r"[-+]?\d[\d,]*(?:\.\d+)?%?|\w+(?:['’]\w+)*", re.UNICODE)
CONTRACTIONS = [(re.compile(p, re.IGNORECASE), r) for p, r in (
    (r"\bcan['’]t\b", "can not"), (r"\bwon['’]t\b", "will not"), (r"\bshan['’]t\b", "shall not"),
    (r"\bcannot\b", "can not"), (r"n['’]t\b", " not"), (r"['’]re\b", " are"), (r"['’]m\b", " am"),
    (r"['’]ve\b", " have"), (r"['’]ll\b", " will"))]
SENTENCE_END = re.compile(r"[.!?:;\n]\W*$")
BAND_BYTES = 3  # 24 SimHash bits a band: 42 bands of the 1024-bit signature
MAX_BUCKET = 64  # a band bucket this full holds no look-alikes worth a link


def _synonyms():
    table = {}
    for head, others in SYNONYMS.items():
        for word in [head, *others.split()]:
            table[stem(word.replace("-", ""))] = stem(head)
    return table


def stem(word):
    """A light, conservative suffix stripper (lower-case word in, stem out): plurals, -ed,
    -ing, -ies; irregular verbs from IRREGULAR. It conflates inflections and little else:
    no derivation (-er, -ly, -ness stay), no dropped final e."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    if not word.isalpha() or len(word) <= 3:
        return word
    if word.endswith(("ies", "ied")) and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("ing") and len(word) > 5 and _vowel(word[:-3]):
        return _undouble(word[:-3])
    if word.endswith("ed") and len(word) > 4 and _vowel(word[:-2]):
        return _undouble(word[:-2])
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is", "ous")) and \
            word not in KEEP_S:
        return word[:-1]
    return word


def _vowel(text):
    return any(c in "aeiouy" for c in text)


def _undouble(word):
    if len(word) > 2 and word[-1] == word[-2] and word[-1] not in "lsz" and \
            word[-1] not in "aeiou":
        return word[:-1]
    return word


def normalized(text):
    """The text without case, punctuation and extra whitespace (the "identical" test)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.findall(r"\w+", text))


_SYN = None


def canonical(text):
    """[(key, surface, fixed)]: each content word's comparison key (stem or synonym head,
    number), its surface form (case-folded), and whether it must match exactly (a name or
    a number)."""
    global _SYN
    if _SYN is None:
        _SYN = _synonyms()
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    for pattern, replacement in CONTRACTIONS:
        text = pattern.sub(replacement, text)
    out, start = [], 0
    for match in TOKEN.finditer(text):
        raw = match.group()
        initial = start == 0 or SENTENCE_END.search(text[start:match.start()]) is not None
        start = match.end()
        if raw[0].isdigit() or raw[0] in "+-":
            number = raw.replace(",", "").rstrip("%").lstrip("+")
            out.append((number, number, True))
            if raw.endswith("%"):
                out.append((_SYN["percent"], "percent", False))
            continue
        word = raw.casefold().replace("'", "")
        if raw.endswith(("'s", "'S")):
            word = raw[:-2].casefold()
        if word in STOP:
            continue
        if word in NUMBER_WORDS:
            out.append((NUMBER_WORDS[word], NUMBER_WORDS[word], True))
            continue
        key = stem(word)
        # The key ignores case (so identical text always shares it); a capitalised word
        # must match exactly: a name, or at a sentence's start maybe a name ("Williams
        # won"), unless it is a word of our own tables ("Delete the snapshots").
        known = initial and raw[1:].islower() and (
            word in IRREGULAR or key in _SYN or word in NEGATIONS)
        out.append((_SYN.get(key, key), word, raw[0].isupper() and not known))
    return out


def key(text):
    """The duplicate key: the first 64 bits of the SHA-256 of the canonical words (of the
    normalised text when the text has no content words at all), as a signed 64-bit integer.
    Two of a million memories' keys coincide by chance with odds of about 3e-8; the full
    digest took four times the bytes in every consolidated memory and its index (m014), its
    16 hex digits twice those of the integer (m015)."""
    words = canonical(text)
    basis = " ".join(k for k, _, _ in words) if words else "\x00" + normalized(text)
    return int.from_bytes(hashlib.sha256(basis.encode()).digest()[:8], "big", signed=True)


def check(a, b):
    """Whether texts a and b are duplicates, and why (or why not): (bool, reason)."""
    if normalized(a) == normalized(b):
        return True, "identical text"
    ca, cb = canonical(a), canonical(b)
    ka, kb = [k for k, _, _ in ca], [k for k, _, _ in cb]
    if ka == kb and ka:
        for (_, sa, fa), (_, sb, fb) in zip(ca, cb):
            if (fa or fb) and sa != sb:
                return False, f"names differ: {sa} / {sb}"
        return True, "same words (inflection, stop words, punctuation or synonyms differ)"
    return False, _difference(ka, kb)


def _difference(ka, kb):
    if sorted(ka) == sorted(kb):
        return "word order differs"
    na, nb = [k for k in ka if is_number(k)], [k for k in kb if is_number(k)]
    if na != nb:
        return f"numbers differ: {' '.join(na) or '-'} / {' '.join(nb) or '-'}"
    ga, gb = [k for k in ka if k in NEGATIONS], [k for k in kb if k in NEGATIONS]
    if ga != gb:
        return f"negation differs: {' '.join(ga) or '-'} / {' '.join(gb) or '-'}"
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=ka, b=kb, autojunk=False).get_opcodes():
        if op != "equal":
            return f"words differ: {' '.join(ka[i1:i2]) or '-'} / {' '.join(kb[j1:j2]) or '-'}"
    return "words differ"


def is_number(token):
    """Whether a canonical key is a number."""
    return bool(token) and (token[0].isdigit() or token[0] in "+-" and len(token) > 1)


def band_pairs(bits, *, due=None):
    """Candidate look-alikes: the pairs of rows of `bits` (uint8, one signature a row) that
    share a band of BAND_BYTES bytes, in buckets of at most MAX_BUCKET rows.

    Args:
        due: a boolean per row; when given, only buckets holding a due row count.

    Returns:
        A set of (i, j) row numbers, i < j.
    """
    import numpy as np

    pairs = set()
    for start in range(0, bits.shape[1] - BAND_BYTES + 1, BAND_BYTES):
        band = bits[:, start:start + BAND_BYTES].astype(np.uint32)
        value = (band[:, 0] << 16) | (band[:, 1] << 8) | band[:, 2]
        order = np.argsort(value, kind="stable")
        cuts = np.flatnonzero(np.diff(value[order])) + 1
        for bucket in np.split(order, cuts):
            if 1 < len(bucket) <= MAX_BUCKET and (due is None or due[bucket].any()):
                rows = sorted(bucket.tolist())
                pairs.update((a, b) for i, a in enumerate(rows) for b in rows[i + 1:])
    return pairs
