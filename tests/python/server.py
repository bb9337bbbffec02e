"""A running `cledger serve` for the SDK suite, and user certificates made the way the ACL docs
tell users to make them (openssl, P-384).

The server is started on a free loopback port (`--listen 127.0.0.1:0`); it prints
`listening on https://127.0.0.1:<port>` when ready. Clients connect to `https://localhost:<port>`
(the node certificate has SANs `localhost` and `127.0.0.1`) and pin `DATA_DIR/service_cert.pem`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from azure.confidentialledger import (
    ConfidentialLedgerCertificateCredential,
    ConfidentialLedgerClient,
)

READY_LINE = re.compile(r"^listening on https://127\.0\.0\.1:(\d+)\s*$")
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 20


class LedgerServer:
    """`cledger serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...`; restartable on the same dir."""

    def __init__(self, binary: Path, data_dir: Path, extra_args: tuple[str, ...] = ()):
        self.binary = binary
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "LedgerServer":
        assert self.process is None, "already running"
        self._stdout, self._stderr = [], []
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLEDGER_")}
        command = [
            str(self.binary), "serve",
            "--data-dir", str(self.data_dir),
            "--listen", "127.0.0.1:0",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
        )
        ready = threading.Event()
        port: list[int] = []

        def read_stdout(stream, sink):
            for line in stream:
                sink.append(line)
                match = READY_LINE.match(line.strip())
                if match and not ready.is_set():
                    port.append(int(match.group(1)))
                    ready.set()
            ready.set()  # EOF: the process is gone

        def read_stderr(stream, sink):
            for line in stream:
                sink.append(line)

        threading.Thread(target=read_stdout, args=(self.process.stdout, self._stdout), daemon=True).start()
        threading.Thread(target=read_stderr, args=(self.process.stderr, self._stderr), daemon=True).start()
        ready.wait(START_TIMEOUT_SECONDS)
        if not port:
            self.kill()
            pytest.fail(f"`cledger serve` did not become ready: {command}\n{self.output()}", pytrace=False)
        self.port = port[0]
        return self

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code."""
        assert self.process is not None, "not running"
        process, self.process = self.process, None
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"server did not exit within {STOP_TIMEOUT_SECONDS}s of SIGTERM\n{self.output()}")
        return code

    def kill(self) -> None:
        if self.process is not None:
            process, self.process = self.process, None
            if process.poll() is None:
                process.kill()
            process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def serve_for_module(self):
        """Runs the server for a module-scoped fixture: yields it started, then requires a
        graceful SIGTERM exit (code 0) and makes sure no process is left behind."""
        self.start()
        try:
            yield self
            if self.alive():
                code = self.stop()
                assert code == 0, f"SIGTERM exit code {code}\n{self.output()}"
        finally:
            self.kill()

    def output(self) -> str:
        return "--- stdout ---\n" + "".join(self._stdout) + "\n--- stderr ---\n" + "".join(self._stderr)

    # --- clients ---------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"https://localhost:{self.port}"

    @property
    def service_cert_path(self) -> Path:
        return self.data_dir / "service_cert.pem"

    @property
    def service_cert_pem(self) -> str:
        return self.service_cert_path.read_text()

    @property
    def admin_pem_path(self) -> Path:
        return self.data_dir / "admin.pem"

    def client(self, identity_path: Path | None = None) -> ConfidentialLedgerClient:
        """The official SDK client, unchanged; `identity_path` is a cert + key PEM bundle
        (default: the generated administrator). The service cert file exists, so the SDK never
        calls Azure's identity service."""
        assert self.service_cert_path.is_file()
        return ConfidentialLedgerClient(
            endpoint=self.endpoint,
            credential=ConfidentialLedgerCertificateCredential(
                certificate_path=str(identity_path or self.admin_pem_path)
            ),
            ledger_certificate_path=str(self.service_cert_path),
        )


@dataclass(frozen=True)
class User:
    name: str
    bundle_path: Path  # certificate + private key, what ConfidentialLedgerCertificateCredential takes
    cert_path: Path
    user_id: str  # SHA-256 fingerprint of the DER certificate, AA:BB:... upper case


def _openssl(*args: str) -> str:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"openssl {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def make_user(directory: Path, name: str) -> User:
    """The ACL docs' recipe: `openssl ecparam -name secp384r1 -genkey` +
    `openssl req -new -x509 -sha384 -subj /CN=...`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / f"{name}_privk.pem"
    cert = directory / f"{name}_cert.pem"
    _openssl("ecparam", "-out", str(key), "-name", "secp384r1", "-genkey")
    _openssl(
        "req", "-new", "-key", str(key), "-x509", "-nodes", "-days", "365",
        "-out", str(cert), "-sha384", "-subj", f"/CN={name}",
    )
    bundle = directory / f"{name}.pem"
    bundle.write_text(cert.read_text() + key.read_text())
    fingerprint = _openssl("x509", "-in", str(cert), "-noout", "-fingerprint", "-sha256").strip()
    user_id = fingerprint.split("=", 1)[1].strip().upper()
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", user_id), fingerprint
    return User(name, bundle, cert, user_id)
