"""SDK 2.0.0b2's multi-role user methods (`create_or_update_ledger_user`, `get_ledger_user`,
`list_ledger_users`, `delete_ledger_user`, and `list_users`) and user-defined role methods
(`create_/get_/update_/delete_user_defined_role`) against a live `cledger serve`, at the SDK's
default api-version 2024-12-09-preview (acl-api.md §2.5).

Every change is checked by its effect: the user, with its own client certificate, can then do
what its roles allow and is refused (403 `NotAllowed`) the rest, at once.

SDK 1.1.1 has none of these methods, so under it these tests are reported as skipped (not
applicable); the wire shapes of the same user lists are checked under both SDKs through
`send_request` in test_sdk_versions.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from azure.confidentialledger.receipt import verify_receipt
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from sdk_compat import only_sdk2, plain
from server import LedgerServer, make_user

pytestmark = only_sdk2

# cledger's action vocabulary (crates/ledger-http/src/roles.rs; acl-api.md §2.5 gives the pattern).
ACTIONS = "Microsoft.ConfidentialLedger/ledger/"
TRANSACTIONS_READ = ACTIONS + "transactions/read"
TRANSACTIONS_WRITE = ACTIONS + "transactions/write"
COLLECTIONS_READ = ACTIONS + "collections/read"
USERS_READ = ACTIONS + "users/read"
ODD_ROLE = "lister a+b&c=d#e ✓"
SEED = "seed entry for the user and role tests"
USERS_PAGE = 100  # cledger's page size for the user lists


@pytest.fixture(scope="module")
def live(cledger, tmp_path_factory) -> LedgerServer:
    yield from LedgerServer(cledger.binary, tmp_path_factory.mktemp("sdk-ledger-users")).serve_for_module()


@pytest.fixture(scope="module")
def users_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("sdk-ledger-users-certs")


@pytest.fixture(scope="module")
def seed(live: LedgerServer) -> str:
    """A committed entry written by the administrator; its txid."""
    return live.client().begin_create_ledger_entry({"contents": SEED}).result()["transactionId"]


def admin_id(live: LedgerServer) -> str:
    """The generated administrator's user id: the SHA-256 fingerprint of its certificate."""
    cert = x509.load_pem_x509_certificate(live.admin_pem_path.read_bytes())
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def assert_refused(call, status: int = 403, code: str = "NotAllowed") -> None:
    with pytest.raises(HttpResponseError) as info:
        call()
    assert info.value.status_code == status, f"status {info.value.status_code}: {info.value}"
    assert info.value.error is not None and info.value.error.code == code, f"error code: {info.value}"


def reads_with_receipt(client, txid: str, service_cert_pem: str) -> None:
    """What `transactions/read` allows: the entry, its status and a receipt that verifies."""
    assert client.begin_get_ledger_entry(txid).result()["entry"]["contents"] == SEED
    assert client.get_transaction_status(txid)["state"] == "Committed"
    verify_receipt(plain(client.begin_get_receipt(txid).result())["receipt"], service_cert_pem)
    assert client.get_current_ledger_entry()["contents"]


def test_ledger_users_with_multiple_roles(live: LedgerServer, users_dir: Path, seed: str):
    admin = live.client()
    bob = make_user(users_dir, "bob")
    as_bob = live.client(bob.bundle_path)
    assert_refused(as_bob.get_current_ledger_entry)

    # Reader.
    created = admin.create_or_update_ledger_user(bob.user_id, {"assignedRoles": ["Reader"]})
    assert created == {"assignedRoles": ["Reader"], "userId": bob.user_id}
    assert admin.get_ledger_user(bob.user_id) == created
    assert admin.get_user(bob.user_id) == {"assignedRole": "Reader", "userId": bob.user_id}
    reads_with_receipt(as_bob, seed, live.service_cert_pem)
    assert_refused(lambda: as_bob.create_ledger_entry({"contents": "not allowed"}))

    # Reader and Contributor: the union of what the roles allow.
    both = admin.create_or_update_ledger_user(bob.user_id, {"assignedRoles": ["Reader", "Contributor"]})
    assert both == {"assignedRoles": ["Reader", "Contributor"], "userId": bob.user_id}
    assert admin.get_ledger_user(bob.user_id) == both
    txid = as_bob.begin_create_ledger_entry({"contents": "written by bob"}).result()["transactionId"]
    assert admin.begin_get_ledger_entry(txid).result()["entry"]["contents"] == "written by bob"
    # The single-role view shows the highest built-in role (cledger's reading of assignedRole).
    assert admin.get_user(bob.user_id) == {"assignedRole": "Contributor", "userId": bob.user_id}
    # A JSON merge patch without assignedRoles leaves them as they are.
    assert admin.create_or_update_ledger_user(bob.user_id, {}) == both
    # Neither role manages users.
    assert_refused(lambda: as_bob.create_or_update_ledger_user(bob.user_id, {"assignedRoles": ["Administrator"]}))
    assert_refused(lambda: as_bob.get_ledger_user(bob.user_id))
    assert_refused(lambda: list(as_bob.list_ledger_users()))
    assert_refused(lambda: as_bob.delete_ledger_user(bob.user_id))

    # Both lists: every role (GET /app/ledgerUsers) and the single-role view (GET /app/users,
    # item member `ledgerUsers` in 2024-12-09-preview).
    administrator = admin_id(live)
    assert {u["userId"]: u["assignedRoles"] for u in admin.list_ledger_users()} == {
        administrator: ["Administrator"], bob.user_id: ["Reader", "Contributor"],
    }
    assert {u["userId"]: u["assignedRole"] for u in admin.list_users()} == {
        administrator: "Administrator", bob.user_id: "Contributor",
    }

    # A second administrator, made through ledgerUsers, manages users.
    carol = make_user(users_dir, "carol")
    admin.create_or_update_ledger_user(carol.user_id, {"assignedRoles": ["Administrator"]})
    as_carol = live.client(carol.bundle_path)
    assert as_carol.create_or_update_ledger_user(bob.user_id, {"assignedRoles": ["Reader"]}) == created
    assert_refused(lambda: as_bob.create_ledger_entry({"contents": "not allowed any more"}))
    assert as_bob.get_current_ledger_entry()["contents"]

    # Deleted: gone from both views and locked out.
    assert as_carol.delete_ledger_user(bob.user_id) is None
    with pytest.raises(ResourceNotFoundError):
        admin.get_ledger_user(bob.user_id)
    with pytest.raises(ResourceNotFoundError):
        admin.get_user(bob.user_id)
    with pytest.raises(ResourceNotFoundError):
        admin.delete_ledger_user(bob.user_id)
    assert bob.user_id not in {u["userId"] for u in admin.list_ledger_users()}
    assert bob.user_id not in {u["userId"] for u in admin.list_users()}
    assert_refused(as_bob.get_current_ledger_entry)

    assert as_carol.delete_ledger_user(carol.user_id) is None
    assert_refused(as_carol.get_current_ledger_entry)


def test_user_defined_roles(live: LedgerServer, users_dir: Path, seed: str):
    admin = live.client()
    dave = make_user(users_dir, "dave")
    as_dave = live.client(dave.bundle_path)

    assert admin.create_user_defined_role([{"roleName": "auditor", "roleActions": [TRANSACTIONS_READ]}]) is None
    # 2024-12-09-preview answers GET /app/roles?roleName= with a bare array of Role (swagger
    # `Roles` is `type: array`; TypeSpec `Role[]`; example GetUserDefinedRole.json). SDK 2.0.0b2
    # annotates the result as its model `Roles` ({"roles": [...]}) but hands back the list.
    assert plain(admin.get_user_defined_role(role_name="auditor")) == [
        {"roleName": "auditor", "roleActions": [TRANSACTIONS_READ]}
    ]

    # A user holding only the role may do what it allows and nothing else.
    assert admin.create_or_update_ledger_user(dave.user_id, {"assignedRoles": ["auditor"]}) == {
        "assignedRoles": ["auditor"], "userId": dave.user_id,
    }
    reads_with_receipt(as_dave, seed, live.service_cert_pem)
    assert_refused(lambda: as_dave.create_ledger_entry({"contents": "not allowed"}))
    assert_refused(lambda: list(as_dave.list_collections()))
    assert_refused(as_dave.get_constitution)
    assert_refused(lambda: as_dave.get_ledger_user(dave.user_id))
    assert_refused(lambda: as_dave.get_user_defined_role(role_name="auditor"))

    # Changing the role (more actions) is reflected in GET and takes effect at once.
    more = [TRANSACTIONS_READ, TRANSACTIONS_WRITE, COLLECTIONS_READ, USERS_READ]
    assert admin.update_user_defined_role([{"roleName": "auditor", "roleActions": more}]) is None
    assert plain(admin.get_user_defined_role(role_name="auditor")) == [{"roleName": "auditor", "roleActions": more}]
    txid = as_dave.begin_create_ledger_entry({"contents": "written by an auditor"}, collection_id="audit").result()[
        "transactionId"
    ]
    assert admin.begin_get_ledger_entry(txid, collection_id="audit").result()["entry"]["contents"] == (
        "written by an auditor"
    )
    assert "audit" in {c["collectionId"] for c in as_dave.list_collections()}
    assert as_dave.get_ledger_user(dave.user_id) == {"assignedRoles": ["auditor"], "userId": dave.user_id}
    assert_refused(lambda: as_dave.create_or_update_ledger_user(dave.user_id, {"assignedRoles": ["Administrator"]}))
    assert_refused(lambda: as_dave.create_user_defined_role([{"roleName": "mine", "roleActions": more}]))
    assert_refused(lambda: as_dave.delete_user_defined_role(role_name="auditor"))

    # A role still held is not deleted (cledger: nobody loses access silently).
    assert_refused(lambda: admin.delete_user_defined_role(role_name="auditor"), 400, "InvalidInput")
    assert plain(admin.get_user_defined_role(role_name="auditor")) == [{"roleName": "auditor", "roleActions": more}]

    # The role taken from the user: what only it allowed is refused again.
    admin.create_or_update_ledger_user(dave.user_id, {"assignedRoles": ["Reader"]})
    assert_refused(lambda: as_dave.create_ledger_entry({"contents": "not allowed any more"}))
    assert_refused(lambda: as_dave.get_ledger_user(dave.user_id))
    reads_with_receipt(as_dave, seed, live.service_cert_pem)

    # Deleted: gone, and no longer assignable.
    assert admin.delete_user_defined_role(role_name="auditor") is None
    with pytest.raises(ResourceNotFoundError):
        admin.get_user_defined_role(role_name="auditor")
    assert_refused(
        lambda: admin.create_or_update_ledger_user(dave.user_id, {"assignedRoles": ["auditor"]}), 400, "InvalidInput"
    )
    assert admin.get_ledger_user(dave.user_id) == {"assignedRoles": ["Reader"], "userId": dave.user_id}
    admin.delete_ledger_user(dave.user_id)


def test_roles_given_as_the_sdk_model(live: LedgerServer, users_dir: Path):
    """The body typed the way SDK 2.0.0b2 annotates it: its model `Roles` serializes to
    {"roles": [...]} where 2024-12-09-preview documents a bare array. cledger takes both, so a
    caller following the SDK's types is served too. The role name needs quoting in ?roleName=."""
    from azure.confidentialledger.models import Role, Roles  # 2.0.0b2 only: 1.1.1 has no models

    admin = live.client()
    erin = make_user(users_dir, "erin")
    as_erin = live.client(erin.bundle_path)
    model = Roles(roles=[Role(role_name=ODD_ROLE, role_actions=[COLLECTIONS_READ])])
    assert admin.create_user_defined_role(model) is None
    assert plain(admin.get_user_defined_role(role_name=ODD_ROLE)) == [
        {"roleName": ODD_ROLE, "roleActions": [COLLECTIONS_READ]}
    ]
    admin.create_or_update_ledger_user(erin.user_id, {"assignedRoles": [ODD_ROLE]})
    assert {c["collectionId"] for c in as_erin.list_collections()} >= {"subledger:0"}
    assert_refused(as_erin.get_current_ledger_entry)

    model = Roles(roles=[Role(role_name=ODD_ROLE, role_actions=[COLLECTIONS_READ, TRANSACTIONS_READ])])
    assert admin.update_user_defined_role(model) is None
    assert plain(admin.get_user_defined_role(role_name=ODD_ROLE)) == [
        {"roleName": ODD_ROLE, "roleActions": [COLLECTIONS_READ, TRANSACTIONS_READ]}
    ]
    assert as_erin.get_current_ledger_entry()["contents"]

    assert admin.delete_ledger_user(erin.user_id) is None
    assert admin.delete_user_defined_role(role_name=ODD_ROLE) is None
    assert_refused(as_erin.get_current_ledger_entry)


def test_user_lists_page_through_the_sdk_pagers(live: LedgerServer):
    """More users than one page: both pagers follow nextLink (its continuation carries a user
    id, colons included, which the SDK re-sends quoted) and see every user once, in both views.
    The ids are certificate fingerprints (no certificate needed to register one) and a few
    Entra object ids."""
    admin = live.client()
    ids = [":".join(f"{b:02X}" for b in hashlib.sha256(b"user %d" % n).digest()) for n in range(USERS_PAGE + 10)]
    ids += [f"00000000-0000-0000-0000-{n:012d}" for n in range(10)]
    roles = ["Reader", "Contributor"]
    for n, user_id in enumerate(ids):
        admin.create_or_update_ledger_user(user_id, {"assignedRoles": roles[: n % 2 + 1]})
    expected = {user_id: roles[: n % 2 + 1] for n, user_id in enumerate(ids)}
    expected[admin_id(live)] = ["Administrator"]

    pages = list(admin.list_ledger_users().by_page())
    users = [u for page in pages for u in page]
    assert len(pages) >= 2
    assert len(users) == len(expected)
    assert {u["userId"]: u["assignedRoles"] for u in users} == expected

    pages = list(admin.list_users().by_page())
    users = [u for page in pages for u in page]
    assert len(pages) >= 2
    assert {u["userId"]: u["assignedRole"] for u in users} == {i: r[-1] for i, r in expected.items()}

    for user_id in ids:
        admin.delete_ledger_user(user_id)
    assert [u["userId"] for u in admin.list_ledger_users()] == [admin_id(live)]
