"""SDK 2.0.0b2's user-defined function and endpoint methods against a live `cledger serve`:
`create_/get_/list_/execute_/delete_user_defined_function`, a write with pre- and post-hooks,
`create_/get_user_defined_endpoint`, `get_user_defined_endpoints_module`,
`get_/update_runtime_options`, and a deployed endpoint called over HTTPS.

The functions are Microsoft's published samples, verbatim (learn.microsoft.com, "User defined
functions in Azure confidential ledger": the banking example's validateTransaction,
detectHighTransaction and checkPaymentMetadataTable), and so is the endpoint bundle
(azureconfidentialledger-app-samples, "UDE Sample bundle"). Each is checked by its effect: the
refused write is not in the ledger, the hook's table write is read back by another function,
and both survive a restart of the server.

SDK 1.1.1 has none of these methods, so under it these tests are reported as skipped.
"""

from __future__ import annotations

import json
import ssl
import urllib.request

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from sdk_compat import only_sdk2, plain
from server import LedgerServer

pytestmark = only_sdk2

VALIDATE = (
    "export function main() { if (isNaN(context.contents)) "
    "{ throw new Error('Contents is not a number'); } }"
)
DETECT_HIGH = (
    "export function main() { let value = 'Normal'; if (context.contents > 50) { value = 'Alert' } "
    "ccf.kv['public:payment_metadata'].set(ccf.strToBuf(context.collectionId), ccf.strToBuf(value)); }"
)
CHECK_METADATA = (
    "export function main(user) { const value = ccf.kv['public:payment_metadata'].get(ccf.strToBuf(user)); "
    "if (value === undefined) { throw new Error('UnknownUser'); } return ccf.bufToStr(value); }"
)
SAMPLE_BUNDLE = {
    "metadata": {
        "endpoints": {
            "/content": {
                "get": {
                    "js_module": "test.js",
                    "js_function": "content",
                    "forwarding_required": "never",
                    "redirection_strategy": "none",
                    "authn_policies": ["no_auth"],
                    "mode": "readonly",
                    "openapi": {},
                }
            }
        }
    },
    "modules": [
        {
            "name": "test.js",
            "module": 'import { foo } from "./baz/baz.js";\n\nexport function content(request) {\n  return {\n    statusCode: 200,\n    body: { payload: foo() },\n  };\n}',
        },
        {"name": "baz/baz.js", "module": 'export function foo() {\n  return "Test content";\n}'},
    ],
}


@pytest.fixture(scope="module")
def live(cledger, tmp_path_factory) -> LedgerServer:
    yield from LedgerServer(cledger.binary, tmp_path_factory.mktemp("sdk-user-code")).serve_for_module()


def write(client, collection: str, contents: str, pre=(), post=()) -> str:
    entry = {"contents": contents}
    if pre:
        entry["preHooks"] = [{"functionId": f} for f in pre]
    if post:
        entry["postHooks"] = [{"functionId": f} for f in post]
    return client.begin_create_ledger_entry(entry, collection_id=collection).result()["transactionId"]


def execute(client, function_id: str, *arguments: str) -> dict:
    return plain(client.execute_user_defined_function(function_id, {"arguments": list(arguments)}))


def test_functions_hooks_and_restart(live: LedgerServer):
    client = live.client()
    for function_id, code in [
        ("validateTransaction", VALIDATE),
        ("detectHighTransaction", DETECT_HIGH),
        ("checkPaymentMetadataTable", CHECK_METADATA),
    ]:
        created = client.create_user_defined_function(function_id, {"code": code})
        assert (created["id"], created["code"]) == (function_id, code)
    assert client.get_user_defined_function("validateTransaction")["code"] == VALIDATE
    listed = {f["id"]: f["code"] for f in client.list_user_defined_functions()}
    assert listed == {
        "validateTransaction": VALIDATE,
        "detectHighTransaction": DETECT_HIGH,
        "checkPaymentMetadataTable": CHECK_METADATA,
    }

    # The pre-hook refuses a non-number: ACL's 500 InternalError naming the function, and
    # nothing is written.
    with pytest.raises(HttpResponseError) as refused:
        write(client, "Mark", "This is not a number", pre=["validateTransaction"])
    assert refused.value.status_code == 500
    assert refused.value.error.code == "InternalError"
    assert "Error while executing function validateTransaction: Error: Contents is not a number" in str(
        refused.value
    )
    assert "Mark" not in [c["collectionId"] for c in client.list_collections()]

    # Valid writes pass; the post-hook records each user's last transaction class.
    high = write(client, "Mark", "100", pre=["validateTransaction"], post=["detectHighTransaction"])
    write(client, "John", "20", pre=["validateTransaction"], post=["detectHighTransaction"])
    assert client.get_ledger_entry(high, collection_id="Mark")["entry"]["contents"] == "100"
    assert client.get_transaction_status(high)["state"] == "Committed"

    assert execute(client, "checkPaymentMetadataTable", "Mark") == {
        "status": "Succeeded",
        "result": {"returnValue": "Alert"},
        "logs": [],
    }
    assert execute(client, "checkPaymentMetadataTable", "John")["result"] == {"returnValue": "Normal"}
    failed = execute(client, "checkPaymentMetadataTable", "Jane")
    assert failed["status"] == "Failed"
    assert failed["error"]["message"].startswith(
        "Error while executing function checkPaymentMetadataTable: Error: UnknownUser"
    )

    # Deleted functions are gone (their history stays in the ledger).
    client.delete_user_defined_function("detectHighTransaction")
    with pytest.raises(ResourceNotFoundError):
        client.get_user_defined_function("detectHighTransaction")
    with pytest.raises(HttpResponseError) as unknown:
        write(client, "John", "30", post=["detectHighTransaction"])
    assert unknown.value.status_code == 400

    # A restart replays the functions and the table the hook wrote.
    live.kill()
    live.start()
    client = live.client()
    assert execute(client, "checkPaymentMetadataTable", "Mark")["result"] == {"returnValue": "Alert"}
    assert sorted(f["id"] for f in client.list_user_defined_functions()) == [
        "checkPaymentMetadataTable",
        "validateTransaction",
    ]


def test_hostile_functions_end_with_a_precise_error(live: LedgerServer):
    client = live.client()
    cases = {
        "spin": ("export function main() { while (true) {} }", "time limit"),
        "recurse": ("export function main() { function f() { return f() + 1 } return f() }", "stack"),
        "bomb": ("export function main() { let a = []; while (true) a.push(new Array(1e6).fill(1)) }", "out of memory"),
        "reach": ("export function main() { return typeof require + typeof process + ccf.kv['public:cledger.users'].size }", "may not read table"),
        "pollute": ("export function main() { Object.prototype.polluted = 1; throw 42 }", "42"),
    }
    for function_id, (code, expected) in cases.items():
        client.create_user_defined_function(function_id, {"code": code})
        result = plain(
            client.execute_user_defined_function(
                function_id, {"runtimeOptions": {"max_execution_time_ms": 300}}
            )
        )
        assert result["status"] == "Failed", result
        assert expected in result["error"]["message"], result
    client.create_user_defined_function("clean", {"code": "export function main() { return String({}.polluted) }"})
    assert execute(client, "clean")["result"] == {"returnValue": "undefined"}
    # Still serving, and nothing was written by any of them.
    assert client.get_transaction_status(
        client.begin_create_ledger_entry({"contents": "after the hostile scripts"}).result()["transactionId"]
    )["state"] == "Committed"
    for function_id in [*cases, "clean"]:
        client.delete_user_defined_function(function_id)


def test_endpoints_runtime_options_and_modules(live: LedgerServer):
    client = live.client()
    # A ledger runs functions or endpoints: remove the functions of the other tests first.
    for function in list(client.list_user_defined_functions()):
        client.delete_user_defined_function(function["id"])

    options = plain(client.get_runtime_options())
    assert options["max_execution_time_ms"] == 1000
    updated = plain(client.update_runtime_options({"max_execution_time_ms": 2000, "log_exception_details": False}))
    assert updated["max_execution_time_ms"] == 2000 and updated["log_exception_details"] is False
    assert plain(client.get_runtime_options()) == updated
    with pytest.raises(HttpResponseError) as bad:
        client.update_runtime_options({"max_execution_time_ms": 0})
    assert bad.value.status_code == 400

    client.create_user_defined_endpoint(SAMPLE_BUNDLE)
    deployed = plain(client.get_user_defined_endpoint())
    assert deployed["metadata"]["endpoints"]["/content"]["get"]["js_function"] == "content"
    assert plain(client.get_user_defined_endpoints_module(module_name="baz/baz.js")) == {
        "name": "baz/baz.js",
        "module": SAMPLE_BUNDLE["modules"][1]["module"],
    }

    # The deployed endpoint, called over HTTPS without credentials (its policy is no_auth).
    context = ssl.create_default_context(cafile=str(live.service_cert_path))
    with urllib.request.urlopen(f"{live.endpoint}/app/content", context=context) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        assert json.loads(response.read()) == {"payload": "Test content"}

    # Functions are refused while endpoints are deployed, and allowed again after an empty bundle.
    with pytest.raises(HttpResponseError) as exclusive:
        client.create_user_defined_function("f", {"code": "export function main() {}"})
    assert exclusive.value.status_code == 400
    client.create_user_defined_endpoint({"metadata": {"endpoints": {}}, "modules": []})
    client.create_user_defined_function("f", {"code": "export function main() { return 1 }"})
    assert execute(client, "f")["result"] == {"returnValue": "1"}
