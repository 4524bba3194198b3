"""One shared secret -> the CURVE keys of an authenticated, encrypted ZMQ link.

The user keeps a single secret (``python -m torchrl_serl.security > ~/.torchrl_serl_secret``,
``chmod 600``), given to both ends by ``--secret-file`` or the ``TORCHRL_SERL_SECRET``
environment variable. From it each side derives the same two CURVE key pairs, one for the
server and one for the client: the client knows the server's public key (so it talks to the
right server) and the server admits only the client's public key (so only holders of the secret
get a message through). CURVE also encrypts the link. Nothing here prints or logs the secret.

Used by the robot server (``envs/robots/server.py``) and its client (``envs/robots/remote.py``), and
by the actor/learner link (``training/distributed.py``; the recipes' ``--secret_file``).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
import warnings
from pathlib import Path

SECRET_ENV = "TORCHRL_SERL_SECRET"
MIN_SECRET_BYTES = 16
ZAP_DOMAIN = "torchrl-serl"
# PBKDF2 makes a guessed secret cost ~50 ms to try; derived once per socket, so cheap for us.
_KDF_ITERATIONS = 100_000
_ROLES = ("server", "client")


def new_secret() -> str:
    """A fresh random secret (256 bits, URL-safe text)."""
    return secrets.token_urlsafe(32)


def _as_bytes(secret: str | bytes, source: str) -> bytes:
    raw = (secret.encode() if isinstance(secret, str) else bytes(secret)).strip()
    if len(raw) < MIN_SECRET_BYTES:
        # The length only, never the value.
        raise ValueError(f"the secret from {source} is {len(raw)} bytes; at least {MIN_SECRET_BYTES} are needed "
                         "(make one with `python -m torchrl_serl.security`)")
    return raw


def load_secret(secret: str | bytes | None = None, secret_file: str | os.PathLike | None = None) -> bytes | None:
    """The shared secret: ``secret`` if given, else the contents of ``secret_file``, else ``$TORCHRL_SERL_SECRET``.

    Returns ``None`` when none of them is set. Surrounding whitespace is stripped.

    Raises:
        ValueError: a secret shorter than ``MIN_SECRET_BYTES``.
        OSError: ``secret_file`` cannot be read.
    """
    if secret is not None:
        return _as_bytes(secret, "the secret argument")
    if secret_file is not None:
        return _as_bytes(Path(secret_file).read_bytes(), f"--secret-file {str(secret_file)!r}")
    if os.environ.get(SECRET_ENV):
        return _as_bytes(os.environ[SECRET_ENV], f"${SECRET_ENV}")
    return None


def curve_keypair(secret: bytes, role: str) -> tuple[bytes, bytes]:
    """``(public, secret)`` CURVE keys (Z85, 40 bytes each) of ``role`` (``"server"`` or ``"client"``).

    Deterministic: both ends derive the same pairs from the same secret.
    """
    if role not in _ROLES:
        raise ValueError(f"role {role!r} is not one of {_ROLES}")
    import zmq
    from zmq.utils import z85

    key = hashlib.pbkdf2_hmac("sha256", secret, f"torchrl-serl/zmq-curve/{role}".encode(), _KDF_ITERATIONS)
    secret_z85 = z85.encode(key)
    return zmq.curve_public(secret_z85), secret_z85


def curve_client_options(secret: bytes) -> dict:
    """Socket options that make a ZMQ socket a CURVE client of the server keyed by ``secret``."""
    import zmq

    server_public, _ = curve_keypair(secret, "server")
    client_public, client_secret = curve_keypair(secret, "client")
    return {zmq.CURVE_SERVERKEY: server_public, zmq.CURVE_PUBLICKEY: client_public,
            zmq.CURVE_SECRETKEY: client_secret}


class CurveServerAuth:
    """Makes ``sock`` a CURVE server that admits only the client key derived from ``secret``.

    Runs a ZAP handler (``zmq.auth.thread.ThreadAuthenticator``) on ``ctx``; libzmq allows one per
    context, so give each server its own context. Call before ``sock.bind``; ``close()`` stops it.
    """

    def __init__(self, ctx, sock, secret: bytes):
        import zmq
        from zmq.auth.thread import ThreadAuthenticator

        self._client_public, _ = curve_keypair(secret, "client")
        self.rejected = 0
        self._auth = ThreadAuthenticator(ctx)
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self)
        server_public, server_secret = curve_keypair(secret, "server")
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, server_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, server_secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())

    def callback(self, domain: str, client_public_z85: bytes) -> bool:
        allowed = hmac.compare_digest(bytes(client_public_z85), self._client_public)
        self.rejected += not allowed
        return allowed

    def close(self) -> None:
        self._auth.stop()


def is_loopback_endpoint(endpoint: str) -> bool:
    """Whether a ZMQ bind endpoint is reachable from this machine only (loopback TCP, ``ipc``, ``inproc``)."""
    transport, _, rest = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name, a host name: may be reachable from elsewhere
        return False


def require_secret_off_loopback(endpoint: str, secret: bytes | None, *, link: str, refused: str, risk: str,
                                local_risk: str, secret_option: str, fallback: str) -> None:
    """The rule every ZMQ link here follows without a secret: loopback only, with a warning.

    Nothing happens when ``secret`` is set. Without one, a non-loopback ``endpoint`` raises
    ``ValueError("refusing to <refused> <endpoint> without a secret: anyone who reaches it could
    <risk>. ...")`` and a loopback one warns ``"<link> on <endpoint> has no secret: any process on
    this machine may <local_risk>"``, attributed to the caller of the constructor that calls this.

    Args:
        link: what listens or connects (``"robot server"``).
        refused: the refused act, before the endpoint (``"serve the arm on"``).
        risk, local_risk: what a stranger on the network, or any local process, could then do.
        secret_option: the command-line option that gives the secret (``--secret-file``).
        fallback: the loopback alternative to offer (``"bind tcp://127.0.0.1"``).
    """
    if secret is not None:
        return
    if not is_loopback_endpoint(endpoint):
        raise ValueError(
            f"refusing to {refused} {endpoint!r} without a secret: anyone who reaches it could {risk}. Give "
            f"{secret_option} (or ${SECRET_ENV}; make one with `python -m torchrl_serl.security`), or {fallback}"
        )
    warnings.warn(f"{link} on {endpoint!r} has no secret: any process on this machine may {local_risk} "
                  f"(set ${SECRET_ENV} or {secret_option})", stacklevel=3)

if __name__ == "__main__":
    print(new_secret())
