"""Receipts written by cledger must verify with the two public verifiers, and only when intact.

* the Azure SDK: `azure.confidentialledger.receipt.verify_receipt` (azure-confidentialledger 1.1.1,
  and 2.0.0b2 when scripts/test.sh runs the suite again with it);
* CCF's reference functions in the `ccf` package (`ccf.receipt`): `root`, `verify`,
  `check_endorsements`, `check_cert_chain`, with the leaf computed from `leafComponents` as CCF's
  `doc/use_apps/verify_tx.rst` describes.

The node certificate in the receipts must also pass strict X.509 validators (OpenSSL
`-x509_strict`, which Python >= 3.13 enables by default, and `cryptography`'s verifier).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import shutil
import ssl
import subprocess
from datetime import datetime, timezone
from ipaddress import ip_address
from pathlib import Path
from typing import Callable

import ccf.receipt
import pytest
from azure.confidentialledger.receipt import compute_claims_digest, verify_receipt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store

ZERO_DIGEST = "0" * 64
HEX_DIGITS = "0123456789abcdef"

# Entries of the main ledger whose receipts are checked: first, last and some in between, mixing
# collections and entries with and without claims (see the `ledger` fixture for the layout).
SAMPLE_POSITIONS = (0, 1, 2, 15, 20, 30, 40, 45, -2, -1)
# The entry the negative tests mutate: written with --claims, in the middle of the tree.
MUTATED_POSITION = 30


# --- helpers -------------------------------------------------------------------------------------


def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode())


def is_hex_digest(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in HEX_DIGITS for c in value)


def ccf_leaf(leaf_components: dict) -> str:
    """The Merkle leaf as CCF defines it: SHA-256(write_set_digest ‖ SHA-256(commit_evidence)
    ‖ claims_digest), as hex (the input `ccf.receipt.root` expects)."""
    return hashlib.sha256(
        bytes.fromhex(leaf_components["writeSetDigest"])
        + hashlib.sha256(leaf_components["commitEvidence"].encode()).digest()
        + bytes.fromhex(leaf_components["claimsDigest"])
    ).hexdigest()


def endorsement_certs(receipt: dict) -> list[x509.Certificate]:
    return [load_cert(pem) for pem in receipt.get("serviceEndorsements", [])]


def verify_with_sdk(receipt: dict, service_cert_pem: str, claims: list | None) -> None:
    """Raises ValueError when the receipt does not verify."""
    verify_receipt(receipt, service_cert_pem, application_claims=claims)


def verify_with_ccf(receipt: dict, service_cert_pem: str) -> None:
    """CCF's receipt verification, step by step; raises InvalidSignature when it fails."""
    node_cert = load_cert(receipt["cert"])
    service_cert = load_cert(service_cert_pem)
    endorsements = endorsement_certs(receipt)
    ccf.receipt.check_endorsements(node_cert, service_cert, endorsements)
    root = ccf.receipt.root(ccf_leaf(receipt["leafComponents"]), receipt["proof"])
    ccf.receipt.verify(root, receipt["signature"], node_cert)
    ccf.receipt.check_cert_chain(node_cert, service_cert, endorsements)


def verify_with_both(response: dict, service_cert_pem: str) -> None:
    verify_with_sdk(response["receipt"], service_cert_pem, response.get("applicationClaims"))
    verify_with_ccf(response["receipt"], service_cert_pem)


def check_response_shape(response: dict, entry) -> None:
    """The body of GET /app/transactions/{id}/receipt, field by field (acl-api.md §5.1/§5.2)."""
    assert response["state"] == "Ready"
    assert response["transactionId"] == entry.txid
    receipt = response["receipt"]
    leaf = receipt["leafComponents"]
    assert set(leaf) == {"claimsDigest", "commitEvidence", "writeSetDigest"}
    prefix = f"ce:{entry.txid}:"
    assert leaf["commitEvidence"].startswith(prefix)
    assert is_hex_digest(leaf["commitEvidence"][len(prefix) :])
    assert is_hex_digest(leaf["writeSetDigest"])
    assert is_hex_digest(leaf["claimsDigest"])
    for element in receipt["proof"]:
        assert len(element) == 1 and set(element) <= {"left", "right"}, element
        assert is_hex_digest(next(iter(element.values())))
    assert receipt.get("serviceEndorsements", []) == []
    base64.b64decode(receipt["signature"], validate=True)
    spki = load_cert(receipt["cert"]).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert receipt["nodeId"] == hashlib.sha256(spki).hexdigest()
    check_application_claims(response, entry)


def check_application_claims(response: dict, entry) -> None:
    claims_digest = response["receipt"]["leafComponents"]["claimsDigest"]
    if not entry.claims:
        assert "applicationClaims" not in response
        assert claims_digest == ZERO_DIGEST
        return
    claims = response["applicationClaims"]
    assert len(claims) == 1 and claims[0]["kind"] == "LedgerEntry"
    ledger_entry = claims[0]["ledgerEntry"]
    assert ledger_entry["protocol"] == "LedgerEntryV1"
    assert ledger_entry["collectionId"] == entry.effective_collection
    assert ledger_entry["contents"] == entry.contents
    assert len(base64.b64decode(ledger_entry["secretKey"], validate=True)) == 32
    assert compute_claims_digest(claims) == claims_digest


def flip_hex(text: str, index: int) -> str:
    """`text` with the hex digit at `index` replaced by another one."""
    digit = HEX_DIGITS[(HEX_DIGITS.index(text[index].lower()) + 1) % 16]
    return text[:index] + digit + text[index + 1 :]


def openssl(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("openssl")
    if binary is None:
        pytest.fail("the openssl command-line tool is required", pytrace=False)
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def extension(cert: x509.Certificate, ext_type: type):
    return cert.extensions.get_extension_for_class(ext_type)


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def receipt_of(ledger):
    """Fetches (once) the receipt response of the main ledger's entry at a position."""
    cache: dict[str, dict] = {}

    def fetch(position: int) -> tuple[object, dict]:
        entry = ledger.entries[position]
        if entry.txid not in cache:
            cache[entry.txid] = ledger.receipt(entry.txid)
        return entry, cache[entry.txid]

    return fetch


@pytest.fixture(scope="session")
def mutation_base(ledger, receipt_of) -> dict:
    """A valid receipt response with claims and a proof with at least two elements."""
    entry, response = receipt_of(MUTATED_POSITION)
    assert entry.claims, "the mutated entry must have application claims"
    assert len(response["receipt"]["proof"]) >= 2
    verify_with_both(response, ledger.service_cert_pem)  # the mutations start from a good receipt
    return response


@pytest.fixture(params=["ledger", "p256_ledger"])
def any_ledger(request):
    return request.getfixturevalue(request.param)


@pytest.fixture
def cert_files(any_ledger, tmp_path) -> tuple[Path, Path]:
    """(service cert path, node cert path) for a receipt of `any_ledger`."""
    response = any_ledger.receipt(any_ledger.entries[-1].txid)
    node_path = tmp_path / "node_cert.pem"
    node_path.write_text(response["receipt"]["cert"])
    return any_ledger.data_dir / "service_cert.pem", node_path


# --- the ledgers ---------------------------------------------------------------------------------


def test_append_assigns_increasing_transaction_ids(ledger):
    assert len(ledger.entries) == 60
    seqnos = [tuple(int(part) for part in e.txid.split(".")) for e in ledger.entries]
    assert seqnos == sorted(seqnos) and len(set(seqnos)) == len(seqnos)
    assert {e.effective_collection for e in ledger.entries} == {
        "subledger:0",
        "orders",
        "événements clés ✓ 2024",
    }


def test_audit_accepts_the_ledgers(ledger, p256_ledger):
    ledger.audit()
    p256_ledger.audit()


# --- valid receipts ------------------------------------------------------------------------------


@pytest.mark.parametrize("position", SAMPLE_POSITIONS)
def test_receipt_response_shape(receipt_of, position):
    entry, response = receipt_of(position)
    check_response_shape(response, entry)


@pytest.mark.parametrize("position", SAMPLE_POSITIONS)
def test_receipt_verifies_with_sdk(ledger, receipt_of, position):
    _, response = receipt_of(position)
    claims = response.get("applicationClaims")
    verify_with_sdk(response["receipt"], ledger.service_cert_pem, claims)
    # The receipt alone (without the claims) verifies as well.
    verify_with_sdk(response["receipt"], ledger.service_cert_pem, None)


@pytest.mark.parametrize("position", SAMPLE_POSITIONS)
def test_receipt_verifies_with_ccf(ledger, receipt_of, position):
    _, response = receipt_of(position)
    verify_with_ccf(response["receipt"], ledger.service_cert_pem)


def test_receipts_of_a_p256_ledger_verify(p256_ledger):
    assert len(p256_ledger.entries) == 5
    for entry in p256_ledger.entries:
        response = p256_ledger.receipt(entry.txid)
        check_response_shape(response, entry)
        verify_with_both(response, p256_ledger.service_cert_pem)
    node_cert = load_cert(response["receipt"]["cert"])
    for cert in (node_cert, load_cert(p256_ledger.service_cert_pem)):
        assert isinstance(cert.public_key().curve, ec.SECP256R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)


def test_default_curve_is_p384(ledger, receipt_of):
    _, response = receipt_of(0)
    for pem in (response["receipt"]["cert"], ledger.service_cert_pem):
        cert = load_cert(pem)
        assert isinstance(cert.public_key().curve, ec.SECP384R1)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA384)


# --- tampered receipts ---------------------------------------------------------------------------


def _flip_leaf_component(name: str, index: int = -1) -> Callable[[dict], None]:
    def mutate(receipt: dict) -> None:
        leaf = receipt["leafComponents"]
        leaf[name] = flip_hex(leaf[name], index % len(leaf[name]))

    return mutate


def _flip_proof_hash(receipt: dict) -> None:
    element = receipt["proof"][len(receipt["proof"]) // 2]
    [(side, digest)] = element.items()
    element[side] = flip_hex(digest, 0)


def _swap_proof_side(receipt: dict) -> None:
    element = receipt["proof"][0]
    [(side, digest)] = element.items()
    receipt["proof"][0] = {"right" if side == "left" else "left": digest}


def _drop_proof_element(receipt: dict) -> None:
    del receipt["proof"][0]


def _corrupt_signature(receipt: dict) -> None:
    signature = bytearray(base64.b64decode(receipt["signature"]))
    signature[-1] ^= 0x01  # still well-formed DER, just the wrong value of s
    receipt["signature"] = base64.b64encode(bytes(signature)).decode()


MUTATIONS: dict[str, Callable[[dict], None]] = {
    "write_set_digest": _flip_leaf_component("writeSetDigest"),
    "commit_evidence_nonce": _flip_leaf_component("commitEvidence"),
    "claims_digest": _flip_leaf_component("claimsDigest", 17),
    "proof_hash": _flip_proof_hash,
    "proof_side": _swap_proof_side,
    "proof_dropped_element": _drop_proof_element,
    "signature": _corrupt_signature,
}


@pytest.fixture(params=sorted(MUTATIONS))
def mutated_receipt(request, mutation_base) -> dict:
    receipt = copy.deepcopy(mutation_base["receipt"])
    MUTATIONS[request.param](receipt)
    assert receipt != mutation_base["receipt"]
    return receipt


def test_sdk_rejects_mutated_receipt(ledger, mutation_base, mutated_receipt):
    for claims in (None, mutation_base["applicationClaims"]):
        with pytest.raises(ValueError):
            verify_with_sdk(mutated_receipt, ledger.service_cert_pem, claims)


def test_ccf_rejects_mutated_receipt(ledger, mutated_receipt):
    with pytest.raises(InvalidSignature):
        verify_with_ccf(mutated_receipt, ledger.service_cert_pem)


def test_receipt_does_not_verify_against_another_ledger(mutation_base, other_ledger):
    other_cert = other_ledger.service_cert_pem
    with pytest.raises(ValueError):
        verify_with_sdk(mutation_base["receipt"], other_cert, mutation_base["applicationClaims"])
    with pytest.raises(InvalidSignature):
        verify_with_ccf(mutation_base["receipt"], other_cert)


@pytest.mark.parametrize("field", ["contents", "collectionId"])
def test_sdk_rejects_altered_application_claims(ledger, mutation_base, field):
    claims = copy.deepcopy(mutation_base["applicationClaims"])
    claims[0]["ledgerEntry"][field] += " (altered)"
    with pytest.raises(ValueError):
        verify_with_sdk(mutation_base["receipt"], ledger.service_cert_pem, claims)


# --- certificates --------------------------------------------------------------------------------


def test_node_cert_passes_openssl_strict_verify(cert_files):
    service_path, node_path = cert_files
    plain = openssl("verify", "-x509_strict", "-CAfile", str(service_path), str(node_path))
    assert plain.returncode == 0 and plain.stdout.rstrip().endswith(": OK"), plain
    for check in (("-verify_hostname", "localhost"), ("-verify_ip", "127.0.0.1")):
        args = ("-x509_strict", "-purpose", "sslserver", *check, "-CAfile", str(service_path))
        tls = openssl("verify", *args, str(node_path))
        assert tls.returncode == 0, tls


def test_node_cert_fails_openssl_verify_against_another_ledger(ledger, other_ledger, tmp_path):
    node_path = tmp_path / "node_cert.pem"
    node_path.write_text(ledger.receipt(ledger.entries[0].txid)["receipt"]["cert"])
    other = other_ledger.data_dir / "service_cert.pem"
    assert openssl("verify", "-x509_strict", "-CAfile", str(other), str(node_path)).returncode != 0


def test_python_ssl_strict_context_loads_service_cert(cert_files):
    service_path, _ = cert_files
    context = ssl.create_default_context(cafile=str(service_path))
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1


def test_chain_passes_cryptography_verifier(cert_files):
    service_path, node_path = cert_files
    service = load_cert(service_path.read_text())
    node = load_cert(node_path.read_text())
    store = Store([service])
    for subject in (DNSName("localhost"), IPAddress(ip_address("127.0.0.1"))):
        chain = PolicyBuilder().store(store).build_server_verifier(subject).verify(node, [])
        assert chain[-1] == service
    # What CCF's own tooling runs (a client-auth policy).
    ccf.receipt.check_cert_chain(node, service, [])


def test_certificate_profiles_suit_strict_validators(cert_files):
    """What OpenSSL's X509_STRICT (Python >= 3.13 default, CCF issue #7132) needs, spelled out."""
    service_path, node_path = cert_files
    service = load_cert(service_path.read_text())
    node = load_cert(node_path.read_text())

    service_bc = extension(service, x509.BasicConstraints)
    assert service_bc.critical and service_bc.value.ca and service_bc.value.path_length == 0
    service_ku = extension(service, x509.KeyUsage)
    assert service_ku.critical and service_ku.value.key_cert_sign and service_ku.value.crl_sign
    service_ski = extension(service, x509.SubjectKeyIdentifier).value.digest
    assert extension(service, x509.AuthorityKeyIdentifier).value.key_identifier == service_ski
    assert service.subject == service.issuer
    assert service.serial_number > 0

    node_bc = extension(node, x509.BasicConstraints)
    assert node_bc.critical and not node_bc.value.ca
    assert extension(node, x509.KeyUsage).value.digital_signature
    eku = extension(node, x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert extension(node, x509.AuthorityKeyIdentifier).value.key_identifier == service_ski
    extension(node, x509.SubjectKeyIdentifier)
    sans = extension(node, x509.SubjectAlternativeName).value
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    assert ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert node.issuer == service.subject
    assert node.serial_number > 0

    now = datetime.now(timezone.utc)
    assert service.not_valid_before_utc <= now < node.not_valid_after_utc
    assert (service.not_valid_after_utc - now).days > 9 * 365
