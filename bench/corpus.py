"""Real English text for the benchmarks, found offline: sentences from the docstrings of the
Python sources installed on this machine (the standard library, then site-packages).

Texts are embedded once with the real model and cached in bench/cache/ (git-ignored).
"""

import ast
import random
import re
import sys
import sysconfig
from pathlib import Path

CACHE = Path(__file__).parent / "cache"


def sentences(limit):
    """Up to `limit` distinct sentences of 40-300 characters, in a fixed order."""
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    seen, out = set(), []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                tree = ast.parse(path.read_bytes())
            except (SyntaxError, ValueError, RecursionError):
                continue
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                     ast.AsyncFunctionDef)):
                    doc = ast.get_docstring(node) or ""
                    for s in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                        if 40 <= len(s) <= 300 and s[0].isupper() and s not in seen and \
                                sum(c.isalpha() for c in s) > 0.7 * len(s):
                            seen.add(s)
                            out.append(s)
                            if len(out) >= limit:
                                return out
    return out


def embedded(n, *, seed=0):
    """(texts, vectors): n real sentences, shuffled with `seed`, and their embeddings.

    The embeddings come from ravana_db's own Embedder (the real model) and are cached.
    """
    import numpy as np

    CACHE.mkdir(exist_ok=True)
    texts_file, vectors_file = CACHE / f"texts-{n}.txt", CACHE / f"vectors-{n}.npy"
    if texts_file.exists() and vectors_file.exists():
        return texts_file.read_text().split("\n"), np.load(vectors_file)
    texts = sentences(n)
    if len(texts) < n:
        sys.exit(f"only {len(texts)} sentences found, {n} wanted")
    random.Random(seed).shuffle(texts)
    from ravana_db.embed import Embedder

    embedder, chunks = Embedder(), []
    for start in range(0, n, 2048):
        chunks.append(embedder.embed(texts[start:start + 2048]))
        print(f"embedded {start + len(chunks[-1])}/{n}", file=sys.stderr, flush=True)
    vectors = np.concatenate(chunks)
    np.save(vectors_file, vectors)
    texts_file.write_text("\n".join(texts))
    return texts, vectors


if __name__ == "__main__":
    print(len(sentences(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)))
