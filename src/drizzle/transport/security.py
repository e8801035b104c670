"""CURVE key material of a cluster: from a shared secret or from key files.

Every node of a Drizzle cluster is both a CURVE *server* (its ROUTER, which peers
connect to) and a CURVE *client* (one DEALER per peer). A cluster is one trust domain:
a peer that passes the handshake may send code to run, so the keys decide who is in.
``CurveKeys`` holds what one node needs: the cluster's server keypair (every node's
ROUTER uses it, so a client needs no per-peer lookup), this node's client keypair, and
the allow-list of client public keys its ZAP handler accepts (Ironhouse).

Two sources, both documented in ``docs/security.md``:

* a **cluster secret** (``DRIZZLE_SECRET``, ``--secret-file``, ``Context(secret=...)``):
  the keypairs are derived with HKDF-SHA256 (RFC 5869; salt ``drizzle-curve-v1``, info
  ``server`` or ``client``) into a Curve25519 secret key, whose public key libzmq
  computes. Every holder of the secret computes the same keys and the same one-key
  allow-list, so nothing else is distributed;
* a **key directory** made by ``python -m drizzle.node keygen --out DIR``: the server
  keypair (``server.key_secret``), one client keypair per name (``NAME.key_secret``)
  and the allow-list, one public key per file (``allowed/NAME.key``). Deleting a file
  from ``allowed/`` revokes that client at the nodes' next start.

Secret material is never logged or put in a ``repr``, and files holding it are
written ``0600`` and refused when other users can read them. This module and
``transport/zmq.py`` are the only ones that import ``zmq``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
import zmq.auth
from zmq.utils import z85

from drizzle.errors import ClusterError

SECRET_ENV = "DRIZZLE_SECRET"
"""Environment variable holding the cluster secret."""
MIN_SECRET_BYTES = 16
"""Shortest secret accepted (after stripping surrounding whitespace)."""
DEFAULT_KEY_NAME = "default"
"""Client key used from a key directory when no name is given."""
_KDF_SALT = b"drizzle-curve-v1"

SETUP_HINT = (
    "give every node the same cluster secret (DRIZZLE_SECRET=... in the environment, "
    "--secret-file FILE, or Context(secret=... / secret_file=...); make one with "
    "'python -m drizzle.node keygen --secret FILE') or CURVE key files ('python -m "
    "drizzle.node keygen --out DIR', then --keys DIR / Context(keys=DIR)); see "
    "docs/security.md"
)


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """One node's CURVE keys (Z85-encoded, 40 bytes each) and its allow-list."""

    server_public: bytes
    server_secret: bytes = field(repr=False)
    client_public: bytes
    client_secret: bytes = field(repr=False)
    allowed: frozenset[bytes]
    """Client public keys this node's ZAP handler accepts."""
    origin: str = field(default="", compare=False)
    """Where the keys came from, for messages (never the secret itself)."""


def require_curve() -> None:
    """Raise ``ClusterError`` if this libzmq cannot do CURVE."""
    if not zmq.has("curve"):
        raise ClusterError(
            f"libzmq {zmq.zmq_version()} (pyzmq {zmq.__version__}) was built without CURVE "
            "support (libsodium), so the cluster cannot be authenticated or encrypted; "
            "install a pyzmq wheel from PyPI (it bundles libsodium) or a libzmq built "
            "with --with-libsodium"
        )


def _hkdf(secret: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869), 32 bytes of output."""
    prk = hmac.new(_KDF_SALT, secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _keypair_from(seed: bytes) -> tuple[bytes, bytes]:
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


def keys_from_secret(secret: bytes | str, origin: str = "the cluster secret") -> CurveKeys:
    """Derive the cluster's keys from a shared secret (see the module docstring)."""
    require_curve()
    raw = (os.fsencode(secret) if isinstance(secret, str) else bytes(secret)).strip()
    if len(raw) < MIN_SECRET_BYTES:
        raise ClusterError(
            f"{origin} is too short ({len(raw)} bytes; at least {MIN_SECRET_BYTES} are "
            "needed): make one with 'python -m drizzle.node keygen --secret FILE'"
        )
    server_public, server_secret = _keypair_from(_hkdf(raw, b"server"))
    client_public, client_secret = _keypair_from(_hkdf(raw, b"client"))
    return CurveKeys(
        server_public,
        server_secret,
        client_public,
        client_secret,
        frozenset({client_public}),
        origin,
    )


def new_secret() -> str:
    """A fresh random cluster secret (256 bits, URL-safe text)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _check_private(path: Path) -> None:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ClusterError(
            f"{path} holds secret key material but other users may read it (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
        )


def read_secret_file(path: str | os.PathLike[str]) -> CurveKeys:
    """Keys from a file holding the cluster secret (mode 0600)."""
    p = Path(path).expanduser()
    try:
        _check_private(p)
        data = p.read_bytes()
    except OSError as exc:
        raise ClusterError(f"cannot read the cluster secret file {p}: {exc}") from exc
    return keys_from_secret(data, origin=f"secret file {p}")


def write_secret_file(path: str | os.PathLike[str]) -> Path:
    """Write a fresh cluster secret to a new file, readable by its owner only."""
    p = Path(path).expanduser()
    _write_private(p, (new_secret() + "\n").encode())
    return p


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _certificate(public: bytes, secret: bytes | None, what: str) -> bytes:
    lines = [
        f"#   Drizzle CURVE {what}, made by 'python -m drizzle.node keygen'.",
        "#   Format: ZeroMQ certificate (zmq.auth.load_certificate reads it).",
        "metadata",
        "curve",
        f'    public-key = "{public.decode()}"',
    ]
    if secret is not None:
        lines.append(f'    secret-key = "{secret.decode()}"')
    return ("\n".join(lines) + "\n").encode()


def generate_key_dir(directory: str | os.PathLike[str], name: str = DEFAULT_KEY_NAME) -> list[Path]:
    """Create (or extend) a key directory: the server keypair if missing, and a new
    client keypair ``name`` whose public key joins ``allowed/``. Returns files written."""
    require_curve()
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ClusterError(f"key name {name!r}: use letters, digits, '-', '_' or '.'")
    root = Path(directory).expanduser()
    allowed = root / "allowed"
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    allowed.mkdir(mode=0o755, exist_ok=True)
    client_file = root / f"{name}.key_secret"
    if client_file.exists() or (allowed / f"{name}.key").exists():
        raise ClusterError(f"a key named {name!r} already exists in {root}; pick another --name")
    written = []
    server_file = root / "server.key_secret"
    if not server_file.exists():
        public, secret = zmq.curve_keypair()
        _write_private(server_file, _certificate(public, secret, "server keypair (all nodes)"))
        written.append(server_file)
    public, secret = zmq.curve_keypair()
    _write_private(client_file, _certificate(public, secret, f"client keypair {name!r}"))
    (allowed / f"{name}.key").write_bytes(_certificate(public, None, f"allowed client {name!r}"))
    written += [client_file, allowed / f"{name}.key"]
    return written


def _load_keypair(path: Path) -> tuple[bytes, bytes]:
    try:
        _check_private(path)
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot load CURVE keys from {path}: {exc}") from exc
    if not secret:
        raise ClusterError(f"{path} holds no secret key")
    return public, secret


def read_key_dir(directory: str | os.PathLike[str], name: str = DEFAULT_KEY_NAME) -> CurveKeys:
    """Keys from a directory made by ``generate_key_dir``."""
    require_curve()
    root = Path(directory).expanduser()
    server_public, server_secret = _load_keypair(root / "server.key_secret")
    client_public, client_secret = _load_keypair(root / f"{name}.key_secret")
    try:
        allowed = frozenset(zmq.auth.load_certificates(root / "allowed"))
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot load the allowed client keys of {root}: {exc}") from exc
    if client_public not in allowed:
        raise ClusterError(
            f"this node's key {name!r} is not in {root / 'allowed'}: its peers would refuse "
            "it; copy allowed/ from the directory keygen wrote"
        )
    return CurveKeys(
        server_public, server_secret, client_public, client_secret, allowed, f"key directory {root}"
    )


def resolve_keys(
    *,
    secret: bytes | str | None = None,
    secret_file: str | os.PathLike[str] | None = None,
    keys: str | os.PathLike[str] | None = None,
    key_name: str = DEFAULT_KEY_NAME,
    env: Mapping[str, str] | None = None,
) -> CurveKeys | None:
    """The keys a node should use: at most one explicit source, else ``DRIZZLE_SECRET``
    from ``env`` (pass ``None`` to ignore the environment); None when there are none."""
    given = [n for n, v in (("secret", secret), ("secret_file", secret_file), ("keys", keys)) if v]
    if len(given) > 1:
        raise ClusterError(f"give one source of keys, not {' and '.join(given)}")
    if secret:
        return keys_from_secret(secret)
    if secret_file:
        return read_secret_file(secret_file)
    if keys:
        return read_key_dir(keys, key_name)
    if env is not None and env.get(SECRET_ENV):
        return keys_from_secret(env[SECRET_ENV], origin=SECRET_ENV)
    return None
