"""A test witness written from the C2SP specs, independent of the Rust code.

It implements `POST /add-checkpoint` of c2sp.org/tlog-witness over plain HTTP:

- request body: `old <size>\\n`, up to 63 base64 consistency proof lines, an empty line, then a
  signed checkpoint note (c2sp.org/tlog-checkpoint, c2sp.org/signed-note);
- 404 for an origin it has no key for, 403 when no signature of a trusted key verifies (or a
  signature of a trusted key fails), 400 for a malformed request or an old size above the
  checkpoint's, 409 with `text/x.tlog.size` and its recorded size when the old size is not the
  size it recorded for that origin, 409 for a different root at the recorded size (a split
  view: also logged and kept in the state file as evidence), 422 when the RFC 6962 consistency
  proof does not verify (RFC 9162 §2.1.4.2, written out here), else 200 and one
  `cosignature/v1` line (c2sp.org/tlog-cosignature: Ed25519 over
  `cosignature/v1\\ntime <t>\\n` + checkpoint text, carried as key ID || u64 BE t || signature).

The check of the old size and the update of the state happen under one lock, and the state
(JSON: per origin the size and base64 root last cosigned, and the conflicts seen) is written
to a temporary file, fsync'd and renamed before the answer, as the spec requires.

Run: python3 c2sp_witness.py --listen 127.0.0.1:0 --state FILE --key-seed-hex HEX
         --name NAME --log-vkey VKEY [--log-vkey VKEY ...]
A log's origin is the name of its vkey. On start it prints one JSON line with the address it
listens on and its cosigner vkey (type 0x04).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

EM_DASH = "\u2014"
TYPE_ED25519 = 0x01
TYPE_COSIGNATURE_V1 = 0x04
MAX_BODY = 64 * 1024
MAX_PROOF_LINES = 63
MAX_SIGNATURES = 100


class Refused(Exception):
    """A request the witness answers with `status` and `body`."""

    def __init__(self, status: int, body: str, content_type: str = "text/plain; charset=utf-8"):
        super().__init__(body)
        self.status = status
        self.body = body
        self.content_type = content_type


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def b64decode_strict(text: str) -> bytes:
    data = base64.b64decode(text.encode("ascii"), validate=True)
    if base64.b64encode(data).decode("ascii") != text:
        raise ValueError("not canonical base64")
    return data


def decimal(text: str) -> int:
    if not text or not text.isascii() or not text.isdigit() or (text != "0" and text[0] == "0"):
        raise ValueError(f"not a canonical decimal: {text!r}")
    value = int(text)
    if value >= 1 << 64:
        raise ValueError("above 2^64 - 1")
    return value


def valid_key_name(name: str) -> bool:
    return bool(name) and not any(c.isspace() or c == "+" for c in name)


def parse_vkey(vkey: str) -> tuple[str, bytes, Ed25519PublicKey]:
    """`<name>+<hex key ID>+<base64(type || key)>` of an Ed25519 (type 0x01) log key."""
    name, hex_id, encoded = vkey.split("+", 2)
    raw = b64decode_strict(encoded)
    if not valid_key_name(name) or len(raw) != 33 or raw[0] != TYPE_ED25519:
        raise ValueError("not an Ed25519 note vkey")
    kid = bytes.fromhex(hex_id)
    if len(kid) != 4 or kid != key_id(name, TYPE_ED25519, raw[1:]):
        raise ValueError("the key ID does not match the name and key")
    return name, kid, Ed25519PublicKey.from_public_bytes(raw[1:])


def parse_note(text: str) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """A signed note: (text, [(name, key ID, signature)]). Raises ValueError."""
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise ValueError("control character in the note")
    if not text.endswith("\n"):
        raise ValueError("the note does not end with a newline")
    split = text.rfind("\n\n")
    if split < 0:
        raise ValueError("no signatures")
    body, block = text[: split + 1], text[split + 2 :]
    lines = block[:-1].split("\n") if block else []
    if not lines or len(lines) > MAX_SIGNATURES:
        raise ValueError("no signature lines, or too many")
    signatures = []
    for line in lines:
        if not line.startswith(EM_DASH + " "):
            raise ValueError("malformed signature line")
        name, _, encoded = line[2:].partition(" ")
        raw = b64decode_strict(encoded)
        if not valid_key_name(name) or len(raw) < 5:
            raise ValueError("malformed signature line")
        signatures.append((name, raw[:4], raw[4:]))
    return body, signatures


def parse_checkpoint(body: str) -> tuple[str, int, bytes]:
    lines = body[:-1].split("\n")
    if len(lines) < 3 or not lines[0] or any(not line for line in lines[3:]):
        raise ValueError("a checkpoint has an origin, a size, a root and non-empty extensions")
    root = b64decode_strict(lines[2])
    if len(root) != 32:
        raise ValueError("the root is not 32 bytes")
    return lines[0], decimal(lines[1]), root


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def verify_consistency(first: int, second: int, first_hash: bytes, second_hash: bytes, proof: list[bytes]) -> bool:
    """RFC 9162 §2.1.4.2 (RFC 6962 hashing): whether `proof` shows the tree of `second` leaves
    with `second_hash` extends the tree of `first` leaves with `first_hash`."""
    if first > second:
        return False
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0:
        return not proof
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_hash)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_hash and sr == second_hash


class Witness:
    def __init__(self, name: str, seed: bytes, logs: list[str], state_path: str):
        if not valid_key_name(name) or len(seed) != 32:
            raise ValueError("a witness needs a valid name and a 32-byte seed")
        self.name = name
        self.key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id(name, TYPE_COSIGNATURE_V1, self.public)
        self.logs: dict[str, list[tuple[bytes, Ed25519PublicKey]]] = {}
        for vkey in logs:
            origin, kid, key = parse_vkey(vkey)
            self.logs.setdefault(origin, []).append((kid, key))
        self.state_path = state_path
        self.lock = threading.Lock()
        self.state = self._load()

    def vkey(self) -> str:
        raw = bytes([TYPE_COSIGNATURE_V1]) + self.public
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(raw).decode()}"

    def _load(self) -> dict:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                state = json.load(f)
        except FileNotFoundError:
            return {"logs": {}, "conflicts": []}
        if not isinstance(state.get("logs"), dict) or not isinstance(state.get("conflicts"), list):
            raise ValueError(f"{self.state_path} is not a witness state file")
        return state

    def _persist(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.state, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        directory = os.open(os.path.dirname(os.path.abspath(self.state_path)), os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def cosign(self, body: str) -> str:
        timestamp = int(time.time())
        message = f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()
        signature = self.key_id + timestamp.to_bytes(8, "big") + self.key.sign(message)
        return f"{EM_DASH} {self.name} {base64.b64encode(signature).decode()}\n"

    def add_checkpoint(self, raw: bytes) -> str:
        """The answer to a request body: its cosignature line, or raises Refused."""
        try:
            text = raw.decode("utf-8")
            head, sep, note = text.partition("\n\n")
            if not sep:
                raise ValueError("no empty line after the proof")
            lines = head.split("\n")
            if not lines[0].startswith("old "):
                raise ValueError("the first line is not the old size")
            old = decimal(lines[0][4:])
            if len(lines) - 1 > MAX_PROOF_LINES:
                raise ValueError("more than 63 proof lines")
            proof = [b64decode_strict(line) for line in lines[1:]]
            if any(len(h) != 32 for h in proof):
                raise ValueError("a proof line is not a 32-byte hash")
            body, signatures = parse_note(note)
            origin, size, root = parse_checkpoint(body)
        except (ValueError, UnicodeDecodeError, binascii.Error) as e:
            raise Refused(400, f"malformed request: {e}\n") from None

        keys = self.logs.get(origin)
        if keys is None:
            raise Refused(404, f"unknown log origin {origin!r}\n")
        verified = 0
        for name, kid, signature in signatures:
            for known_id, key in keys:
                if name != origin or kid != known_id:
                    continue
                try:
                    key.verify(signature, body.encode())
                except InvalidSignature:
                    raise Refused(403, "a signature of the log's key does not verify\n") from None
                verified += 1
        if verified == 0:
            raise Refused(403, "no signature of a trusted log key\n")
        if old > size:
            raise Refused(400, f"old size {old} is above the checkpoint size {size}\n")

        with self.lock:
            known = self.state["logs"].get(origin)
            known_size = known["size"] if known else 0
            known_root = base64.b64decode(known["root"]) if known else None
            if old != known_size:
                raise Refused(409, f"{known_size}\n", "text/x.tlog.size")
            if old == size and known_root is not None and root != known_root:
                self.state["conflicts"].append(
                    {"origin": origin, "size": size, "root": base64.b64encode(root).decode(), "note": note}
                )
                self._persist()
                print(f"split view of {origin} at size {size}: {base64.b64encode(root).decode()}", file=sys.stderr, flush=True)
                raise Refused(409, f"root differs from the cosigned root at size {size}\n")
            if old == 0 and proof:
                raise Refused(422, "a proof from size 0 must be empty\n")
            if old > 0 and not verify_consistency(old, size, known_root, root, proof):
                # A log that cannot prove it extends what this witness cosigned shows a
                # different history than before: kept as evidence, like a same-size conflict.
                self.state["conflicts"].append(
                    {"origin": origin, "size": size, "old": old, "root": base64.b64encode(root).decode(), "note": note}
                )
                self._persist()
                print(f"inconsistent checkpoint of {origin} from size {old} to {size}", file=sys.stderr, flush=True)
                raise Refused(422, "the consistency proof does not verify\n")
            self.state["logs"][origin] = {"size": size, "root": base64.b64encode(root).decode()}
            self._persist()
        return self.cosign(body)


def handler_for(witness: Witness):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (the http.server naming)
            if self.path != "/add-checkpoint":
                self.answer(404, "not found\n", "text/plain; charset=utf-8")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if length < 0 or length > MAX_BODY:
                self.close_connection = True
                self.answer(400, "a body of at most 64 KiB with Content-Length is needed\n", "text/plain; charset=utf-8")
                return
            raw = self.rfile.read(length)
            try:
                self.answer(200, witness.add_checkpoint(raw), "text/plain; charset=utf-8")
            except Refused as r:
                self.answer(r.status, r.body, r.content_type)
            except Exception as e:  # never die on a request: answer and keep serving
                print(f"internal error: {e!r}", file=sys.stderr, flush=True)
                self.answer(500, "internal error\n", "text/plain; charset=utf-8")

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            print(format % args, file=sys.stderr, flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="C2SP tlog-witness test witness")
    parser.add_argument("--listen", required=True, help="HOST:PORT (port 0: any free port)")
    parser.add_argument("--state", required=True, help="JSON state file (created if missing)")
    parser.add_argument("--key-seed-hex", required=True, help="32-byte Ed25519 seed, hex")
    parser.add_argument("--name", required=True, help="the witness's key name")
    parser.add_argument("--log-vkey", action="append", required=True, help="a trusted log vkey (its name is the origin)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    witness = Witness(args.name, bytes.fromhex(args.key_seed_hex), args.log_vkey, args.state)
    server = ThreadingHTTPServer((host, int(port)), handler_for(witness))
    bound_host, bound_port = server.server_address[:2]
    print(json.dumps({"listen": f"{bound_host}:{bound_port}", "vkey": witness.vkey()}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
