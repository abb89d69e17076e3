"""An isolated cluster on this machine: a client that can only talk over a
counted veth pair, and workers that cannot see the client's files.

Layout (``N`` is a free third octet of 10.231.0.0/16, ``P`` this process's pid)::

    host netns                                   netns rdq-P (the client)
    10.231.N.1/30  rdqP-h  <=== veth ===>  rdqP-c  10.231.N.2/30
      dask scheduler   (listens on 10.231.N.1)     rdask run ... --scheduler tcp://10.231.N.1:PORT
      dask worker x n  (each in a private mount namespace with an empty,
                        read-only tmpfs over the client's directory)
      moto S3 server   (listens on 10.231.N.1)

* Every byte the client sends or receives crosses the veth pair (its netns
  has nothing else but ``lo``), so the host side's counters
  (``/sys/class/net/rdqP-h/statistics/{rx,tx}_bytes``) are exactly what the
  client sent (rx) and received (tx), headers included. Workers, scheduler
  and S3 server all talk to each other on the host, over ``lo``.
* ``hidden`` is the client's working directory: workers see an empty
  directory there. ``shared`` (outside it, same path for everybody) plays
  a shared filesystem such as NFS: inputs, and outputs that need one.
* Everything this module creates carries the tag ``rdq-P`` (names, and
  ``RDQ_RIG`` in the environment of every process it starts); a rig
  started later removes what a dead earlier process left (see
  :func:`remove_leftovers`). Worker mounts live only in the workers' own
  mount namespaces and vanish with them.

No pytest here: a benchmark imports this too. Needs root, ``ip``,
``unshare`` and ``mount``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servers import S3Server

BIN = os.path.dirname(sys.executable)
PREFIX = "rdq"
#: Environment variable naming the rig that started a process.
TAG_VAR = "RDQ_RIG"
NET = "10.231"


def tag(pid: int | None = None) -> str:
    """The tag of the rig started by ``pid`` (this process by default)."""
    return f"{PREFIX}-{os.getpid() if pid is None else pid}"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owner(name: str) -> int | None:
    """The pid in one of our names (``rdq-123``, ``rdq123h``), else None."""
    if not name.startswith(PREFIX):
        return None
    digits = name[len(PREFIX):].lstrip("-").rstrip("hc")
    return int(digits) if digits.isdigit() else None


# -- leftovers of a killed earlier run ---------------------------------------


def _tagged_processes() -> dict[int, int]:
    """``{pid: owner pid}`` of every process carrying a ``RDQ_RIG`` tag."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(TAG_VAR.encode() + b"="):
                owner = _owner(item.split(b"=", 1)[1].decode(errors="replace"))
                if owner is not None:
                    found[int(entry)] = owner
    return found


def remove_leftovers() -> list[str]:
    """Remove what rigs of dead processes left: their processes, netns and
    veths (not those of a live rig: another run may be using it). Returns
    what was removed."""
    removed = []
    for pid, owner in _tagged_processes().items():
        if owner != os.getpid() and not _alive(owner):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                removed.append(f"process {pid}")
    for line in _run("ip", "netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        owner = _owner(name)
        if owner is not None and owner != os.getpid() and not _alive(owner):
            _delete_netns(name)
            removed.append(f"netns {name}")
    for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        owner = _owner(name)
        if owner is not None and owner != os.getpid() and not _alive(owner):
            _run("ip", "link", "del", name, check=False)
            removed.append(f"link {name}")
    return removed


def _delete_netns(name: str) -> None:
    """Kill whatever runs in netns ``name``, then delete it (and its veth end)."""
    pids = _run("ip", "netns", "pids", name, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run("ip", "netns", "del", name, check=False)


# -- the client's network namespace -------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Bytes the client sent (``sent``) and received (``received``)."""

    sent: int
    received: int

    @property
    def total(self) -> int:
        return self.sent + self.received

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.sent - other.sent, self.received - other.received)


@dataclass(frozen=True)
class ClientNet:
    """A netns for the client and the veth pair that is its only way out."""

    netns: str
    host_if: str
    client_if: str
    host_ip: str
    client_ip: str

    def counters(self) -> Counters:
        """The host side's counters: its rx is what the client sent."""
        stats = Path("/sys/class/net") / self.host_if / "statistics"
        return Counters(int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text()))

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the client's netns (``ip netns exec`` execs it:
        the process started is the command itself, so it can be signalled)."""
        return ["ip", "netns", "exec", self.netns, *argv]


def _free_octet() -> int:
    """A third octet N with no 10.231.N.x address on this host (nor in a netns
    of another rig: their host ends are here)."""
    used = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    start = os.getpid() % 250
    for i in range(250):
        n = 1 + (start + i) % 250
        if f" {NET}.{n}." not in used:
            return n
    raise RuntimeError(f"no free {NET}.N/30 left")


@contextlib.contextmanager
def client_net() -> Iterator[ClientNet]:
    """Create the client's netns and veth pair; remove both on exit."""
    pid = os.getpid()
    n = _free_octet()
    net = ClientNet(netns=tag(), host_if=f"{PREFIX}{pid}h", client_if=f"{PREFIX}{pid}c",
                    host_ip=f"{NET}.{n}.1", client_ip=f"{NET}.{n}.2")
    try:
        _run("ip", "netns", "add", net.netns)
        _run("ip", "link", "add", net.host_if, "type", "veth", "peer", "name", net.client_if)
        _run("ip", "link", "set", net.client_if, "netns", net.netns)
        # No IPv6: its neighbour discovery chatter would count as the client's bytes.
        _run("sysctl", "-qw", f"net.ipv6.conf.{net.host_if}.disable_ipv6=1", check=False)
        _run("ip", "addr", "add", f"{net.host_ip}/30", "dev", net.host_if)
        _run("ip", "link", "set", net.host_if, "up")
        inside = ["ip", "netns", "exec", net.netns]
        _run(*inside, "sysctl", "-qw", f"net.ipv6.conf.{net.client_if}.disable_ipv6=1", check=False)
        _run(*inside, "ip", "addr", "add", f"{net.client_ip}/30", "dev", net.client_if)
        _run(*inside, "ip", "link", "set", net.client_if, "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        _wait_link(net)
        yield net
    finally:
        _delete_netns(net.netns)
        _run("ip", "link", "del", net.host_if, check=False)


def _wait_link(net: ClientNet, timeout: float = 10.0) -> None:
    """Wait until the host end of the veth is up (both ends are, then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = Path(f"/sys/class/net/{net.host_if}/operstate").read_text().strip()
        if state == "up":
            return
        time.sleep(0.05)
    raise RuntimeError(f"{net.host_if} did not come up")


# -- processes ------------------------------------------------------------------


def rig_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, tagged, plus ``extra``."""
    return {**os.environ, TAG_VAR: tag(), "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
            **(extra or {})}


def _start(argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None,
           cwd: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start ``argv`` in a session of its own (so its children can be killed
    with it), output appended to ``log``."""
    with open(log, "ab") as fh:
        return subprocess.Popen(list(argv), stdout=fh, stderr=subprocess.STDOUT, env=env or rig_env(),
                                cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop ``proc`` and its session (SIGTERM, then SIGKILL)."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        # The group may outlive its leader (a nanny's worker): kill the rest.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        return


@dataclass
class Cluster:
    """A ``dask scheduler`` and its workers (``nannies``: the processes we
    started, each a nanny, or the worker itself with ``nanny=False``)."""

    address: str
    scheduler: subprocess.Popen
    nannies: list[subprocess.Popen] = field(default_factory=list)
    log: Path | None = None

    def client(self, timeout: str = "30s"):
        """A ``distributed.Client`` of this process (host netns)."""
        from distributed import Client

        return Client(self.address, timeout=timeout)

    def worker_pids(self) -> dict[str, int]:
        """``{worker address: pid of the worker process}``."""
        with self.client() as c:
            return c.run(os.getpid)


def _scheduler(host: str, workdir: Path, log: Path) -> tuple[str, subprocess.Popen]:
    sched_file = workdir / "scheduler.json"
    with contextlib.suppress(FileNotFoundError):
        sched_file.unlink()
    proc = _start([os.path.join(BIN, "dask"), "scheduler", "--host", host, "--port", "0",
                   "--no-dashboard", "--scheduler-file", str(sched_file)], log, cwd=workdir)
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(sched_file.read_text())["address"], proc
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"dask scheduler did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)


def hidden_worker_command(address: str, host: str, hidden: str | os.PathLike, *, nthreads: int = 1,
                          nanny: bool = True) -> list[str]:
    """``dask worker`` in a private mount namespace where ``hidden`` is an
    empty, read-only tmpfs (``unshare`` and ``sh`` exec, so the process
    started is the worker, or its nanny)."""
    worker = [os.path.join(BIN, "dask"), "worker", address, "--nthreads", str(nthreads),
              "--nanny" if nanny else "--no-nanny", "--no-dashboard", "--host", host]
    script = 'mount -t tmpfs -o ro,size=64k,mode=755 rdq-hidden "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(hidden), *worker]


@contextlib.contextmanager
def isolated_cluster(host: str, hidden: str | os.PathLike, workdir: str | os.PathLike, *,
                     n_workers: int = 2, nthreads: int = 1, nanny: bool = True,
                     worker_env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A scheduler on ``host`` and ``n_workers`` workers that cannot see ``hidden``.

    ``workdir`` (not under ``hidden``) holds the scheduler file and the
    log, and is the processes' working directory. With ``nanny`` a
    SIGKILLed worker process is restarted by its nanny. ``worker_env`` is
    added to the workers' environment (e.g. S3 credentials: outputs that
    workers upload themselves take them from each process's environment).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "cluster.log"
    address, sched = _scheduler(host, workdir, log)
    cluster = Cluster(address, sched, log=log)
    try:
        for _ in range(n_workers):
            cluster.nannies.append(_start(
                hidden_worker_command(address, host, hidden, nthreads=nthreads, nanny=nanny),
                log, env=rig_env(worker_env), cwd=workdir))
        with cluster.client() as c:
            c.wait_for_workers(n_workers, timeout=90)
        yield cluster
    finally:
        for proc in [*cluster.nannies, sched]:
            stop(proc)


# -- S3 -------------------------------------------------------------------------


def s3_server(host: str) -> S3Server:
    """moto's S3 server (tests/servers.py) listening on ``host``."""
    from servers import S3Server

    class HostS3Server(S3Server):
        def __init__(self) -> None:
            super().__init__()
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)

        @property
        def endpoint(self) -> str:
            return f"{host}:{self.port}"

    return HostS3Server()


# -- everything together ------------------------------------------------------


@dataclass
class Rig:
    """The client's netns, a cluster that cannot see ``hidden``, S3, and dirs."""

    net: ClientNet
    cluster: Cluster
    s3: S3Server | None
    base: Path
    hidden: Path  # the client's working directory; workers see it empty
    shared: Path  # everybody sees it (a shared filesystem)
    pauses: Path  # RDASK_PAUSE_DIR of the client and the workers (rdask.pauses)
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return self.cluster.address

    def client_env(self) -> dict[str, str]:
        """Environment of a client process: S3 settings, and a temporary
        directory of its own (where staged S3 outputs are built)."""
        extra = dict(self.s3.env) if self.s3 is not None else {}
        extra["TMPDIR"] = str(self.hidden / "tmp")
        extra["RDASK_PAUSE_DIR"] = str(self.pauses)
        return rig_env(extra)

    def hold(self, *points: str) -> None:
        """Hold jobs at ``points`` (and at no other: earlier holds are dropped)."""
        for f in self.pauses.iterdir():
            f.unlink()
        for p in points:
            (self.pauses / f"{p}.hold").touch()

    def reached(self, point: str, proc: subprocess.Popen) -> None:
        """Wait until a job is held at ``point``."""
        from faultutil import wait_until

        wait_until((self.pauses / f"{point}.reached").exists, f"a job held at {point}", proc=proc)

    def release(self, point: str) -> None:
        """Let go whatever is held at ``point``, and hold there no more."""
        (self.pauses / f"{point}.hold").unlink(missing_ok=True)
        (self.pauses / f"{point}.go").touch()

    def start_client(self, argv: Sequence[str]) -> subprocess.Popen:
        """``argv`` as a client process in the netns, working in ``hidden``
        (stdout and stderr captured)."""
        proc = subprocess.Popen(self.net.command(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=self.client_env(), cwd=self.hidden,
                                start_new_session=True)
        self.processes.append(proc)
        return proc

    def run_client(self, argv: Sequence[str], timeout: float = 600) -> tuple[subprocess.CompletedProcess,
                                                                                Counters, float]:
        """Run ``argv`` as a client to completion: (result, bytes it moved, seconds)."""
        before, t0 = self.net.counters(), time.monotonic()
        proc = self.start_client(argv)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            raise
        seconds = time.monotonic() - t0
        moved = self.net.counters() - before
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), moved, seconds

    def rdask(self, *args: object) -> list[str]:
        """An ``rdask run`` command line on this rig's scheduler."""
        return [os.path.join(BIN, "rdask"), "run", *map(str, args), "--scheduler", self.address]


@contextlib.contextmanager
def rig(base: str | os.PathLike, *, n_workers: int = 2, nthreads: int = 1, nanny: bool = True,
        s3: bool = True) -> Iterator[Rig]:
    """Everything in the module docstring, under ``base`` (``base/hidden``,
    ``base/shared``, ``base/cluster``); all of it removed on exit."""
    remove_leftovers()
    base = Path(base)
    hidden, shared = base / "hidden", base / "shared"
    pauses = shared / "pauses"
    for d in (hidden / "tmp", shared, pauses):
        d.mkdir(parents=True, exist_ok=True)
    with client_net() as net, contextlib.ExitStack() as stack:
        server = None
        if s3:
            server = s3_server(net.host_ip).start()
            stack.callback(server.stop)
        cluster = stack.enter_context(isolated_cluster(
            net.host_ip, hidden, base / "cluster", n_workers=n_workers, nthreads=nthreads,
            nanny=nanny, worker_env={**(server.env if server else {}), "RDASK_PAUSE_DIR": str(pauses)}))
        r = Rig(net, cluster, server, base, hidden, shared, pauses)
        try:
            yield r
        finally:
            for proc in r.processes:
                if proc.poll() is None:
                    stop(proc)

