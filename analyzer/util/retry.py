"""Retries with exponential backoff, in one place (tenacity underneath): the Prometheus client
and the notification workers retry through `retrying`, so attempts, waits and what counts as
retryable read the same everywhere."""

from __future__ import annotations

import time
from collections.abc import Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random_exponential,
)


def retrying(
    *,
    attempts: int,
    first_wait: float,
    max_wait: float,
    retry_if: Callable[[BaseException], bool],
    sleep: Callable[[float], object] = time.sleep,
    jitter: bool = False,
    before_retry: Callable[[int, BaseException], None] | None = None,
) -> Retrying:
    """A tenacity `Retrying` that makes at most `attempts` calls, waiting `first_wait`,
    2 x `first_wait`, ... (at most `max_wait`; random up to that with `jitter`) between them,
    retrying only exceptions for which `retry_if` is true, and re-raising the last exception
    when it gives up. `before_retry(attempt, exc)` runs before each wait (logging, counting);
    `sleep` may be an Event's `wait` so a shutdown cuts the wait short.

        retryer = retrying(attempts=3, first_wait=0.2, max_wait=2, retry_if=is_transient)
        result = retryer(fetch, url)
        retryer.statistics["attempt_number"]   # calls made
    """
    wait = (wait_random_exponential(multiplier=first_wait, max=max_wait) if jitter
            else wait_exponential(multiplier=first_wait, max=max_wait))

    def before_sleep(state: RetryCallState) -> None:
        if before_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                before_retry(state.attempt_number, exc)

    return Retrying(stop=stop_after_attempt(max(1, attempts)), wait=wait,
                    retry=retry_if_exception(retry_if), sleep=sleep, reraise=True,
                    before_sleep=before_sleep)
