// Users and roles through the SDK: PATCH (merge-patch+json) / GET / DELETE /app/users/{userId},
// and second client certificates (made with openssl, as the ACL docs do) whose requests are
// allowed by their role and refused once the user is deleted.

import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { after, before, describe as suite, test } from "node:test";
import { LedgerServer, makeUser, tempDir } from "./server.mjs";
import { createEntry, describe, expectError, expectOk, getEntry, getReceipt } from "./helpers.mjs";

let server;
let admin;
const scratch = tempDir();

before(async () => {
  server = await LedgerServer.start();
  admin = server.client();
});

after(async () => {
  rmSync(scratch, { recursive: true, force: true });
  await server?.stopAndClean();
});

const userPath = "/app/users/{userId}";

function setRole(client, userId, role) {
  return client.path(userPath, userId).patch({ contentType: "application/merge-patch+json", body: { assignedRole: role } });
}

suite("users", () => {
  test("PATCH adds a user with a role, GET returns it, DELETE removes it", async () => {
    const user = makeUser(scratch, "js-reader");
    const patched = await setRole(admin, user.userId, "Reader");
    assert.deepEqual(expectOk(patched), { assignedRole: "Reader", userId: user.userId });
    assert.equal(patched.request.headers.get("content-type"), "application/merge-patch+json");
    // The SDK percent-encodes the colons of the fingerprint (%3A); the ledger decodes them.
    assert.ok(new URL(patched.request.url).pathname.includes("%3A"), patched.request.url);

    assert.deepEqual(expectOk(await admin.path(userPath, user.userId).get()), { assignedRole: "Reader", userId: user.userId });
    // Raw colons (how the Python SDK sends them) name the same user.
    assert.deepEqual(expectOk(await admin.pathUnchecked(`/app/users/${user.userId}`).get()), { assignedRole: "Reader", userId: user.userId });

    // A merge patch changes the role.
    assert.deepEqual(expectOk(await setRole(admin, user.userId, "Contributor")), { assignedRole: "Contributor", userId: user.userId });
    assert.equal(expectOk(await admin.path(userPath, user.userId).get()).assignedRole, "Contributor");

    const deleted = await admin.path(userPath, user.userId).delete();
    expectOk(deleted, "204");
    assert.ok(deleted.body === undefined || deleted.body === "", `DELETE body: ${describe(deleted)}`);
    expectError(await admin.path(userPath, user.userId).get(), 404, "ResourceNotFound");
  });

  test("a second certificate is allowed what its role allows, and refused (403) once deleted", async () => {
    const user = makeUser(scratch, "js-contributor");
    const asUser = server.client(user.pem);

    // Not a user yet.
    expectError(await asUser.path("/app/transactions/current").get(), 403, "NotAllowed");

    // Contributor: reads and writes, never manages users.
    expectOk(await setRole(admin, user.userId, "Contributor"));
    const contents = "written by the second certificate";
    const txid = await createEntry(asUser, contents);
    assert.equal((await getEntry(asUser, txid)).entry.contents, contents);
    assert.equal((await getReceipt(asUser, txid)).transactionId, txid);
    assert.equal(expectOk(await asUser.path("/app/transactions/current").get()).contents, contents);
    expectError(await setRole(asUser, user.userId, "Administrator"), 403, "NotAllowed");
    expectError(await asUser.path(userPath, user.userId).delete(), 403, "NotAllowed");

    // Reader: reads, never writes.
    expectOk(await setRole(admin, user.userId, "Reader"));
    assert.equal((await getEntry(asUser, txid)).entry.contents, contents);
    expectError(await asUser.path("/app/transactions").post({ body: { contents: "x" } }), 403, "NotAllowed");

    // Administrator: manages users.
    expectOk(await setRole(admin, user.userId, "Administrator"));
    const third = makeUser(scratch, "js-third");
    assert.deepEqual(expectOk(await setRole(asUser, third.userId, "Reader")), { assignedRole: "Reader", userId: third.userId });
    expectOk(await asUser.path(userPath, third.userId).delete(), "204");

    // Deleted: everything is refused, on the same (kept-alive) connection too.
    expectOk(await admin.path(userPath, user.userId).delete(), "204");
    expectError(await asUser.path("/app/transactions/current").get(), 403, "NotAllowed");
    expectError(await asUser.path("/app/transactions/{transactionId}", txid).get(), 403, "NotAllowed");
    expectError(await asUser.path("/app/transactions").post({ body: { contents: "x" } }), 403, "NotAllowed");
    // The entry it wrote stays.
    assert.equal((await getEntry(admin, txid)).entry.contents, contents);
  });

  test("an unknown user: GET 404 ResourceNotFound", async () => {
    const nobody = makeUser(scratch, "js-nobody");
    expectError(await admin.path(userPath, nobody.userId).get(), 404, "ResourceNotFound");
  });

  test("an unknown role is refused: 400 InvalidInput", async () => {
    const user = makeUser(scratch, "js-bad-role");
    expectError(await setRole(admin, user.userId, "Superuser"), 400, "InvalidInput");
    expectError(await admin.path(userPath, user.userId).get(), 404, "ResourceNotFound");
  });
});
