"""How a re-rank vector is stored in `doc_vec`: int8 codes and the vector's float16 norm, one
blob of dim + 2 bytes (a float32 vector takes 4 * dim). Search re-ranks the candidates of the
signature pass with these: the codes keep each direction to within a fraction of a percent of
cosine, which does not reorder true neighbours measurably (bench/size_bench.py), at a quarter
of the bytes.

A vector is keyed by its text: key() is the first 64 bits of the text's SHA-256 as a signed
integer (8 bytes in the row and its index, where the hex digest took 64).
"""

from .hashing import sha256

NORM_BYTES = 2  # float16, little-endian, after the codes


def key(text):
    """The content key of a text's vector: the first 8 bytes of its SHA-256, signed."""
    return key_of_hex(sha256(text))


def key_of_hex(digest):
    """key() of the text whose SHA-256 hex digest is digest (as files before m012 stored)."""
    return int.from_bytes(bytes.fromhex(digest[:16]), "big", signed=True)


def encode(vectors):
    """float32 vectors (an n x dim array) as stored blobs: codes round(v * 127 / max|v|),
    then the norm of v as float16."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    peak = np.abs(vectors).max(axis=1, keepdims=True)
    codes = np.round(vectors * (127 / np.where(peak > 0, peak, 1))).astype(np.int8)
    norms = np.linalg.norm(vectors, axis=1).astype("<f2")
    return [c.tobytes() + n.tobytes() for c, n in zip(codes, norms)]


def decode(blobs, dim=None):
    """Stored blobs back to float32 vectors (an n x dim array): each code row scaled to its
    stored norm. dim: the model's dimension; by default that of the most common blob length.
    A blob of another length or type (another client's: text, a float32 vector, a stub) is
    the zero vector, whose similarity to anything is 0: never a crash, never a misread."""
    import numpy as np

    blobs = list(blobs)
    sizes = [len(b) if isinstance(b, bytes) else -1 for b in blobs]
    size = dim + NORM_BYTES if dim else max(set(sizes), key=sizes.count, default=-1)
    if size <= NORM_BYTES:
        return np.zeros((len(blobs), max(size - NORM_BYTES, 0)), dtype=np.float32)
    fitting = [b if n == size else bytes(size) for b, n in zip(blobs, sizes)]
    raw = np.frombuffer(b"".join(fitting), dtype=np.uint8).reshape(len(blobs), size)
    codes = raw[:, :-NORM_BYTES].view(np.int8).astype(np.float32)
    norms = raw[:, -NORM_BYTES:].copy().view("<f2").astype(np.float32)
    length = np.linalg.norm(codes, axis=1, keepdims=True)
    return codes * (norms / np.where(length > 0, length, 1))


def from_float32(blobs):
    """float32 blobs (as files before m012 stored them) as stored blobs, for the migration."""
    import numpy as np

    blobs = list(blobs)
    if not blobs:
        return []
    return encode(np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), -1))


def one(blob, dim=None):
    """decode() of one stored blob: its float32 vector."""
    return decode([blob], dim)[0]
