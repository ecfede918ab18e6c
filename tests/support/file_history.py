"""Every version of one file that writers replace atomically (write a temporary file, rename it
over the target), seen through Linux inotify: what the local nginx router's upstream file held,
for the chaos test's audit of router writes.

    history = FileHistory(path)     # watches path's directory from now on
    ...
    history.versions()              # [(monotonic seconds, content)], oldest first
    history.missed                  # renames whose content was replaced before it was read
    history.stop()

inotify reports each rename into the directory (IN_MOVED_TO) and each in-place write
(IN_CLOSE_WRITE); the reader thread reads the file at once. A version replaced again before the
reader got to it shows up as the same content read twice: counted in `missed`, never silent.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct
import threading
import time
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class FileHistory:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        wd = self._libc.inotify_add_watch(self._fd, str(self.path.parent).encode(),
                                          IN_MOVED_TO | IN_CLOSE_WRITE)
        if wd < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {self.path.parent} failed")
        self._versions: list[tuple[float, str]] = []
        self.missed = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        first = self._read()
        if first is not None:
            self._versions.append((time.monotonic(), first))
        self._thread = threading.Thread(target=self._follow, daemon=True,
                                        name=f"inotify-{self.path.name}")
        self._thread.start()

    def versions(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._versions)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self._fd)

    def _read(self) -> str | None:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def _follow(self) -> None:
        name = self.path.name.encode()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.2)
            if not ready:
                continue
            try:
                buf = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            offset, hits = 0, 0
            while offset < len(buf):
                _wd, _mask, _cookie, length = _EVENT.unpack_from(buf, offset)
                raw = buf[offset + _EVENT.size: offset + _EVENT.size + length]
                offset += _EVENT.size + length
                if raw.rstrip(b"\0") == name:
                    hits += 1
            if not hits:
                continue
            content = self._read()
            now = time.monotonic()
            with self._lock:
                # Several events in one read, or the same content again: versions we missed.
                self.missed += hits - 1
                if content is None:
                    continue
                if self._versions and self._versions[-1][1] == content:
                    self.missed += 1
                    continue
                self._versions.append((now, content))
