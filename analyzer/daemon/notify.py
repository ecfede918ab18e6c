"""Outbound HTTP of the engine: decision notifications and `beforeStep` gate webhooks.

Notifications (generic JSON webhook, Slack-compatible `{"text": ...}`) go through a bounded
queue to background worker threads with bounded retries: a slow, hanging or failing receiver
never blocks a tick. Delivery is at most once: what is queued when the process dies is lost
(the decision itself is in the store).

Gates are the opposite: they are part of the decision, so the tick calls them synchronously
with the webhook's own timeout; anything but a 2xx answer holds the rollout at its step.

URLs may carry tokens (Slack's `hooks.slack.com/services/T/B/secret`): they are never logged
whole; `redact_http_url` keeps the scheme and host only.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from analyzer.policy import Notification, Policy, Webhook
from analyzer.util.redaction import redact_http_url
from analyzer.util.retry import retrying

log = logging.getLogger("analyzer.daemon.notify")


@dataclass(frozen=True)
class Notice:
    """One decision worth telling people about."""

    rollout: str
    kind: str  # promote | rollback | pause | succeeded | failed | step
    text: str  # the decision's sentence, ready for Slack
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class NotifierStats:
    sent: int = 0
    failed: int = 0  # gave up after the last attempt
    retried: int = 0
    dropped: int = 0  # queue full


class Notifier:
    """Delivers notices in the background.

    `attempts` tries per receiver with exponential backoff from `backoff` seconds, each with
    `timeout` seconds (connect and read); then the notice is dropped and logged. The queue
    holds `queue_size` notices; beyond that new ones are dropped (counted in `stats`).
    """

    def __init__(self, *, attempts: int = 3, timeout: float = 5.0, backoff: float = 0.5,
                 workers: int = 2, queue_size: int = 1000,
                 post: Callable[..., Any] | None = None) -> None:
        self.attempts = max(1, attempts)
        self.timeout = timeout
        self.backoff = backoff
        self.stats = NotifierStats()
        self._queue: queue.Queue[tuple[Notification, Notice] | None] = queue.Queue(queue_size)
        self._post = post or requests.post
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._work, name=f"notifier-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    def notify(self, policy: Policy, notice: Notice) -> int:
        """Queue `notice` for each of the policy's receivers subscribed to its kind; returns
        how many were queued. Never blocks."""
        queued = 0
        for target in policy.spec.notifications:
            if notice.kind not in target.on:
                continue
            try:
                self._queue.put_nowait((target, notice))
                queued += 1
            except queue.Full:
                self.stats.dropped += 1
                log.warning("notification queue full: dropped %s for %s", notice.kind,
                            notice.rollout)
        return queued

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty and in-flight deliveries are done (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to `timeout` seconds, then stop the workers."""
        self.drain(timeout)
        self._stop.set()
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        for t in self._threads:
            t.join(timeout=0.5)

    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._deliver(*item)
            except Exception:  # a worker must survive anything a receiver does
                log.exception("notification worker error")
            finally:
                self._queue.task_done()

    def _deliver(self, target: Notification, notice: Notice) -> None:
        body = _slack_body(notice) if target.type == "slack" else {
            "rollout": notice.rollout, "kind": notice.kind, "text": notice.text,
            **notice.payload,
        }
        where = redact_http_url(target.url)

        def post() -> None:
            if self._stop.is_set():
                return
            try:
                resp = self._post(target.url, json=body, timeout=(self.timeout, self.timeout))
            except requests.RequestException as e:
                raise _Undelivered(type(e).__name__) from None
            status = int(getattr(resp, "status_code", 0))
            if not 200 <= status < 300:
                raise _Undelivered(f"HTTP {status}")

        def before_retry(attempt: int, e: BaseException) -> None:
            self.stats.retried += 1
            log.info("notification %s to %s failed (%s); retry %d/%d", notice.kind, where, e,
                     attempt, self.attempts - 1)

        retryer = retrying(attempts=self.attempts, first_wait=self.backoff,
                           max_wait=self.backoff * 2 ** self.attempts,
                           retry_if=lambda e: isinstance(e, _Undelivered)
                           and not self._stop.is_set(),
                           sleep=self._stop.wait, before_retry=before_retry)
        try:
            retryer(post)
        except _Undelivered as e:
            if self._stop.is_set():
                return
            self.stats.failed += 1
            log.warning("notification %s for %s to %s failed after %d attempts: %s",
                        notice.kind, notice.rollout, where, self.attempts, e)
            return
        if not self._stop.is_set():
            self.stats.sent += 1


class _Undelivered(Exception):
    """A receiver did not take the notification (its answer, or the transport error)."""


def _slack_body(notice: Notice) -> dict[str, Any]:
    icon = {"rollback": ":rotating_light:", "failed": ":x:", "succeeded": ":white_check_mark:",
            "pause": ":double_vertical_bar:", "promote": ":arrow_up:"}.get(notice.kind, ":bird:")
    return {"text": f"{icon} *{notice.rollout}* {notice.kind}: {notice.text}"}


# --------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class GateAnswer:
    name: str
    ok: bool
    status: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str
    answers: tuple[GateAnswer, ...] = ()


def check_gates(policy: Policy, step: int, weight: int, *, rollout_id: int | None = None,
                post: Callable[..., Any] | None = None) -> GateResult:
    """Ask every `beforeStep` webhook (in order); the first non-2xx answer holds."""
    hooks: list[Webhook] = list(policy.spec.gates.beforeStep)
    if not hooks:
        return GateResult(True, "no gates")
    send = post or requests.post
    body = {
        "rollout": policy.name, "rollout_id": rollout_id, "step": step, "weight": weight,
        "service": policy.spec.target.service, "namespace": policy.spec.target.namespace,
        "stable": policy.spec.target.stable, "canary": policy.spec.target.canary,
        "at": datetime.now(UTC).isoformat(),
    }
    answers: list[GateAnswer] = []
    for hook in hooks:
        t = hook.timeout.total_seconds()
        try:
            resp = send(hook.url, json=body, headers=dict(hook.headers), timeout=(t, t))
            status = int(resp.status_code)
            ok = 200 <= status < 300
            answers.append(GateAnswer(hook.name, ok, status, f"HTTP {status}"))
            if not ok:
                return GateResult(False, f"gate {hook.name!r} ({redact_http_url(hook.url)}) "
                                  f"answered HTTP {status}: holding before step {step}",
                                  tuple(answers))
        except requests.RequestException as e:
            answers.append(GateAnswer(hook.name, False, None, type(e).__name__))
            return GateResult(False, f"gate {hook.name!r} ({redact_http_url(hook.url)}) did "
                              f"not answer ({type(e).__name__}): holding before step {step}",
                              tuple(answers))
    return GateResult(True, f"{len(hooks)} gate(s) passed", tuple(answers))
