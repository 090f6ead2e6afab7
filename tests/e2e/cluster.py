"""A private cluster for the multi-node tests: a PostgreSQL server and a Redis server of their
own (the tests may crash and restart them, so never the machine's shared ones), and gateway
nodes on them (`serve --demo --node-id nK --database … --redis …`, each with its own data
directory and its own in-process simulator)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from gateway import Gateway, free_port, log_path

PG_BIN = Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]) if glob.glob("/usr/lib/postgresql/*/bin") else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PrivatePostgres:
    """initdb + pg_ctl in a temp directory, on a free port; `crash()` is `pg_ctl -m immediate`."""

    def __init__(self):
        if PG_BIN is None:
            raise RuntimeError("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin")
        # Not under pytest's temp dir: that one is private to root, and PostgreSQL runs as its own user.
        self.dir = Path(tempfile.mkdtemp(prefix="ro-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8", "--no-sync"]),
                       check=True, capture_output=True, timeout=120)
        self.start()
        self.psql("CREATE DATABASE router_one")
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/router_one"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-w",
                                     "-l", str(self.dir / "server.log"), "start"]),
                       check=True, capture_output=True, timeout=120)

    def crash(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]),
                       check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres") -> str:
        out = subprocess.run(["psql", f"postgres://postgres@127.0.0.1:{self.port}/{database}", "-v", "ON_ERROR_STOP=1",
                              "-qtAX", "-c", sql], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}\nSQL: {sql}")
        return out.stdout.strip()

    def sql(self, query: str) -> str:
        """A query on the gateways' database."""
        return self.psql(query, "router_one")


class PrivateRedis:
    """redis-server on a free port without persistence (a restart loses everything)."""

    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Cluster:
    """`n` gateway nodes on one private PostgreSQL and one private Redis."""

    def __init__(self, root: Path, n: int = 3):
        self.root = Path(root)
        self.pg = PrivatePostgres()
        self.redis = PrivateRedis()
        self.nodes = [self.node(i) for i in range(n)]

    def node(self, i: int) -> Gateway:
        name = f"n{i + 1}"
        return Gateway(self.root / name, log_path=log_path(f"cluster-{name}", self.root), database=self.pg.url,
                       args=["--node-id", name, "--redis", self.redis.url])

    def start(self) -> "Cluster":
        for g in self.nodes:
            g.start()
        return self

    def stop(self) -> None:
        for g in self.nodes:
            g.stop()
        self.redis.kill()
        self.pg.stop()
