"""What makes two runs of `shd process` the same work: the same source content and the same settings that shape
what is paid for. `shd process` on a file whose earlier job is unfinished (interrupted by Ctrl-C, a crash, a
refused token) resumes that job instead of paying for every frame again.

- `file_digest(path)`: the SHA-256 of the file's bytes (its name and place do not matter: a moved file is the same
  video).
- `settings_digest(cfg)`: the SHA-256 of the settings baked into the recorded work: `pipeline.fps` (the frames) and
  the models, their inputs, `replicate.seed` and `replicate.image_from` (the predictions). Everything else (audio,
  fit, quality, transitions, the output name) is applied when the video is stitched and published, so a resumed job
  uses the values in force then (FILM's pairs are made with the settings in force as each starts: a job resumed
  with `output.transition = "film"` gets its missing pairs, and its clips are placed however many frames they hold).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from pathlib import Path

from shd.config import Config

CHUNK = 1 << 20


def file_digest(path: Path) -> str:
    """SHA-256 of the file's content (hex); OSError if it cannot be read or is not a regular file (opened without
    blocking and checked first: a FIFO would wait for a writer for ever, a device such as /dev/zero never end)."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def settings_digest(cfg: Config) -> str:
    """SHA-256 (hex) of the settings a job's recorded frames and predictions depend on."""
    r = cfg.replicate
    shaping = {"fps": cfg.pipeline.fps, "prompt_model": r.prompt_model, "image_model": r.image_model,
               "prompt_input": dict(r.prompt_input), "image_input": dict(r.image_input), "seed": r.seed,
               "image_from": r.image_from}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()
