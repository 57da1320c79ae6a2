"""The store's schema, as sqlite-utils Migrations: one function per change, applied in order, recorded in
`_sqlite_migrations`. A landed migration is never edited; a new change is a new function at the end.

`PRAGMA user_version` mirrors the number of applied migrations, so `shd status` (read-only) can tell a database
that is newer than the code reading it.
"""

from __future__ import annotations

from sqlite_utils import Database, Migrations

migrations = Migrations("shd")


@migrations()
def m001_initial(db: Database) -> None:
    db.execute(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            source_name TEXT NOT NULL,      -- the file name the user dropped, for status and the output name
            origin_path TEXT NOT NULL,      -- where the file was found (inbox, or the path given to shd process)
            source_path TEXT,               -- where the file is now (the job folder once claimed)
            work_dir TEXT NOT NULL,
            mode TEXT NOT NULL,             -- 'daemon' (claimed from the inbox) or 'process' (left in place)
            output_target TEXT,             -- requested output path (shd process --output), else NULL
            state TEXT NOT NULL,
            error TEXT,
            output TEXT,
            fps REAL NOT NULL,
            duration REAL, width INTEGER, height INTEGER, has_audio INTEGER,
            frames_total INTEGER,           -- known once extraction has finished
            created_at REAL NOT NULL, updated_at REAL NOT NULL, started_at REAL, finished_at REAL
        )"""
    )
    db.execute(
        """
        CREATE TABLE frames (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            idx INTEGER NOT NULL,
            state TEXT NOT NULL,
            ts REAL NOT NULL,               -- the frame's timestamp in the source, seconds
            path TEXT NOT NULL,             -- extracted source frame (PNG)
            prompt TEXT,
            image_path TEXT,                -- painted frame once generated
            seed INTEGER,
            error TEXT,
            filled_with TEXT,               -- how the output slot was filled when this frame failed
            updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, idx)
        )"""
    )
    db.execute("CREATE INDEX frames_state ON frames(job_id, state)")
    db.execute(
        """
        CREATE TABLE predictions (          -- every paid call, recorded before it is sent and before it is waited on
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            job_id TEXT NOT NULL,
            frame_idx INTEGER NOT NULL,
            stage TEXT NOT NULL,            -- 'prompt' or 'image'
            attempt INTEGER NOT NULL,
            reason TEXT NOT NULL,           -- why this attempt exists: 'first', or what went wrong before it
            model TEXT NOT NULL,
            input_json TEXT NOT NULL,
            remote_id TEXT,                 -- Replicate's prediction id; NULL only while the create is in flight
            status TEXT NOT NULL,           -- creating, starting, processing, succeeded, failed, canceled, lost
            error TEXT,
            output_json TEXT,
            predict_time REAL,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, completed_at REAL
        )"""
    )
    db.execute("CREATE INDEX predictions_frame ON predictions(job_id, frame_idx, stage)")
    db.execute("CREATE UNIQUE INDEX predictions_remote ON predictions(remote_id) WHERE remote_id IS NOT NULL")
    db.execute(
        """
        CREATE TABLE events (               -- append-only log of state transitions
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            job_id TEXT NOT NULL,
            frame_idx INTEGER,
            prediction INTEGER,
            kind TEXT NOT NULL,             -- 'job', 'frame' or 'prediction'
            from_state TEXT,
            to_state TEXT NOT NULL,
            detail TEXT
        )"""
    )
    db.execute("CREATE INDEX events_job ON events(job_id)")


@migrations()
def m002_job_exit_code_and_overwrite(db: Database) -> None:
    # The exit code a failed job calls for, so that a `shd process` following a job worked by the daemon exits
    # as it would have; and `shd process --overwrite`, which the daemon must honour when it publishes such a job.
    db.execute("ALTER TABLE jobs ADD COLUMN exit_code INTEGER")
    db.execute("ALTER TABLE jobs ADD COLUMN overwrite INTEGER NOT NULL DEFAULT 0")


@migrations()
def m003_cost_and_reuse(db: Database) -> None:
    """The bill: each prediction's cost, content keys for reusing paid results, and a job's estimate and hold."""
    for column in (
        "cost_usd REAL",        # dollars: predict_time x the price in force when it finished; NULL: not billed
        "reuse_key TEXT",       # the content key of its result (model, inputs, the frame's bytes): see reuse.py
        "reused_from INTEGER",  # status 'reused': the paid prediction whose result was used instead of paying
        "saved_usd REAL",       # status 'reused': what that prediction cost, saved this time
    ):
        db.execute(f"ALTER TABLE predictions ADD COLUMN {column}")
    for column in (
        "estimate_usd REAL",       # the expected cost of the whole job (pricing.Estimate), once probed
        "estimate_seconds REAL",   # and the expected time of its predictions
        "held TEXT",               # why no new prediction of this job starts now (a budget cap), else NULL
    ):
        db.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
    db.execute("CREATE INDEX predictions_reuse ON predictions(reuse_key) WHERE reuse_key IS NOT NULL")
    db.execute("CREATE INDEX predictions_spend ON predictions(completed_at, cost_usd)")
    db.execute("CREATE INDEX predictions_live ON predictions(status)"
               " WHERE status IN ('creating', 'starting', 'processing')")
    # Predictions recorded before costs were kept are priced at this version's default prices.
    db.execute("UPDATE predictions SET cost_usd = predict_time * CASE"
               " WHEN model LIKE 'methexis-inc/img2prompt:%' THEN 0.000225"
               " WHEN model LIKE 'stability-ai/sdxl:%' THEN 0.000975 END WHERE predict_time IS NOT NULL")


@migrations()
def m004_job_source_and_settings_digests(db: Database) -> None:
    # What a `shd process` job is the work of (identity.py): the source's SHA-256 and a digest of the settings its
    # frames and predictions depend on, so that the same file run again resumes its unfinished job.
    db.execute("ALTER TABLE jobs ADD COLUMN source_sha256 TEXT")
    db.execute("ALTER TABLE jobs ADD COLUMN settings_sha256 TEXT")
    db.execute("CREATE INDEX jobs_source ON jobs(source_sha256)")


@migrations()
def m005_pairs(db: Database) -> None:
    """FILM transitions (output.transition = "film"): one row per gap between consecutive paintings, made once both
    are painted; its prediction is in the ledger with stage 'film' and frame_idx = the gap's first frame."""
    db.execute(
        """
        CREATE TABLE pairs (
            job_id TEXT NOT NULL REFERENCES jobs(id),
            idx INTEGER NOT NULL,           -- the gap from frame idx to frame idx + 1
            state TEXT NOT NULL,            -- painted, interpolating, interpolated, failed (states.PairState)
            clip_path TEXT,                 -- what FILM returned (an .mp4, or one .png for times_to_interpolate 1)
            error TEXT,
            filled_with TEXT,               -- what the video shows in this gap instead of FILM's frames, and why
            updated_at REAL NOT NULL,
            PRIMARY KEY (job_id, idx)
        )"""
    )


COSTS = 3  # the schema version from which the ledger has costs (m003): `shd status` may read an older database


def apply(db: Database) -> int:
    """Apply pending migrations; returns the schema version (number of applied migrations)."""
    migrations.apply(db)
    version = len(migrations.applied(db))
    db.execute(f"PRAGMA user_version = {version}")
    return version


PAIRS = 5  # the schema version from which the store has FILM's pairs (m005)
LATEST = len(migrations._migrations)
