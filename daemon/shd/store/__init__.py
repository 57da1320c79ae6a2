"""ALL of shd's SQL: jobs, frames, FILM's pairs, the ledger of paid predictions, and the append-only event log.

Contract:
- One writer `Store` per database, shared by the daemon's threads; every method is one transaction
  (`BEGIN IMMEDIATE`, so a read-modify-write never meets SQLITE_BUSY halfway), guarded by one lock.
- WAL mode. A transaction is durable (`synchronous=FULL`: fsynced before COMMIT returns) unless its caller says
  that losing it to a power cut costs only work that a restart redoes for free (`durable=False`: a recorded
  frame, a frame's next state, a remote id). The ledger row of a paid call is always durable, and since the
  WAL is one sequential file, each durable commit also makes every commit before it durable.
- Every state change is checked by `shd.states` inside its transaction and logged in `events`; an illegal one
  raises IllegalTransition and writes nothing.
- `Store.open_readonly()` is for `shd status`: it never writes and never blocks the daemon (WAL readers don't).
- No sqlite3 exception leaves this package: a full disk raises DiskFull, a corrupt file DatabaseDamaged (and sets
  `damaged`, for the daemon to stop on), anything else StoreError; each names the database file.
- The database file is created 0600, in a 0700 folder.

How it is cut: one module per table or concern, each a mixin class over one base (`Connection`), and `Store` (here)
their union. Callers keep one object, and every part shares its one connection, lock and transaction: a move in one
part joins another part's transaction (`reuse_result` moves a frame inside its ledger write). A facade over separate
objects would have forwarded every method by hand.
- connection.py  `Connection`, the base: opening (and read-only opening), `tx` and durability, `_one` / `_all`,
                 the event log's writer `_event`, and the sqlite3 errors mapped to shd's.
- rows.py        the dataclasses the queries return: Job, Frame, Pair, Prediction.
- jobs.py        `Jobs`: the jobs table.
- frames.py      `Frames`: the frames table, and the checked, logged move that pairs share (`_move`).
- pairs.py       `Pairs(Frames)`: FILM's pairs.
- ledger.py      `Ledger(Pairs)`: the predictions table, recorded before each paid call; reuse of paid results.
- reports.py     `Reports`: spend and status aggregates for the budget, `shd status`, the web page and /metrics.
A part inherits the parts whose methods it calls (the ledger moves frames and pairs; a pair moves as a frame does),
so that each module type-checks on its own.
"""

from __future__ import annotations

from shd.store.connection import SQLITE_CORRUPT, SQLITE_FULL, SQLITE_IOERR, SQLITE_NOTADB
from shd.store.jobs import Jobs
from shd.store.ledger import LIVE_PREDICTION, SUBJECTS, Ledger
from shd.store.reports import Reports
from shd.store.rows import Frame, Job, Pair, Prediction

__all__ = [
    "LIVE_PREDICTION", "SQLITE_CORRUPT", "SQLITE_FULL", "SQLITE_IOERR", "SQLITE_NOTADB", "SUBJECTS",
    "Frame", "Job", "Pair", "Prediction", "Store",
]


class Store(Jobs, Ledger, Reports):
    """The writer. Construct with `Store.open(path)`."""
