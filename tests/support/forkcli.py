"""The local CLI as a process forked from an interpreter that has already imported runas.

Every ``runas …`` the end-to-end tests run is a process of its own (its own arguments,
environment, working directory, standard streams and exit status; Python's normal shutdown,
atexit handlers included), but importing runas costs seconds of CPU per call on a loaded
machine, and the end-to-end tests run hundreds of calls. So a small fork server imports
``runas.cli.main`` once — exactly what a fresh ``runas`` process imports first — and forks a
child per call: the child takes the caller's streams, environment and working directory,
reseeds ``random`` and runs ``main()`` exactly as the fresh process would.

The fork server itself is started with the minimal environment (``fleet.base_env``) and never
sees a secret: secrets go to the child on its standard input, as before. Set
``RUNAS_TEST_FORK_CLI=0`` to run every call as a fresh interpreter instead.

Protocol (a Unix socket per call): the client sends one JSON header (argv, env, cwd) with the
child's stdin, stdout and stderr file descriptors; a waiter process forks the child, sends its
pid (one line), waits for it and sends its exit status (one line).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_SERVER = r"""
import json, os, random, signal, socket, sys

import runas.cli.main  # the import every ``runas`` process starts with

path = sys.argv[1]
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
listener.listen(64)
print("ready", flush=True)


def serve():
    while True:
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass
        conn, _ = listener.accept()
        header, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if not header:
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork():  # the fork server: back to accepting
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        # the waiter
        listener.close()
        child = os.fork()
        if child:
            for fd in fds:
                os.close(fd)
            conn.sendall(f"{child}\n".encode())
            _, status = os.waitpid(child, 0)
            conn.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())
            conn.close()
            os._exit(0)
        # the child: a ``runas`` process
        conn.close()
        request = json.loads(header)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        if request.get("session"):
            os.setsid()
        random.seed()
        sys.argv = ["runas", *request["argv"]]
        return


serve()
runas.cli.main.main()
"""


class ForkCliUnavailable(RuntimeError):
    pass


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


class ForkServer:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._dir = tempfile.mkdtemp(prefix="runas-forkcli-")
        self.path = str(Path(self._dir) / "s")
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, self.path],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise ForkCliUnavailable(f"the CLI fork server did not start: {line!r}")

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        for name in os.listdir(self._dir):
            os.unlink(Path(self._dir) / name)
        os.rmdir(self._dir)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdin: str | None,
        timeout: float,
    ) -> Done:
        """Run ``runas ARGV`` in a forked child; like ``subprocess.run(…, text=True)``."""
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        header = json.dumps({"argv": list(argv), "env": dict(env), "cwd": os.getcwd()})
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            socket.send_fds(conn, [header.encode()], [in_r, out_w, err_w])
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}

        def drain(fd: int) -> None:
            with open(fd, "rb", closefd=True) as f:
                chunks[fd].append(f.read())

        def feed() -> None:
            with open(in_w, "wb", closefd=True) as f:
                if stdin:
                    with contextlib.suppress(BrokenPipeError):
                        f.write(stdin.encode())

        threads = [threading.Thread(target=drain, args=(fd,)) for fd in (out_r, err_r)]
        threads.append(threading.Thread(target=feed))
        for t in threads:
            t.start()
        conn.settimeout(timeout)
        reader = conn.makefile("rb")
        pid = 0
        try:
            pid = int(reader.readline())
            code = int(reader.readline())
        except (TimeoutError, ValueError) as err:
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
            raise subprocess.TimeoutExpired(["runas", *argv], timeout) from err
        finally:
            reader.close()
            conn.close()
        for t in threads:
            t.join(timeout)
        return Done(code, b"".join(chunks[out_r]).decode(), b"".join(chunks[err_r]).decode())

    def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdout: int | None,
        stderr: int,
        new_session: bool = False,
    ) -> ForkedProcess:
        """Start ``runas ARGV`` in a forked child, like ``subprocess.Popen`` with stdin from
        /dev/null, ``stdout`` a file descriptor or None for a pipe (``.stdout``), and
        ``stderr`` a file descriptor."""
        stdin = os.open(os.devnull, os.O_RDONLY)
        pipe_r = pipe_w = -1
        if stdout is None:
            pipe_r, pipe_w = os.pipe()
            stdout = pipe_w
        header = json.dumps(
            {"argv": list(argv), "env": dict(env), "cwd": os.getcwd(), "session": new_session}
        )
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(self.path)
            socket.send_fds(conn, [header.encode()], [stdin, stdout, stderr])
        except BaseException:
            conn.close()
            if pipe_r >= 0:
                os.close(pipe_r)
            raise
        finally:
            os.close(stdin)
            if pipe_w >= 0:
                os.close(pipe_w)
        return ForkedProcess(
            ["runas", *argv], conn, os.fdopen(pipe_r, "rb") if pipe_r >= 0 else None
        )


class ForkedProcess:
    """What the tests use of ``subprocess.Popen`` for a forked ``runas`` process."""

    def __init__(self, args: list[str], conn: socket.socket, stdout: IO[bytes] | None) -> None:
        self.args = args
        self.stdout = stdout
        self.returncode: int | None = None
        self._conn = conn
        self._reader = conn.makefile("rb")
        self.pid = int(self._reader.readline())
        self._done = threading.Event()
        threading.Thread(target=self._wait_for_status, daemon=True).start()

    def _wait_for_status(self) -> None:
        try:
            line = self._reader.readline()
            self.returncode = int(line) if line.strip() else -9
        finally:
            self._reader.close()
            self._conn.close()
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if not self._done.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


_servers: dict[str, ForkServer] = {}
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("RUNAS_TEST_FORK_CLI", "1") != "0"


def server(env: Mapping[str, str]) -> ForkServer:
    """This pytest process's fork server (started on first use, stopped at exit)."""
    with _lock:
        if "default" not in _servers:
            _servers["default"] = ForkServer(env)
            atexit.register(_servers["default"].stop)
        return _servers["default"]
