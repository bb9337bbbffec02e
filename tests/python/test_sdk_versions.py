"""The official `azure-confidentialledger` 1.1.1 SDK against a live `cledger serve` with the
newer api-versions: application claims (2023-01-18-preview, 2026-02-23) checked with the SDK's
`verify_receipt(..., application_claims=...)`, and the 2024-01-26-preview / 2024-12-09-preview
operations the 1.1.1 client has no methods for, called through `client.send_request`.
"""

from __future__ import annotations

import copy

import pytest
from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.receipt import verify_receipt
from azure.core.rest import HttpRequest

from server import LedgerServer

CLAIMS = "2023-01-18-preview"
NEWEST = "2026-02-23"
TAGS = "2024-12-09-preview"
ZERO = "0" * 64


@pytest.fixture(scope="module")
def live(cledger, tmp_path_factory) -> LedgerServer:
    yield from LedgerServer(cledger.binary, tmp_path_factory.mktemp("sdk-versions")).serve_for_module()


def versioned_client(live: LedgerServer, api_version: str) -> ConfidentialLedgerClient:
    """The SDK client, unchanged, with its `api_version` keyword."""
    return ConfidentialLedgerClient(
        endpoint=live.endpoint,
        credential=ConfidentialLedgerCertificateCredential(certificate_path=str(live.admin_pem_path)),
        ledger_certificate_path=str(live.service_cert_path),
        api_version=api_version,
    )


def send(client: ConfidentialLedgerClient, method: str, url: str, **kwargs) -> dict:
    response = client.send_request(HttpRequest(method, url, **kwargs))
    assert response.status_code == 200, f"{method} {url}: {response.status_code} {response.text()}"
    return response.json()


@pytest.mark.parametrize("api_version", [CLAIMS, NEWEST])
def test_application_claims_verify_with_the_sdk(live: LedgerServer, api_version: str):
    client = versioned_client(live, api_version)
    contents = f"claimed via {api_version}"
    result = client.begin_create_ledger_entry({"contents": contents}, collection_id="py-claims").result()
    txid = result["transactionId"]

    response = client.begin_get_receipt(txid).result()
    claims = response["applicationClaims"]
    assert claims[0]["kind"] == "LedgerEntry"
    assert claims[0]["ledgerEntry"]["contents"] == contents
    assert claims[0]["ledgerEntry"]["collectionId"] == "py-claims"
    receipt = response["receipt"]
    assert receipt["leafComponents"]["claimsDigest"] != ZERO
    verify_receipt(receipt, live.service_cert_pem, application_claims=claims)

    altered = copy.deepcopy(claims)
    altered[0]["ledgerEntry"]["contents"] = contents + "!"
    with pytest.raises(ValueError):
        verify_receipt(receipt, live.service_cert_pem, application_claims=altered)

    # The same receipt through send_request, as the brief's recipe has it.
    raw = send(client, "GET", f"/app/transactions/{txid}/receipt?api-version={CLAIMS}")
    verify_receipt(raw["receipt"], live.service_cert_pem, application_claims=raw["applicationClaims"])

    # The default (2022-05-13) client sees the digest but no claims, and still verifies.
    plain = live.client().begin_get_receipt(txid).result()
    assert "applicationClaims" not in plain
    assert plain["receipt"]["leafComponents"]["claimsDigest"] == receipt["leafComponents"]["claimsDigest"]
    verify_receipt(plain["receipt"], live.service_cert_pem)


def test_stable_writes_have_no_claims(live: LedgerServer):
    client = live.client()
    txid = client.begin_create_ledger_entry({"contents": "no claims"}).result()["transactionId"]
    response = versioned_client(live, CLAIMS).begin_get_receipt(txid).result()
    assert "applicationClaims" not in response
    assert response["receipt"]["leafComponents"]["claimsDigest"] == ZERO
    verify_receipt(response["receipt"], live.service_cert_pem)


def test_user_lists_and_tags_via_send_request(live: LedgerServer):
    client = live.client()
    users = send(client, "GET", "/app/users?api-version=2024-01-26-preview")
    assert [u["assignedRole"] for u in users["users"]] == ["Administrator"]
    users = send(client, "GET", f"/app/users?api-version={TAGS}")
    assert [u["assignedRole"] for u in users["ledgerUsers"]] == ["Administrator"]
    users = send(client, "GET", f"/app/ledgerUsers?api-version={TAGS}")
    assert users["ledgerUsers"][0]["assignedRoles"] == ["Administrator"]

    tagged = versioned_client(live, TAGS)
    written = send(
        tagged, "POST", f"/app/transactions?api-version={TAGS}&collectionId=py-tags&tags=alpha,beta",
        json={"contents": "tagged"},
    )
    assert written["collectionId"] == "py-tags"
    send(tagged, "POST", f"/app/transactions?api-version={TAGS}&collectionId=py-tags&tags=beta",
         json={"contents": "tagged again"})
    page = send(tagged, "GET", f"/app/transactions?api-version={TAGS}&collectionId=py-tags&tag=alpha")
    assert [e["contents"] for e in page["entries"]] == ["tagged"]
    tags = send(tagged, "GET", f"/app/collections/tags?api-version={TAGS}&collectionId=py-tags")
    assert tags == {"tags": ["alpha", "beta"]}
    # The SDK's own pager (no `tag` keyword in 1.1.1) works unchanged with the newer version.
    entries = list(tagged.list_ledger_entries(collection_id="py-tags"))
    assert [e["contents"] for e in entries] == ["tagged", "tagged again"]
