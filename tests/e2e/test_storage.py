"""The data directory: one gateway at a time (issue 10, item 9), and no stored row can stop
the gateway from starting (item 3)."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from gateway import BIN, ON_POSTGRES, Gateway, free_port, list_keys, log_path

CHAT = [{"role": "user", "content": "hello there"}]


def test_a_second_serve_on_one_data_dir_fails_at_once_and_names_it(tmp_path):
    g = Gateway(tmp_path / "data", log_path=log_path("lock-first", tmp_path))
    g.start()
    try:
        second = subprocess.Popen(
            [str(BIN), "serve", "--demo", "--listen", f"127.0.0.1:{free_port()}", "--data", str(g.data_dir)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        try:
            out, _ = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.kill()
            out, _ = second.communicate()
            raise AssertionError(f"a second serve on {g.data_dir} kept running:\n{out[-3000:]}")
        assert second.returncode != 0, out
        assert str(g.data_dir) in out and "in use" in out, out
        assert f"pid {g.proc.pid}" in out, out

        # The first keeps serving, and the admin CLI still works beside it (no lock taken).
        with g.http(g.api_key) as c:
            models = c.get("/v1/models").json()["data"]
            chat_model = next(m["id"] for m in models if m.get("kind", "chat") == "chat")
            r = c.post("/v1/chat/completions", json={"model": chat_model, "messages": CHAT})
            assert r.status_code == 200, r.text
        listed = g.admin("list-accounts")
        assert listed.returncode == 0, listed.stderr
        assert g.demo["account_id"] in listed.stdout
    finally:
        g.stop()
    # Once the first is gone, the directory is free again.
    again = Gateway(g.data_dir, log_path=log_path("lock-again", tmp_path))
    again.start()
    again.stop()


def _corrupt(db, statements):
    """Writes rows no code path writes, bypassing the constraints (a hand edit, an old bug)."""
    con = sqlite3.connect(db)
    try:
        con.execute("PRAGMA ignore_check_constraints = ON")
        for sql, args in statements:
            con.execute(sql, args)
        con.commit()
    finally:
        con.close()


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite's dynamic typing lets a column hold a REAL or a non-JSON text; "
                    "PostgreSQL's typed columns and CHECKs refuse them at write")
def test_a_bad_stored_row_does_not_stop_the_gateway(tmp_path):
    g = Gateway(tmp_path / "data", log_path=log_path("bad-row", tmp_path))
    g.start()
    with g.http(g.management_key) as mgmt:
        keys = {}
        for name in ("overflowed", "garbled", "good"):
            r = mgmt.post("/v1/keys", json={"name": name})
            assert r.status_code == 201, r.text
            keys[name] = r.json()
    g.stop()

    # The row: a spend an overflowing SQL sum turned into a REAL, which made
    # `loading keys: … REAL` stop every start. And metadata that is not JSON.
    _corrupt(g.data_dir / "router-one.db", [
        ("UPDATE api_keys SET spend_units = 1.5e19 WHERE id = ?", (keys["overflowed"]["id"],)),
        ("UPDATE api_keys SET metadata = 'not json' WHERE id = ?", (keys["garbled"]["id"],)),
    ])

    g.start()
    try:
        with g.http(g.api_key) as demo, g.http(keys["good"]["key"]) as good, g.http(g.management_key) as mgmt:
            chat_model = next(m["id"] for m in demo.get("/v1/models").json()["data"] if m.get("kind", "chat") == "chat")
            for client in (demo, good):
                r = client.post("/v1/chat/completions", json={"model": chat_model, "messages": CHAT})
                assert r.status_code == 200, r.text
            listed = {k["id"] for k in list_keys(mgmt)}
            assert keys["good"]["id"] in listed
            assert not {keys["overflowed"]["id"], keys["garbled"]["id"]} & listed, "unreadable keys are left out"
        log = g.log_tail(20_000)
        for name in ("overflowed", "garbled"):
            assert keys[name]["id"] in log, f"the {name} key is reported in the log"
            assert keys[name]["key"] not in log, "never a secret"
    finally:
        g.stop()
