"""Checkpoints and witnesses (issue 16, part 3) end to end: `cledger serve` publishes C2SP
checkpoints, submits them to the test witness (`c2sp_witness.py`, written from the tlog-witness
spec), and evidence packages carry the cosigned checkpoint that `cledger verify` checks.

A split view is staged: a copy of the ledger (a backup) is served and extended differently,
with the same witness. The witness refuses the copy's checkpoints and keeps them as evidence,
and `cledger verify` of a package made by the copy reports that the witness did not cosign.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import Api, cledger_binary
from server import LedgerServer

HERE = Path(__file__).resolve().parent
INTERVAL = ["--checkpoint-interval-ms", "200"]
VERSION = {"api-version": "2022-05-13"}
WITNESS_NAME = "witness.test"


def cli(server: LedgerServer, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(cledger_binary()), *args, "--endpoint", server.endpoint,
         "--cert", str(server.admin_pem_path), "--service-cert", str(server.service_cert_path)],
        capture_output=True, text=True, check=False, timeout=120,
    )


def wait_for(what: str, check, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


class Witness:
    def __init__(self, state: Path, log_vkey: str):
        self.state = state
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "c2sp_witness.py"), "--listen", "127.0.0.1:0",
             "--state", str(state), "--key-seed-hex", "16" * 32, "--name", WITNESS_NAME,
             "--log-vkey", log_vkey],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started = json.loads(self.process.stdout.readline())
        self.url = f"http://{started['listen']}"
        self.vkey = started["vkey"]

    def conflicts(self) -> list:
        if not self.state.exists():
            return []
        return json.loads(self.state.read_text())["conflicts"]

    def cosigned_size(self) -> int:
        if not self.state.exists():
            return 0
        logs = json.loads(self.state.read_text())["logs"]
        return max((log["size"] for log in logs.values()), default=0)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def test_checkpoints_are_cosigned_and_a_split_view_is_caught(tmp_path: Path):
    data = tmp_path / "ledger"
    ledger = LedgerServer(cledger_binary(), data, tuple(INTERVAL))
    ledger.start()
    api = Api(ledger)
    txid = api.append("before the witness")
    evidence = wait_for(
        "a checkpoint covering the first entry",
        lambda: (r := api.get(f"/app/transactions/{txid}/checkpoint", **VERSION)).status_code == 200 and r.json(),
    )
    log_vkey = evidence["checkpointKey"]["vkey"]
    checkpoint = api.get("/app/checkpoint", **VERSION)
    assert checkpoint.status_code == 200
    assert checkpoint.headers["content-type"].startswith("text/plain")
    origin, size, _root, extension = checkpoint.text.split("\n")[:4]
    assert log_vkey.startswith(origin + "+")
    assert int(size) > int(txid.split(".")[1])
    assert extension.startswith("ccf-root ")
    ledger.stop()

    # A copy of the ledger as it is now: what a restore from backup would serve.
    copy = tmp_path / "copy"
    done = subprocess.run([str(cledger_binary()), "backup", "--data-dir", str(data), "--to", str(copy)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    witness = Witness(tmp_path / "witness.json", log_vkey)
    try:
        with_witness = (*INTERVAL, "--witness", f"{witness.vkey}@{witness.url}")
        ledger = LedgerServer(cledger_binary(), data, with_witness)
        ledger.start()
        api = Api(ledger)
        for i in range(5):
            api.append(f"the real history {i}")
        document = tmp_path / "contract.txt"
        document.write_text("signed\n")
        done = cli(ledger, "notarize", str(document), "--witness-vkey", witness.vkey)
        assert done.returncode == 0, done.stdout + done.stderr
        package = tmp_path / "contract.txt.evidence.json"
        verify = [str(cledger_binary()), "verify", str(package), str(document), "--json",
                  "--service-cert", str(ledger.service_cert_path)]
        done = subprocess.run([*verify, "--witness-vkey", witness.vkey], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        verified = json.loads(done.stdout)
        assert verified["checkpoint"]["cosignedBy"] == [WITNESS_NAME]
        # Without naming the witness, its cosignature is reported, not checked.
        done = subprocess.run(verify, capture_output=True, text=True)
        assert json.loads(done.stdout)["checkpoint"]["uncheckedSignatures"] == 1
        real_size = wait_for("the witness to cosign", witness.cosigned_size)
        ledger.stop()
        assert witness.conflicts() == []

        # The split view: the copy, extended differently past the size the witness cosigned.
        forked = LedgerServer(cledger_binary(), copy, with_witness)
        forked.start()
        forked_api = Api(forked)
        for i in range(real_size + 5):
            forked_api.append(f"another history {i}")
        wait_for("the witness to refuse the copy's checkpoint", witness.conflicts)
        assert witness.cosigned_size() == real_size, "the witness kept the history it cosigned"
        other = tmp_path / "other.txt"
        other.write_text("signed on the copy\n")
        done = cli(forked, "notarize", str(other))
        assert done.returncode == 0, done.stdout + done.stderr
        done = subprocess.run(
            [str(cledger_binary()), "verify", str(tmp_path / "other.txt.evidence.json"), str(other),
             "--json", "--witness-vkey", witness.vkey],
            capture_output=True, text=True,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        failed = json.loads(done.stdout)
        assert failed["verified"] is False and failed["error"] == "NotCosigned", failed
        assert "split view" in failed["reason"]
        forked.stop()
    finally:
        witness.stop()
        for server in (locals().get("ledger"), locals().get("forked")):
            if server is not None:
                server.kill()
