"""TLS credentials made for one run, so scheduler, workers and client of a shared cluster talk
only to each other (mutual TLS, distributed's :class:`~distributed.Security`).

:func:`make_tls_security` creates, in a new private directory (mode 0700), a self-signed CA
certificate and one certificate/key pair signed by it that every role (scheduler, worker, client)
presents. Files are mode 0600. The CA's private key is never written: once the run is set up,
nobody can sign another certificate this run would accept.

Why files and not ``Security.temporary()`` (keys in memory): SLURM worker jobs are other
processes, on other nodes; dask-jobqueue passes worker credentials as ``--tls-*`` file paths on
the worker command line (and would dump in-memory keys to files anyway), and the batch mode
(:func:`fluxflow.slurm.run_batch`) needs the same credentials in every ``srun`` task. The
directory must therefore be on a filesystem the compute nodes see (the home directory by
default), readable only by the user who runs fluxflow; remove it when the run ends
(:func:`remove_tls_directory`).

Needs the ``cryptography`` package (distributed does not depend on it).
"""

from __future__ import annotations

import datetime
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from fluxflow.errors import FluxflowError

CA_FILE = "ca.pem"
CERT_FILE = "dask.crt"
KEY_FILE = "dask.key"
#: distinguishes our directories from anything else, so remove_tls_directory never deletes others
_MARKER = ".fluxflow-tls"


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` (must not exist) with mode 0600 from the start and write ``data``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _credentials(days: float) -> tuple[bytes, bytes, bytes]:
    """PEM bytes of (CA certificate, leaf certificate, leaf private key)."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise FluxflowError("TLS for the cluster needs the 'cryptography' package: "
                            "pip install cryptography (or set tls: false)") from exc

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fluxflow run CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return (ca_cert.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def make_tls_directory(parent: str | os.PathLike[str], *, days: float = 30.0) -> Path:
    """Create a new private directory under ``parent`` holding this run's CA, cert and key.

    ``parent`` is created (mode 0700) if missing. Returns the new directory (mode 0700, files 0600).
    ``days`` is the validity; it must cover the longest walltime of the run.
    """
    parent = Path(parent).expanduser()
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="tls-", dir=parent))  # mode 0700, unique
    ca, cert, key = _credentials(days)
    _write_private(directory / _MARKER, b"")
    _write_private(directory / CA_FILE, ca)
    _write_private(directory / CERT_FILE, cert)
    _write_private(directory / KEY_FILE, key)
    return directory


def tls_security(directory: str | os.PathLike[str]) -> Any:
    """A :class:`distributed.Security` (encryption required) using the files in ``directory``.

    Refuses a directory or key file that other users can read.
    """
    from distributed import Security

    directory = Path(directory)
    files = {name: directory / name for name in (CA_FILE, CERT_FILE, KEY_FILE)}
    for path in files.values():
        if not path.is_file():
            raise FluxflowError(f"TLS credentials: {path} is missing")
    for path in (directory, files[KEY_FILE]):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise FluxflowError(f"TLS credentials: {path} has mode {mode:o}; other users could "
                                f"read the run's key (expected 0700 directory, 0600 key)")
    ca, cert, key = (str(files[n]) for n in (CA_FILE, CERT_FILE, KEY_FILE))
    return Security(require_encryption=True, tls_ca_file=ca,
                    tls_client_cert=cert, tls_client_key=key,
                    tls_scheduler_cert=cert, tls_scheduler_key=key,
                    tls_worker_cert=cert, tls_worker_key=key)


def make_tls_security(directory: str | os.PathLike[str], *, days: float = 30.0) -> Any:
    """Create credentials for one run under ``directory`` and return the matching Security.

    The files live in a new subdirectory of ``directory`` whose path is the Security's
    ``tls_ca_file`` parent (see :func:`security_directory`); remove it at the end of the run.
    """
    return tls_security(make_tls_directory(directory, days=days))


def security_directory(security: Any) -> Path:
    """The directory that holds the credential files of a Security made here."""
    return Path(security.tls_ca_file).parent


def tls_environment(security: Any) -> dict[str, str]:
    """Environment variables that make ``distributed.Security()`` (and so ``Client(address)``)
    in a child process use these credentials."""
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
           "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": security.tls_ca_file}
    for role in ("client", "scheduler", "worker"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role.upper()}__CERT"] = getattr(security, f"tls_{role}_cert")
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role.upper()}__KEY"] = getattr(security, f"tls_{role}_key")
    return env


def remove_tls_directory(directory: str | os.PathLike[str]) -> None:
    """Delete a directory made by :func:`make_tls_directory` (and nothing else)."""
    directory = Path(directory)
    if (directory / _MARKER).is_file():
        shutil.rmtree(directory, ignore_errors=True)
