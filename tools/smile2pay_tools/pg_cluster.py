"""A throwaway local PostgreSQL cluster (tests and benchmarks): ``initdb`` on a free port.

PostgreSQL refuses to run as root, so when this process is root the cluster is created and run as
an unprivileged user (``postgres`` when it exists, else ``nobody``) through ``runuser``; as a normal
user it runs as that user. The data directory, the unix socket and the log live in one temporary
folder; :meth:`TempCluster.cleanup` stops the server and deletes it.

    with TempCluster() as pg:
        url = pg.url(schema="t1")          # postgresql://postgres@127.0.0.1:PORT/postgres?schema=t1
        pg.restart()                       # clean restart (fault benchmarks)
"""
from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def find_bindir() -> Path | None:
    """Folder holding ``initdb``/``pg_ctl`` (Debian: /usr/lib/postgresql/<v>/bin), or None."""
    env = os.environ.get("SMILE2PAY_PG_BINDIR")
    if env and (Path(env) / "initdb").is_file():
        return Path(env)
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    if cands:
        return Path(cands[-1]).parent
    w = shutil.which("initdb")
    return Path(w).parent if w else None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (tests, benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempCluster:
    def __init__(self, bindir: str | os.PathLike | None = None, *, fsync: bool = True,
                 settings: dict[str, str] | None = None) -> None:
        b = Path(bindir) if bindir else find_bindir()
        if b is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found; "
                                    "install Debian's postgresql package")
        self.bindir = b
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.root = Path(tempfile.mkdtemp(prefix="s2p-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.port = free_port()
        self._user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                    self._user = name
                    break
                except KeyError:
                    continue
            if self._user is None:
                raise RuntimeError("running as root and neither user 'postgres' nor 'nobody' exists")
        self.sock.mkdir()
        if self._user:
            pw = pwd.getpwnam(self._user)
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.root, 0o700)

    # -- commands ------------------------------------------------------------------------------
    def _cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/")
        if check and p.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({p.returncode}): {p.stderr.strip()[-2000:]}\n{self.log_tail()}")
        return p

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def init(self) -> "TempCluster":
        self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        return self

    def _opts(self) -> str:
        conf = {"port": str(self.port), "listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.sock),
                "fsync": "on" if self.fsync else "off", "max_connections": "200", "shared_buffers": "128MB",
                "log_min_messages": "warning", **self.settings}
        return " ".join(f"-c {k}={v}" for k, v in conf.items())

    def start(self) -> "TempCluster":
        if not (self.data / "PG_VERSION").exists():
            self.init()
        self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", self._opts(), "-w", "-t", "60",
                  "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._cmd("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: str = "fast") -> float:
        """Stop and start again; returns the seconds the server was down."""
        t0 = time.perf_counter()
        self.stop(mode)
        self.start()
        return time.perf_counter() - t0

    def url(self, dbname: str = "postgres", schema: str | None = None) -> str:
        u = f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
        return u + (f"?schema={schema}" if schema else "")

    def psql_dump(self, dbname: str = "postgres", schema: str | None = None) -> bytes:
        """``pg_dump`` of the database (or one schema of it; plain SQL) as bytes."""
        cmd = [str(self.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", dbname]
        if schema:
            cmd += ["-n", schema]
        return subprocess.run(cmd, capture_output=True, check=True, timeout=120).stdout

    def cleanup(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "TempCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()
