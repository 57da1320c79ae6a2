"""The fake models served by the stand-in: schemas, deterministic outputs, and cheap solid-colour PNGs.

Each model is a pure function of its (defaulted) input: ``img2prompt`` returns :func:`prompt_for` of the image
bytes, ``sdxl`` returns ``num_outputs`` PNG URLs whose solid colour is :func:`color_for` ``(prompt, seed + i)``
(``width`` x ``height``; with an ``image`` (img2img) the image's size, as the real model paints),
``frame-interpolation`` (FILM, :func:`_run_film`) returns one URL: for ``times_to_interpolate`` k = 1 a PNG, the
two frames blended half and half; else a real, playable MP4 of 2^k + 1 frames at 30 fps whose first and last frames
are the inputs and whose frames between blend them (made with ffmpeg: no motion, but the shape and timing of the
real model's answer). Its network runs 2^k - 1 times, so its run time (and a fixed predict_time) is per run, times
2^k - 1 (``RunPlan.work``). The "official" ``flux-schnell`` is a text->image model usable through
``POST /v1/models/{owner}/{name}/predictions``.
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import random
import struct
import subprocess
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable

from . import schemas as S

JSON = dict[str, Any]

IMG2PROMPT_VERSION = "50adaf2d3ad20a6f911a8a9e3ccf777b263b8596fbd2c8fc26e8888f8a0edbb5"
SDXL_VERSION = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
FILM_VERSION = "4f88a16a13673a8b589c18866e540556170a5bcb2ccdc12de556e800e9456d3d"
FLUX_VERSION = "f2ab8a5bfe79f02f0789a146cf5e73d2a4ff2684a98c2b303d1e1ff3814271db"

IMG2PROMPT = f"methexis-inc/img2prompt:{IMG2PROMPT_VERSION}"
SDXL = f"stability-ai/sdxl:{SDXL_VERSION}"
FILM = f"google-research/frame-interpolation:{FILM_VERSION}"
FLUX = "black-forest-labs/flux-schnell"


def prompt_for(image_bytes: bytes) -> str:
    """The img2prompt output for an image: deterministic in the bytes, always ending with ``"\\n "``."""
    return "a painting of " + hashlib.sha256(image_bytes).hexdigest()[:12] + ", trending on artstation\n "


def color_for(prompt: str, seed: int | None) -> tuple[int, int, int]:
    """The solid RGB colour SDXL paints for ``(prompt, seed)``; each channel lies in 30..225."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}".encode()).digest()
    return (30 + digest[0] % 196, 30 + digest[1] % 196, 30 + digest[2] % 196)


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=256)
def solid_png(rgb: tuple[int, int, int], width: int, height: int) -> bytes:
    """Encode a ``width`` x ``height`` 8-bit RGB PNG filled with ``rgb`` (cached by arguments)."""
    row = b"\x00" + bytes(rgb) * width
    compressor = zlib.compressobj(6)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB, non-interlaced PNG whose rows use filter 0 (as :func:`solid_png` writes) into
    ``(width, height, distinct colours)``; a small helper for tests."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + 3 * width
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        row = raw[y * stride + 1:(y + 1) * stride]
        colours.update(set(zip(row[0::3], row[1::3], row[2::3])))
    return width, height, sorted(colours)


@dataclass(frozen=True)
class OutputFile:
    """An output file served under ``/delivery/{prediction_id}/{name}``; the bytes are made on demand."""

    content_type: str
    rgb: tuple[int, int, int] = (0, 0, 0)
    width: int = 0
    height: int = 0
    raw: bytes | None = None

    def content(self) -> bytes:
        """The file's bytes (a cached solid PNG unless ``raw`` is set)."""
        return self.raw if self.raw is not None else solid_png(self.rgb, self.width, self.height)


@dataclass
class RunPlan:
    """What a fake model run produces: output JSON, files to serve, and the material for its logs."""

    output: Any
    files: dict[str, OutputFile] = field(default_factory=dict)
    log_header: str = ""
    steps: int = 50
    seed: int | None = None
    work: int = 1               # runs of the model's network: its run time and predict_time are per run
    error: str | None = None    # the model fails with this error (it could not use its input)


@dataclass(frozen=True)
class Inputs:
    """A prediction's file inputs as the model receives them: bytes and the file's name, by field."""

    data: dict[str, bytes]
    names: dict[str, str]


# run(effective_input, file inputs, url_for_name, rng, num_outputs_override) -> RunPlan
RunFn = Callable[[JSON, Inputs, Callable[[str], str], random.Random, "int | None"], RunPlan]


def _pick_seed(inp: JSON, rng: random.Random) -> int:
    seed = inp.get("seed")
    return int(seed) if seed is not None else rng.randrange(0, 65536)


def _images(prompt: str, seed: int, count: int, width: int, height: int,
            url_for: Callable[[str], str]) -> tuple[list[str], dict[str, OutputFile]]:
    files = {f"out-{i}.png": OutputFile("image/png", color_for(prompt, seed + i), width, height)
             for i in range(count)}
    return [url_for(name) for name in files], files


def _run_img2prompt(inp: JSON, files: Inputs, url_for: Callable[[str], str], rng: random.Random,
                    n: int | None) -> RunPlan:
    return RunPlan(output=prompt_for(files.data.get("image", b"")), steps=4,
                   log_header="Loading CLIP model...\nInterrogating image\n")


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _run_sdxl(inp: JSON, files: Inputs, url_for: Callable[[str], str], rng: random.Random,
              n: int | None) -> RunPlan:
    seed = _pick_seed(inp, rng)
    count = inp["num_outputs"] if n is None else max(0, n)
    # img2img paints at the input image's size, ignoring width and height (replicate/cog-sdxl predict.py:
    # `width = sdxl_kwargs["image"].width`); inpainting and txt2img use them.
    size = _png_size(files.data.get("image", b"")) if inp.get("image") and not inp.get("mask") else None
    width, height = size or (inp["width"], inp["height"])
    urls, outs = _images(inp["prompt"], seed, count, width, height, url_for)
    mode = "inpaint mode" if inp.get("mask") else ("img2img mode" if inp.get("image") else "txt2img mode")
    header = f"Using seed: {seed}\nPrompt: {inp['prompt']}\n{mode}\n"
    return RunPlan(output=urls, files=outs, log_header=header, steps=inp["num_inference_steps"], seed=seed)


def _run_flux(inp: JSON, files: Inputs, url_for: Callable[[str], str], rng: random.Random,
              n: int | None) -> RunPlan:
    seed = _pick_seed(inp, rng)
    width, height = S.FLUX_ASPECT_RATIOS[inp["aspect_ratio"]]
    count = inp["num_outputs"] if n is None else max(0, n)
    urls, outs = _images(inp["prompt"], seed, count, width, height, url_for)
    return RunPlan(output=urls, files=outs, log_header=f"Using seed: {seed}\nrunning quantized prediction\n",
                   steps=4, seed=seed)


FILM_SUFFIXES = (".png", ".jpg", ".jpeg")
FILM_NAMES = "Please provide png or jpg images."  # FILM's predict.py asserts its frames' names (wording assumed)


def _run_film(inp: JSON, files: Inputs, url_for: Callable[[str], str], rng: random.Random,
              n: int | None) -> RunPlan:
    times = inp["times_to_interpolate"]
    work = 2 ** times - 1
    header = f"Interpolating {2 ** times + 1} frames\n"
    if not all(files.names.get(f, "").lower().endswith(FILM_SUFFIXES) for f in ("frame1", "frame2")):
        return RunPlan(output=None, steps=work, work=work, log_header=header, error=f"AssertionError: {FILM_NAMES}")
    try:
        name, out = film_output(files.data["frame1"], files.data["frame2"], times)
    except (KeyError, RuntimeError) as e:
        return RunPlan(output=None, steps=work, work=work, log_header=header,
                       error=f"Unknown image file format. One of JPEG, PNG, GIF, BMP required. ({e})")
    return RunPlan(output=url_for(name), files={name: out}, steps=work, work=work, log_header=header)


def film_output(first: bytes, second: bytes, times: int) -> tuple[str, OutputFile]:
    """FILM's answer for two pictures (see the module docstring), made with ffmpeg; RuntimeError if ffmpeg cannot
    read them."""
    from tests.videos import ffmpeg_exe  # the stand-in's only use of ffmpeg

    steps = 2 ** times
    w, h = _png_size(first) or (64, 64)  # FILM answers at its frames' size (a JPEG here: 64 x 64, a simplification)
    size = f"{max(2, w - w % 2)}:{max(2, h - h % 2)}"  # H.264 4:2:0 wants even sides
    # The blend's weight from the frame's time (T*30 is its number: blend's own N starts at 1 in the ffmpeg 9 here).
    weight = "1/2" if times == 1 else f"T*30/{steps}"
    graph = f"[0]scale={size},setsar=1[a];[1]scale={size},setsar=1[b];[a][b]blend=all_expr='A+(B-A)*{weight}'"
    with tempfile.TemporaryDirectory(prefix="standin-film-") as tmp:
        a, b = pathlib.Path(tmp, "frame1"), pathlib.Path(tmp, "frame2")
        a.write_bytes(first)
        b.write_bytes(second)
        args = ["-framerate", "30", "-loop", "1", "-i", str(a), "-framerate", "30", "-loop", "1", "-i", str(b)]
        if times == 1:
            out = pathlib.Path(tmp, "out.png")
            args += ["-filter_complex", graph + ",format=rgb24", "-frames:v", "1", "-update", "1", str(out)]
        else:
            out = pathlib.Path(tmp, "out.mp4")
            args += ["-filter_complex", graph + ",format=yuv420p", "-frames:v", str(steps + 1), "-r", "30",
                     "-c:v", "libx264", "-preset", "ultrafast", "-crf", "12", "-f", "mp4", str(out)]
        done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                              capture_output=True, timeout=60)
        if done.returncode != 0 or not out.exists():
            raise RuntimeError(done.stderr.decode(errors="replace").strip()[-300:] or "ffmpeg failed")
        data = out.read_bytes()
    if times == 1:
        return "out.png", OutputFile("image/png", raw=data)
    return "out.mp4", OutputFile("video/mp4", raw=data)


@dataclass(frozen=True)
class FakeModel:
    """A model/version known to the stand-in."""

    owner: str
    name: str
    version: str
    description: str
    version_created_at: str
    openapi: JSON
    run: RunFn
    official: bool = False
    hardware: str = "Nvidia L40S GPU"

    @property
    def full_name(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    @property
    def ref(self) -> str:
        """``owner/name:version``."""
        return f"{self.full_name}:{self.version}"

    def version_json(self) -> JSON:
        """The body of ``GET /v1/models/{owner}/{name}/versions/{id}``."""
        return {"id": self.version, "created_at": self.version_created_at, "cog_version": "0.8.6",
                "openapi_schema": self.openapi}

    def model_json(self) -> JSON:
        """The body of ``GET /v1/models/{owner}/{name}``."""
        return {"url": f"https://replicate.com/{self.full_name}", "owner": self.owner, "name": self.name,
                "description": self.description, "visibility": "public", "github_url": None, "paper_url": None,
                "license_url": None, "run_count": 1000, "cover_image_url": None, "default_example": None,
                "latest_version": self.version_json(), "is_official": self.official}


MODELS: list[FakeModel] = [
    FakeModel("methexis-inc", "img2prompt", IMG2PROMPT_VERSION,
              "Get an approximate text prompt, with style, matching an image. "
              "(Optimized for stable-diffusion (clip ViT-L/14))", "2022-08-24T05:43:53.361543Z",
              S.openapi_schema(S.IMG2PROMPT_INPUT, S.STRING_OUTPUT), _run_img2prompt, hardware="Nvidia T4 GPU"),
    FakeModel("stability-ai", "sdxl", SDXL_VERSION,
              "A text-to-image generative AI model that creates beautiful images", "2023-11-06T23:13:07.906314Z",
              S.openapi_schema(S.SDXL_INPUT, S.URI_LIST_OUTPUT, S.SDXL_ENUMS), _run_sdxl),
    FakeModel("google-research", "frame-interpolation", FILM_VERSION,
              "Frame Interpolation for Large Motion", "2022-05-13T02:34:10.478123Z",
              S.openapi_schema(S.FILM_INPUT, S.URI_OUTPUT), _run_film),
    FakeModel("black-forest-labs", "flux-schnell", FLUX_VERSION,
              "The fastest image generation model tailored for local development and personal use",
              "2024-07-30T00:00:00.000000Z", S.openapi_schema(S.FLUX_INPUT, S.URI_LIST_OUTPUT, S.FLUX_ENUMS),
              _run_flux, official=True, hardware="Nvidia H100 GPU"),
]
BY_NAME: dict[str, FakeModel] = {m.full_name: m for m in MODELS}
BY_VERSION: dict[str, FakeModel] = {m.version: m for m in MODELS}


def resolve_version(ref: str) -> FakeModel | None:
    """Resolve the ``version`` of a create body: ``VID``, ``owner/name:VID`` or (official only) ``owner/name``."""
    if ":" in ref:
        name, _, vid = ref.partition(":")
        model = BY_VERSION.get(vid)
        return model if model is not None and model.full_name == name else None
    if "/" in ref:
        model = BY_NAME.get(ref)
        return model if model is not None and model.official else None
    return BY_VERSION.get(ref)


def tqdm_line(done: int, total: int, elapsed: float) -> str:
    """A tqdm-style progress line, parseable by ``Prediction.progress``."""
    pct = int(100 * done / total) if total else 100
    filled = pct // 10
    bar = "█" * filled + " " * (10 - filled)
    rate = done / elapsed if elapsed > 0 else 0.0
    remaining = (total - done) / rate if rate > 0 else 0.0
    return (f"{pct:3d}%|{bar}| {done}/{total} [00:{min(int(elapsed), 59):02d}<00:{min(int(remaining), 59):02d}, "
            f"{rate:.2f}it/s]\n")


def progress_logs(header: str, steps: int, fraction: float, run_time: float) -> str:
    """Logs after ``fraction`` (0..1) of the run: the header then a tqdm line per ~10% of the steps."""
    fraction = min(max(fraction, 0.0), 1.0)
    done = int(steps * fraction)
    marks = sorted({0, *(round(steps * i / 10) for i in range(1, 11))})
    lines = [tqdm_line(k, steps, run_time * k / steps if steps else 0.0) for k in marks if k <= done]
    return header + "".join(lines)
