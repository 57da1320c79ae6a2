"""One job's steps, through store, media and the scheduler: probe and estimate, extract (streaming frames to the
scheduler), wait for every frame to be painted or failed, fill the gaps by policy, stitch, verify, and publish.

  runner.py       JobRunner: a job sequenced through its states; failed, deferred or interrupted, and why
  context.py      what every step works with (config in force, store, engine, ffmpeg), and how a step stops short
  extraction.py   probe, estimate, the max_frames guard, frames extracted and offered to the scheduler
  painting.py     the job's unfinished frames and pairs offered again, and the wait until all are painted or failed
  assembly.py     fill, FILM's gaps, stitch, verify, and stage the video with its sidecars
  publishing.py   the staged set given its names in the outbox (or --output); an older staged set thrown away

No SQL and no ffmpeg argv here: those live in store/ and media/.
"""

from shd.pipeline.context import JobInterrupted, JobLeft
from shd.pipeline.runner import JobRunner, start_job_thread

__all__ = ["JobInterrupted", "JobLeft", "JobRunner", "start_job_thread"]
