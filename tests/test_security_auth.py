"""Every way to authenticate, and TLS, end to end against real nats-server processes.

Each case starts its own nats-server with a config that demands the method, then a `Runner`
and a `Client` that authenticate with it: one spawn and one call, and the server's own
connection list (`/connz?auth=true`) names the identity each connection was accepted as.
Keys, certificates and JWTs are made here at test time: nkeys with the `nkeys` package, an
operator → account → user JWT chain signed with them (the server checks every signature), and a
CA with server and client certificates with `cryptography`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import json
import os
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nkeys
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.connection import Connection, ConnectionState
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import ConnectError
from mabeam.testing import unique_prefix

MABEAM = str(Path(sys.executable).parent / "mabeam")


# ----------------------------------------------------------------- keys, JWTs, certificates


def new_seed(role: int = nkeys.PREFIX_BYTE_USER) -> tuple[Any, str]:
    """A fresh nkey pair of `role` and its seed."""
    seed = nkeys.encode_seed(os.urandom(32), role)
    return nkeys.from_seed(bytearray(seed)), seed.decode()


def public(pair: Any) -> str:
    return str(pair.public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_jwt(claims: dict[str, Any], signer: Any) -> str:
    """A NATS JWT (ed25519-nkey) of `claims`, issued and signed by `signer`."""
    body = {"iat": 1_700_000_000, "iss": public(signer), **claims}
    digest = hashlib.new("sha512_256", json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    payload = _b64(json.dumps(body).encode())
    signature = _b64(signer.sign(f"{header}.{payload}".encode()))
    return f"{header}.{payload}.{signature}"


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "conn": -1}


def account_jwt(operator: Any, account: Any, *, jetstream: bool) -> str:
    limits: dict[str, Any] = {**_UNLIMITED, "wildcards": True, "leaf": -1}
    if jetstream:
        limits.update(mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1)
    nats_claims = {"type": "account", "version": 2, "limits": limits}
    return sign_jwt({"sub": public(account), "name": "acc", "nats": nats_claims}, operator)


def creds_text(account: Any) -> str:
    """A `.creds` file for a new user of `account`."""
    user, seed = new_seed()
    nats_claims = {"type": "user", "version": 2, "pub": {}, "sub": {}, **_UNLIMITED}
    token = sign_jwt({"sub": public(user), "name": "user", "nats": nats_claims}, account)
    return (
        f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )


def operator_conf(operator: Any, account: Any) -> str:
    """Operator mode with a memory resolver preloaded with a JetStream account (and `SYS`)."""
    system = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)[0]
    token = sign_jwt(
        {"sub": public(operator), "name": "op", "nats": {"type": "operator", "version": 2}},
        operator,
    )
    return (
        f'operator: "{token}"\nresolver: MEMORY\nsystem_account: {public(system)}\n'
        "resolver_preload: {\n"
        f'  {public(account)}: "{account_jwt(operator, account, jetstream=True)}"\n'
        f'  {public(system)}: "{account_jwt(operator, system, jetstream=False)}"\n'
        "}\n"
    )


@dataclass
class Pki:
    """A CA, and PEM files of a server certificate for 127.0.0.1 and a client certificate."""

    directory: Path
    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        self._window = (now - datetime.timedelta(hours=1), now + datetime.timedelta(hours=1))
        self.ca = self._certificate("test CA", self.ca_key, ca=True)
        self.write("ca.pem", self.ca.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, *, server: bool) -> tuple[str, str]:
        """Write `<name>.pem` and `<name>-key.pem`, signed by the CA; their paths."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._certificate(name, key, ca=False, server=server)
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        cert_path = self.write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, self.write(f"{name}-key.pem", key_pem)

    def write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    @property
    def ca_file(self) -> str:
        return str(self.directory / "ca.pem")

    def _certificate(
        self, name: str, key: ec.EllipticCurvePrivateKey, *, ca: bool, server: bool = False
    ) -> x509.Certificate:
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._window[0])
            .not_valid_after(self._window[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                critical=False,
            )
        )
        if ca:
            builder = builder.add_extension(_CA_USAGE, critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(self.ca_key, hashes.SHA256())


_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def tls_block(pki: Pki, *, verify: bool = True, handshake_first: bool = False) -> str:
    cert, key = pki.issue("server", server=True)
    lines = [f'cert_file: "{cert}"', f'key_file: "{key}"', f'ca_file: "{pki.ca_file}"']
    lines += [f"verify: {str(verify).lower()}", f"handshake_first: {str(handshake_first).lower()}"]
    return "tls {\n  " + "\n  ".join(lines) + "\n}\n"


# ----------------------------------------------------------------- one secured server per case


@dataclass
class Case:
    """A server config that demands one method, the config fields that satisfy it, fields
    that the server must refuse, and the identity `/connz` shows for an accepted connection."""

    server_conf: str
    fields: dict[str, Any]
    wrong: dict[str, Any]
    identity: str


def user_password(tmp_path: Path) -> Case:
    conf = 'authorization { users = [ {user: agent, password: "pw-right"} ] }\n'
    right = {"user": "agent", "password": "pw-right"}
    return Case(conf, right, {**right, "password": "pw-wrong"}, "agent")


def token(tmp_path: Path) -> Case:
    conf = 'authorization { token: "t0ken-right" }\n'
    return Case(conf, {"token": "t0ken-right"}, {"token": "t0ken-wrong"}, "[REDACTED]")


def nkey(tmp_path: Path) -> Case:
    pair, seed = new_seed()
    stranger = new_seed()[1]
    (tmp_path / "user.nk").write_text(seed + "\n")
    (tmp_path / "stranger.nk").write_text(stranger + "\n")
    conf = f"authorization {{ users = [ {{nkey: {public(pair)}}} ] }}\n"
    right, wrong = str(tmp_path / "user.nk"), str(tmp_path / "stranger.nk")
    return Case(conf, {"nkey_seed_file": right}, {"nkey_seed_file": wrong}, public(pair))


def creds(tmp_path: Path) -> Case:
    operator = new_seed(nkeys.PREFIX_BYTE_OPERATOR)[0]
    account = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)[0]
    foreign = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)[0]  # an account the server never heard of
    (tmp_path / "user.creds").write_text(creds_text(account))
    (tmp_path / "foreign.creds").write_text(creds_text(foreign))
    user_jwt = (tmp_path / "user.creds").read_text().splitlines()[1]
    user = json.loads(base64.urlsafe_b64decode(user_jwt.split(".")[1] + "=="))["sub"]
    right, wrong = str(tmp_path / "user.creds"), str(tmp_path / "foreign.creds")
    conf = operator_conf(operator, account)
    return Case(conf, {"creds_file": right}, {"creds_file": wrong}, user)


def tls_with_password(tmp_path: Path) -> Case:
    """Mutual TLS (the server verifies a client certificate) plus a password inside it."""
    pki = Pki(tmp_path)
    cert, key = pki.issue("client", server=False)
    conf = tls_block(pki) + 'authorization { users = [ {user: agent, password: "pw-tls"} ] }\n'
    fields = {"user": "agent", "password": "pw-tls", "tls_ca_file": pki.ca_file}
    fields |= {"tls_cert_file": cert, "tls_key_file": key}
    return Case(conf, fields, {**fields, "password": "pw-wrong"}, "agent")


def tls_handshake_first(tmp_path: Path) -> Case:
    pki = Pki(tmp_path)
    conf = tls_block(pki, verify=False, handshake_first=True)
    fields = {"tls_ca_file": pki.ca_file, "tls_handshake_first": True}
    return Case(conf, fields, {}, "")


CASES: dict[str, Callable[[Path], Case]] = {
    "user_password": user_password,
    "token": token,
    "nkey": nkey,
    "creds": creds,
    "tls_with_password": tls_with_password,
    "tls_handshake_first": tls_handshake_first,
}


async def start_server(tmp_path: Path, conf: str) -> EmbeddedServer:
    path = tmp_path / "server.conf"
    path.write_text(conf)
    return await asyncio.to_thread(EmbeddedServer(config_file=path).start)


@pytest.fixture
async def secured(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[EmbeddedServer, Case]]:
    case = CASES[request.param](tmp_path)
    server = await start_server(tmp_path, case.server_conf)
    try:
        yield server, case
    finally:
        await asyncio.to_thread(server.cleanup)


def connections(server: EmbeddedServer) -> dict[str, dict[str, Any]]:
    """The server's client connections by connection name, with what they authenticated as."""
    url = f"{server.monitor_url}/connz?auth=true"
    with urllib.request.urlopen(url, timeout=5) as response:
        listing = json.load(response)
    return {entry.get("name", ""): entry for entry in listing["connections"]}


def config_for(server: EmbeddedServer, **fields: Any) -> Config:
    return Config(nats_url=server.url, prefix=unique_prefix("sec"), connect_timeout=1, **fields)


# ----------------------------------------------------------------- tests


@pytest.mark.parametrize("secured", list(CASES), indirect=True)
async def test_a_runner_and_a_client_work_with_each_method(
    secured: tuple[EmbeddedServer, Case],
) -> None:
    server, case = secured
    config = config_for(server, **case.fields)
    settings = RunnerSettings(runner_id="r-auth", coordinator_id=None)
    async with Runner(config, settings), Client(config.with_(name="auth-client")) as client:
        record = await client.spawn("demo", id="d1")
        assert record["runner"] == "r-auth"
        assert await client.call("d1", "increment", {"by": 2}) == {"counter": 2}
        seen = await asyncio.to_thread(connections, server)
    for name in ("mabeam-runner-r-auth", "auth-client"):
        assert seen[name].get("authorized_user", "") == case.identity
        if "tls_ca_file" in case.fields:
            assert seen[name]["tls_version"].startswith("1.")


@pytest.mark.parametrize(
    "secured", [name for name in CASES if name != "tls_handshake_first"], indirect=True
)
async def test_wrong_or_missing_credentials_are_a_clear_connect_error(
    secured: tuple[EmbeddedServer, Case],
) -> None:
    server, case = secured
    wrong = config_for(server, **case.wrong)
    with pytest.raises(ConnectError, match=r"authorization violation: the server at .* refused"):
        await Connection.open(wrong)
    tls_only = {key: value for key, value in case.fields.items() if key.startswith("tls_")}
    with pytest.raises(ConnectError, match=r"requires credentials .* and none were given"):
        await Connection.open(config_for(server, **tls_only))


@pytest.mark.parametrize("secured", ["user_password"], indirect=True)
async def test_the_cli_exits_1_with_one_line_on_a_refused_password(
    secured: tuple[EmbeddedServer, Case],
) -> None:
    server, _ = secured
    environ = {**os.environ, "MABEAM_PASSWORD": "pw-wrong"}
    process = await asyncio.create_subprocess_exec(
        *(MABEAM, "call", "d1", "ping", "--nats", server.url, "--user", "agent"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=environ,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    assert process.returncode == 1 and out == b""
    assert err.decode().splitlines() == [
        f"mabeam call: error: authorization violation: the server at {server.url} refused "
        "user 'agent' with a password"
    ]
    assert b"pw-wrong" not in err


async def test_a_client_without_a_certificate_is_refused_by_a_verifying_server(
    tmp_path: Path,
) -> None:
    pki = Pki(tmp_path)
    server = await start_server(tmp_path, tls_block(pki))
    try:
        with pytest.raises(ConnectError, match="cannot connect to NATS at"):
            await Connection.open(config_for(server, tls_ca_file=pki.ca_file))
        (tmp_path / "other").mkdir()
        stranger = Pki(tmp_path / "other")
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await Connection.open(config_for(server, tls_ca_file=stranger.ca_file))
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_a_tls_config_refuses_a_server_without_tls(tmp_path: Path) -> None:
    server = await start_server(tmp_path, "")
    try:
        pki = Pki(tmp_path)
        with pytest.raises(ConnectError, match=r"TLS is configured but the server at .* does not"):
            await Connection.open(config_for(server, tls_ca_file=pki.ca_file))
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_a_password_is_never_sent_to_a_server_that_skips_tls(tmp_path: Path) -> None:
    """An impostor that offers no TLS gets the client's CONNECT without the password."""
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        info = {"server_id": "x", "version": "2.15.0", "max_payload": 1048576}
        writer.write(b"INFO " + json.dumps({**info, "auth_required": True}).encode() + b"\r\n")
        await writer.drain()
        received.extend(await reader.read())
        writer.close()

    listener = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    pki = Pki(tmp_path)
    config = Config(
        nats_url=f"nats://127.0.0.1:{port}",
        user="agent",
        password="pw-precious",
        tls_ca_file=pki.ca_file,
        connect_timeout=1,
    )
    async with listener:
        with pytest.raises(ConnectError, match="TLS is configured but the server"):
            await Connection.open(config)
    assert b"pw-precious" not in received


async def test_a_connection_that_comes_back_without_tls_is_closed(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    secure = await start_server(tmp_path, tls_block(pki, verify=False))
    closed = asyncio.Event()

    async def on_closed() -> None:
        closed.set()

    config = config_for(secure, tls_ca_file=pki.ca_file, extra={"closed_cb": on_closed})
    connection = await Connection.open(config)
    plain = EmbeddedServer(port=secure.port)
    try:
        await asyncio.to_thread(secure.cleanup)
        await asyncio.to_thread(plain.start)
        async with asyncio.timeout(10):
            await closed.wait()
        assert connection.state is ConnectionState.CLOSED
    finally:
        await connection.close()
        await asyncio.to_thread(plain.cleanup)
