// Writes a JWKS file (a fresh P-256 key) and prints an ES256 token for OID, valid for a day, for
// h2load runs against `cledger serve --jwt-issuer https://issuer.test --jwt-audience cledger
// --jwt-jwks-file JWKS --jwt-tenant-id t1` (benches/throughput.sh).
//   node benches/token.mjs JWKS OID
import { generateKeyPairSync, sign } from "node:crypto";
import { writeFileSync } from "node:fs";
const [jwksPath, oid] = process.argv.slice(2);
const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", use: "sig", alg: "ES256" };
writeFileSync(jwksPath, JSON.stringify({ keys: [jwk] }));
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const input = `${b64({ alg: "ES256", kid: "k1", typ: "JWT" })}.${b64({ iss: "https://issuer.test", aud: "cledger", oid, tid: "t1", iat: now, nbf: now, exp: now + 86400 })}`;
const signature = sign("sha256", Buffer.from(input), { key: privateKey, dsaEncoding: "ieee-p1363" });
console.log(`${input}.${signature.toString("base64url")}`);
