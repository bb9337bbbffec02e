"""Consistency proofs between signed states (issue 16, part 2) against a live `cledger serve`.

Each answer of `GET /app/transactions/consistency` is checked here with code independent of
cledger's: the COSE root signatures with CCF's `ccf.cose`, the proof with this file's RFC 9162
verifier over CCF's hashing (no domain prefixes). The CLI's kept "verified state" must refuse
a ledger restored from an old backup and extended differently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import subprocess
from pathlib import Path

import cbor2
import ccf.cose
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import Api, cledger_binary
from server import LedgerServer


def children(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(left + right).digest()


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2, with CCF's node hash SHA-256(left || right)."""
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0 or old_size > new_size:
        return False
    if old_size & (old_size - 1) == 0:
        proof = [old_root, *proof]
    if not proof:
        return False
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = children(c, fr)
            sr = children(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = children(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == old_root and sr == new_root


def service_key_pem(api: Api) -> bytes:
    cert = x509.load_pem_x509_certificate(api.server.service_cert_pem.encode())
    return cert.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def check_state(api: Api, state: dict) -> bytes:
    """The signed state's root, after checking its COSE root signature names it."""
    root = bytes.fromhex(state["root"])
    signature = base64.b64decode(state["signature"])
    phdr, _, _ = ccf.cose.verify_cose_sign1_with_key(service_key_pem(api), signature, payload=root)
    assert phdr["ccf.v1"]["txid"] == state["transactionId"]
    assert state["treeSize"] == int(state["transactionId"].split(".")[1])
    return root


def signature_of(api: Api, txid: str) -> str:
    """The signature transaction that covers `txid` (named in its COSE receipt)."""
    response = api.get("/app/receipt/cose", transaction_id=txid)
    assert response.status_code == 200, response.text
    return cbor2.loads(cbor2.loads(response.content).value[0])["ccf.v1"]["txid"]


def consistency(api: Api, **params) -> dict:
    response = api.get("/app/transactions/consistency", **{"api-version": "2022-05-13"}, **params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def signatures(api: Api) -> list[str]:
    """Signature transactions: each write is committed (and signed) before the next."""
    return [signature_of(api, api.append(f"consistency entry {i}")) for i in range(24)]


def test_random_pairs_of_signed_states_are_consistent(api: Api, signatures: list[str]):
    rng = random.Random(16)
    pairs = [tuple(sorted(rng.sample(signatures, 2), key=lambda t: int(t.split(".")[1]))) for _ in range(40)]
    pairs += [(s, s) for s in signatures[:3]]
    for old, new in pairs:
        answer = consistency(api, **{"from": old, "to": new})
        assert answer["from"]["transactionId"] == old and answer["to"]["transactionId"] == new
        old_root, new_root = check_state(api, answer["from"]), check_state(api, answer["to"])
        proof = [bytes.fromhex(h) for h in answer["proof"]]
        size_old, size_new = answer["from"]["treeSize"], answer["to"]["treeSize"]
        assert verify_consistency(size_old, size_new, old_root, new_root, proof), (old, new)
        # The proof proves these sizes only, and every hash of it matters.
        if size_old != size_new:
            assert not verify_consistency(size_old + 1, size_new, old_root, new_root, proof)
            for i in range(len(proof)):
                bad = list(proof)
                bad[i] = hashlib.sha256(bad[i]).digest()
                assert not verify_consistency(size_old, size_new, old_root, new_root, bad)
    # `to` defaults to the newest signature.
    newest = consistency(api, **{"from": signatures[0]})
    assert int(newest["to"]["treeSize"]) >= int(signatures[-1].split(".")[1])


def test_errors(api: Api, signatures: list[str]):
    def refused(status: int, **params) -> dict:
        response = api.get("/app/transactions/consistency", **{"api-version": "2022-05-13"}, **params)
        assert response.status_code == status, (params, response.text)
        return response.json()["error"]

    assert "from" in refused(400)["message"]
    refused(400, **{"from": "abc"})
    view, seqno = signatures[3].split(".")
    # The entry before a signature is not one.
    assert "not a signature" in refused(400, **{"from": f"{view}.{int(seqno) - 1}"})["message"]
    refused(400, **{"from": signatures[5], "to": signatures[2]})
    assert refused(404, **{"from": f"{view}.99999999"})["code"] == "TransactionPendingOrUnknown"
    refused(400, **{"from": f"{int(view) + 5}.{seqno}"})


def cli(api: Api, *args: str, server: LedgerServer | None = None) -> subprocess.CompletedProcess:
    server = server or api.server
    return subprocess.run(
        [str(cledger_binary()), *args, "--endpoint", server.endpoint,
         "--cert", str(server.admin_pem_path), "--service-cert", str(server.service_cert_path)],
        capture_output=True, text=True, check=False,
    )


def test_the_cli_keeps_a_verified_state_and_refuses_a_restored_and_diverged_ledger(
    api: Api, signatures: list[str], tmp_path: Path
):
    state = tmp_path / "state.json"
    first = cli(api, "consistency", "--state", str(state))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("FIRST"), first.stdout
    again = cli(api, "consistency", "--state", str(state))
    assert again.returncode == 0 and again.stdout.startswith("UNCHANGED"), again.stdout + again.stderr
    between = cli(api, "consistency", "--from", signatures[1], "--to", signatures[4])
    assert between.returncode == 0 and between.stdout.startswith("CONSISTENT"), between.stderr

    # A backup now, then the ledger grows and the client verifies the newer state.
    backup = tmp_path / "backup"
    done = cli(api, "backup", "--data-dir", str(api.server.data_dir), "--to", str(backup))
    assert done.returncode == 0, done.stdout + done.stderr
    for i in range(5):
        api.append(f"after the backup {i}")
    grown = cli(api, "consistency", "--state", str(state))
    assert grown.returncode == 0 and grown.stdout.startswith("CONSISTENT"), grown.stdout + grown.stderr
    kept = json.loads(state.read_text())

    # The ledger is lost and restored from the backup, then extended differently (more
    # entries than were lost, so it is longer than the verified state).
    api.server.stop()
    restored = LedgerServer(cledger_binary(), backup)
    restored.start()
    try:
        restored_api = Api(restored)
        behind = cli(api, "consistency", "--state", str(state), server=restored)
        assert behind.returncode == 1, behind.stdout + behind.stderr
        assert "ROLLBACK" in behind.stderr, behind.stderr
        for i in range(12):
            restored_api.append(f"a different history {i}")
        refused = cli(api, "consistency", "--state", str(state), "--json", server=restored)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        error = json.loads(refused.stdout.splitlines()[-1])["error"]
        assert error["code"] == "NotConsistent"
        assert "FORK" in error["message"], error
        # The kept state is left as it was: the evidence of what was verified.
        assert json.loads(state.read_text()) == kept
    finally:
        restored.stop()
        api.server.start()
