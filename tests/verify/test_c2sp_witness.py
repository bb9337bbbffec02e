"""The ledger's C2SP checkpoints against a witness written from the tlog-witness spec.

Checkpoints, signed with ledger-core's note signer, and RFC 6962 consistency proofs from
ledger-core's tree come from `cargo run -p ledger-core --example c2sp_vectors`; the witness
(`c2sp_witness.py`) runs as its own process and checks them with its own Python code. Its
cosignatures are checked both here (Python) and by ledger-core's verifier (the example's
`verify-cosignature` mode).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
WITNESS_NAME = "witness.example/test-w1"
WITNESS_SEED = "42" * 32
EM_DASH = "\u2014"


def cargo_example(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["cargo", "run", "-q", "-p", "ledger-core", "--example", "c2sp_vectors", "--", *args],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.fixture(scope="module")
def vectors() -> dict:
    done = cargo_example()
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class WitnessProcess:
    def __init__(self, state: Path, log_vkey: str):
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "c2sp_witness.py"),
                "--listen", "127.0.0.1:0",
                "--state", str(state),
                "--key-seed-hex", WITNESS_SEED,
                "--name", WITNESS_NAME,
                "--log-vkey", log_vkey,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        started = json.loads(self.proc.stdout.readline())
        self.host, port = started["listen"].rsplit(":", 1)
        self.port = int(port)
        self.vkey = started["vkey"]

    def post(self, body: str, path: str = "/add-checkpoint") -> tuple[int, str, str]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request("POST", path, body=body.encode())
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read().decode()
        finally:
            conn.close()

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err


@pytest.fixture
def witness(tmp_path: Path, vectors: dict):
    process = WitnessProcess(tmp_path / "witness.json", vectors["log_vkey"])
    yield process
    process.stop()


def request(old: int, proof: list[str], note: str) -> str:
    return "".join(f"{line}\n" for line in [f"old {old}", *proof]) + "\n" + note


def checkpoint(vectors: dict, size: int, fork: bool = False) -> dict:
    source = vectors["fork"] if fork else vectors
    return next(c for c in source["checkpoints"] if c["size"] == size)


def proof(vectors: dict, old: int, new: int, fork: bool = False) -> list[str]:
    source = vectors["fork"] if fork else vectors
    return next(p["proof"] for p in source["proofs"] if (p["old"], p["new"]) == (old, new))


def verify_cosignature_in_python(witness_vkey: str, note: str, line: str) -> int:
    """Checks a cosignature/v1 line by the spec; returns its timestamp."""
    name, kid_hex, key_b64 = witness_vkey.split("+", 2)
    raw_key = base64.b64decode(key_b64)
    assert raw_key[0] == 0x04
    kid = hashlib.sha256(name.encode() + b"\n\x04" + raw_key[1:]).digest()[:4]
    assert kid.hex() == kid_hex
    assert line.startswith(f"{EM_DASH} {name} ") and line.endswith("\n")
    raw = base64.b64decode(line.rstrip("\n").split(" ", 2)[2])
    assert raw[:4] == kid and len(raw) == 4 + 8 + 64
    timestamp = int.from_bytes(raw[4:12], "big")
    body = note[: note.rfind("\n\n") + 1]
    message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(raw[12:], message)
    return timestamp


def add(witness: WitnessProcess, vectors: dict, old: int, new: int) -> str:
    cp = checkpoint(vectors, new)
    status, _, body = witness.post(request(old, proof(vectors, old, new) if old else [], cp["note"]))
    assert status == 200, body
    return body


def test_consistent_checkpoints_are_cosigned_and_both_verifiers_accept(witness, vectors):
    # From size 0 the proof must be empty.
    some_hash = proof(vectors, 3, 10)[0]
    assert witness.post(request(0, [some_hash], checkpoint(vectors, 3)["note"]))[0] == 422
    previous = 0
    for size in [3, 10, 64, 100, 1000]:
        line = add(witness, vectors, previous, size)
        note = checkpoint(vectors, size)["note"]
        timestamp = verify_cosignature_in_python(witness.vkey, note, line)
        # ledger-core's verifier, on the checkpoint with the cosignature appended.
        done = cargo_example("verify-cosignature", witness.vkey, stdin=note + line)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"verified": 1, "timestamps": [timestamp]}
        previous = size
    # A cosignature moved to another checkpoint does not verify in Rust.
    other = checkpoint(vectors, 100)["note"]
    done = cargo_example("verify-cosignature", witness.vkey, stdin=other + line)
    assert done.returncode != 0
    # Re-submitting the cosigned size with an empty proof is accepted (same root).
    status, _, _ = witness.post(request(1000, [], checkpoint(vectors, 1000)["note"]))
    assert status == 200


def test_a_stale_old_size_is_answered_with_the_recorded_size(witness, vectors):
    add(witness, vectors, 0, 10)
    for old, new in [(3, 64), (0, 64)]:
        status, content_type, body = witness.post(request(old, proof(vectors, old, new) if old else [], checkpoint(vectors, new)["note"]))
        assert (status, content_type, body) == (409, "text/x.tlog.size", "10\n")
    add(witness, vectors, 10, 64)


def test_a_split_view_is_refused_and_reported(witness, vectors, tmp_path):
    add(witness, vectors, 0, 64)
    add(witness, vectors, 64, 100)
    # The fork agrees with the real tree up to leaf 49, so the witness at 64 would have
    # accepted either 100; having cosigned the real one, it refuses the fork's.
    fork_100 = checkpoint(vectors, 100, fork=True)
    assert fork_100["root"] != checkpoint(vectors, 100)["root"]
    status, _, body = witness.post(request(100, [], fork_100["note"]))
    assert status == 409, body
    # The fork's 1000 with the fork's proof from 100 does not extend what it cosigned.
    status, _, body = witness.post(request(100, proof(vectors, 100, 1000, fork=True), checkpoint(vectors, 1000, fork=True)["note"]))
    assert status == 422, body
    err = witness.stop()
    assert "split view" in err
    state = json.loads((tmp_path / "witness.json").read_text())
    assert state["logs"][vectors["origin"]]["size"] == 100
    assert state["logs"][vectors["origin"]]["root"] == checkpoint(vectors, 100)["root"]
    # Both refusals are kept as evidence: the same size with another root, and a checkpoint
    # that cannot be proven to extend the cosigned one.
    fork_1000 = checkpoint(vectors, 1000, fork=True)
    assert [c["root"] for c in state["conflicts"]] == [fork_100["root"], fork_1000["root"]]
    assert "inconsistent" in err


def test_bad_proofs_signatures_origins_and_requests_are_refused(witness, vectors):
    add(witness, vectors, 0, 10)
    good = proof(vectors, 10, 100)
    note_100 = checkpoint(vectors, 100)["note"]
    # Every proof hash matters; so do its length and order.
    for i in range(len(good)):
        flipped = bytearray(base64.b64decode(good[i]))
        flipped[i % 32] ^= 0x01
        bad = [*good[:i], base64.b64encode(bytes(flipped)).decode(), *good[i + 1:]]
        assert witness.post(request(10, bad, note_100))[0] == 422
    assert witness.post(request(10, good[:-1], note_100))[0] == 422
    assert witness.post(request(10, list(reversed(good)), note_100))[0] == 422
    # Old size 0 while the witness holds 10: the size it holds, whatever the proof.
    assert witness.post(request(0, good, checkpoint(vectors, 3)["note"]))[:3:2] == (409, "10\n")
    # Signatures: tampered text, another key of the same name, another origin.
    tampered = note_100.replace("\n100\n", "\n101\n", 1)
    assert witness.post(request(10, good, tampered))[0] == 403
    assert witness.post(request(10, good, vectors["signed_by_another_key"]))[0] == 403
    assert witness.post(request(0, [], vectors["unknown_origin"]))[0] == 404
    # Malformed requests and an old size above the checkpoint's.
    assert witness.post(request(1000, [], note_100))[0] == 400
    for body in ["", "old 10\n", "old 010\n\n" + note_100, "new 10\n\n" + note_100, "old 10\nnot base64\n\n" + note_100, "\xff"]:
        assert witness.post(request(10, [], "") if body == "" else body)[0] == 400, body
    assert witness.post(request(10, ["AAAA"] * 64, note_100))[0] == 400
    assert witness.post("old 10\n\n" + note_100, path="/other")[0] == 404
    # Still serving, still at 10.
    add(witness, vectors, 10, 100)


def test_the_state_survives_a_restart(tmp_path, vectors):
    state = tmp_path / "witness.json"
    first = WitnessProcess(state, vectors["log_vkey"])
    try:
        add(first, vectors, 0, 64)
    finally:
        first.stop()
    second = WitnessProcess(state, vectors["log_vkey"])
    try:
        assert second.vkey == first.vkey
        status, content_type, body = second.post(request(0, [], checkpoint(vectors, 3)["note"]))
        assert (status, content_type, body) == (409, "text/x.tlog.size", "64\n")
        add(second, vectors, 64, 1000)
    finally:
        second.stop()


def test_the_python_rfc6962_verifier_agrees_with_the_rust_proofs(vectors):
    # Every proof between the vector sizes verifies in the witness's own code, and a proof for
    # one pair of sizes is refused for another.
    sys.path.insert(0, str(HERE))
    import c2sp_witness as w

    roots = {c["size"]: base64.b64decode(c["root"]) for c in vectors["checkpoints"]}
    for p in vectors["proofs"]:
        hashes = [base64.b64decode(h) for h in p["proof"]]
        assert w.verify_consistency(p["old"], p["new"], roots[p["old"]], roots[p["new"]], hashes), p
        if p["old"] != p["new"] and p["new"] != 1000:
            assert not w.verify_consistency(p["old"], 1000, roots[p["old"]], roots[1000], hashes), p
    # The leaves are RFC 6962 leaves of the ledger's leaf data: leaf 0 is SHA256(0x00 || 0^32).
    assert base64.b64decode(vectors["leaf_hashes_of_first_3"][0]) == hashlib.sha256(b"\x00" + bytes(32)).digest()
