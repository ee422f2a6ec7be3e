"""A throwaway PostgreSQL server for tests: its own data directory and unix
socket under /tmp, no TCP listener, gone when stopped."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from astara.testing.net import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def binaries() -> Path | None:
    """The newest installed server's bin directory, if any."""
    versions = sorted(PG_ROOT.glob("*/bin/pg_ctl")) if PG_ROOT.is_dir() else []
    return versions[-1].parent if versions else None


class PostgresServer:
    def __init__(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = found
        self.root = Path(tempfile.mkdtemp(prefix="astara-pg-"))
        self.data = self.root / "data"
        self.port = free_port()

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, timeout=120
        )

    def start(self) -> PostgresServer:
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        )
        # A unix socket in our own directory only: no TCP, nothing off the machine.
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=''"
            " -c fsync=off -c full_page_writes=off"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-w",
            "-l",
            str(self.root / "log"),
            "start",
        )
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.root}&port={self.port}"

    def create_database(self, icu_locale: str | None = None) -> str:
        """A fresh, empty database; returns its URL. `icu_locale`: its
        default collation is ICU's for that locale (say `en-US`, which
        orders "a" before "B", where code points put "B" first)."""
        import psycopg
        from psycopg import sql

        name = f"astara_{secrets.token_hex(6)}"
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if icu_locale is not None:
            # ICU collations need UTF-8, which initdb's locale may not have given.
            create += sql.SQL(
                " TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE {}"
            ).format(sql.Literal(icu_locale))
        with psycopg.connect(
            host=str(self.root), port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(create)
        return self.url(name)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "postgres",
                    "--",
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                ],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.root, ignore_errors=True)
