"""Signed receipts (issue 14, item 1; docs/receipts.md), checked with an independent JOSE
implementation (PyJWT with `cryptography`) against the gateway's JWKS: the receipt of a complete
and of a streamed chat answer verifies, its `response_sha256` is the SHA-256 of the exact bytes
received (a stream: everything before the `: receipt` line), its fields match the usage record,
changing any byte of the body or any field of the payload fails, the receipt by id is the same
one, a key rotation keeps old receipts verifiable, and `router-one verify` agrees."""
from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import uuid

import jwt
import pytest

from conftest import log_dir, tracked
from gateway import BIN, D, Gateway, get_record, is_embedding, log_path, new_key

MESSAGES = [{"role": "user", "content": "a receipt for this please"}]
RECEIPT_LINE = b": receipt "


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwks_of(root: str) -> dict:
    import httpx
    r = httpx.get(f"{root}/.well-known/jwks.json", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


class NotInBatch(Exception):
    """The claims and their path do not lead to the root the JWS signed."""


def verify(receipt: str, jwks: dict) -> dict:
    """The receipt's claims if it checks out (raises otherwise), as docs/receipts.md tells it:
    PyJWT verifies the batch's EdDSA signature under the JWKS key its header names, then the
    claims' leaf hash, folded with each step of the path, must give the root it signed."""
    token, claims_b64, path_b64 = receipt.split("~")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"], header
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys}
    batch = jwt.decode(token, key=keys[header["kid"]], algorithms=["EdDSA"])
    claims = unb64(claims_b64)
    h = hashlib.sha256(b"\x00" + claims).digest()
    path = unb64(path_b64)
    assert len(path) % 33 == 0, path
    for i in range(0, len(path), 33):
        side, s = path[i:i + 1], path[i + 1:i + 33]
        assert side in (b"L", b"R"), path
        h = hashlib.sha256(b"\x01" + (s + h if side == b"L" else h + s)).digest()
    if h.hex() != batch["root"]:
        raise NotInBatch(receipt)
    return json.loads(claims)


def jws_kid(receipt: str) -> str:
    return jwt.get_unverified_header(receipt.split("~")[0])["kid"]


def complete(gw, key=None):
    with gw.http(key or gw.api_key) as c:
        r = c.post("/v1/chat/completions", json={"model": gw.chat_model, "messages": MESSAGES})
    assert r.status_code == 200, r.text
    return r


def streamed(gw, key=None) -> tuple[str, bytes, str | None]:
    """(request id, the body before the receipt line, the receipt) of a streamed answer, from
    the exact bytes received."""
    body = {"model": gw.chat_model, "messages": MESSAGES, "stream": True,
            "stream_options": {"include_usage": True}}
    with gw.http(key or gw.api_key) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        raw = b"".join(r.iter_raw())
        rid = r.headers["x-request-id"]
    at = raw.rfind(b"\n\n" + RECEIPT_LINE)
    if at < 0:
        return rid, raw, None
    before, line = raw[:at + 2], raw[at + 2:]
    assert line.endswith(b"\n\n") and line.count(b"\n") == 2, line
    assert before.endswith(b"data: [DONE]\n\n"), before[-200:]
    return rid, before, line[len(RECEIPT_LINE):-2].decode()


@pytest.fixture(scope="module")
def sgw(gw, chat_model):
    gw.chat_model = chat_model
    return gw


def check_against_record(claims: dict, rec: dict, body: bytes, streamed_: bool) -> None:
    assert claims["response_sha256"] == hashlib.sha256(body).hexdigest()
    for field in ("request_id", "key_id", "requested_model", "served_model", "provider", "status",
                  "error_code", "endpoint"):
        assert claims[field] == rec[field], (field, claims, rec)
    for field in ("prompt_tokens", "cached_tokens", "cache_write_tokens", "completion_tokens", "reasoning_tokens"):
        assert claims["usage"][field] == rec[field], (field, claims, rec)
    assert isinstance(claims["cost"], str) and D(claims["cost"]) == D(rec["cost"]), (claims, rec)
    assert claims["streamed"] is streamed_ and claims["endpoint"] == "chat_completions"
    assert claims["account_id"].startswith("acct_") and "upstream_response_id" in claims


def tampered_fields_fail(receipt: str, jwks: dict) -> None:
    """Every claim changed (the signature and path kept) fails verification, and so does any
    change to the signed batch or to the path."""
    token, claims_b64, path_b64 = receipt.split("~")
    claims = json.loads(unb64(claims_b64))
    for field, value in claims.items():
        if isinstance(value, bool):
            changed = not value
        elif isinstance(value, int):
            changed = value + 1
        elif isinstance(value, dict):
            changed = {**value, next(iter(value)): -1}
        elif value is None:
            changed = "x"
        else:
            changed = value[:-1] + ("0" if value[-1] != "0" else "1")
        forged = b64(json.dumps({**claims, field: changed}, separators=(",", ":")).encode())
        with pytest.raises(NotInBatch):
            verify(f"{token}~{forged}~{path_b64}", jwks)
    # The signed batch: another root, or the same root said of more receipts.
    header, payload, signature = token.split(".")
    batch = json.loads(unb64(payload))
    for forged_batch in ({**batch, "root": "00" * 32}, {**batch, "leaves": batch["leaves"] + 1}):
        forged = b64(json.dumps(forged_batch, separators=(",", ":")).encode())
        with pytest.raises(jwt.InvalidSignatureError):
            verify(f"{header}.{forged}.{signature}~{claims_b64}~{path_b64}", jwks)
    # The path: a step added, or (if it has any) one dropped or its side swapped.
    path = unb64(path_b64)
    steps = [path[i:i + 33] for i in range(0, len(path), 33)]
    forged_paths = [path + b"R" + bytes(32)]
    if steps:
        swapped = b"".join((b"L" if s[:1] == b"R" else b"R") + s[1:] for s in steps)
        forged_paths += [b"".join(steps[1:]), swapped]
    for forged_path in forged_paths:
        with pytest.raises(NotInBatch):
            verify(f"{token}~{claims_b64}~{b64(forged_path)}", jwks)


def flipped_bytes_fail(claims: dict, body: bytes) -> None:
    """Any one byte of the body changed no longer hashes to the receipt's `response_sha256`."""
    for i in range(len(body)):
        changed = bytearray(body)
        changed[i] ^= 0x01
        assert hashlib.sha256(changed).hexdigest() != claims["response_sha256"], i


def by_id(mgmt, rid: str) -> str:
    get_record(mgmt, rid)
    r = mgmt.get(f"/v1/requests/{rid}/receipt")
    assert r.status_code == 200, r.text
    assert r.json()["request_id"] == rid
    return r.json()["receipt"]


def test_jwks_is_public_and_rfc_8037(sgw):
    jwks = jwks_of(sgw.root)
    assert jwks["keys"], jwks
    for k in jwks["keys"]:
        assert (k["kty"], k["crv"], k["use"], k["alg"]) == ("OKP", "Ed25519", "sig", "EdDSA"), k
        assert len(unb64(k["x"])) == 32 and k["kid"] and "d" not in k, k


def test_a_complete_answer_has_a_verifiable_receipt(sgw, mgmt, made_ids):
    r = complete(sgw)
    rid = r.headers["x-request-id"]
    made_ids.append(rid)
    receipt = r.headers["x-router-one-receipt"]
    jwks = jwks_of(sgw.root)
    claims = verify(receipt, jwks)
    body = r.content
    rec = get_record(mgmt, rid)
    check_against_record(claims, rec, body, streamed_=False)
    # The cost spliced into the body is the receipt's, to the digit.
    assert re.search(rb'"cost":\s*"?([0-9.]+)', body).group(1).decode() == claims["cost"], body
    # An OpenAI-format upstream's own id for its answer is named (translated ones: null).
    assert claims["upstream_response_id"] == (json.loads(body)["id"] if rec["provider"].startswith("openai") else None)
    flipped_bytes_fail(claims, body)
    tampered_fields_fail(receipt, jwks)
    assert by_id(mgmt, rid) == receipt


def test_a_streamed_answer_ends_with_a_verifiable_receipt(sgw, mgmt, made_ids):
    rid, body, receipt = streamed(sgw)
    made_ids.append(rid)
    assert receipt, "no receipt line at the end of the stream"
    jwks = jwks_of(sgw.root)
    claims = verify(receipt, jwks)
    rec = get_record(mgmt, rid)
    check_against_record(claims, rec, body, streamed_=True)
    first = json.loads(body.split(b"\n\n")[0].removeprefix(b"data: "))
    assert claims["upstream_response_id"] == (first["id"] if rec["provider"].startswith("openai") else None)
    flipped_bytes_fail(claims, body)
    tampered_fields_fail(receipt, jwks)
    assert by_id(mgmt, rid) == receipt


@pytest.mark.parametrize("family", ["claude", "gemini"])
def test_a_translated_answer_names_the_upstreams_own_id(sgw, mgmt, models, made_ids, family):
    """Through the Anthropic and Gemini adapters the receipt names the vendor's own id for the
    answer (Anthropic's message id, Gemini's `responseId`), which is also the body's `id`."""
    model = next(mid for mid, m in models.items() if mid.startswith(family) and not is_embedding(m))
    plain = sgw.chat_model
    sgw.chat_model = model
    try:
        r = complete(sgw)
        rid, body, receipt = streamed(sgw)
    finally:
        sgw.chat_model = plain
    made_ids.extend([r.headers["x-request-id"], rid])
    jwks = jwks_of(sgw.root)
    claims = verify(r.headers["x-router-one-receipt"], jwks)
    assert get_record(mgmt, r.headers["x-request-id"])["provider"].startswith(("anthropic", "gemini")), claims
    assert claims["upstream_response_id"] == json.loads(r.content)["id"], claims
    assert claims["upstream_response_id"].startswith("msg_" if family == "claude" else ""), claims
    streamed_claims = verify(receipt, jwks)
    first = json.loads(body.split(b"\n\n")[0].removeprefix(b"data: "))
    assert streamed_claims["upstream_response_id"] == first["id"], streamed_claims


def test_an_embeddings_answer_is_signed(sgw, mgmt, embedding_model, made_ids):
    with sgw.http(sgw.api_key) as c:
        r = c.post("/v1/embeddings", json={"model": embedding_model, "input": "sign me"})
    assert r.status_code == 200, r.text
    made_ids.append(r.headers["x-request-id"])
    claims = verify(r.headers["x-router-one-receipt"], jwks_of(sgw.root))
    assert claims["endpoint"] == "embeddings" and claims["requested_model"] == embedding_model, claims
    assert claims["response_sha256"] == hashlib.sha256(r.content).hexdigest()
    assert D(claims["cost"]) == D(get_record(mgmt, r.headers["x-request-id"])["cost"])


def test_the_receipt_is_kept_off_responses_for_a_key_hiding_router_headers(sgw, mgmt):
    key = new_key(mgmt, router_headers=False)
    r = complete(sgw, key["key"])
    assert not any(h.startswith("x-router-one-") for h in r.headers), dict(r.headers)
    receipt = by_id(mgmt, r.headers["x-request-id"])
    assert verify(receipt, jwks_of(sgw.root))["response_sha256"] == hashlib.sha256(r.content).hexdigest()
    rid, body, line = streamed(sgw, key["key"])
    assert line is None and RECEIPT_LINE not in body
    receipt = by_id(mgmt, rid)
    assert verify(receipt, jwks_of(sgw.root))["response_sha256"] == hashlib.sha256(body).hexdigest()


def test_receipts_are_scoped_and_dialects_are_not_signed(sgw, mgmt, gw):
    # Another account's request id is the same 404 as an unknown one.
    other = gw.admin("create-account", "--email", f"receipts-{uuid.uuid4().hex[:8]}@example.com")
    assert other.returncode == 0, other.stderr
    other_key = json.loads(other.stdout.strip().splitlines()[-1])["management_key"]
    rid = complete(sgw).headers["x-request-id"]
    get_record(mgmt, rid)
    with gw.http(other_key) as c:
        theirs = c.get(f"/v1/requests/{rid}/receipt")
        unknown = c.get("/v1/requests/req_unknown/receipt")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"]
    assert theirs.json()["error"]["message"].replace(rid, "X") == unknown.json()["error"]["message"].replace(
        "req_unknown", "X")
    # /v1/responses rewrites the chat answer after the pipeline: no receipt, no header.
    with gw.http(gw.api_key) as c:
        r = c.post("/v1/responses", json={"model": sgw.chat_model, "input": "hello"})
    assert r.status_code == 200, r.text
    assert "x-router-one-receipt" not in r.headers
    assert get_record(mgmt, r.headers["x-request-id"])["endpoint"] == "responses"
    r = mgmt.get(f"/v1/requests/{r.headers['x-request-id']}/receipt")
    assert r.status_code == 404 and "no receipt" in r.json()["error"]["message"], r.text


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "verify", *args], capture_output=True, text=True, timeout=60)


def test_the_verify_command(sgw, tmp_path):
    r = complete(sgw)
    receipt = r.headers["x-router-one-receipt"]
    (tmp_path / "jwks.json").write_text(json.dumps(jwks_of(sgw.root)))
    (tmp_path / "body.json").write_bytes(r.content)
    ok = run_verify(receipt, "--jwks", str(tmp_path / "jwks.json"), "--body", str(tmp_path / "body.json"))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["request_id"] == r.headers["x-request-id"]
    # The JWKS by URL, and the receipt from a file.
    (tmp_path / "receipt.txt").write_text(receipt)
    ok = run_verify(str(tmp_path / "receipt.txt"), "--jwks", f"{sgw.root}/.well-known/jwks.json")
    assert ok.returncode == 0, ok.stderr
    # A changed body.
    (tmp_path / "other.json").write_bytes(r.content.replace(b"}", b" }", 1))
    bad = run_verify(receipt, "--jwks", str(tmp_path / "jwks.json"), "--body", str(tmp_path / "other.json"))
    assert bad.returncode != 0 and "does NOT match" in bad.stderr, bad.stderr
    # Changed claims.
    token, claims_b64, path_b64 = receipt.split("~")
    claims = json.loads(unb64(claims_b64))
    claims["cost"] = "0"
    forged = f"{token}~{b64(json.dumps(claims).encode())}~{path_b64}"
    bad = run_verify(forged, "--jwks", str(tmp_path / "jwks.json"))
    assert bad.returncode != 0 and "NOT valid" in bad.stderr and "claims were altered" in bad.stderr, bad.stderr
    assert bad.stdout == ""
    # A changed signed batch.
    header, payload, signature = token.split(".")
    batch = json.loads(unb64(payload))
    forged = f"{header}.{b64(json.dumps({**batch, 'iat': batch['iat'] + 1}).encode())}.{signature}~{claims_b64}~{path_b64}"
    bad = run_verify(forged, "--jwks", str(tmp_path / "jwks.json"))
    assert bad.returncode != 0 and "NOT valid" in bad.stderr and "bad signature" in bad.stderr, bad.stderr


def test_rotation_keeps_old_receipts_verifiable(tmp_path_factory, chat_model):
    data = tmp_path_factory.mktemp("receipts") / "data"
    g = tracked(Gateway(data, log_path=log_dir(tmp_path_factory) / "receipts-gateway.log"))
    g.start()
    try:
        g.chat_model = chat_model
        old = complete(g).headers["x-router-one-receipt"]
        old_kid = jws_kid(old)
        g.stop()
        rotated = g.admin("rotate-receipt-key")
        assert rotated.returncode == 0, rotated.stderr
        new_kid = json.loads(rotated.stdout)["kid"]
        assert new_kid != old_kid and json.loads(rotated.stdout)["retired"] == [old_kid]
        g.start()
        jwks = jwks_of(g.root)
        assert {k["kid"] for k in jwks["keys"]} == {old_kid, new_kid}
        assert verify(old, jwks)["request_id"]
        new = complete(g).headers["x-router-one-receipt"]
        assert jws_kid(new) == new_kid
        verify(new, jwks)
    finally:
        g.stop()


def test_without_receipts_switched_on_nothing_is_signed(tmp_path, chat_model):
    """Receipts are opt-in (`--receipts`): without them an answer carries no receipt header,
    the stream no receipt line, and the by-id call says there is none."""
    g = Gateway(tmp_path / "data", log_path=log_path("no-receipts", tmp_path), env={"ROUTER_ONE_RECEIPTS": "false"})
    g.start()
    try:
        with g.http(g.api_key) as http, g.http(g.management_key) as mgmt:
            body = {"model": chat_model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi [[sim:words=5]]"}]}
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200 and "x-router-one-receipt" not in r.headers
            s = http.post("/v1/chat/completions", json=body | {"stream": True})
            assert s.status_code == 200 and b": receipt" not in s.content
            rec = mgmt.get(f"/v1/requests/{r.headers['x-request-id']}/receipt")
            assert rec.status_code == 404, rec.text
    finally:
        g.stop()


def test_concurrent_answers_share_signatures_and_each_verifies(sgw, mgmt, made_ids):
    """Receipts sealed at the same moment are signed together (one signature over a Merkle
    root): each still verifies on its own, names its own request and body, and a receipt's
    claims under another receipt's path do not."""
    import asyncio
    import httpx

    async def one(c, i):
        body = {"model": sgw.chat_model, "messages": [{"role": "user", "content": f"together {i}"}]}
        if i % 2:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
            async with c.stream("POST", f"{sgw.root}/v1/chat/completions", json=body,
                                headers={"authorization": f"Bearer {sgw.api_key}"}) as r:
                raw = b"".join([chunk async for chunk in r.aiter_raw()])
                at = raw.rfind(b"\n\n" + RECEIPT_LINE)
                return r.headers["x-request-id"], raw[:at + 2], raw[at + 2 + len(RECEIPT_LINE):-2].decode()
        r = await c.post(f"{sgw.root}/v1/chat/completions", json=body,
                         headers={"authorization": f"Bearer {sgw.api_key}"})
        return r.headers["x-request-id"], r.content, r.headers["x-router-one-receipt"]

    async def all_at_once():
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as c:
            return await asyncio.gather(*(one(c, i) for i in range(64)))

    answers = asyncio.run(all_at_once())
    made_ids.extend(rid for rid, _, _ in answers)
    jwks = jwks_of(sgw.root)
    batches: dict[str, list[str]] = {}
    for rid, body, receipt in answers:
        claims = verify(receipt, jwks)
        assert claims["request_id"] == rid
        assert claims["response_sha256"] == hashlib.sha256(body).hexdigest(), rid
        batches.setdefault(receipt.split("~")[0], []).append(receipt)
    print(f"64 receipts in {len(batches)} signed batches")
    # Each record keeps its receipt's parts and its batch's JWS once: the receipt served by id
    # is rebuilt from them byte for byte, whatever its place in its batch.
    for rid, _, receipt in answers:
        assert by_id(mgmt, rid) == receipt, rid
    for receipts in batches.values():
        if len(receipts) > 1:
            token, _, path = receipts[0].split("~")
            other_claims = receipts[1].split("~")[1]
            with pytest.raises(NotInBatch):
                verify(f"{token}~{other_claims}~{path}", jwks)
