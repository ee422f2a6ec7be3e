"""Database engines and sessions: SQLite (WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{state_dir / 'astara.sqlite'}"


def make_engine(url: str) -> Engine:
    """An engine for `url`. SQLite gets WAL (readers never block the writer),
    enforced foreign keys and a busy timeout instead of instant 'locked' errors."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    # No JIT compilation: it pays off for long analytical queries, and made
    # a 10,000-row list (whose estimated cost crosses jit_above_cost) spend
    # 1.5 s compiling before its 10 ms of work. A session left idle inside a
    # transaction for a minute is ended by the server: a process paused or
    # hung there (an orchestrator stopped mid-transaction) would otherwise
    # hold its row locks, and the member taking its routers over would wait
    # on them for as long as it stays stopped. No transaction here waits
    # that long between two statements.
    return create_engine(
        url,
        pool_pre_ping=True,
        connect_args={
            "options": f"-c jit=off -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
        },
    )


IDLE_IN_TRANSACTION_MS = 60_000


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
