"""The official `azure-confidentialledger` SDK against a three-node cledger cluster: the client
is pointed at a backup, so every write is answered with a 307 to the primary that the SDK must
follow; receipts are fetched from another node and verified with the SDK's `verify_receipt`
against the one service certificate; then the primary is killed (SIGKILL) and the SDK keeps
writing through a survivor, and receipts from both views verify.

The test harness runs this file, like the others, with SDK 1.1.1 (`.venv`) and with SDK 2.0.0b2
(`.venv-sdk2`).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from azure.confidentialledger.receipt import verify_receipt

from sdk_compat import plain
from server import LedgerServer


def admin_post(node: LedgerServer, admin_dir: Path, path: str, body: dict) -> dict:
    """A POST as the administrator, straight to `node` (which must be the primary)."""
    context = ssl.create_default_context(cafile=str(admin_dir / "service_cert.pem"))
    context.load_cert_chain(str(admin_dir / "admin.pem"))
    request = urllib.request.Request(
        f"https://127.0.0.1:{node.port}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return json.loads(response.read())


def node_json(node: LedgerServer, cert: Path, path: str) -> dict:
    context = ssl.create_default_context(cafile=str(cert))
    with urllib.request.urlopen(f"https://127.0.0.1:{node.port}{path}", context=context, timeout=10) as r:
        return json.loads(r.read())


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001 - a node may be restarting; keep polling
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def cluster(cledger, tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    founder = LedgerServer(cledger.binary, base / "n1", ("--peer-listen", "127.0.0.1:0")).start()
    nodes = [founder]
    try:
        for name in ("n2", "n3"):
            token = wait_for(
                "a join token",
                lambda: admin_post(founder, founder.data_dir, "/node/join-tokens", {"expires_in_seconds": 600}),
            )
            token_file = base / f"{name}.token"
            token_file.write_text(token["token"])
            node = LedgerServer(
                cledger.binary,
                base / name,
                (
                    "--peer-listen", "127.0.0.1:0",
                    "--join", f"https://127.0.0.1:{founder.port}",
                    "--service-cert", str(founder.service_cert_path),
                    "--join-token", str(token_file),
                ),
            ).start()
            nodes.append(node)
        cert = founder.service_cert_path
        wait_for(
            "three voting nodes",
            lambda: sum(
                n["voter"] for n in node_json(founder, cert, "/node/consensus")["details"]["configs"][0]["nodes"].values()
            )
            == 3,
        )
        yield nodes
    finally:
        for node in nodes:
            node.kill()


def sdk_client(node: LedgerServer, founder: LedgerServer):
    """The SDK client for `node`, with the founder's administrator and the service cert."""
    from azure.confidentialledger import ConfidentialLedgerCertificateCredential, ConfidentialLedgerClient

    return ConfidentialLedgerClient(
        endpoint=f"https://localhost:{node.port}",
        credential=ConfidentialLedgerCertificateCredential(certificate_path=str(founder.admin_pem_path)),
        ledger_certificate_path=str(founder.service_cert_path),
    )


def receipt_of(client, txid: str) -> dict:
    """The receipt as the plain dict `verify_receipt` checks (see `sdk_compat.plain`)."""
    return plain(client.begin_get_receipt(txid).result()["receipt"])


def primary_of(nodes: list[LedgerServer], cert: Path) -> LedgerServer:
    for node in nodes:
        if node.alive() and node_json(node, cert, "/node/consensus")["details"]["leadership_state"] == "Leader":
            return node
    raise AssertionError("no primary")


def test_the_sdk_writes_through_a_backup_and_survives_the_loss_of_the_primary(cluster):
    founder = cluster[0]
    cert = founder.service_cert_path
    service_cert = cert.read_text()
    primary = wait_for("a primary", lambda: primary_of(cluster, cert))
    backups = [n for n in cluster if n is not primary]

    client = sdk_client(backups[0], founder)
    written = []
    for i in range(5):
        result = client.begin_create_ledger_entry({"contents": f"through a backup #{i}"}).result()
        written.append((result["transactionId"], f"through a backup #{i}"))

    # Reads and receipts from the other backup, once it has committed them.
    reader = sdk_client(backups[1], founder)
    for txid, contents in written:
        wait_for(
            f"{txid} committed on the other backup",
            lambda t=txid: reader.get_transaction_status(t)["state"] == "Committed",
        )
        entry = reader.get_ledger_entry(txid)
        assert entry["entry"]["contents"] == contents
        verify_receipt(receipt_of(reader, txid), service_cert)

    old_view = int(written[-1][0].split(".")[0])
    primary.kill()
    survivors = [n for n in cluster if n.alive()]
    survivor = sdk_client(survivors[0], founder)

    def write_after_failover():
        return survivor.begin_create_ledger_entry({"contents": "after the failover"}).result()

    after = wait_for("a write after the failover", write_after_failover, timeout=30)
    txid = after["transactionId"]
    assert int(txid.split(".")[0]) > old_view, txid
    other = sdk_client(survivors[1], founder)
    for t in [txid] + [t for t, _ in written]:
        wait_for(f"{t} committed", lambda t=t: other.get_transaction_status(t)["state"] == "Committed")
        verify_receipt(receipt_of(other, t), service_cert)
