"""Generate the DEVELOPMENT secrets of deploy/nats: passwords, a CA, certificates.

    python deploy/nats/gen_dev_secrets.py               # into deploy/nats/secrets/
    python deploy/nats/gen_dev_secrets.py OUT_DIR       # elsewhere (then copy the
                                                        # *.conf files beside OUT_DIR)
    python deploy/nats/gen_dev_secrets.py --force       # replace what is there

It writes, and lists when done:

- ``users.conf``: the bcrypt hash of every user's password, as the variables
  ``accounts.conf`` reads (``ORCHESTRATOR_PASSWORD``, ``AGENT_MATH_PASSWORD``, ...);
- ``<user>.env``: that user's name and password for clients (``NATS_USER``,
  ``NATS_PASSWORD``, and ``NATS_INBOX_PREFIX``, the only inbox its user may
  read, for a user that has one; ``NATS_CA``, ``NATS_CERT`` and ``NATS_KEY`` commented out, for
  when TLS is on), for ``set -a; . FILE; set +a``, a systemd
  ``EnvironmentFile=`` or a compose ``env_file:``;
- ``ca.pem`` / ``ca-key.pem``: a throwaway certificate authority;
- ``server-cert.pem`` / ``server-key.pem``: the server's certificate for
  ``localhost``, ``127.0.0.1`` and ``::1`` (plus any ``--host``);
- ``<user>-cert.pem`` / ``<user>-key.pem``: a client certificate per user, for
  mutual TLS (``mtls.conf``);
- ``tls-files.conf``: the absolute paths of the server's TLS files, which
  ``tls.conf`` and ``mtls.conf`` read;
- ``jetstream-<server>.conf``: the absolute path of a server's JetStream store
  directory, read by ``single.conf`` (``jetstream-single.conf``) and
  ``cluster/node-N.conf`` (``jetstream-node-N.conf``): one per server, under
  ``jetstream/`` beside ``OUT_DIR`` (that is, beside the configs), which it
  creates, private: the streams hold task payloads and results. An older
  secrets directory without these files gets them on the next run, without
  ``--force``.

Everything here is for development and tests: the CA key sits beside the
certificates and the passwords are in plain files. For production, make
certificates with your own CA and hashes of passwords kept in a secret store.

Needs the ``openssl`` command, and bcrypt from the ``bcrypt`` package or the
system's libcrypt (libxcrypt, as on Debian and most Linux distributions).
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parent / "secrets"

USERS = (
    "setup",
    "orchestrator",
    "monitor",
    "agent-math",
    "agent-echo",
    "agent-summarize",
    "agent-researcher",
    "agent-planner",
    "agents",
    "llm-agents",
    "gateway",
)
"""The users of accounts.conf; each gets a password, a hash variable and a client cert."""

INBOX_PREFIXES = {
    "setup": "_INBOX_setup",
    "orchestrator": "_INBOX_orchestrator",
    "monitor": "_INBOX_monitor",
    "agent-researcher": "_INBOX_agent_researcher",
    "agent-planner": "_INBOX_agent_planner",
    "agents": "_INBOX_agents",
    "llm-agents": "_INBOX_llm_agents",
}
"""The inbox of each user that has one: accounts.conf lets it read that one only."""

BCRYPT_COST = 11
"""bcrypt's work factor: nats-server checks one hash per connection."""

STORES = ("single", "node-1", "node-2", "node-3")
"""The servers of single.conf and cluster/: each has a JetStream store of its own."""

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1", "::1")


class SecretsError(Exception):
    """A tool is missing or failed; the message says which and what to do."""


def new_password() -> str:
    """A random password (192 bits) that never starts with ``-``: a command line such
    as ``nats context save --password <it>`` would take it for a flag."""
    while True:
        password = secrets.token_urlsafe(24)
        if not password.startswith("-"):
            return password


def password_variable(user: str) -> str:
    """The accounts.conf variable of a user's password hash: agent-math → AGENT_MATH_PASSWORD."""
    return user.upper().replace("-", "_") + "_PASSWORD"


# --- bcrypt ------------------------------------------------------------------------------


def bcrypt_hash(password: str, cost: int = BCRYPT_COST) -> str:
    """A ``$2b$`` bcrypt hash of ``password``, as nats-server checks it."""
    try:
        import bcrypt  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return _libcrypt_bcrypt(password, cost)
    hashed: bytes = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost))
    return hashed.decode()


def _libcrypt_bcrypt(password: str, cost: int) -> str:
    name = ctypes.util.find_library("crypt")
    if name is None:
        raise SecretsError(
            "no bcrypt implementation: 'pip install bcrypt', or install libcrypt (libxcrypt)"
        )
    lib = ctypes.CDLL(name)
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(b"$2b$", cost, None, 0)  # NULL: libcrypt reads the OS's randomness
    hashed: bytes | None = lib.crypt(password.encode(), salt) if salt else None
    if not hashed or not hashed.startswith(b"$2b$"):
        raise SecretsError(
            "this system's libcrypt has no bcrypt: 'pip install bcrypt' and run again"
        )
    return hashed.decode()


# --- certificates ------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SecretsError("the 'openssl' command is needed to make certificates; install it")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SecretsError(f"openssl {args[0]} failed:\n{result.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path)
    )
    path.chmod(0o600)


def make_ca(out: Path, days: int) -> None:
    """A self-signed CA: ca.pem and ca-key.pem."""
    _new_key(out / "ca-key.pem")
    _openssl(
        "req", "-x509", "-new", "-key", str(out / "ca-key.pem"), "-out", str(out / "ca.pem"),
        "-days", str(days), "-subj", "/O=callboard dev/CN=callboard dev CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def make_cert(out: Path, name: str, *, days: int, usage: str, san: str | None = None) -> None:
    """``<name>-cert.pem`` and ``<name>-key.pem``, signed by the CA in ``out``."""
    key, cert = out / f"{name}-key.pem", out / f"{name}-cert.pem"
    _new_key(key)
    extensions = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usage}",
    ]
    if san:
        extensions.append(f"subjectAltName={san}")
    with tempfile.TemporaryDirectory() as tmp:
        csr, ext = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        ext.write_text("\n".join(extensions) + "\n")
        _openssl(
            "req", "-new", "-key", str(key), "-out", str(csr),
            "-subj", f"/O=callboard dev/CN={name}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(out / "ca.pem"),
            "-CAkey", str(out / "ca-key.pem"), "-CAcreateserial",
            "-out", str(cert), "-days", str(days), "-extfile", str(ext),
        )  # fmt: skip
    (out / "ca.srl").unlink(missing_ok=True)


# --- the files ---------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _nats_string(value: str) -> str:
    # a double-quoted NATS config string: "$2b$..." stays a string, not a variable
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def generate(out: Path, *, days: int, hosts: tuple[str, ...]) -> list[Path]:
    """Write every secret into ``out``; return the files made."""
    out.mkdir(parents=True, exist_ok=True)
    out.chmod(0o700)
    made: list[Path] = []

    passwords = {user: new_password() for user in USERS}
    lines = [
        "# DEVELOPMENT ONLY: bcrypt hashes of the dev users' passwords, made by",
        "# gen_dev_secrets.py and read by accounts.conf. The passwords are in <user>.env.",
    ]
    lines += [
        f"{password_variable(user)}: {_nats_string(bcrypt_hash(pw))}"
        for user, pw in passwords.items()
    ]
    _write_private(out / "users.conf", "\n".join(lines) + "\n")
    made.append(out / "users.conf")

    make_ca(out, days)
    made += [out / "ca.pem", out / "ca-key.pem"]
    names = [*SERVER_NAMES, *(h for h in hosts if not _is_ip(h))]
    ips = [*SERVER_IPS, *(h for h in hosts if _is_ip(h))]
    san = ",".join([*(f"DNS:{n}" for n in names), *(f"IP:{ip}" for ip in ips)])
    # serverAuth for clients, clientAuth too so that routes (which dial out) can use it
    make_cert(out, "server", days=days, usage="serverAuth,clientAuth", san=san)
    made += [out / "server-cert.pem", out / "server-key.pem"]
    for user in USERS:
        make_cert(out, user, days=days, usage="clientAuth")
        made += [out / f"{user}-cert.pem", out / f"{user}-key.pem"]

    ca = (out / "ca.pem").resolve()
    for user, pw in passwords.items():
        env = out / f"{user}.env"
        _write_private(
            env,
            f"# DEVELOPMENT ONLY: the NATS login of {user}\n"
            f"NATS_USER={user}\nNATS_PASSWORD={pw}\n"
            + (f"NATS_INBOX_PREFIX={INBOX_PREFIXES[user]}\n" if user in INBOX_PREFIXES else "")
            + "# with tls.conf or mtls.conf on (a CA makes the client insist on TLS):\n"
            f"# NATS_CA={ca}\n"
            "# with mtls.conf on:\n"
            f"# NATS_CERT={(out / f'{user}-cert.pem').resolve()}\n"
            f"# NATS_KEY={(out / f'{user}-key.pem').resolve()}\n",
        )
        made.append(env)

    tls_files = out / "tls-files.conf"
    tls_files.write_text(
        "# The server's TLS files (absolute: nats-server opens them relative to its\n"
        "# working directory), read by tls.conf and mtls.conf. Made by gen_dev_secrets.py.\n"
        f"TLS_CERT: {_nats_string(str((out / 'server-cert.pem').resolve()))}\n"
        f"TLS_KEY: {_nats_string(str((out / 'server-key.pem').resolve()))}\n"
        f"TLS_CA: {_nats_string(str(ca))}\n"
    )
    made.append(tls_files)
    made += write_jetstream_dirs(out)
    return made


def write_jetstream_dirs(out: Path) -> list[Path]:
    """``jetstream-<server>.conf``: each server's absolute store_dir, under
    ``jetstream/`` beside ``out`` (where the configs are), a private directory."""
    stores = (out.parent / "jetstream").resolve()
    stores.mkdir(exist_ok=True)
    stores.chmod(0o700)
    made = []
    for server in STORES:
        path = out / f"jetstream-{server}.conf"
        path.write_text(
            "# Where this server keeps its JetStream files (streams, the task bucket):\n"
            "# absolute, as nats-server opens store_dir relative to its working directory;\n"
            "# one directory per server. Made by gen_dev_secrets.py. In production, a disk\n"
            "# of its own (e.g. /var/lib/nats/callboard-1).\n"
            f"JETSTREAM_STORE_DIR: {_nats_string(str(stores / server))}\n"
        )
        made.append(path)
    return made


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate development passwords, a CA and certificates for deploy/nats."
    )
    parser.add_argument(
        "out",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help=f"directory to write into (default {DEFAULT_DIR})",
    )
    parser.add_argument("--force", action="store_true", help="replace existing secrets")
    parser.add_argument("--days", type=int, default=365, help="certificate lifetime (days)")
    parser.add_argument(
        "--host",
        action="append",
        default=[],
        help="another name or IP address for the server certificate (repeatable)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    if (out / "users.conf").exists() and not args.force:
        if not all((out / f"jetstream-{server}.conf").exists() for server in STORES):
            # secrets made before the configs enabled JetStream: add only what they need
            added = ", ".join(path.name for path in write_jetstream_dirs(out))
            print(f"{out} already has secrets: kept them, added {added}")
            return 0
        print(
            f"{out} already has secrets (users.conf): keeping them; pass --force to replace",
            file=sys.stderr,
        )
        return 1
    try:
        made = generate(out, days=args.days, hosts=tuple(args.host))
    except SecretsError as exc:
        print(f"gen_dev_secrets: {exc}", file=sys.stderr)
        return 1
    print(f"DEVELOPMENT secrets written to {out.resolve()}:")
    for path in made:
        print(f"  {path.name}")
    print(
        "\nServer:   nats-server -c deploy/nats/single.conf"
        "\nClients:  set -a; . " + str(out / "orchestrator.env") + "; set +a"
        "\n          callboard agents        (add --tls-ca with tls.conf / mtls.conf on)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
