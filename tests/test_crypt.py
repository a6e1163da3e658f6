"""Encryption at rest: every command on an encrypted file, keys and their errors, encrypt /
decrypt / rekey, a SIGKILL during encrypt, and where a key must never appear.

A process uses one SQLite library (see ravana_db/sql.py), and this test process opens plain
files through pysqlite3: every command on an encrypted file runs as `python -m ravana_db`.
"""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from ravana_db.keys import Key, configured

RAVANA = [sys.executable, "-m", "ravana_db"]
MARKER = "ZQXJ-planted-marker-7731"
RAW = "3f" * 32
NO_DATABASE = "is not a SQLite database (if it is an encrypted one, give its key"


def ravana(*args, key=None, input=None, env=None):
    """`python -m ravana_db ARGS` with RAVANA_DB_KEY=key (if given); returns (code, out, err)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAVANA_DB")}
    child.update(env or {})
    if key is not None:
        child["RAVANA_DB_KEY"] = key
    done = subprocess.run([*RAVANA, *map(str, args)], input=input, capture_output=True,
                          text=True, env=child, timeout=120)
    return done.returncode, done.stdout, done.stderr


def ok(*args, **kwargs):
    code, out, err = ravana(*args, **kwargs)
    assert code == 0, (args, err)
    return out


def key_file(path, secret=RAW, mode=0o600):
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


def file_bytes(path):
    return b"".join(Path(p).read_bytes() for p in (path, f"{path}-wal") if os.path.exists(p))


def dump(path):
    """The file's whole content as SQL, statement order aside (a converted file lists its
    schema in another order)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        schema = sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        tables = [name for _, name, _, sql in schema
                  if sql and sql.startswith("CREATE TABLE")]  # virtual: their shadow tables
        return schema, {t: sorted(map(repr, conn.execute(f"SELECT * FROM [{t}]")))
                        for t in tables}


def plain_sqlite_fails(path):
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="not a database"):
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()


def test_every_command_works_on_an_encrypted_file(tmp_path):
    db, key = tmp_path / "agent.db", key_file(tmp_path / "agent.key")
    k = ["--db", db, "--key-file", key]
    memories = (ROOT / "fixtures" / "memories.jsonl").read_text()
    memories += json.dumps({"key": "marker", "text": f"The harbour code word is {MARKER}."})
    ok(*k, "init")
    assert ok(*k, "log", "memory", "--stdin", input=memories).split()[-1] == "61"
    ok(*k, "log", "summary", "--summary-text", "The agent learned to batch its writes.")
    ok(*k, "log", "mood", "--mood-vector", '{"curious": 0.8}')
    feeds = sorted((ROOT / "fixtures" / "feeds" / "demo").glob("*.*"))
    ok(*k, "ingest", "feeds", *feeds)
    # Every mode, in one process (the model loads once).
    asked = [{"text": MARKER.replace("-", " "), "mode": mode, "top_n": 3}
             for mode in ("fts", "vector", "hybrid")]
    asked.append({"text": "ships stuck after hackers hit the port", "kind": "article,event"})
    answers = [json.loads(line) for line in ok(
        *k, "query", "--stdin", "-f", "jsonl", input="".join(json.dumps(q) + "\n"
                                                            for q in asked)).splitlines()]
    for answer in answers[:3]:
        assert answer["results"][0]["key"] == "marker", answer
    ships = answers[3]["results"]
    assert ships and {r["kind"] for r in ships} <= {"article", "event"}
    ok(*k, "consolidate", "--type", "event_triggered")
    ok(*k, "compress")
    ok(*k, "timeline", "--limit", "3")
    ok(*k, "explain", "memory:1")
    ok(*k, "export", "all", "--format", "jsonl", "--output", tmp_path / "out")
    backup = tmp_path / "backup.db"
    ok(*k, "export", "backup", backup)
    status = json.loads(ok(*k, "status", "-f", "json"))
    assert status["encryption"] == "sqlcipher 4"
    assert RAW not in json.dumps(status)
    # The backup and a file made from the export folder are encrypted and answer the same.
    copy = tmp_path / "copy.db"
    ok("--db", copy, "--key-file", key, "ingest", "dir", tmp_path / "out")
    for other in (backup, copy):
        again = json.loads(ok("--db", other, "--key-file", key, "status", "-f", "json"))
        assert again["encryption"] == "sqlcipher 4"
        assert again["rows"]["memory"] == status["rows"]["memory"] == 61
        found = json.loads(ok("--db", other, "--key-file", key, "query", MARKER, "-f", "json",
                              "--mode", "fts", "--no-touch"))
        assert found[0]["key"] == "marker"
    ok(*k, "mcp", "--help")
    # No stored text in the bytes of any of them; plain SQLite reads none of them.
    for path in (db, backup, copy):
        content = file_bytes(path)
        assert MARKER.encode() not in content and b"harbour" not in content
        assert content[:16] != b"SQLite format 3\x00"
        assert path.stat().st_mode & 0o777 == 0o600
        plain_sqlite_fails(path)
    assert MARKER in (tmp_path / "out" / "memory.jsonl").read_text()  # export all is plain


def test_a_wrong_or_missing_key_or_one_for_a_plain_file_is_one_line(tmp_path):
    db, key = tmp_path / "agent.db", key_file(tmp_path / "agent.key")
    ok("--db", db, "--key-file", key, "init")
    before = db.read_bytes()
    code, out, err = ravana("--db", db, "status", key="not the key")
    assert (code, out) == (2, "")
    assert err == (f"error: cannot decrypt {db} with the key from RAVANA_DB_KEY: a wrong key, "
                   "or not an encrypted ravana-db file\n")
    code, out, err = ravana("--db", db, "log", "memory", "--text", "x")
    assert (code, out) == (2, "") and err == f"error: {db} {NO_DATABASE}: --key-file, " \
        "RAVANA_DB_KEY_FILE or RAVANA_DB_KEY)\n"
    assert db.read_bytes() == before
    plain = tmp_path / "plain.db"
    ok("--db", plain, "init")
    before = plain.read_bytes()
    code, _, err = ravana("--db", plain, "--key-file", key, "log", "memory", "--text", "x")
    assert code == 2 and err == (
        f"error: {plain} is not encrypted, but a key was given (--key-file {key}): drop the "
        "key, or encrypt the file with `ravana-db encrypt`\n")
    assert plain.read_bytes() == before
    assert "not the key" not in err and RAW not in err


def test_a_key_file_others_can_read_is_refused(tmp_path, cli):
    key = key_file(tmp_path / "agent.key", mode=0o644)
    result = cli("--key-file", key, "status")
    assert result.exit_code == 2
    assert result.stderr == (f"error: the key file {key} (--key-file) can be read by others "
                             f"(mode 0644): run chmod 600 {key}\n")
    key.chmod(0o600)
    key.write_text("")
    assert cli("--key-file", key, "status").stderr == \
        f"error: the key from --key-file {key} is empty\n"


def test_a_key_is_a_raw_key_or_a_passphrase_and_env_is_cleared(monkeypatch, tmp_path):
    assert Key(RAW, "x").text == f"x'{RAW}'" and Key(RAW, "x").raw
    assert Key(f"x'{RAW.upper()}'", "x").literal == f'"x\'{RAW}\'"'
    passphrase = Key("it's a secret", "x")
    assert not passphrase.raw and passphrase.literal == "'it''s a secret'"
    assert "secret" not in repr(passphrase)
    monkeypatch.setenv("RAVANA_DB_KEY", "from the environment")
    assert configured().text == "from the environment"
    assert "RAVANA_DB_KEY" not in os.environ  # no child process inherits it
    monkeypatch.setenv("RAVANA_DB_KEY_FILE", str(key_file(tmp_path / "k")))
    assert configured().raw


def test_encrypt_then_decrypt_gives_back_the_same_content(embedded, tmp_path):
    original = dump(embedded)
    key, other = key_file(tmp_path / "a.key"), key_file(tmp_path / "b.key", "a passphrase")
    err = ravana("--db", embedded, "--key-file", key, "encrypt")[2]
    assert err.startswith(f"encrypted {embedded}: ") and "encryption: sqlcipher 4" in err
    assert not (tmp_path / "agent.db.crypt-partial").exists()
    assert embedded.stat().st_mode & 0o777 == 0o600
    plain_sqlite_fails(embedded)
    assert b"batch its writes" not in file_bytes(embedded)
    ok("--db", embedded, "--key-file", key, "rekey", "--new-key-file", other)
    assert ravana("--db", embedded, "--key-file", key, "status")[0] == 2
    found = json.loads(ok("--db", embedded, "--key-file", other, "query", "batch its writes",
                          "--mode", "fts", "--no-touch", "-f", "json"))
    assert found[0]["kind"] == "summary"
    ok("--db", embedded, "--key-file", other, "decrypt")
    assert dump(embedded) == original
    code, _, err = ravana("--db", embedded, "encrypt")
    assert code == 2 and "encrypt needs a key" in err


def test_a_backup_can_have_its_own_key(embedded, tmp_path):
    key, own = key_file(tmp_path / "a.key"), key_file(tmp_path / "b.key", "backup pass")
    ok("--db", embedded, "--key-file", key, "encrypt")
    backup = tmp_path / "backup.db"
    ok("--db", embedded, "--key-file", key, "export", "backup", backup, "--key-file", own)
    assert ravana("--db", backup, "--key-file", key, "status")[0] == 2
    assert json.loads(ok("--db", backup, "--key-file", own, "status", "-f", "json"))[
        "rows"]["memory"] == 60
    code, _, err = ravana("--db", tmp_path / "plain.db", "export", "backup", tmp_path / "b2.db",
                          "--key-file", own)
    assert code == 2


def grow(path, rows):
    """rows more memories (no vectors), written by plain SQLite: a file that takes a while
    to convert."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany("INSERT INTO memory(text, memory_type, source, created_at) "
                         "VALUES (?, 'fact', 'test', '2026-01-01T00:00:00Z')",
                         ((f"memory {i} " + "words of filler " * 40,) for i in range(rows)))


def test_sigkill_during_encrypt_leaves_the_original_intact(embedded, tmp_path):
    grow(embedded, 40_000)
    original = dump(embedded)
    key = key_file(tmp_path / "a.key")
    partial = tmp_path / "agent.db.crypt-partial"
    child = {k: v for k, v in os.environ.items() if not k.startswith("RAVANA_DB")}
    for delay in (None, 0.05, 0.3):
        proc = subprocess.Popen([*RAVANA, "--db", embedded, "--key-file", key, "encrypt"],
                                env=child, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        if delay is None:  # the moment the new file appears
            while not partial.exists() and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            while not (partial.exists() and partial.stat().st_size) and \
                    time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, "encrypt ended before it was killed"
        assert embedded.read_bytes()[:16] == b"SQLite format 3\x00"
        assert dump(embedded) == original
    ok("--db", embedded, "--key-file", key, "encrypt")  # the next run starts over
    assert not partial.exists()
    ok("--db", embedded, "--key-file", key, "decrypt")
    assert dump(embedded) == original


def test_the_key_is_not_in_a_child_processes_argv_or_environment(embedded, tmp_path):
    """compress runs a summarizer command: it sees neither the key nor its variable."""
    for i in range(3):
        ok("--db", embedded, "log", "summary", "--summary-text",
           f"Summary {i}: the agent learned that batching writes saves time.")
    ok("--db", embedded, "--key-file", key_file(tmp_path / "a.key", "the passphrase"),
       "encrypt")
    seen = tmp_path / "seen.json"
    script = tmp_path / "summarize.py"
    script.write_text("import json, os, sys\n"
                      f"json.dump({{'argv': sys.argv, 'env': dict(os.environ)}}, "
                      f"open({str(seen)!r}, 'w'))\nprint('A summary.')\n")
    ok("--db", embedded, "compress", "--summarizer", f"{sys.executable} {script}",
       key="the passphrase")
    found = seen.read_text()
    assert "the passphrase" not in found and "RAVANA_DB_KEY" not in found


def test_one_process_refuses_to_open_a_plain_and_an_encrypted_file(embedded, tmp_path):
    ok("--db", tmp_path / "enc.db", "--key-file", key_file(tmp_path / "a.key"), "init")
    code = ("import sys; from ravana_db.db import open_db; from ravana_db.keys import Key\n"
            "from ravana_db.errors import RavanaError\n"
            f"open_db({str(embedded)!r})\n"
            "try:\n"
            f"    open_db({str(tmp_path / 'enc.db')!r}, key=Key({RAW!r}, 'test'))\n"
            "except RavanaError as e:\n"
            "    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("this process already opened a plain database file")



def test_a_file_another_process_has_open_is_not_converted(embedded, tmp_path):
    key = key_file(tmp_path / "a.key")
    with contextlib.closing(sqlite3.connect(embedded)) as other:
        other.execute("SELECT count(*) FROM memory").fetchone()
        code, _, err = ravana("--db", embedded, "--key-file", key, "encrypt")
    assert code == 2 and err == (f"error: {embedded} is open in another process (a writer, a "
                                 "reader or `ravana-db mcp`): stop it, then convert the file\n")
    assert embedded.read_bytes()[:16] == b"SQLite format 3\x00"
    assert not (tmp_path / "agent.db.crypt-partial").exists()


def test_the_mcp_server_serves_an_encrypted_file(tmp_path):
    """`ravana-db mcp` opens the file with the key given: its Memory recalls and reports."""
    db, key = tmp_path / "agent.db", key_file(tmp_path / "a.key")
    ok("--db", db, "--key-file", key, "log", "memory", "--text", f"Code word {MARKER}.")
    code = ("import json\nfrom ravana_db.keys import read\n"
            "from ravana_db.mcp_server import Memory\n"
            f"m = Memory({str(db)!r}, read_only=True, key=read({str(key)!r}, 'test'))\n"
            f"found = m.recall(query={MARKER!r})['results']\n"
            "print(json.dumps([found[0]['text'], m.status()['encryption']])); m.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [f"Code word {MARKER}.", "sqlcipher 4"]


def test_an_encrypted_file_migrates_and_its_backup_is_encrypted(tmp_path):
    """An encrypted file one migration behind (as a previous release left it) opens with its
    key, migrates, and the copy kept beside it is encrypted with the same key."""
    db, key = tmp_path / "agent.db", key_file(tmp_path / "a.key")
    code = ("import sqlcipher3.dbapi2 as s, sqlite_utils, sqlite_vec\n"
            "from ravana_db.schema import migrations\n"
            f"conn = s.connect({str(db)!r}, isolation_level=None)\n"
            f"conn.execute(\"PRAGMA key = \\\"x'{RAW}'\\\"\")\n"
            "conn.enable_load_extension(True); sqlite_vec.load(conn)\n"
            "old = sqlite_utils.Database(conn)\n"
            "migrations.apply(old, stop_before=migrations._migrations[-1].name)\n"
            "old.execute(\"INSERT INTO actionlog(action_name) VALUES ('kept')\")\n"
            "old.close()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    status = json.loads(ok("--db", db, "--key-file", key, "status", "-f", "json"))
    assert status["rows"]["actionlog"] == 1 and status["encryption"] == "sqlcipher 4"
    (backup,) = tmp_path.glob("agent.db.bak-*")
    assert backup.stat().st_mode & 0o777 == 0o600
    plain_sqlite_fails(backup)
    assert b"kept" not in backup.read_bytes()
    check = ("import sqlcipher3.dbapi2 as s\n"
             f"conn = s.connect({str(backup)!r})\n"
             f"conn.execute(\"PRAGMA key = \\\"x'{RAW}'\\\"\")\n"
             "print(conn.execute('SELECT action_name FROM actionlog').fetchall())\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.stdout == "[('kept',)]\n", done.stderr


def test_convert_commands_take_db_after_their_name_and_quiet(embedded, tmp_path):
    """As every command does (test_cli walks the others in its own process)."""
    key, new = key_file(tmp_path / "a.key"), key_file(tmp_path / "b.key", "b")
    other = tmp_path / "other.db"
    for argv in (["encrypt"], ["rekey", "--new-key-file", new], ["decrypt"]):
        code, out, err = ravana("--db", other, "--key-file", key if argv[0] != "decrypt" else new,
                                *argv, "--db", embedded, "-q")
        assert (code, out, err) == (0, "", ""), (argv, err)
    assert not other.exists() and embedded.read_bytes()[:6] == b"SQLite"


def test_encrypting_through_a_symlink_converts_its_target(embedded, tmp_path):
    link = tmp_path / "link.db"
    link.symlink_to(embedded)
    ok("--db", link, "--key-file", key_file(tmp_path / "a.key"), "encrypt")
    assert link.is_symlink() and link.resolve() == embedded
    plain_sqlite_fails(embedded)


SQLCIPHER4 = ("import sys, sqlcipher3.dbapi2 as s, sqlite_vec\n"
              "conn = s.connect(sys.argv[1])\n"
              "conn.enable_load_extension(True); sqlite_vec.load(conn)\n"
              "conn.execute('PRAGMA cipher_default_compatibility = 4')\n"
              "conn.execute('ATTACH DATABASE ? AS e KEY ?', [sys.argv[2], sys.argv[3]])\n"
              "conn.execute(\"SELECT sqlcipher_export('e')\").fetchall()\n")
READS = ("import sys, sqlcipher3.dbapi2 as s\n"
         "conn = s.connect(sys.argv[1])\n"
         "conn.execute('PRAGMA cipher_log_level = NONE')\n"
         "conn.execute(f\"PRAGMA key = \\\"{sys.argv[2]}\\\"\")\n"
         "for pragma in sys.argv[3:]: conn.execute(f'PRAGMA {pragma}')\n"
         "try: print(conn.execute('SELECT count(*) FROM memory').fetchone()[0])\n"
         "except s.DatabaseError as e: print(e)\n")
SETTINGS = {"sqlcipher4": ["cipher_compatibility = 4"],
            "16k-sha256": ["cipher_page_size = 16384", "cipher_hmac_algorithm = HMAC_SHA256"]}


def reads(path, settings, secret=f"x'{RAW}'"):
    """What a bare SQLCipher connection with these settings reads of path: its memory count,
    or its error."""
    done = subprocess.run([sys.executable, "-c", READS, str(path), secret, *SETTINGS[settings]],
                          capture_output=True, text=True)
    return done.stdout.strip()


def test_a_file_in_sqlcipher4s_default_format_opens_and_rekey_moves_it(embedded, tmp_path):
    """A file encrypted before the 16k-sha256 format (SQLCipher 4's defaults: 4 KiB pages,
    HMAC-SHA512) opens with its key as before: every read, a backup in its own format, a wrong
    key one line; `rekey` to the same key rewrites it in the newest format, which new files
    get too."""
    old, key = tmp_path / "old.db", key_file(tmp_path / "a.key")
    done = subprocess.run([sys.executable, "-c", SQLCIPHER4, str(embedded), str(old),
                           f"x'{RAW}'"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert reads(old, "sqlcipher4") == "60" and "not a database" in reads(old, "16k-sha256")
    k = ["--db", old, "--key-file", key]
    status = json.loads(ok(*k, "status", "-f", "json"))
    assert status["encryption"] == "sqlcipher 4" and status["rows"]["memory"] == 60
    found = json.loads(ok(*k, "query", "lunch", "--mode", "fts", "--no-touch", "-f", "json"))
    ok(*k, "log", "action", "--action-name", "kept")  # writes, in its own format
    ok(*k, "export", "backup", tmp_path / "backup.db")
    assert reads(tmp_path / "backup.db", "sqlcipher4") == "60"
    before = old.read_bytes()
    code, out, err = ravana("--db", old, "status", key="not the key")
    assert (code, out) == (2, "") and err.startswith(f"error: cannot decrypt {old} with the key")
    assert old.read_bytes() == before
    ok(*k, "rekey", "--new-key-file", key)
    assert reads(old, "16k-sha256") == "60" and "not a database" in reads(old, "sqlcipher4")
    assert json.loads(ok(*k, "query", "lunch", "--mode", "fts", "--no-touch", "-f",
                         "json")) == found
    assert json.loads(ok(*k, "status", "-f", "json"))["rows"]["actionlog"] == \
        status["rows"]["actionlog"] + 1
    new = tmp_path / "new.db"
    ok("--db", new, "--key-file", key, "init")
    assert reads(new, "16k-sha256") == "0"


def test_a_passphrase_is_derived_once_as_sqlcipher_derives_it(embedded, tmp_path):
    """A passphrase's key, derived by ravana-db once per process (sql.derived), opens files
    SQLCipher keyed with the passphrase itself, in either format; a wrong one is one line."""
    phrase = "correct horse battery staple"
    key = key_file(tmp_path / "p.key", phrase)
    old = tmp_path / "old.db"
    done = subprocess.run([sys.executable, "-c", SQLCIPHER4, str(embedded), str(old), phrase],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    new = tmp_path / "new.db"
    ok("--db", new, "--key-file", key, "init")
    ok("--db", new, "--key-file", key, "log", "action", "--action-name", "kept")
    assert reads(new, "16k-sha256", phrase) == "0"
    for path in (old, new):
        status = json.loads(ok("--db", path, "--key-file", key, "status", "-f", "json"))
        assert status["encryption"] == "sqlcipher 4"
    found = json.loads(ok("--db", old, "--key-file", key, "query", "lunch", "--mode", "hybrid",
                          "--no-touch", "-f", "json"))
    assert found  # hybrid reads on a second connection, with the derived key
    code, out, err = ravana("--db", old, "status", key="not the passphrase")
    assert (code, out) == (2, "") and err.startswith(f"error: cannot decrypt {old} with the key")
