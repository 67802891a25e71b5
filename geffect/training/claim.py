"""Claiming a run directory: one writer per run, decided atomically before any work starts.

A writer takes an exclusive ``fcntl.flock`` on ``<run>/.geffect.lock`` without waiting and holds
it for the whole run. The kernel drops the lock when the process ends, however it ends, so a
lock that can be taken means no live writer: a killed run can be resumed, a live one cannot.
The owner's pid, host and start time go into ``run.json`` (``"owner"``) so that a refused
writer is told who holds the run. The claim also refuses what is not a run: a file, an
unwritable directory, or a non-empty folder that geffect did not write (a user's files are
never overwritten). Locks are per host; run directories on a network file system shared by
several hosts rely on that file system's ``flock`` support.

A procedure that keeps its status in a file of its own (Reveal and Release: ``status.json``)
claims its directory with ``status_file=``: the owner goes into that file, and only that file
marks the folder as geffect's (a procedure's folder is not taken for an unlearning run's). The
runs a procedure starts in its subdirectories claim those, each with its own lock file.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geffect.errors import InputError, RunInUseError
from geffect.training.rundir import STATUS_FILE, read_json, write_json

LOCK_FILE = ".geffect.lock"


def _own_files(status_file: str) -> set[str]:
    """The files a claim itself writes (the lock and the status file, with its temporary name)."""
    return {LOCK_FILE, status_file, f".{status_file}.tmp"}


@dataclass
class RunClaim:
    """An exclusive hold on a run directory; :meth:`release` (or process exit) lets it go."""

    path: Path
    fd: int | None
    created: bool
    info: dict[str, Any] = field(default_factory=dict)  # the status file as found before the claim
    status_file: str = STATUS_FILE

    def release(self) -> None:
        """Let the directory go (idempotent)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def abandon(self) -> None:
        """Undo a claim whose run never started: remove what the claim wrote, then release."""
        try:
            if not read_json(self.path / self.status_file).get("status"):
                own = _own_files(self.status_file)
                if set(os.listdir(self.path)) <= own:
                    for name in own:
                        (self.path / name).unlink(missing_ok=True)
                    if self.created:
                        self.path.rmdir()
        except OSError:
            pass  # leaving a claimed-but-empty directory behind is harmless: it can be claimed again
        finally:
            self.release()

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def owner_record() -> dict[str, Any]:
    """This process as a run owner: pid, host and start time."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}


def describe_owner(info: dict[str, Any]) -> str:
    """'pid 123 on host h since T' from a run.json's owner record ('an unknown process' if none)."""
    owner = info.get("owner") or {}
    if not owner:
        return "an unknown process"
    return f"pid {owner.get('pid')} on host {owner.get('host')} since {owner.get('since')}"


def owner_alive(info: dict[str, Any]) -> bool | None:
    """Whether the recorded owner process still exists (None when unknown: no owner, another host)."""
    owner = info.get("owner") or {}
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return None
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_info(path: Path, status_file: str = STATUS_FILE) -> dict[str, Any] | None:
    """The status file (run.json unless given) of a geffect directory, or None if ``path`` holds no
    status file that geffect wrote (one with a status or an owner)."""
    info = read_json(path / status_file)  # DamagedRunError when present but unreadable
    return info if {"status", "owner"} & set(info) else None


def _check_not_foreign(path: Path, status_file: str) -> None:
    """Refuse a non-empty directory that geffect did not write."""
    entries = sorted(os.listdir(path))
    foreign = [e for e in entries if e != LOCK_FILE]
    if foreign and run_info(path, status_file) is None:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"{str(path)!r} is not empty and is not a geffect run directory (it holds {shown}); "
                         "choose a new or empty out directory")


def _open_lock(path: Path) -> int:
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputError(f"run directory {str(path)!r} is not writable")
    try:
        return os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise InputError(f"cannot write in run directory {str(path)!r}: {err.strerror}") from None


def _lock(path: Path, status_file: str) -> int:
    """An fd holding the exclusive lock of ``path``'s lock file; RunInUseError if a live run holds it
    (naming the owner recorded in ``status_file``)."""
    for _ in range(5):
        fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                info = read_json(path / status_file)
            except InputError:
                info = {}
            raise RunInUseError(f"run directory {str(path)!r} is in use by a live run ({describe_owner(info)}); "
                                "wait for it to end or choose another out directory") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path / LOCK_FILE).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the lock file was replaced while we opened it: lock the current one
    raise RunInUseError(f"run directory {str(path)!r} is being created and removed by another process")


def check_out_dir(path: str | Path, what: str = "run directory") -> None:
    """Refuse at once (before any model loads) a ``path`` that is a file, lies under a file, or
    would be created in a folder this process cannot write to."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {str(path)!r} is a file, not a directory; choose another out directory")
    nearest = next(p for p in (path, *path.parents) if p.exists())
    if not nearest.is_dir():
        raise InputError(f"cannot create {what} {str(path)!r}: {str(nearest)!r} is a file")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise InputError(f"{what} {str(path)!r} is not writable" if nearest == path else
                         f"cannot create {what} {str(path)!r}: {str(nearest)!r} is not writable")


def claim_run_dir(path: str | Path, *, resume: bool, status_file: str = STATUS_FILE) -> RunClaim:
    """Claim ``path`` for one writer (creating it), or raise an :class:`InputError` saying why not.

    Refused: a path that is a file or cannot be created or written; a non-empty directory that
    is not a geffect run; a run held by a live process (:class:`RunInUseError`); an existing run
    when ``resume`` is false. Records the owner in ``status_file`` (run.json, or the status file
    of a procedure that keeps its own). Hold the claim for the run's life.
    """
    path = Path(path)
    check_out_dir(path)
    created = not path.exists()
    if not created:
        _check_not_foreign(path, status_file)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create run directory {str(path)!r}: {err.strerror or err}") from None
    fd = _lock(path, status_file)
    claim = RunClaim(path, fd, created, status_file=status_file)
    try:
        _check_not_foreign(path, status_file)
        claim.info = read_json(path / status_file)
        status = claim.info.get("status")
        if status and not resume:
            where = f"status {status!r}, step {claim.info.get('step')} of {claim.info.get('total_steps')}"
            if status == "running":
                where += f"; its process ({describe_owner(claim.info)}) has ended, so it can be resumed"
            raise InputError(f"{str(path)!r} already holds a run ({where}); pass resume=True (CLI: --resume) to "
                             "continue it or choose another out directory")
        write_json(path / status_file, {**claim.info, "owner": owner_record()})
    except BaseException:
        claim.release()
        raise
    return claim
