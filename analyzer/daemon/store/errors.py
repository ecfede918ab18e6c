"""What can go wrong in the store, as callers need to tell it apart: the database cannot be used
(HTTP 503), a request does not fit the rollout's state (409), no such rollout (404), or a tick
was already committed (a replica lost a race)."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store error; raised as such for a store that cannot be set up (a bad URL,
    a schema newer than this version understands)."""


class StoreUnavailable(StoreError):
    """The database does not answer or refuses the transaction right now (retry later)."""


class InvalidCommand(StoreError):
    """The request does not fit the rollout's state (e.g. promote a finished rollout)."""


class RolloutExists(InvalidCommand):
    """An active rollout of this policy exists already."""


class NotFound(StoreError):
    """No rollout of that name or id."""


class TickConflict(StoreError):
    """The tick was already committed (by this or another replica): nothing was written."""
