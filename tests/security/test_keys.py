"""Key material: the documented derivation from a secret, key directories, files'
permissions, the keygen command, and secrets kept out of reprs."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from zmq.utils import z85

from drizzle.cluster import ClusterOptions
from drizzle.errors import ClusterError
from drizzle.transport import security
from drizzle.transport.base import TransportOptions
from drizzle.transport.security import (
    SECRET_ENV,
    keys_from_secret,
    read_key_dir,
    read_secret_file,
    resolve_keys,
)
from drizzle.transport.zmq import ZmqTransport

from .support import WAIT

SECRET = "a-test-secret-that-is-long-enough"


def node_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "drizzle.node", *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )


def test_keys_derive_from_the_secret_as_documented() -> None:
    # docs/security.md: HKDF-SHA256, salt "drizzle-curve-v1", info "server" / "client",
    # one 32-byte block, used as the Curve25519 secret key.
    prk = hmac.new(b"drizzle-curve-v1", SECRET.encode(), hashlib.sha256).digest()

    def keypair(info: bytes) -> tuple[bytes, bytes]:
        secret = z85.encode(hmac.new(prk, info + b"\x01", hashlib.sha256).digest())
        return zmq.curve_public(secret), secret

    keys = keys_from_secret(SECRET)
    assert (keys.server_public, keys.server_secret) == keypair(b"server")
    assert (keys.client_public, keys.client_secret) == keypair(b"client")
    assert keys.allowed == {keys.client_public}
    assert keys_from_secret(SECRET.encode() + b"\n") == keys_from_secret(SECRET)
    assert keys_from_secret(SECRET + "x").server_public != keys.server_public


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ClusterError, match=r"too short.*keygen --secret"):
        keys_from_secret("short")


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o644)
    with pytest.raises(ClusterError, match=r"other users may read it.*chmod 600"):
        read_secret_file(path)
    path.chmod(0o600)
    assert read_secret_file(path) == keys_from_secret(SECRET)


def test_key_paths_may_start_with_a_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    security.write_secret_file("~/cluster.secret")
    assert read_secret_file("~/cluster.secret") == read_secret_file(tmp_path / "cluster.secret")
    security.generate_key_dir("~/keys")
    assert read_key_dir("~/keys") == read_key_dir(tmp_path / "keys")


def test_keygen_writes_a_private_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "cluster.secret"
    done = node_cli("keygen", "--secret", str(path))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(path.read_text().strip()) >= 40
    read_secret_file(path)  # usable as is
    again = node_cli("keygen", "--secret", str(path))
    assert again.returncode == 1
    assert "exists" in again.stderr  # never overwritten


def test_keygen_key_directory_and_revocation(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    assert node_cli("keygen", "--out", str(keys_dir)).returncode == 0
    done = node_cli("keygen", "--out", str(keys_dir), "--name", "host-b")
    assert done.returncode == 0, done.stderr
    for name in ("server", "default", "host-b"):
        assert stat.S_IMODE((keys_dir / f"{name}.key_secret").stat().st_mode) == 0o600
    a = read_key_dir(keys_dir)
    b = read_key_dir(keys_dir, "host-b")
    assert (a.server_public, a.server_secret) == (b.server_public, b.server_secret)
    assert a.client_public != b.client_public
    assert a.allowed == b.allowed == {a.client_public, b.client_public}
    duplicate = node_cli("keygen", "--out", str(keys_dir), "--name", "host-b")
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    (keys_dir / "allowed" / "host-b.key").unlink()  # revoke host-b
    assert read_key_dir(keys_dir).allowed == {a.client_public}
    with pytest.raises(ClusterError, match="not in"):
        read_key_dir(keys_dir, "host-b")


def test_resolve_keys_sources(tmp_path: Path) -> None:
    env = {SECRET_ENV: SECRET}
    assert resolve_keys(env={}) is None
    assert resolve_keys(env=None) is None
    assert resolve_keys(env=env) == keys_from_secret(SECRET)
    other = SECRET + "-other"
    assert resolve_keys(secret=other, env=env) == keys_from_secret(other)  # explicit wins
    with pytest.raises(ClusterError, match="one source"):
        resolve_keys(secret=SECRET, keys=str(tmp_path))


def test_secrets_stay_out_of_reprs() -> None:
    keys = keys_from_secret(SECRET)
    for text in (
        repr(keys),
        repr(TransportOptions(curve=keys)),
        repr(ClusterOptions(secret=SECRET)),
    ):
        assert SECRET not in text
        assert keys.client_secret.decode() not in text
        assert keys.server_secret.decode() not in text


async def test_missing_curve_support_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = keys_from_secret(SECRET)
    monkeypatch.setattr(security.zmq, "has", lambda capability: capability != "curve")
    with pytest.raises(ClusterError, match=r"without CURVE support \(libsodium\)"):
        keys_from_secret(SECRET)
    transport = ZmqTransport("tcp://127.0.0.1:0", TransportOptions(curve=keys))
    try:
        with pytest.raises(ClusterError, match="without CURVE support"):
            await transport.start()
    finally:
        await transport.close()


def test_executor_without_curve_support_says_so(tmp_path: Path) -> None:
    # A libzmq without CURVE, simulated in the executor process itself.
    script = (
        "import sys, zmq; zmq.has = lambda c: c != 'curve'; "
        "from drizzle.node import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "executor", "--driver", "tcp://127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={**os.environ, SECRET_ENV: SECRET},
    )
    assert done.returncode == 2
    assert "without CURVE support" in done.stderr
