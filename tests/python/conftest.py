"""Fixtures for the Python compatibility harness: they drive the offline `cledger local ...` CLI.

The binary is taken from `$CLEDGER_BIN`, else `<repo>/target/debug/cledger`. When it is missing
every test fails (never skips): a compatibility suite that silently skips proves nothing.

Ledgers are built once per session (appending is the slow part) and shared read-only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = REPO_ROOT / "target" / "debug" / "cledger"
CLI_TIMEOUT_SECONDS = 120
TXID_PATTERN = re.compile(r"^\d+\.\d+$")

# The effective collection id of entries written without --collection (what ACL reports).
DEFAULT_COLLECTION = "subledger:0"
# Collections used by the main ledger: the default one, a plain id, and one with spaces/unicode.
COLLECTIONS = (None, "orders", "événements clés ✓ 2024")


@dataclass(frozen=True)
class Entry:
    """One appended ledger entry, as the test wrote it."""

    txid: str
    collection: str | None
    contents: str
    claims: bool

    @property
    def effective_collection(self) -> str:
        return self.collection if self.collection is not None else DEFAULT_COLLECTION


@dataclass
class Ledger:
    """A ledger created through the CLI, with what was written to it."""

    cli: Cledger
    data_dir: Path
    entries: list[Entry] = field(default_factory=list)

    @property
    def service_cert_pem(self) -> str:
        return (self.data_dir / "service_cert.pem").read_text()

    def append(
        self,
        contents: list[str],
        *,
        collection: str | None = None,
        tags: tuple[str, ...] = (),
        claims: bool = False,
    ) -> list[Entry]:
        args = ["local", "append", "--data-dir", str(self.data_dir)]
        if collection is not None:
            args += ["--collection", collection]
        for tag in tags:
            args += ["--tag", tag]
        if claims:
            args.append("--claims")
        # "--" keeps contents that start with a dash from being read as options.
        lines = self.cli.run(*args, "--", *contents).splitlines()
        txids = [line.strip() for line in lines if line.strip()]
        assert len(txids) == len(contents), f"expected {len(contents)} txids, got {lines!r}"
        for txid in txids:
            assert TXID_PATTERN.match(txid), f"not a view.seqno transaction id: {txid!r}"
        new = [Entry(t, collection, c, claims) for t, c in zip(txids, contents)]
        self.entries.extend(new)
        return new

    def receipt(self, txid: str) -> dict:
        output = self.cli.run("local", "receipt", "--data-dir", str(self.data_dir), txid)
        try:
            return json.loads(output)
        except json.JSONDecodeError as error:
            pytest.fail(f"`cledger local receipt {txid}` did not print JSON ({error}):\n{output}")

    def audit(self) -> None:
        self.cli.run("audit", "--data-dir", str(self.data_dir))


class Cledger:
    """Runs the cledger binary and turns failures into readable test failures."""

    def __init__(self, binary: Path):
        self.binary = binary

    def run(self, *args: str) -> str:
        command = [str(self.binary), *args]
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=CLI_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"timed out after {CLI_TIMEOUT_SECONDS}s: {command}")
        if done.returncode != 0:
            pytest.fail(
                f"exit code {done.returncode}: {command}\n"
                f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}"
            )
        return done.stdout

    def init_ledger(self, data_dir: Path, curve: str | None = None) -> Ledger:
        args = ["local", "init", "--data-dir", str(data_dir)]
        if curve is not None:
            args += ["--curve", curve]
        self.run(*args)
        ledger = Ledger(self, data_dir)
        assert (data_dir / "service_cert.pem").is_file(), "init did not write service_cert.pem"
        assert "-----BEGIN CERTIFICATE-----" in ledger.service_cert_pem
        return ledger


def pytest_report_header(config) -> str:
    from sdk_compat import DEFAULT_API_VERSION, SDK_VERSION

    return f"azure-confidentialledger {SDK_VERSION} (default api-version {DEFAULT_API_VERSION})"


def _binary_path() -> Path:
    configured = os.environ.get("CLEDGER_BIN")
    return Path(configured) if configured else DEFAULT_BINARY


@pytest.fixture(scope="session")
def cledger() -> Cledger:
    binary = _binary_path()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(
            f"cledger binary not found or not executable: {binary}\n"
            "Build it with `cargo build -p cledger` (from the repository root), "
            "or point CLEDGER_BIN at it.",
            pytrace=False,
        )
    return Cledger(binary)


def _contents(index: int, claims: bool) -> str:
    flavour = "with claims" if claims else "plain"
    return f"entry {index} ({flavour}) — ünïcode ✓ {'x' * (index % 7)}"


@pytest.fixture(scope="session")
def ledger(cledger: Cledger, tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """The main ledger (default curve, P-384): 60 entries in 3 collections, 30 with claims,
    interleaved so that the Merkle proofs mix left and right siblings."""
    ledger = cledger.init_ledger(tmp_path_factory.mktemp("ledger-main"))
    index = 0
    for round_ in range(5):
        for collection in COLLECTIONS:
            for claims in (False, True):
                batch = [_contents(index + i, claims) for i in range(2)]
                index += len(batch)
                tags = ("round", f"r{round_}") if claims else ()
                ledger.append(batch, collection=collection, tags=tags, claims=claims)
    return ledger


@pytest.fixture(scope="session")
def p256_ledger(cledger: Cledger, tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """A small P-256 ledger."""
    ledger = cledger.init_ledger(tmp_path_factory.mktemp("ledger-p256"), curve="p256")
    ledger.append([_contents(i, False) for i in range(3)])
    ledger.append([_contents(i, True) for i in range(3, 5)], collection=COLLECTIONS[2], claims=True)
    return ledger


@pytest.fixture(scope="session")
def other_ledger(cledger: Cledger, tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    """An unrelated ledger on the same curve as `ledger`: only its service cert is used."""
    return cledger.init_ledger(tmp_path_factory.mktemp("ledger-other"), curve="p384")
