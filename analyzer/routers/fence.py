"""Fenced router writes: a replica moves traffic only while it owns the rollout, and a former
owner's write can never land after the current owner's.

Owns the fencing token, its comparison, and the two ways a write is refused. The engine hands a
router a `Fence` for each tick (analyzer/daemon/engine.py); the router consults it right before
every write:

- `Fence.stamp(where, held, obj)`: `held` is the token the routed object carries now (read in
  the same read-modify-write as the change). A token from the same store with a HIGHER epoch
  means another replica has owned the rollout since this one did: `FencedOut`, nothing is
  written. Otherwise the object gets this fence's token. On Kubernetes the token is the
  annotation `canary-analyzer.io/fence` on the routed object and the write carries the read's
  resourceVersion, so a newer owner's write in between makes the API server answer 409, the
  read is repeated and the newer token refuses the stale write (analyzer/routers/kube/
  objects.py). The local nginx router keeps it in a token file beside the upstream file,
  compared and written under a file lock before the rename (analyzer/routers/nginx_file.py).
- `Fence.check_lease(where)`: asks the replica's lease (the PostgreSQL advisory lock, or the
  store's fence epoch) right before the write; `LeaseLost` when it is gone.

The epoch is handed out by the store (`Store.claim`) each time a replica takes a rollout over,
from one counter for the whole store, so it grows across rollouts and generations too (a new
run of a policy routing the same object outranks every earlier one). Tokens of another store
(`store` differs: the database was recreated, or another installation) are not comparable and
never refuse a write. `tick` and `replica` are not compared: they say which committed tick's
traffic the write carries and who wrote it (the chaos test audits writes with them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analyzer.routers.base import RouterError

ANNOTATION = "canary-analyzer.io/fence"
#: How long a file writer waits for another writer's lock before giving up (a stalled holder
#: must not stall the new owner's tick forever; the write is then refused and retried).
FILE_LOCK_TIMEOUT = 5.0


@dataclass(frozen=True)
class FenceToken:
    """Who may write: `epoch` orders owners; `tick` is the tick whose traffic is written."""

    store: str
    epoch: int
    tick: int
    replica: str

    def encode(self) -> str:
        return json.dumps({"store": self.store, "epoch": self.epoch, "tick": self.tick,
                           "replica": self.replica}, separators=(",", ":"), sort_keys=True)

    @classmethod
    def decode(cls, text: Any) -> FenceToken | None:
        """The token in `text`, or None when there is none or it is not one of ours."""
        if not isinstance(text, str) or not text:
            return None
        try:
            data = json.loads(text)
            return cls(str(data["store"]), int(data["epoch"]), int(data["tick"]),
                       str(data["replica"]))
        except (ValueError, TypeError, KeyError):
            return None

    def outranks(self, other: FenceToken) -> bool:
        """True when `self` was issued to a later owner of the same store than `other`."""
        return self.store == other.store and self.epoch > other.epoch

    def describe(self) -> str:
        return f"epoch {self.epoch} (tick {self.tick}, replica {self.replica})"


class Fenced(RouterError):
    """This replica may not move the traffic: nothing was written."""


class FencedOut(Fenced):
    """The routed object carries the token of a later owner."""


class LeaseLost(Fenced):
    """The replica no longer holds the rollout's lease (its lock or its epoch)."""


@dataclass(frozen=True)
class Fence:
    """The token a router stamps on its writes and the lease it checks before each one."""

    token: FenceToken
    lease: Callable[[], bool] = lambda: True

    def stamp(self, where: str, held: FenceToken | None) -> None:
        """Refuse (FencedOut) when the object's current token `held` outranks ours."""
        if held is not None and held.outranks(self.token):
            raise FencedOut(
                f"{where} carries the fencing token of a later owner, {held.describe()}; this "
                f"replica holds {self.token.describe()}: nothing was written")

    def check_lease(self, where: str) -> None:
        """LeaseLost unless the replica still owns the rollout (asked right before a write)."""
        try:
            ok = self.lease()
        except Exception as e:  # a lease that cannot be checked is not held
            raise LeaseLost(f"not writing {where}: cannot check this replica's ownership "
                            f"({type(e).__name__}: {e})") from None
        if not ok:
            raise LeaseLost(f"not writing {where}: replica {self.token.replica} no longer owns "
                            f"the rollout (epoch {self.token.epoch})")

    # -- the Kubernetes form: an annotation on the routed object ---------------------------

    def stamp_object(self, where: str, current: Mapping[str, Any] | None,
                     wanted: dict[str, Any]) -> None:
        """Compare with the annotation of `current` (None: the object is created) and put
        this token on `wanted`."""
        self.stamp(where, token_of(current) if current is not None else None)
        meta = wanted.setdefault("metadata", {})
        annotations = meta.get("annotations")
        if not isinstance(annotations, dict):
            annotations = meta["annotations"] = {}
        annotations[ANNOTATION] = self.token.encode()


# -- the file form: a token file beside the routed file, under a lock ----------------------


class TokenFile:
    """The token file of one routed file, while its lock is held (see `locked`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def held(self) -> FenceToken | None:
        try:
            return FenceToken.decode(self.path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            return None
        except OSError as e:
            raise RouterError(f"cannot read fencing token file {self.path}: {e.strerror}") from None

    def write(self, token: FenceToken) -> None:
        """Replace the token atomically (a crash leaves the old token or the new one)."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token.encode() + "\n")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise RouterError(
                f"cannot write fencing token file {self.path}: {e.strerror}") from None


def token_path(routed: Path) -> Path:
    """Where the token of a routed file lives: `<file>.fence`, beside it."""
    return routed.with_name(routed.name + ".fence")


@contextlib.contextmanager
def locked(routed: Path, timeout: float | None = None) -> Iterator[TokenFile]:
    """Hold the exclusive lock of `routed` (`<file>.fence.lock`, never renamed, so every writer
    locks the same inode) for one check-and-write; RouterError after `timeout` seconds
    (default FILE_LOCK_TIMEOUT)."""
    timeout = FILE_LOCK_TIMEOUT if timeout is None else timeout
    lock_path = routed.with_name(routed.name + ".fence.lock")
    try:
        routed.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RouterError(f"cannot open lock file {lock_path}: {e.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RouterError(
                        f"{routed} is being written by another process (lock {lock_path} held "
                        f"for over {timeout:g}s); nothing was written, try again") from None
                time.sleep(0.01)
        try:
            yield TokenFile(token_path(routed))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def token_of(obj: Mapping[str, Any] | None) -> FenceToken | None:
    """The fencing token a Kubernetes object carries (None: none, or not ours)."""
    meta = obj.get("metadata") if isinstance(obj, Mapping) else None
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        return None
    return FenceToken.decode(annotations.get(ANNOTATION))


__all__ = ["ANNOTATION", "Fence", "FenceToken", "Fenced", "FencedOut", "LeaseLost", "TokenFile",
           "locked", "token_of", "token_path"]
