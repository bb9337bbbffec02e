"""The official `azure-confidentialledger` SDK (1.1.1 or 2.0.0b2), unchanged, with bearer tokens
(the way Entra ID users call Azure confidential ledger) against a live `cledger serve` that
trusts a local test issuer (`token_issuer.py`) through a JWKS file.

The SDK gets a `TokenCredential` whose token the test issuer signed; it writes, reads and
fetches receipts that verify with the SDK's own `verify_receipt`. Refused tokens surface as
`ClientAuthenticationError` (401 `InvalidAuthenticationInfo`).
"""

from __future__ import annotations

import time
import uuid

import pytest
from azure.confidentialledger import ConfidentialLedgerClient
from azure.confidentialledger.receipt import verify_receipt
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from sdk_compat import plain
from server import LedgerServer
from token_issuer import AUDIENCE, ISSUER, SCOPE, TENANT, StaticTokenCredential, LocalIssuer

ADMIN_OID = str(uuid.UUID(int=0xA))
READER_OID = str(uuid.UUID(int=0xB))


@pytest.fixture(scope="module")
def issuer() -> LocalIssuer:
    return LocalIssuer()


@pytest.fixture(scope="module")
def live(cledger, issuer, tmp_path_factory) -> LedgerServer:
    root = tmp_path_factory.mktemp("sdk-tokens")
    jwks = issuer.write_jwks(root / "jwks.json")
    server = LedgerServer(
        cledger.binary,
        root / "data",
        (
            "--jwt-issuer", ISSUER,
            "--jwt-audience", AUDIENCE,
            "--jwt-jwks-file", str(jwks),
            "--jwt-tenant-id", TENANT,
            "--admin-oid", ADMIN_OID,
        ),
    )
    yield from server.serve_for_module()


def token_client(live: LedgerServer, credential) -> ConfidentialLedgerClient:
    return ConfidentialLedgerClient(
        endpoint=live.endpoint,
        credential=credential,
        ledger_certificate_path=str(live.service_cert_path),
    )


def test_sdk_with_a_token_writes_reads_and_verifies_receipts(live: LedgerServer, issuer: LocalIssuer):
    credential = StaticTokenCredential(issuer.token(ADMIN_OID))
    client = token_client(live, credential)
    txid = client.begin_create_ledger_entry({"contents": "written with a bearer token"}).result()[
        "transactionId"
    ]
    assert credential.scopes and SCOPE in credential.scopes[0], credential.scopes
    got = client.begin_get_ledger_entry(txid).result()
    assert got["state"] == "Ready"
    assert got["entry"]["contents"] == "written with a bearer token"
    assert client.get_transaction_status(txid)["state"] == "Committed"
    receipt = plain(client.begin_get_receipt(txid).result())
    assert receipt["state"] == "Ready"
    verify_receipt(receipt["receipt"], live.service_cert_pem)
    assert client.get_user(ADMIN_OID)["assignedRole"] == "Administrator"


def test_token_principal_roles_via_sdk(live: LedgerServer, issuer: LocalIssuer):
    admin = token_client(live, StaticTokenCredential(issuer.token(ADMIN_OID)))
    reader = token_client(live, StaticTokenCredential(issuer.token(READER_OID)))
    with pytest.raises(HttpResponseError) as info:
        reader.get_current_ledger_entry()
    assert info.value.status_code == 403 and info.value.error.code == "NotAllowed"
    assert admin.create_or_update_user(READER_OID, {"assignedRole": "Reader"})["assignedRole"] == "Reader"
    assert reader.get_current_ledger_entry()["contents"]
    with pytest.raises(HttpResponseError) as info:
        reader.create_ledger_entry({"contents": "not allowed"})
    assert info.value.status_code == 403 and info.value.error.code == "NotAllowed"


@pytest.mark.parametrize(
    "make_token, check",
    [
        (lambda i: i.token(ADMIN_OID, lifetime=-3600, not_before=-7200), "expired"),
        (lambda i: i.token(ADMIN_OID, not_before=3600), "not yet valid"),
        (lambda i: i.token(ADMIN_OID, aud="https://someone-else.example"), "wrong audience"),
        (lambda i: i.token(ADMIN_OID, tid="another-tenant"), "tenant mismatch"),
        (lambda i: LocalIssuer(i.kid).token(ADMIN_OID), "bad signature"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "wrong-tenant", "forged"],
)
def test_refused_tokens_raise_client_authentication_error(live: LedgerServer, issuer: LocalIssuer, make_token, check):
    # The SDK is told the token is still good, so it sends it; the ledger refuses it.
    client = token_client(live, StaticTokenCredential(make_token(issuer), int(time.time()) + 3600))
    with pytest.raises(ClientAuthenticationError) as info:
        client.get_current_ledger_entry()
    assert info.value.status_code == 401
    assert info.value.error.code == "InvalidAuthenticationInfo"
    assert info.value.error.message.endswith(check), info.value.error.message
