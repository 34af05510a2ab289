"""Fixtures shared by every test package: one torch thread, and a real PostgreSQL server on loopback.

``one_thread`` (a test's; ``one_thread_per_module``: a module's) runs torch on one intra-op thread
and restores the count after: the suite runs on 2 shared cores, where a second OpenMP thread per
process oversubscribes them (small forwards and traces 10x slower, timings that measure the
neighbours rather than the code).

``postgres_url`` starts one server per test session (its own data directory and free port,
``fsync=off``, the unix socket inside the temporary directory), creates a database owned by a
user with a password -- so that password redaction is tested against a real URL -- and stops the
server by its pid at the end. The binaries come from the ``postgresql-15`` Debian package
(``.ci/run`` installs it); without them the fixture fails, it does not skip: the multi-worker
guarantees are only claimed where they were checked.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

PG_BIN = Path(os.environ.get("EFFNAS_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER, PG_PASSWORD, PG_DB = "effnas", "Pw-s3cret-7319", "effnas"


def _torch_on_one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


one_thread = pytest.fixture(name="one_thread")(_torch_on_one_thread)
one_thread_per_module = pytest.fixture(name="one_thread_per_module", scope="module")(_torch_on_one_thread)


@dataclass(frozen=True)
class PostgresServer:
    url: str            # postgresql://effnas:<password>@127.0.0.1:<port>/effnas
    password: str
    port: int
    pid: int            # the postmaster
    data_dir: Path
    psql: tuple         # psql as the superuser over the unix socket
    run_as: dict        # subprocess keywords that run a command as the postgres user

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def sql(self, statement: str) -> str:
        return _run([*self.psql, "-Atc", statement], **self.run_as).stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres() -> dict:
    """initdb and postgres refuse to run as root: drop to the ``postgres`` user when root."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("tests run as root but there is no 'postgres' user to run the PostgreSQL server "
                    "as (apt-get install postgresql-15 creates it)")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": [],
            "env": {**os.environ, "HOME": pw.pw_dir, "USER": "postgres", "LOGNAME": "postgres"}}


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    if done.returncode:
        pytest.fail(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return done


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    initdb, postgres, psql = PG_BIN / "initdb", PG_BIN / "postgres", PG_BIN / "psql"
    missing = [str(p) for p in (initdb, postgres, psql) if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail(f"PostgreSQL server binaries not found: {', '.join(missing)}. Install them with "
                    "`apt-get install postgresql-15` (what .ci/run does) or point EFFNAS_PG_BIN at them; "
                    "the multi-worker tests need a real server.", pytrace=False)
    as_pg = _as_postgres()
    root = Path(tempfile.mkdtemp(prefix="effnas-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if as_pg:
        for path in (root, sock):
            os.chown(path, as_pg["user"], as_pg["group"])
    pwfile = root / "superuser.pw"
    pwfile.write_text("unused-superuser-password\n")
    if as_pg:
        os.chown(pwfile, as_pg["user"], as_pg["group"])
    _run([str(initdb), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
          f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions", "--no-sync",
          "--wal-segsize=1"], **as_pg)
    proc = None
    for _ in range(5):  # the free port may be taken between the probe and the bind
        port = _free_port()
        log_path = root / "server.log"
        log = open(log_path, "w")
        if as_pg:
            os.chown(log_path, as_pg["user"], as_pg["group"])
        proc = subprocess.Popen([str(postgres), "-D", str(data), "-c", f"port={port}",
                                 "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
                                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                                 "-c", "full_page_writes=off", "-c", "max_connections=100",
                                 # little WAL to write and to delete: a throw-away server
                                 "-c", "wal_level=minimal", "-c", "max_wal_senders=0",
                                 "-c", "min_wal_size=2MB", "-c", "max_wal_size=16MB"],
                                stdout=log, stderr=subprocess.STDOUT, **as_pg)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            probe = subprocess.run([str(psql), "-h", str(sock), "-p", str(port), "-U", "postgres", "-d",
                                    "postgres", "-Atc", "select 1"], capture_output=True, text=True, **as_pg)
            if probe.returncode == 0:
                break
            time.sleep(0.1)
        if proc.poll() is None:
            break
    if proc is None or proc.poll() is not None:
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"the PostgreSQL server did not start: {(root / 'server.log').read_text()[-2000:]}"
                    if (root / "server.log").exists() else "the PostgreSQL server did not start")
    sql = (f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{PG_PASSWORD}'; "
           f"CREATE DATABASE {PG_DB} OWNER {PG_USER};")
    for statement in sql.split("; "):
        _run([str(psql), "-h", str(sock), "-p", str(port), "-U", "postgres", "-d", "postgres",
              "-v", "ON_ERROR_STOP=1", "-c", statement.rstrip(";")], **as_pg)
    server = PostgresServer(url=f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DB}",
                            password=PG_PASSWORD, port=port, pid=proc.pid, data_dir=data,
                            psql=(str(psql), "-h", str(sock), "-p", str(port), "-U", "postgres", "-d",
                                  "postgres", "-v", "ON_ERROR_STOP=1"), run_as=as_pg)
    try:
        yield server
    finally:
        os.kill(proc.pid, signal.SIGQUIT)  # "immediate" shutdown: the data is thrown away anyway
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """``postgresql://effnas:<password>@127.0.0.1:<port>/effnas`` on the session's server."""
    return postgres_server.url


@pytest.fixture
def postgres_db(postgres_server: PostgresServer, request) -> str:
    """A fresh database (owned by the password user) for one test: studies never mix."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    postgres_server.sql(f"DROP DATABASE IF EXISTS {name}")
    postgres_server.sql(f"CREATE DATABASE {name} OWNER {PG_USER}")
    return postgres_server.database_url(name)
