"""What differs between the two official SDK versions the suite runs under.

`scripts/test.sh` runs every test file twice: with `azure-confidentialledger` 1.1.1 (`.venv`,
`requirements.txt`) and with 2.0.0b2 (`.venv-sdk2`, `requirements-sdk2.txt`). The tests check
the same behaviour under both; where the SDK's API differs they go through the helpers below,
and where the wire shape differs by api-version they assert the shape of the api-version the
SDK in use sends (acl-api.md §1.2, §2.5, §2.9).

| | 1.1.1 | 2.0.0b2 |
|---|---|---|
| default api-version | 2022-05-13 | 2024-12-09-preview |
| results | the JSON the server sent (`dict`, `list`) | models (`MutableMapping`s, not `dict`s) |
| `verify_receipt` of a fetched receipt | takes it as it is | asserts `dict`s: give it `plain(...)` |
| tags | no keyword: `send_request` | `create_ledger_entry(tags=)`, `list_ledger_entries(tag=)` |
| multi-role users, user-defined roles | no methods | `*_ledger_user(s)`, `*_user_defined_role` |
| user-defined functions, endpoints, runtime options | no methods | `*_user_defined_function(s)`, `*_user_defined_endpoint`, `*_runtime_options` |
| nextLink with `&`, `=`, `#` in a query value | re-sent unquoted (breaks) | re-sent quoted (works) |
"""

from __future__ import annotations

import azure.confidentialledger
import pytest
from azure.core.rest import HttpRequest

SDK_VERSION: str = azure.confidentialledger.__version__
SDK1: bool = int(SDK_VERSION.split(".", 1)[0]) < 2

# The api-version each pinned SDK sends when the caller names none (its `_configuration.py`).
DEFAULT_API_VERSIONS = {"1.1.1": "2022-05-13", "2.0.0b2": "2024-12-09-preview"}
DEFAULT_API_VERSION: str | None = DEFAULT_API_VERSIONS.get(SDK_VERSION)

# The one allowed skip: tests of methods SDK 1.x does not have.
only_sdk2 = pytest.mark.skipif(
    SDK1,
    reason=(
        f"not applicable: azure-confidentialledger {SDK_VERSION} has no multi-role user "
        "(*_ledger_user), user-defined role, function or endpoint methods; scripts/test.sh runs "
        "this file with 2.0.0b2"
    ),
)


def plain(value):
    """The JSON the server sent, as plain `dict`s and `list`s. SDK 2.0.0b2 returns models whose
    nested parts are models too; its own `verify_receipt` asserts `dict`s, so a fetched receipt
    must go through `as_dict()` first. SDK 1.1.1 results are plain JSON already."""
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


def write_tagged(client, contents: str, collection: str, tags: str) -> dict:
    """A write with tags (2024-12-09-preview on): 2.0.0b2's `create_ledger_entry(tags=)`, or
    a raw POST through 1.1.1's `send_request` (which has no keyword for it). The client must
    use an api-version that has tags."""
    if SDK1:
        response = client.send_request(
            HttpRequest(
                "POST",
                "/app/transactions",
                params={"api-version": client._config.api_version, "collectionId": collection, "tags": tags},
                json={"contents": contents},
            )
        )
        assert response.status_code == 200, response.text()
        return {**response.json(), "transactionId": response.headers["x-ms-ccf-transaction-id"]}
    return plain(client.create_ledger_entry({"contents": contents}, collection_id=collection, tags=tags))


def list_tagged(client, collection: str, tag: str) -> list[dict]:
    """The entries of `collection` that carry `tag`: 2.0.0b2's pager with `tag=`, or with
    1.1.1 the pages fetched through `send_request`, following nextLink."""
    if not SDK1:
        return plain(list(client.list_ledger_entries(collection_id=collection, tag=tag)))
    entries: list[dict] = []
    request = HttpRequest(
        "GET",
        "/app/transactions",
        params={"api-version": client._config.api_version, "collectionId": collection, "tag": tag},
    )
    while request is not None:
        response = client.send_request(request)
        assert response.status_code == 200, response.text()
        page = response.json()
        entries.extend(page["entries"])
        request = HttpRequest("GET", page["nextLink"]) if page.get("nextLink") else None
    return entries
