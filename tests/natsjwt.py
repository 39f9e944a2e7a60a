"""Decentralised NATS auth for tests: an operator, accounts and users as signed JWTs,
and the creds file a user connects with (what ``nsc`` would produce).

The format is the NATS JWT v2 one: a base64url header and claims, signed with the
issuer's ed25519 nkey over ``header.claims``; ``jti`` is the base32 SHA-512/256 of the
claims without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys

_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
UNLIMITED_ACCOUNT = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
    # JetStream is enabled for an account whose storage limits are not zero.
    "mem_storage": -1,
    "disk_storage": -1,
    "streams": -1,
    "consumer": -1,
}


@dataclass(frozen=True)
class Identity:
    """An nkey pair and the JWT its issuer signed for it."""

    seed: bytes
    public: str
    jwt: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_keys(prefix: int) -> tuple[bytes, str]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    return seed, nkeys.from_seed(seed).public_key.decode()


def _sign(issuer_seed: bytes, subject: str, name: str, nats: dict[str, Any]) -> str:
    issuer = nkeys.from_seed(issuer_seed)
    claims: dict[str, Any] = {
        "iat": int(time.time()),
        "iss": issuer.public_key.decode(),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    signing_input = f"{_b64(json.dumps(_HEADER).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = issuer.sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


def operator(name: str = "test-operator") -> Identity:
    seed, public = _new_keys(nkeys.PREFIX_BYTE_OPERATOR)
    return Identity(seed, public, _sign(seed, public, name, {"type": "operator"}))


def account(op: Identity, name: str, limits: dict[str, Any] | None = None) -> Identity:
    seed, public = _new_keys(nkeys.PREFIX_BYTE_ACCOUNT)
    nats = {"type": "account", "limits": limits or {}}
    return Identity(seed, public, _sign(op.seed, public, name, nats))


def user(acct: Identity, name: str) -> Identity:
    seed, public = _new_keys(nkeys.PREFIX_BYTE_USER)
    nats = {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1}
    return Identity(seed, public, _sign(acct.seed, public, name, nats))


def creds(u: Identity) -> str:
    """The creds file text, as nsc writes it."""
    return (
        f"-----BEGIN NATS USER JWT-----\n{u.jwt}\n------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{u.seed.decode()}\n------END USER NKEY SEED------\n"
    )


def server_conf(op: Identity, system: Identity, accounts: list[Identity]) -> str:
    """Operator mode with an in-memory resolver preloaded with every account."""
    preload = ", ".join(f"{a.public}: {a.jwt}" for a in [system, *accounts])
    return (
        f"operator: {op.jwt}\n"
        f"system_account: {system.public}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {preload} }}\n"
    )
