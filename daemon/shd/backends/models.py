"""The two models' input and output shapes, over any Remote: what shd sends each and what it takes from its answer.

- `Prompter`: an image-to-prompt model shaped like methexis-inc/img2prompt (CLIP Interrogator): input `image`
  (the frame, made available through `Remote.upload`), output one string (or a list of string pieces).
- `Painter`: a text-to-image model shaped like stability-ai/sdxl: input `prompt` and `seed` (and `width`/`height`,
  and an `image` to paint over) over the configured defaults, output a list of image files (the first one is
  downloaded at once through `Remote.fetch`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shd import config
from shd.backends.base import Backend, ImageToPrompt, PromptToImage, Remote, Status, clean_prompt
from shd.errors import ModelFailed, OutputGone


class Prompter(ImageToPrompt):
    """Input `image` (+ configured extras), output one string."""

    def __init__(self, remote: Remote, ref: str, extra_input: Mapping[str, Any] | None = None):
        self.remote, self.ref, self.extra = remote, ref, dict(extra_input or {})

    def input_for(self, image: Path) -> dict[str, Any]:
        return self.input_with(self.remote.upload(image))

    def input_with(self, image: str) -> dict[str, Any]:
        return {**self.extra, "image": image}

    def result(self, status: Status) -> str:
        out = status.output
        if isinstance(out, list):
            out = "".join(str(o) for o in out)
        if out is None:
            raise OutputGone(f"prediction {status.remote_id} succeeded but its output was removed")
        prompt = clean_prompt(out)
        if not prompt:
            raise ModelFailed("the model returned an empty prompt")
        return prompt


class Painter(PromptToImage):
    """Input prompt (+ configured defaults and a seed), output a list of images."""

    def __init__(self, remote: Remote, ref: str, extra_input: Mapping[str, Any] | None = None):
        self.remote, self.ref, self.extra = remote, ref, dict(extra_input or {})

    def input_for(self, prompt: str, seed: int, *, size: tuple[int, int] | None = None,
                  image: Path | None = None) -> dict[str, Any]:
        inp = {**self.extra, "prompt": prompt, "seed": seed}
        if size is not None:
            inp["width"], inp["height"] = size
        if image is not None:
            inp["image"] = self.remote.upload(image)
        return inp

    def result(self, status: Status) -> bytes:
        out = status.output
        if out is None:
            raise OutputGone(f"prediction {status.remote_id} succeeded but its output was removed")
        items = out if isinstance(out, list) else [out]
        if not items:
            raise ModelFailed("model error: no image came back (all outputs filtered)", retry_with_new_seed=True)
        return self.remote.fetch(items[0])


def backend(remote: Remote, r: config.Replicate) -> Backend:
    """The configured models (`replicate.prompt_model`, `replicate.image_model` and their inputs) on `remote`."""
    return Backend(remote, Prompter(remote, r.prompt_model, r.prompt_input), Painter(remote, r.image_model,
                                                                                       r.image_input))
