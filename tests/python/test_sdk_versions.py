"""The official `azure-confidentialledger` SDK (1.1.1 or 2.0.0b2) against a live `cledger serve`
with the api-versions beyond each SDK's default: application claims (2023-01-18-preview,
2026-02-23) checked with the SDK's `verify_receipt(..., application_claims=...)`, the user lists
of 2024-01-26-preview / 2024-12-09-preview as the wire has them (`client.send_request`), and the
tags of 2024-12-09-preview through each SDK's own way (`sdk_compat.write_tagged`/`list_tagged`).
"""

from __future__ import annotations

import copy
from urllib.parse import parse_qs, urlparse

import pytest
from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient
from azure.confidentialledger.receipt import verify_receipt
from azure.core.rest import HttpRequest

from sdk_compat import DEFAULT_API_VERSION, SDK_VERSION, list_tagged, plain, write_tagged
from server import LedgerServer

STABLE = "2022-05-13"
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


def test_the_sdk_sends_its_default_api_version(live: LedgerServer):
    """The rest of the suite relies on it: under 2.0.0b2 every call without `api_version`
    exercises 2024-12-09-preview, under 1.1.1 2022-05-13."""
    assert DEFAULT_API_VERSION is not None, f"azure-confidentialledger {SDK_VERSION} is not a pinned version"
    urls: list[str] = []
    live.client().get_constitution(raw_request_hook=lambda request: urls.append(request.http_request.url))
    assert [parse_qs(urlparse(url).query)["api-version"] for url in urls] == [[DEFAULT_API_VERSION]]


@pytest.mark.parametrize("api_version", [CLAIMS, NEWEST])
def test_application_claims_verify_with_the_sdk(live: LedgerServer, api_version: str):
    client = versioned_client(live, api_version)
    contents = f"claimed via {api_version}"
    result = client.begin_create_ledger_entry({"contents": contents}, collection_id="py-claims").result()
    txid = result["transactionId"]

    response = plain(client.begin_get_receipt(txid).result())
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

    # The default client (2022-05-13 in 1.1.1, 2024-12-09-preview in 2.0.0b2: neither shows
    # claims, acl-api.md §2.9) sees the digest but no claims, and still verifies.
    default = plain(live.client().begin_get_receipt(txid).result())
    assert "applicationClaims" not in default
    assert default["receipt"]["leafComponents"]["claimsDigest"] == receipt["leafComponents"]["claimsDigest"]
    verify_receipt(default["receipt"], live.service_cert_pem)


@pytest.mark.parametrize("api_version", [STABLE, TAGS])
def test_writes_without_claims_have_a_zero_digest(live: LedgerServer, api_version: str):
    """Writes made with an api-version that records no claims (the default of either SDK)."""
    client = versioned_client(live, api_version)
    txid = client.begin_create_ledger_entry({"contents": f"no claims via {api_version}"}).result()["transactionId"]
    response = plain(versioned_client(live, CLAIMS).begin_get_receipt(txid).result())
    assert "applicationClaims" not in response
    assert response["receipt"]["leafComponents"]["claimsDigest"] == ZERO
    verify_receipt(response["receipt"], live.service_cert_pem)


def test_user_lists_via_send_request(live: LedgerServer):
    """The wire shape per api-version (acl-api.md §2.5); 2.0.0b2's own list methods are
    checked in test_sdk_ledger_users_and_roles.py."""
    client = live.client()
    users = send(client, "GET", "/app/users?api-version=2024-01-26-preview")
    assert [u["assignedRole"] for u in users["users"]] == ["Administrator"]
    users = send(client, "GET", f"/app/users?api-version={TAGS}")
    assert [u["assignedRole"] for u in users["ledgerUsers"]] == ["Administrator"]
    users = send(client, "GET", f"/app/ledgerUsers?api-version={TAGS}")
    assert users["ledgerUsers"][0]["assignedRoles"] == ["Administrator"]


def test_tags(live: LedgerServer):
    tagged = versioned_client(live, TAGS)
    written = write_tagged(tagged, "tagged", "py-tags", "alpha,beta")
    assert written["collectionId"] == "py-tags"
    write_tagged(tagged, "tagged again", "py-tags", "beta")
    assert [e["contents"] for e in list_tagged(tagged, "py-tags", "alpha")] == ["tagged"]
    assert [e["contents"] for e in list_tagged(tagged, "py-tags", "beta")] == ["tagged", "tagged again"]
    assert list_tagged(tagged, "py-tags", "gamma") == []
    tags = send(tagged, "GET", f"/app/collections/tags?api-version={TAGS}&collectionId=py-tags")
    assert tags == {"tags": ["alpha", "beta"]}
    # The SDK's pager without a tag lists the whole collection.
    entries = list(tagged.list_ledger_entries(collection_id="py-tags"))
    assert [e["contents"] for e in entries] == ["tagged", "tagged again"]
