"""One request's database work: one transaction, run again after a lost race.

A lost race (see `races`) is retried with a short, jittered exponential
back-off, so that requests which collided do not collide again in lockstep,
and a bounded number of times. Any other integrity error is reported once,
as what it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from astara.api.auth import Caller
from astara.api.errors import NeutronError
from astara.api.http import races

log = logging.getLogger(__name__)
T = TypeVar("T")

ATTEMPTS = 12
# Seconds: the n-th retry waits a random time up to min(MAX, FIRST * 2**n).
FIRST_WAIT_S = 0.005
MAX_WAIT_S = 0.5

INTERNAL_ERROR = "Request Failed: internal server error while processing your request."


def internal_error() -> NeutronError:
    """Neutron's generic 500: the cause goes to the log, never to the client."""
    return NeutronError(500, "HTTPInternalServerError", INTERNAL_ERROR)


def _log_retry(state: RetryCallState) -> None:
    lost = state.outcome.exception() if state.outcome is not None else None
    log.debug("a transaction lost a race (run %d), runs again: %s", state.attempt_number, lost)


def retrying(attempts: int = ATTEMPTS) -> Retrying:
    return Retrying(
        retry=retry_if_exception(races.is_lost_race),
        wait=wait_random_exponential(multiplier=FIRST_WAIT_S, max=MAX_WAIT_S),
        stop=stop_after_attempt(attempts),
        before_sleep=_log_retry,
        reraise=True,
    )


def run_transaction(
    sessions: sessionmaker[Session],
    caller: Caller,
    work: Callable[[Session, Caller], T],
    attempts: int = ATTEMPTS,
) -> T:
    """`work(session, caller)` in one transaction, committed when it returns.
    Blocking: the API calls it in the thread pool."""

    def once() -> T:
        with sessions.begin() as session:
            return work(session, caller)

    try:
        return retrying(attempts)(once)
    except StaleDataError:
        raise NeutronError(409, "Conflict", "Too many concurrent changes; try again.") from None
    except IntegrityError as error:
        raise _reported(error) from None


def _reported(error: IntegrityError) -> NeutronError:
    found = races.violation(error)
    if found.lost_race:
        return NeutronError(409, "Conflict", "Too many concurrent changes; try again.")
    if found.constraint is races.Constraint.UNIQUE:
        log.warning("a request broke unique constraint %s: %s", found.name, error.orig)
        return NeutronError(409, "Conflict", "A resource with these values already exists.")
    if found.constraint is races.Constraint.FOREIGN_KEY:
        log.warning("a request broke a foreign key: %s", error.orig)
        return NeutronError(
            409,
            "Conflict",
            "The request refers to a resource that no longer exists, "
            "or removes one that is still in use.",
        )
    # A NOT NULL or anything else is our bug, not the caller's: log it whole.
    log.error("integrity error in a request", exc_info=error)
    return internal_error()
