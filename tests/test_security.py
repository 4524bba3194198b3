"""One shared secret -> CURVE keys: derivation, loading, and which endpoints count as local."""
import pytest
import zmq

from torchrl_serl.security import (
    MIN_SECRET_BYTES,
    SECRET_ENV,
    curve_client_options,
    curve_keypair,
    is_loopback_endpoint,
    load_secret,
    new_secret,
    require_secret_off_loopback,
)

SECRET = b"a-shared-secret-of-enough-length"


def test_both_ends_derive_the_same_distinct_key_pairs():
    server, client = curve_keypair(SECRET, "server"), curve_keypair(SECRET, "client")
    assert server == curve_keypair(SECRET, "server") and client == curve_keypair(SECRET, "client")
    assert server != client and server != curve_keypair(b"another-secret-of-enough-length", "server")
    for public, secret in (server, client):
        assert len(public) == len(secret) == 40 and zmq.curve_public(secret) == public
    options = curve_client_options(SECRET)
    assert options[zmq.CURVE_SERVERKEY] == server[0] and options[zmq.CURVE_PUBLICKEY] == client[0]
    with pytest.raises(ValueError, match="role"):
        curve_keypair(SECRET, "learner")


def test_secret_comes_from_the_argument_then_the_file_then_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV, raising=False)
    assert load_secret() is None
    monkeypatch.setenv(SECRET_ENV, "from-the-environment-0123")
    assert load_secret() == b"from-the-environment-0123"
    path = tmp_path / "secret"
    path.write_text("from-the-file-0123456789\n")
    assert load_secret(secret_file=path) == b"from-the-file-0123456789"  # whitespace stripped
    assert load_secret("from-the-argument-012345", secret_file=path) == b"from-the-argument-012345"
    assert len(new_secret()) >= MIN_SECRET_BYTES and new_secret() != new_secret()


def test_short_secret_refused_without_repeating_it(tmp_path):
    path = tmp_path / "secret"
    path.write_text("hunter2")
    for kwargs in ({"secret": "hunter2"}, {"secret_file": path}):
        with pytest.raises(ValueError, match="7 bytes") as err:
            load_secret(**kwargs)
        assert "hunter2" not in str(err.value)


@pytest.mark.parametrize("endpoint, local", [
    ("tcp://127.0.0.1:5555", True), ("tcp://127.0.0.1:*", True), ("tcp://127.31.4.5:1", True),
    ("tcp://localhost:5555", True), ("tcp://[::1]:5555", True), ("ipc:///tmp/arm", True), ("inproc://arm", True),
    ("tcp://*:5555", False), ("tcp://0.0.0.0:5555", False), ("tcp://172.16.1.1:5555", False),
    ("tcp://eth0:5555", False), ("tcp://robot-pc:5555", False), ("udp://127.0.0.1:5555", False),
])
def test_loopback_endpoints(endpoint, local):
    assert is_loopback_endpoint(endpoint) is local


RULE = dict(link="test link", refused="serve on", risk="do harm", local_risk="do local harm",
            secret_option="--secret-file", fallback="bind tcp://127.0.0.1")


def test_without_a_secret_only_loopback_with_a_warning(recwarn):
    with pytest.raises(ValueError, match=r"refusing to serve on 'tcp://0.0.0.0:5555' without a secret: anyone who "
                                         r"reaches it could do harm\. Give --secret-file"):
        require_secret_off_loopback("tcp://0.0.0.0:5555", None, **RULE)
    with pytest.warns(UserWarning, match="test link on 'tcp://127.0.0.1:5555' has no secret: any process on this "
                                         "machine may do local harm"):
        require_secret_off_loopback("tcp://127.0.0.1:5555", None, **RULE)
    recwarn.clear()
    require_secret_off_loopback("tcp://0.0.0.0:5555", SECRET, **RULE)  # a secret: any address, no warning
    assert not recwarn.list
