"""The store's connection and what every part of it builds on: opening (created 0600 and migrated; read-only for
`shd status`), one lock, transactions and their durability, the two query helpers, the event log's writer, and what
each sqlite3 exception means for shd (DiskFull, DatabaseDamaged, StoreError). The package docstring has the contract."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from sqlite_utils import Database

from shd import diskfull, migrations
from shd.errors import DatabaseDamaged, DiskFull, ShdError, StoreError

# SQLite's primary result codes (the low byte of sqlite3.Error.sqlite_errorcode).
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26


class Connection:
    """One SQLite connection, its lock and its transactions; each other part of the store is a mixin over it."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool = False):
        self._conn = conn
        self.db = Database(conn)
        self.path = path
        self.readonly = readonly
        self._lock = threading.RLock()
        self._depth = 0
        self._durable = True
        self.damaged: DatabaseDamaged | None = None  # set once SQLite has found the file corrupt
        self.schema = migrations.LATEST  # a read-only store may be older (the daemon migrates it at its next start)

    def _error(self, e: sqlite3.Error, what: str = "") -> ShdError:
        """The ShdError that says what an sqlite3 exception means for shd (see the package docstring)."""
        code = (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF
        if code == SQLITE_FULL or (code == SQLITE_IOERR and diskfull.nearly_full(self.path.parent)):
            return DiskFull(self.path, "the database cannot grow")
        if code in (SQLITE_CORRUPT, SQLITE_NOTADB) or type(e) is sqlite3.DatabaseError:
            self.damaged = DatabaseDamaged(self.path, str(e))
            return self.damaged
        return StoreError(f"{self.path}: {what}{e}")

    # --- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path, *, check: bool = False) -> Self:
        """Open (creating if needed) the database at `path` and migrate it to the latest schema. `check`: first run
        SQLite's quick_check over the whole file, so that a damaged database stops shd before it touches anything."""
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))  # sqlite3 would create it world-readable
        except OSError as e:
            if diskfull.is_full(e):
                raise DiskFull(path, "cannot create the database") from None
            raise StoreError(f"{path}: cannot create the database: {e.strerror or e}") from None
        conn: sqlite3.Connection | None = None
        store: Self | None = None
        try:
            conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
            store = cls(conn, path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            if check:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise DatabaseDamaged(path, "; ".join(problems))
            with store._lock:
                migrations.apply(store.db)
            return store
        except (sqlite3.Error, ShdError) as e:
            if conn is not None:
                conn.close()
            if isinstance(e, ShdError):
                raise
            if store is None:
                raise StoreError(f"{path}: cannot open the database: {e}") from None
            raise store._error(e, "cannot open the database: ") from None

    @classmethod
    def open_readonly(cls, path: Path) -> Self:
        """Open an existing database for reading only (shd status); raises StoreError if it is missing or too new."""
        if not path.exists():
            raise StoreError(f"{path}: no database yet (has shd run with this config?)")
        try:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
        except sqlite3.Error as e:
            raise StoreError(f"{path}: cannot read the database: {e}") from None
        store = cls(conn, path, readonly=True)
        try:
            conn.execute("PRAGMA query_only=ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as e:
            conn.close()
            raise store._error(e, "cannot read the database: ") from None
        if version > migrations.LATEST:
            conn.close()
            raise StoreError(f"{path}: schema version {version} is newer than this shd understands")
        store.schema = version
        return store

    def close(self) -> None:
        with self._lock:
            try:
                self._conn.close()
            except sqlite3.Error as e:
                raise self._error(e) from None

    # --- transactions -------------------------------------------------------------------------------------------
    @contextmanager
    def tx(self, *, durable: bool = True) -> Iterator[Database]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT); nested calls join the outer one (and its durability).
        `durable=False` skips the fsync: only for what a restart can redo without paying (see the package doc)."""
        with self._lock:
            if self._depth:
                if durable and not self._durable:
                    raise StoreError("a durable write cannot join a transaction that is not durable")
                self._depth += 1
                try:
                    yield self.db
                finally:
                    self._depth -= 1
                return
            try:
                if not durable:  # the safety level can only change outside a transaction
                    self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                self._restore_sync(durable)
                raise self._error(e) from None
            self._depth, self._durable = 1, durable
            try:
                yield self.db
            except sqlite3.Error as e:
                self._rollback()
                raise self._error(e) from None
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    self._conn.execute("COMMIT")
                except sqlite3.Error as e:
                    self._rollback()
                    raise self._error(e, "commit failed: ") from None
            finally:
                self._depth = 0
                self._restore_sync(durable)

    def _rollback(self) -> None:
        """Roll back the open transaction, if SQLite has not already (it does after some errors, e.g. a full disk)."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # nothing was committed; the error that brought us here is the one to report

    def _restore_sync(self, durable: bool) -> None:
        if not durable:
            try:
                self._conn.execute("PRAGMA synchronous=FULL")
            except sqlite3.Error as e:
                raise self._error(e) from None

    # --- queries and the event log ------------------------------------------------------------------------------
    def _one(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> dict[str, Any] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _all(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        # The raw cursor, not db.query(): this runs several times per frame and sqlite-utils' parsing of the
        # statement costs more than the query itself.
        with self._lock:
            try:
                if self.readonly and not self.schema and not self._created():
                    return []  # the writer is still creating the database: nothing is recorded yet
                cur = self._conn.execute(sql, params)
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, r)) for r in cur.fetchall()]
            except sqlite3.Error as e:
                raise self._error(e) from None

    def _created(self) -> bool:
        """Whether the database a read-only store was opened on while its writer was creating it is complete now:
        its schema version is written once every migration has run (and is then this store's)."""
        self.schema = self._conn.execute("PRAGMA user_version").fetchone()[0]
        return bool(self.schema)

    def _event(self, job_id: str, kind: str, old: str | None, new: str, *, frame: int | None = None,
               prediction: int | None = None, detail: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO events (at, job_id, frame_idx, prediction, kind, from_state, to_state, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), job_id, frame, prediction, kind, old, new, detail),
        )
