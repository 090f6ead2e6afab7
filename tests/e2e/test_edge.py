"""The HTTP edge (issue 10, item 7), against the real binary over real sockets: slow clients at a
low file-descriptor limit, keys checked before a body is read, the header-read and keep-alive
timeouts, the connection cap's eviction and clean refusal, and a shutdown with a deadline that
commits every completed request's usage record.

Every wait is bounded and generous; nothing asserts how fast something happened."""

from __future__ import annotations

import json
import resource
import select
import selectors
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from conftest import tracked
from gateway import Gateway, log_path, model_pricing, pick_chat_model

#: How long any single answer may take before the test calls the gateway stuck.
PATIENCE_S = 30
BODY_BYTES = 30_000_000


def _fd_limit_1024() -> None:
    """Runs in the gateway's process before exec: soft and hard limit 1,024, so it cannot raise it."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


def _start(tmp_path: Path, name: str, config: str = "", **kw) -> Gateway:
    return tracked(Gateway(tmp_path / name, log_path=log_path(f"edge-{name}", tmp_path),
                           config_text=config or None, **kw)).start()


def _chat_model(g: Gateway) -> str:
    with g.http(g.api_key) as c:
        return pick_chat_model(model_pricing(c))


def _chat(g: Gateway, model: str, text: str = "hello edge") -> httpx.Response:
    """One non-streamed chat completion on a connection of its own."""
    with g.http(g.api_key, timeout=PATIENCE_S) as c:
        return c.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}]})


def _health(g: Gateway) -> int:
    with httpx.Client(timeout=PATIENCE_S) as c:
        return c.get(f"{g.root}/health").status_code


def _read_until_closed(sock: socket.socket, wait: float = PATIENCE_S) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    sock.settimeout(wait)
    out = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
    except ConnectionResetError:
        return out
    except socket.timeout:
        raise AssertionError(f"the gateway did not close the connection within {wait} s; got {out[:200]!r}")


def _half_open(port: int) -> socket.socket:
    """A connection that sends half a request head and stalls."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\nX-Slow-")
    s.setblocking(False)
    return s


class SlowLoris(threading.Thread):
    """Keeps `count` half-open connections to the gateway, reopening (at a bounded rate) any the
    gateway closes, until stopped."""

    def __init__(self, port: int, count: int):
        super().__init__(daemon=True)
        self.port, self.count = port, count
        self.stop_flag = threading.Event()
        self.opened = 0
        self.ready = threading.Event()

    def _open(self, sel: selectors.BaseSelector) -> None:
        try:
            sel.register(_half_open(self.port), selectors.EVENT_READ)
            self.opened += 1
        except OSError:
            pass  # the gateway's backlog is full (today's code): try again later

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        while len(sel.get_map()) < self.count and not self.stop_flag.is_set():
            self._open(sel)
        self.ready.set()
        while not self.stop_flag.is_set():
            for key, _ in sel.select(timeout=0.1):
                sock = key.fileobj
                try:
                    closed = sock.recv(4096) == b""
                except BlockingIOError:
                    closed = False
                except OSError:
                    closed = True
                if closed:
                    sel.unregister(sock)
                    sock.close()
            # Reopen what the gateway closed, at most 20 per round: a sustained flood, not a spin.
            for _ in range(min(20, self.count - len(sel.get_map()))):
                self._open(sel)
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()


# ----------------------------------------------------------------------------- (a) slow clients


def test_health_and_chat_keep_answering_under_1100_half_open_connections_at_fd_limit_1024(tmp_path):
    # Timeouts far longer than the test: only the connection cap can keep the gateway reachable.
    g = _start(tmp_path, "loris", "[http]\nheader_read_timeout_secs = 600\nkeep_alive_timeout_secs = 600\n",
               preexec_fn=_fd_limit_1024)
    assert "fd_limit=1024" in g.log_tail(20_000) and "max_connections=448" in g.log_tail(20_000), g.log_tail()
    model = _chat_model(g)
    flood = SlowLoris(g.port, 1100)
    flood.start()
    try:
        assert flood.ready.wait(120), "could not open the half-open connections"
        assert flood.opened >= 1100, flood.opened
        opened_before = flood.opened
        for n in range(5):
            assert _health(g) == 200
            r = _chat(g, model, f"under a flood {n}")
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"]
        # The flood went on meanwhile: the gateway kept closing half-open connections to make
        # room, and the flood kept opening new ones.
        assert flood.opened > opened_before, "the flood stopped"
    finally:
        flood.stop_flag.set()
        flood.join(30)
        g.stop()


# ----------------------------------------------------------------------------- (b) key before body


def _post_big_body(port: int, path: str, headers: dict[str, str], total: int = BODY_BYTES) -> tuple[bytes, int]:
    """POSTs a `total`-byte body, stopping as soon as an answer arrives; returns the answer's
    first bytes and how much of the body was sent by then."""
    head = f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: {total}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)
    try:
        s.sendall(head.encode())
        chunk = b" " * 65536
        sent = 0
        s.setblocking(False)
        while sent < total:
            readable, writable, _ = select.select([s], [s], [], PATIENCE_S)
            if readable:
                break
            if not writable:
                raise AssertionError("neither an answer nor room to send within the patience")
            try:
                sent += s.send(chunk[: total - sent])
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        s.setblocking(True)
        s.settimeout(PATIENCE_S)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                part = s.recv(4096)
                if not part:
                    break
                answer += part
        except ConnectionResetError:
            pass
        return answer, sent
    finally:
        s.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_bad_key_is_refused_before_a_30_mb_body_is_read_and_memory_stays_flat(tmp_path):
    g = _start(tmp_path, "bodies")
    cases = [
        ("/v1/chat/completions", {"Authorization": "Bearer sk-rk-not-a-key"}, b"401"),
        ("/v1/chat/completions", {}, b"401"),
        ("/v1/embeddings", {"Authorization": "Bearer sk-rm-wrong-kind"}, b"401"),
        ("/v1/keys", {"Authorization": "Bearer sk-rm-not-a-key"}, b"401"),
        ("/v1/checkout/sessions", {"Authorization": f"Bearer {g.api_key}"}, b"401"),  # an inference key
        ("/v1/auth/signup", {}, b"413"),  # no key there: a small body limit instead
    ]
    for path, headers, status in cases:
        answer, sent = _post_big_body(g.port, path, headers)
        assert answer.startswith(b"HTTP/1.1 " + status), (path, answer[:300])
        assert sent < BODY_BYTES, f"{path}: the answer came only after the whole body was sent"
    # 40 at once, as an attacker would: bodies read before the key is checked would all be in
    # memory together (1.2 GB).
    before = _rss_kib(g.proc.pid)
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda n: _post_big_body(g.port, *cases[n % 4][:2])[0], range(40)))
    after = _rss_kib(g.proc.pid)
    for n, answer in enumerate(answers):
        assert answer.startswith(b"HTTP/1.1 " + cases[n % 4][2]), answer[:300]
    assert after - before < 200 * 1024, f"RSS grew from {before} KiB to {after} KiB over 40 refused 30 MB bodies"
    # A small unauthenticated body over the public limit (64 KiB) is refused too, with the limit named.
    r = httpx.post(f"{g.root}/v1/auth/login", content=b"{" + b" " * 100_000 + b"}", timeout=PATIENCE_S)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large", r.text
    assert "65536" in r.json()["error"]["message"]
    g.stop()


def _send_all_then_read(port: int, path: str, headers: dict[str, str], body: bytes) -> bytes:
    """A client that sends its head, then (a moment later, as one producing its body does) the
    whole body, and only then reads: the answer's first bytes, or what went wrong."""
    head = f"POST {path} HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as s:
        try:
            s.sendall(head.encode())
            time.sleep(0.05)
            s.sendall(body)
            return s.recv(4096)
        except OSError as e:
            return repr(e).encode()


def test_a_client_that_sends_its_whole_body_before_reading_still_gets_the_refusal_not_a_reset(tmp_path):
    """Most clients send the whole body before they read. A refusal answered from the head alone
    must still reach them: after answering, the gateway reads and discards the rest of the body
    (a lingering close) instead of closing on unread bytes, which makes the kernel reset the
    connection and can destroy the answer (before: 'connection reset' in place of the 401)."""
    g = _start(tmp_path, "linger")
    body = b'{"model": "x", "messages": [], "pad": "' + b"a" * 4_000_000 + b'"}'
    for path, headers in [("/v1/chat/completions", {"authorization": "Bearer sk-rk-not-a-key"}),
                          ("/v1/embeddings", {}),
                          ("/v1/keys", {"authorization": "Bearer sk-rm-not-a-key"})]:
        for _ in range(5):
            answer = _send_all_then_read(g.port, path, headers, body)
            assert answer.startswith(b"HTTP/1.1 401"), (path, answer[:300])
    # The gateway is whole afterwards.
    assert _chat(g, _chat_model(g)).status_code == 200
    g.stop()


# ----------------------------------------------------------------------------- (c) shutdown


def test_sigterm_with_idle_keep_alive_connections_exits_promptly(tmp_path):
    # A deadline far longer than the wait below: idle connections must not wait for it.
    g = _start(tmp_path, "idle", "[http]\nshutdown_timeout_secs = 300\n")
    idle = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle.append(s)  # kept alive, idle
    idle.append(_half_open(g.port))
    idle.append(socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S))  # never sent a byte
    g.proc.send_signal(signal.SIGTERM)
    try:
        assert g.proc.wait(PATIENCE_S) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {PATIENCE_S} s after SIGTERM with idle connections open")
    finally:
        for s in idle:
            s.close()
        g.kill()


def _stream_until_first_chunk(g: Gateway, model: str, directive: str, out: dict) -> threading.Thread:
    """Starts a streamed chat in a thread; returns once its first chunk arrived. `out` gets the
    request id, whether `[DONE]` arrived, and any transport error."""
    first = threading.Event()

    def run():
        body = {"model": model, "stream": True,
                "messages": [{"role": "user", "content": f"stream {directive}"}]}
        try:
            with httpx.Client(base_url=g.root, headers={"authorization": f"Bearer {g.api_key}"},
                              timeout=PATIENCE_S * 4) as c:
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    out["request_id"] = r.headers.get("x-request-id")
                    for line in r.iter_lines():
                        first.set()
                        if line.strip() == "data: [DONE]":
                            out["done"] = True
                        elif line.startswith("data: {") and '"error"' in line:
                            out["error_event"] = json.loads(line[6:])["error"]
        except httpx.HTTPError as e:
            out["error"] = repr(e)
        finally:
            first.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert first.wait(PATIENCE_S), "the stream did not start"
    return t


def test_sigterm_lets_requests_in_flight_finish_ends_the_rest_cleanly_at_the_deadline_and_commits_every_record(tmp_path):
    g = _start(tmp_path, "drain", "[http]\nshutdown_timeout_secs = 4\n")
    model = _chat_model(g)
    completed = []
    for n in range(10):
        r = _chat(g, model, f"before shutdown {n}")
        assert r.status_code == 200, r.text
        completed.append(r.headers["x-request-id"])
    short, long_ = {}, {}
    # ~1.5 s left when the signal comes: it finishes within the 4 s deadline.
    t_short = _stream_until_first_chunk(g, model, "[[sim:tpot_ms=100,words=15]]", short)
    # ~60 s: it is still running at the deadline, and is ended with an error event.
    t_long = _stream_until_first_chunk(g, model, "[[sim:tpot_ms=200,words=300]]", long_)
    g.proc.send_signal(signal.SIGTERM)
    # No new connection is accepted while draining.
    refused = False
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", g.port), timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
            break
    try:
        assert g.proc.wait(PATIENCE_S) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {PATIENCE_S} s after SIGTERM with a 4 s shutdown deadline")
    t_short.join(PATIENCE_S)
    t_long.join(PATIENCE_S)
    g.kill()
    assert refused, "the gateway kept accepting connections after SIGTERM"
    assert short.get("done"), f"the stream in flight did not finish during the drain: {short}"
    assert not long_.get("done"), "the long stream cannot have finished"
    assert (long_.get("error_event") or {}).get("code") == "gateway_shutdown", long_
    assert "error" not in long_, f"the long stream was cut instead of ended cleanly: {long_}"
    completed.append(short["request_id"])
    completed.append(long_["request_id"])
    # Read the database as the process left it (no restart, so no journal replay).
    ids = {row[0] for row in g.query("SELECT request_id FROM usage_records")}
    missing = [i for i in completed if i not in ids]
    assert not missing, f"completed requests without a committed usage record: {missing}"
    assert "stopped; every usage record is committed" in g.log_tail(20_000)
    rows = g.query(f"SELECT status, error_code FROM usage_records WHERE request_id = '{long_['request_id']}'")
    assert rows == [("200", "gateway_shutdown")], rows


def test_the_header_read_and_keep_alive_timeouts_close_stalled_and_idle_connections_only(tmp_path):
    g = _start(tmp_path, "timeouts", "[http]\nheader_read_timeout_secs = 1\nkeep_alive_timeout_secs = 2\n")
    model = _chat_model(g)
    stalled = socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S)
    stalled.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: edge\r\nContent-")
    assert _read_until_closed(stalled) == b"", "closed without an answer"
    silent = socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S)
    assert _read_until_closed(silent) == b""
    kept = socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S)
    kept.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
    assert _read_until_closed(kept).startswith(b"HTTP/1.1 200"), "answered, then closed once idle"
    # A request in flight for longer than both timeouts is not cut.
    out = {}
    t = _stream_until_first_chunk(g, model, "[[sim:tpot_ms=250,words=16]]", out)
    t.join(PATIENCE_S)
    assert out.get("done") and "error" not in out, out
    for s in (stalled, silent, kept):
        s.close()
    g.stop()


# ----------------------------------------------------------------------------- (e) the cap


def test_at_the_cap_idle_connections_make_room_and_with_all_busy_the_refusal_is_a_clean_503(tmp_path):
    g = _start(tmp_path, "cap", "[http]\nmax_connections = 4\n")
    model = _chat_model(g)
    # Half-open connections fill the cap; new clients are still served (they evict them).
    stalled = [_half_open(g.port) for _ in range(12)]
    for _ in range(3):
        assert _health(g) == 200
    # Four streams in flight fill it with busy connections: a fifth connection is refused.
    streams = [{} for _ in range(4)]
    threads = [_stream_until_first_chunk(g, model, "[[sim:tpot_ms=200,words=40]]", out) for out in streams]
    s = socket.create_connection(("127.0.0.1", g.port), timeout=PATIENCE_S)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: edge\r\n\r\n")
    answer = _read_until_closed(s)
    s.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), answer[:300]
    headers = head.decode().lower()
    assert "retry-after: 1" in headers and "connection: close" in headers, headers
    error = json.loads(body)["error"]
    assert error["code"] == "server_busy" and error["type"] == "server_error", error
    assert "credit" not in error["message"] and "balance" not in error["message"]
    # The busy ones were not disturbed.
    for t in threads:
        t.join(PATIENCE_S)
    assert all(out.get("done") for out in streams), streams
    assert _health(g) == 200
    for s in stalled:
        s.close()
    g.stop()


def test_ready_turns_503_at_sigterm_while_new_requests_are_served_for_the_drain_grace(tmp_path):
    g = _start(tmp_path, "ready", "[http]\ndrain_grace_secs = 3\nshutdown_timeout_secs = 10\n")
    model = _chat_model(g)
    with httpx.Client(base_url=g.root, timeout=PATIENCE_S) as c:
        r = c.get("/ready")
        assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["draining"] is False, r.text
    in_flight = {}
    t = _stream_until_first_chunk(g, model, "[[sim:tpot_ms=100,words=20]]", in_flight)
    g.proc.send_signal(signal.SIGTERM)
    # At once: not ready (a load balancer stops sending), yet alive and still serving.
    deadline = time.monotonic() + 2
    with httpx.Client(base_url=g.root, timeout=PATIENCE_S) as c:
        while True:
            ready = c.get("/ready")
            if ready.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "draining" and ready.json()["draining"] is True, ready.text
        assert c.get("/health").status_code == 200
    late = _chat(g, model, "sent during the drain grace")
    assert late.status_code == 200, late.text
    try:
        assert g.proc.wait(PATIENCE_S) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {PATIENCE_S} s after SIGTERM with a 3 s grace and a 10 s deadline")
    t.join(PATIENCE_S)
    g.kill()
    assert in_flight.get("done"), in_flight
    ids = {row[0] for row in g.query("SELECT request_id FROM usage_records")}
    for rid in (in_flight["request_id"], late.headers["x-request-id"]):
        assert rid in ids, f"{rid} has no committed usage record"


def test_sigterm_during_100_streams_every_one_completes_or_ends_cleanly_with_its_record(tmp_path):
    g = _start(tmp_path, "drain100", "[http]\nshutdown_timeout_secs = 3\n")
    model = _chat_model(g)
    outs = [{} for _ in range(100)]
    threads = []
    for i, out in enumerate(outs):
        # Half finish within the 3 s deadline, half would take ~40 s.
        directive = "[[sim:tpot_ms=50,words=20]]" if i % 2 else "[[sim:tpot_ms=200,words=200]]"
        threads.append(_stream_until_first_chunk(g, model, directive, out))
    started = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    try:
        assert g.proc.wait(PATIENCE_S) == 0
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {PATIENCE_S} s after SIGTERM with a 3 s deadline")
    stopped_after = time.monotonic() - started
    for t in threads:
        t.join(PATIENCE_S)
    g.kill()
    assert stopped_after < 3 + 1 + 5, f"exited {stopped_after:.1f} s after SIGTERM"
    cut = [o for o in outs if "error" in o]
    assert not cut, f"{len(cut)} streams were cut instead of ended cleanly: {cut[:3]}"
    unclean = [o for o in outs if not o.get("done") and (o.get("error_event") or {}).get("code") != "gateway_shutdown"]
    assert not unclean, unclean[:3]
    rows = dict(g.query("SELECT request_id, error_code FROM usage_records"))
    missing = [o["request_id"] for o in outs if o["request_id"] not in rows]
    assert not missing, f"{len(missing)} streams without a committed record"
    for o in outs:
        assert rows[o["request_id"]] == ("" if o.get("done") else "gateway_shutdown"), (o, rows[o["request_id"]])
