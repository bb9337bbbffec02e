"""COSE receipts (issue 16, part 1), checked by three independent verifiers against a live
`cledger serve`: CCF's own `ccf.receipt.verify_cose` (ccf 7), the `scitt-cose` package's
`verify_receipt` ("CCF ccf.v1 vds=2" profile), and cledger's verifier (`cledger receipt
--cose`, `cledger verify` of an evidence package).

A receipt must verify with each of them, and every one-bit change to the receipt, or to the
claims digest of the entry it is checked for, must fail with each of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess

import cbor2
import ccf.receipt
import pytest
import scitt_cose
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from conftest import Api, cledger_binary

COSE_SIGN1_TAG = 18


def service_key(api: Api):
    cert = x509.load_pem_x509_certificate(api.server.service_cert_pem.encode())
    return cert.public_key()


def service_key_pem(api: Api) -> str:
    return service_key(api).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def cose_receipt(api: Api, txid: str) -> bytes:
    response = api.get("/app/receipt/cose", transaction_id=txid)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/cose"
    return response.content


def claims_digest_of(api: Api, txid: str) -> bytes:
    """The entry's claims digest, from its JSON receipt (a LedgerEntryV1 claim's digest)."""
    response = api.get(f"/app/transactions/{txid}/receipt", **{"api-version": "2026-02-23"})
    assert response.status_code == 200, response.text
    return bytes.fromhex(response.json()["receipt"]["leafComponents"]["claimsDigest"])


def ccf_verifies(receipt: bytes, api: Api, claims_digest: bytes) -> bool:
    try:
        ccf.receipt.verify_cose(receipt, service_key(api), claims_digest)
        return True
    except Exception:  # noqa: BLE001 - any refusal counts as "does not verify"
        return False


def scitt_verifies(receipt: bytes, api: Api, claims_digest: bytes) -> bool:
    result = scitt_cose.verify_receipt(
        receipt, leaf_entry_hex=claims_digest.hex(), log_public_key_pem=service_key_pem(api)
    )
    return result.ok


@pytest.fixture(scope="module")
def entries(api: Api) -> list[str]:
    """Entries written one at a time (each committed before the next), with claims."""
    return [api.append(f"cose receipt entry {i}") for i in range(5)]


def test_receipts_verify_with_ccf_scitt_and_cledger(api: Api, entries: list[str], tmp_path):
    key = service_key(api)
    for txid in entries:
        receipt = cose_receipt(api, txid)
        digest = claims_digest_of(api, txid)
        assert digest != bytes(32), "written with a claims-capable api-version"
        phdr = ccf.receipt.verify_cose(receipt, key, digest)
        assert phdr is not None
        result = scitt_cose.verify_receipt(
            receipt, leaf_entry_hex=digest.hex(), log_public_key_pem=service_key_pem(api)
        )
        assert result.ok, result.errors
        # The CWT claims: the issuer is the ledger id, the subject CCF's sample value.
        assert result.subject == "ledger.signature"
        assert result.issuer
        # The structure CCF documents (cddl/ccf-receipt.cddl).
        outer = cbor2.loads(receipt)
        assert outer.tag == COSE_SIGN1_TAG
        protected, unprotected, payload, _ = outer.value
        assert payload is None
        protected = cbor2.loads(protected)
        assert list(protected) == [1, 4, 15, 395, "ccf.v1"]
        assert protected[395] == 2
        spki = key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        assert protected[4] == hashlib.sha256(spki).hexdigest().encode()
        signed = protected["ccf.v1"]["txid"]
        assert int(signed.split(".")[1]) > int(txid.split(".")[1])
        proof = cbor2.loads(unprotected[396][-1][0])
        assert proof[1][1].startswith(f"ce:{txid}:")
        # cledger's own verifier, through the CLI.
        out = tmp_path / f"{txid}.cose"
        done = subprocess.run(
            [str(cledger_binary()), "receipt", txid, "--cose", "--out", str(out),
             "--endpoint", api.server.endpoint, "--cert", str(api.server.admin_pem_path),
             "--service-cert", str(api.server.service_cert_path)],
            capture_output=True, text=True, check=False,
        )
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == receipt
        assert f"signed at {signed}" in done.stderr


def test_every_bit_of_a_receipt_and_of_the_claims_digest_matters(api: Api, entries: list[str]):
    txid = entries[2]
    receipt = cose_receipt(api, txid)
    digest = claims_digest_of(api, txid)
    assert ccf_verifies(receipt, api, digest) and scitt_verifies(receipt, api, digest)
    unnoticed = {"ccf": [], "scitt-cose": []}
    for i in range(len(receipt)):
        for bit in range(8):
            flipped = bytearray(receipt)
            flipped[i] ^= 1 << bit
            flipped = bytes(flipped)
            if ccf_verifies(flipped, api, digest):
                unnoticed["ccf"].append((i, bit))
            if scitt_verifies(flipped, api, digest):
                unnoticed["scitt-cose"].append((i, bit))
    for i in range(len(digest)):
        for bit in range(8):
            other = bytearray(digest)
            other[i] ^= 1 << bit
            assert not ccf_verifies(receipt, api, bytes(other))
            assert not scitt_verifies(receipt, api, bytes(other))
    assert unnoticed["scitt-cose"] == [], f"flips scitt-cose accepts: {unnoticed['scitt-cose']}"
    # CCF's verifier reads a path step's `left` with Python truthiness, so a `true` (0xf5)
    # turned into another truthy CBOR simple value (0xf1, 0xe5) still proves the same root:
    # a leniency of that verifier, not a forgery (scitt-cose and cledger refuse them). Any
    # other accepted flip is a failure.
    lenient = [(i, bit) for i, bit in unnoticed["ccf"] if receipt[i] == 0xF5 and bit in (2, 4)]
    assert unnoticed["ccf"] == lenient, f"flips CCF's verifier accepts: {unnoticed['ccf']}"
    proof = cbor2.loads(cbor2.loads(receipt).value[1][396][-1][0])
    assert len(lenient) <= 2 * sum(1 for left, _ in proof[2] if left)


def test_receipts_are_the_same_bytes_on_every_route_and_after_a_restart(api: Api, entries: list[str]):
    before = {txid: cose_receipt(api, txid) for txid in entries}
    for txid, receipt in before.items():
        assert cose_receipt(api, txid) == receipt
        acl = api.get(f"/app/transactions/{txid}/receipt/cose", **{"api-version": "2022-05-13"})
        assert acl.status_code == 200 and acl.content == receipt
    api.server.stop()
    api.server.start()
    for txid, receipt in before.items():
        assert cose_receipt(api, txid) == receipt


def test_errors_follow_ccf(api: Api, entries: list[str]):
    receipt = cose_receipt(api, entries[0])
    signature_txid = cbor2.loads(cbor2.loads(receipt).value[0])["ccf.v1"]["txid"]
    response = api.get("/app/receipt/cose", transaction_id=signature_txid)
    assert response.status_code == 404, response.text
    assert "signature transaction" in response.json()["error"]["message"]
    view, _ = entries[-1].split(".")
    response = api.get("/app/receipt/cose", transaction_id=f"{view}.999999")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "TransactionPendingOrUnknown"
    for bad in ("2-15", "abc", "0.0"):
        response = api.get("/app/receipt/cose", transaction_id=bad)
        assert response.status_code == 400, (bad, response.text)
    response = api.get("/app/receipt/cose")
    assert response.status_code == 400
    assert "transaction_id" in response.json()["error"]["message"]


def test_evidence_packages_carry_and_check_the_cose_receipt(api: Api, tmp_path):
    document = tmp_path / "contract.txt"
    document.write_text("the signed contract\n")
    connection = ["--endpoint", api.server.endpoint, "--cert", str(api.server.admin_pem_path),
                  "--service-cert", str(api.server.service_cert_path)]
    done = subprocess.run([str(cledger_binary()), "notarize", str(document), *connection],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    package_path = tmp_path / "contract.txt.evidence.json"
    package = json.loads(package_path.read_text())
    receipt = base64.b64decode(package["coseReceipt"])
    digest = bytes.fromhex(package["receipt"]["receipt"]["leafComponents"]["claimsDigest"])
    assert ccf_verifies(receipt, api, digest) and scitt_verifies(receipt, api, digest)
    verify = [str(cledger_binary()), "verify", str(package_path), str(document), "--json",
              "--service-cert", str(api.server.service_cert_path)]
    done = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["coseReceiptChecked"] is True
    # A COSE receipt of another transaction in the package is refused.
    other = cose_receipt(api, api.append("another entry"))
    package["coseReceipt"] = base64.b64encode(other).decode()
    package_path.write_text(json.dumps(package))
    done = subprocess.run(verify, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "CoseReceipt" in done.stdout
