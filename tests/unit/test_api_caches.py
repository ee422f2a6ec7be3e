"""What the tenant API keeps in memory between requests: the token cache
(`auth.TokenCache`) and the collector paused while lists are built
(`sql_query.collector_paused`)."""

from __future__ import annotations

import gc

from astara.api import sql_query
from astara.api.auth import Caller, TokenCache

TOKEN = ("digest", None)
CALLER = Caller("project", "p", False)


def test_a_lookup_that_began_before_a_clear_is_not_kept() -> None:
    """A project deleted here clears the cache; a lookup that read the
    project before the delete committed must not put its token back."""
    tokens = TokenCache(ttl_s=5, clock=lambda: 0.0)
    began = tokens.generation
    tokens.clear()  # the delete commits meanwhile
    tokens.put(TOKEN, CALLER, 0.0, began)
    assert tokens.get(TOKEN) is None
    tokens.put(TOKEN, CALLER, 0.0, tokens.generation)
    assert tokens.get(TOKEN) == CALLER


def test_the_collector_comes_back_when_the_last_list_ends() -> None:
    """Lists built at once: the first one out must not turn the collector
    on under the other, and the last one out must turn it on again."""
    assert gc.isenabled()
    first, second = sql_query.collector_paused(), sql_query.collector_paused()
    try:
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not gc.isenabled()
        second.__exit__(None, None, None)
        assert gc.isenabled()
    finally:
        gc.enable()
