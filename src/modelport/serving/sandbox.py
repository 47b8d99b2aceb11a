"""The model server confines itself where the OS allows, before it touches a model file.

Defence in depth behind the allow-listing unpickler (``serving/unpickler.py``): should a model
file, or a class its owner trusted, ever run code, that code finds a process that can do little.
In a cluster the pod already runs as user 10001 with a read-only root and only ``/tmp`` writable
(the chart); a local model server (``modelport up``) is a process of whoever started the platform,
so it confines itself with the kernel's own means, which need no privilege and no other user:

- ``confine_process(config)``, on the main thread before the server serves (every thread it
  starts afterwards, and every child such as the requirements installer, inherits it):
  * Linux Landlock (``landlockpy``): files are readable only under the interpreter's prefixes,
    ``sys.path`` (less the working directory ``python -m`` puts first), the system's libraries
    (``/usr``, ``/lib*``), ``/proc``, ``/sys``, the few files of ``/etc`` that TLS, DNS and the
    C library read, the CA bundle named by ``SSL_CERT_FILE``, and a local model file; writable
    only under ``MODEL_CACHE_DIR`` and the temporary directory (the local driver points
    ``TMPDIR`` into its cache, so a local server writes nowhere else); TCP bind only on the
    server's port; TCP connect only to the ports the config names (the object store, the
    shadow it copies to, and, when a requirements.txt must be installed, the package index's);
    no signals to processes outside the server, no abstract UNIX sockets outside it (ABI 6+).
  * Every capability dropped, bounding set included, when it runs as root (as a container's
    ``--cap-drop ALL``), so neither the server nor anything it starts can regain one.
- ``confine_loader()``, on the loading thread right before unpickling: a second, stricter layer
  for that thread only: no file may be written or created anywhere and no TCP connection made.

``MODEL_SANDBOX`` decides: ``auto`` (the default) confines where the kernel has Landlock and
serves unconfined with a warning where it has not (macOS, kernels before 5.13, a seccomp profile
that hides the calls); ``required`` refuses to serve unconfined (a failure line); ``off``.

Why not another user: a local server cannot simply become ``nobody``, since the interpreter of a
virtualenv often lives in a directory only its owner may enter (pyenv under ``/root`` here).
Landlock is per thread: threads that exist before ``confine_process`` (the BLAS pool a pre-warmed
server's numpy import starts) keep their freedom, but they run only BLAS kernels, never model code;
kernels with Landlock ABI 8 (TSYNC) confine them too. UDP is confined from ABI 10.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import landlockpy
from landlockpy import AccessFS, AccessNet, RestrictFlag, Ruleset, Scope

from modelport.domain.model_server import ServerConfig
from modelport.serving.fetch import is_local

log = logging.getLogger("modelport.serving")

READ = AccessFS.READ_FILE | AccessFS.READ_DIR | AccessFS.EXECUTE
FILE_RIGHTS = AccessFS.READ_FILE | AccessFS.WRITE_FILE | AccessFS.EXECUTE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV
WRITE = (AccessFS.WRITE_FILE | AccessFS.REMOVE_DIR | AccessFS.REMOVE_FILE | AccessFS.MAKE_CHAR | AccessFS.MAKE_DIR
         | AccessFS.MAKE_REG | AccessFS.MAKE_SOCK | AccessFS.MAKE_FIFO | AccessFS.MAKE_BLOCK | AccessFS.MAKE_SYM
         | AccessFS.REFER | AccessFS.TRUNCATE)
TCP = AccessNet.BIND_TCP | AccessNet.CONNECT_TCP
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin", "/proc", "/sys")
# what TLS, name resolution, the C library and time zones read under /etc; never the rest of it
ETC_READ = ("ssl", "ca-certificates", "ca-certificates.conf", "pki", "resolv.conf", "hosts", "host.conf",
            "nsswitch.conf", "gai.conf", "services", "protocols", "localtime", "timezone", "zoneinfo", "passwd",
            "group", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "mime.types", "os-release", "debian_version",
            "pip.conf", "xdg", "uv")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty")
CERT_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "CURL_CA_BUNDLE")
INDEX_VARIABLES = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL",
                   "PIP_EXTRA_INDEX_URL")


class SandboxUnavailable(RuntimeError):
    """``MODEL_SANDBOX=required`` and the kernel cannot confine the server."""


@dataclass(frozen=True)
class Confinement:
    """What confined the server (shown at ``GET /`` and logged at start)."""

    mode: str
    landlock_abi: int = 0
    enforced: bool = False
    capabilities_dropped: bool = False
    writable: tuple[str, ...] = ()
    bind_ports: tuple[int, ...] = ()
    connect_ports: tuple[int, ...] | None = None  # None: TCP connect not confined
    reason: str = ""

    def describe(self) -> dict[str, object]:
        body: dict[str, object] = {"mode": self.mode, "enforced": self.enforced, "landlock_abi": self.landlock_abi,
                                   "capabilities_dropped": self.capabilities_dropped}
        if self.enforced:
            body.update(writable=list(self.writable), bind_ports=list(self.bind_ports),
                        connect_ports=None if self.connect_ports is None else list(self.connect_ports))
        if self.reason:
            body["reason"] = self.reason
        return body


def _port(url: str, default: int) -> int:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        return port
    return 443 if parts.scheme == "https" else default


def connect_ports(config: ServerConfig, env: dict[str, str]) -> tuple[int, ...]:
    """The TCP ports this server may connect to: its object store (AWS S3 on 443, and the instance
    metadata on 80 when boto3's own credential chain is used), the shadow it copies to, and the
    package index when it has a requirements.txt to install."""
    ports: set[int] = set()
    if config.s3_endpoint:
        ports.add(_port(config.s3_endpoint, 443 if config.s3_use_ssl else 80))
    else:
        ports.add(443)
    if not config.s3_access_key:
        ports.update((80, 443))  # boto3's chain: IMDS, STS (IRSA)
    if config.mirror_url:
        ports.add(_port(config.mirror_url, 80))
    if config.requirements_uri:
        ports.update((80, 443))
        for name in INDEX_VARIABLES:
            for url in env.get(name, "").split():
                ports.add(_port(url, 80))
    return tuple(sorted(ports))


def read_paths(config: ServerConfig) -> list[str]:
    """Everything the server may read (see the module docstring)."""
    entries = list(sys.path)
    cwd = os.getcwd()
    if entries and entries[0] in ("", cwd) and entries.count(entries[0]) == 1:
        entries = entries[1:]  # the working directory `python -m` put first: none of the server's business
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *entries, *SYSTEM_READ]
    paths += [os.path.join("/etc", name) for name in ETC_READ]
    paths += [os.environ[name] for name in CERT_VARIABLES if os.environ.get(name)]
    paths += [str(Path(sys.executable).resolve().parent)]
    for uri in (config.model_uri, config.requirements_uri):
        if uri and is_local(uri):
            paths.append(str(Path(uri.removeprefix("file://")).expanduser()))
    return paths


def writable_paths(config: ServerConfig) -> list[str]:
    return [config.model_cache_dir, tempfile.gettempdir()]


def _allow(ruleset: Ruleset, path: str, access: AccessFS) -> bool:
    """Grant ``access`` beneath ``path`` (only the file rights when it is a file); False when the
    path does not exist or cannot be opened (a rule for nothing grants nothing)."""
    try:
        if not os.path.isdir(path):
            access &= FILE_RIGHTS
        ruleset.allow_path(path, access)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return False
    return True


# --- capabilities (no maintained pure-Python binding exists: python-prctl is a C extension last
# released in 2020 that needs libcap headers to build; two syscalls through ctypes suffice) -------

PR_CAPBSET_DROP = 24
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _effective_capabilities() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def drop_capabilities() -> bool:
    """Drop every capability of this thread, bounding set first (so no child regains one).
    True when the thread had some and now has none."""
    if not sys.platform.startswith("linux") or _effective_capabilities() == 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        last = 63
    for cap in range(last + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # fails harmlessly for a cap not in the set
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: " + os.strerror(ctypes.get_errno()))
    return _effective_capabilities() == 0


# --- the two layers ------------------------------------------------------------------------------------


def _unavailable(mode: str, reason: str) -> Confinement:
    if mode == "required":
        raise SandboxUnavailable(f"MODEL_SANDBOX=required, but the server cannot be confined: {reason}")
    log.warning("model server runs unconfined (MODEL_SANDBOX=%s): %s", mode, reason)
    return Confinement(mode=mode, reason=reason)


def confine_process(config: ServerConfig, env: dict[str, str]) -> Confinement:
    """Confine this thread and everything it starts from now on (see the module docstring).
    ``env``: the environment the server was given (package index names). Raises
    ``SandboxUnavailable`` when ``required`` cannot be had."""
    mode = config.sandbox
    if mode == "off":
        return Confinement(mode=mode, reason="MODEL_SANDBOX=off")
    abi = landlockpy.abi_version() if sys.platform.startswith("linux") else 0
    if abi < 1:
        return _unavailable(mode, "the kernel has no Landlock (Linux 5.13+ with landlock among its LSMs)")
    Path(config.model_cache_dir).mkdir(parents=True, exist_ok=True)
    # joblib probes for POSIX semaphores (/dev/shm, the machine's, not writable here) and warns that
    # process pools are off; a model server predicts in its own threads, never in process pools
    warnings.filterwarnings("ignore", message=r".*joblib will operate in serial mode")
    writable = writable_paths(config)
    ports = connect_ports(config, env)
    try:
        dropped = drop_capabilities()
    except OSError as exc:  # a thread that may not change its own capabilities: Landlock still applies
        log.warning("capabilities not dropped: %s", exc)
        dropped = False
    try:
        with Ruleset(handled_net=TCP, scoped=Scope.SIGNAL | Scope.ABSTRACT_UNIX_SOCKET) as ruleset:
            for path in read_paths(config):
                _allow(ruleset, path, READ)
            for device in DEVICES:
                _allow(ruleset, device, READ | AccessFS.WRITE_FILE)
            for path in writable:
                _allow(ruleset, path, READ | WRITE)
            bind = (config.port,) if config.port else ()
            for port in bind:
                ruleset.allow_port(port, AccessNet.BIND_TCP)
            if not config.port:
                ruleset.allow_port(0, AccessNet.BIND_TCP)  # an ephemeral port (tests)
            for port in ports:
                ruleset.allow_port(port, AccessNet.CONNECT_TCP)
            net = ruleset.handled_net
            ruleset.restrict(RestrictFlag.TSYNC)
    except OSError as exc:  # landlockpy's errors are OSErrors; a seccomp profile that refuses the calls
        return _unavailable(mode, f"Landlock refused: {exc}")
    confinement = Confinement(
        mode=mode, landlock_abi=abi, enforced=True, capabilities_dropped=dropped, writable=tuple(writable),
        bind_ports=bind, connect_ports=ports if net & AccessNet.CONNECT_TCP else None,
    )
    log.info("model server confined (Landlock ABI %d): writes only under %s; TCP bind %s, connect %s; "
             "capabilities %s", abi, ", ".join(writable), ", ".join(map(str, bind)) or "any ephemeral port",
             "to ports " + ", ".join(map(str, ports)) if confinement.connect_ports is not None else "unconfined",
             "dropped" if dropped else "none held")
    return confinement


def confine_loader(confinement: Confinement) -> None:
    """The loading thread, right before unpickling: no file written or created anywhere, no TCP
    (on top of ``confine_process``; a no-op where that did not confine)."""
    if not confinement.enforced:
        return
    try:
        with Ruleset(handled_fs=WRITE, handled_net=TCP) as ruleset:
            ruleset.restrict()
    except OSError as exc:  # e.g. Landlock's limit of 16 layers after many restarts in one process
        if confinement.mode == "required":
            raise SandboxUnavailable(f"MODEL_SANDBOX=required, but the loader cannot be confined: {exc}") from exc
        log.warning("the loading thread is confined by the process's layer only: %s", exc)
