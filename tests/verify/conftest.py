"""Fixtures of the verifiability suite: a live `cledger serve` (tests/python/server.py) and
HTTP calls made with `requests` as the ledger's administrator.

Run in its own virtualenv (requirements.txt: CCF's `ccf` 7 and `scitt-cose`, the independent
verifiers); the SDK suites in tests/python do not collect it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "python"))

from server import LedgerServer  # noqa: E402

CLAIMS_API_VERSION = "2026-02-23"


def cledger_binary() -> Path:
    binary = Path(os.environ.get("CLEDGER_BIN", REPO_ROOT / "target" / "debug" / "cledger"))
    if not binary.is_file():
        pytest.fail(f"the cledger binary is missing: {binary} (cargo build, or set CLEDGER_BIN)")
    return binary


class Api:
    """The REST API as the administrator, pinning the service certificate."""

    def __init__(self, server: LedgerServer):
        self.server = server
        self.session = requests.Session()
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE override a
        # session's `verify`, and the pinned service certificate must be the only root.
        self.tls = {"cert": str(server.admin_pem_path), "verify": str(server.service_cert_path)}

    def url(self, path: str) -> str:
        return f"{self.server.endpoint}{path}"

    def get(self, path: str, **params) -> requests.Response:
        return self.session.get(self.url(path), params=params, timeout=30, **self.tls)

    def append(self, contents: str, api_version: str = CLAIMS_API_VERSION) -> str:
        response = self.session.post(
            self.url("/app/transactions"),
            params={"api-version": api_version},
            json={"contents": contents},
            timeout=30,
            **self.tls,
        )
        assert response.status_code == 200, response.text
        return response.headers["x-ms-ccf-transaction-id"]


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LedgerServer:
    yield from LedgerServer(cledger_binary(), tmp_path_factory.mktemp("verify-server")).serve_for_module()


@pytest.fixture(scope="module")
def api(live: LedgerServer) -> Api:
    return Api(live)
