"""The config file: TOML in, frozen dataclasses out, every problem reported at once.

Where it is found: `--config FILE`, else `$SHD_CONFIG`, else the first of `DEFAULT_LOCATIONS` that exists, else the
built-in defaults (`DEFAULT_PATHS`, in the home directory). Relative paths in a file resolve against the file's
folder (and a file that leaves a path out keeps it there); `~` is the home directory.

`load()` either returns a complete, valid `Config` or raises `ConfigError(path, problems)` naming every unknown key,
wrong type and impossible value, whatever TOML value of whatever type is where (tests/unit/test_config.py checks
that with random values in every key and table), and every configured model without a price; nothing starts on a bad
config and a reload keeps the old one. Numbers must be finite and at most MAX_NUMBER (a timeout of 1e308 s would
overflow a wait), paths must not contain NUL. The Replicate token is deliberately not a config key: see
`read_token()`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shd import budget, pricing
from shd.errors import ConfigError, TokenMissing

IMG2PROMPT = "methexis-inc/img2prompt:50adaf2d3ad20a6f911a8a9e3ccf777b263b8596fbd2c8fc26e8888f8a0edbb5"
SDXL = "stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b"
FILM = "google-research/frame-interpolation:4f88a16a13673a8b589c18866e540556170a5bcb2ccdc12de556e800e9456d3d"

# The first version's SDXL inputs (../shared/docs/first-version.md), used unless [replicate.image_input] overrides
# them; all but its size (1024x768): `width` and `height` follow each source's shape (shape.painting_for) unless the
# config gives them.
DEFAULT_IMAGE_INPUT: dict[str, Any] = {
    "refine": "expert_ensemble_refiner",
    "scheduler": "K_EULER",
    "lora_scale": 0.6,
    "num_outputs": 1,
    "guidance_scale": 7.5,
    "apply_watermark": False,
    "high_noise_frac": 0.8,
    "negative_prompt": "",
    "prompt_strength": 0.8,
    "num_inference_steps": 25,
}
TRANSITIONS = ("cut", "crossfade", "motion", "film")

DEFAULT_LOCATIONS = (
    Path("shd.toml"),
    Path.home() / ".config" / "shd" / "shd.toml",
    Path("/etc/shd/shd.toml"),
)

# Where the work goes when there is no config file at all (config/shd.toml says the same): in the user's home, so
# every command finds the same state wherever it is run from, and nothing lands in a git checkout. A config file
# that leaves a path out keeps it beside itself (FILE_PATHS, resolved against its folder).
DEFAULT_PATHS = {"inbox": "~/shd/inbox", "outbox": "~/shd/outbox", "state_dir": "~/.local/state/shd"}
FILE_PATHS = {"inbox": "inbox", "outbox": "outbox", "state_dir": "state"}

TOKEN_CREDENTIAL = "replicate_token"


@dataclass(frozen=True)
class Paths:
    inbox: Path
    outbox: Path
    state_dir: Path

    @property
    def database(self) -> Path:
        return self.state_dir / "shd.db"

    @property
    def jobs_dir(self) -> Path:
        return self.state_dir / "jobs"

    @property
    def failed_dir(self) -> Path:
        return self.state_dir / "failed"


@dataclass(frozen=True)
class Watch:
    observer: str = "inotify"
    stable_seconds: float = 5.0
    poll_interval: float = 1.0
    rescan_interval: float = 60.0


@dataclass(frozen=True)
class Pipeline:
    fps: float = 1.0
    audio: str = "auto"
    on_frame_failure: str = "hold"
    fit: str = "pad"
    output_fps: int = 30
    crf: int = 18
    max_jobs: int = 4
    max_frames: int = 3600


@dataclass(frozen=True)
class Replicate:
    concurrency: int = 8
    prompt_model: str = IMG2PROMPT
    image_model: str = SDXL
    film_model: str = FILM
    image_input: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_IMAGE_INPUT))
    prompt_input: Mapping[str, Any] = field(default_factory=dict)
    token_file: Path | None = None
    seed: int | None = None
    create_wait: int = 5
    poll_interval: float = 0.5
    prediction_timeout: float = 900.0
    request_timeout: float = 30.0
    inline_max_kb: int = 0
    max_attempts: int = 5
    model_retries: int = 3
    creations_per_minute: float = 600.0
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    auth_recheck: float = 30.0
    unreachable_patience: float = 300.0
    reuse: str = "prompts"
    image_from: str = "none"


@dataclass(frozen=True)
class Output:
    transition: str = "cut"
    transition_seconds: float = 0.5
    subtitles: bool = True
    times_to_interpolate: int = 4

    @property
    def film(self) -> bool:
        """Each gap between consecutive paintings is interpolated by FILM (a paid prediction per pair)."""
        return self.transition == "film"


@dataclass(frozen=True)
class FFmpeg:
    path: str | None = None
    timeout: float = 3600.0


@dataclass(frozen=True)
class Log:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class Budget:
    per_job_usd: float | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    timezone: str = "UTC"

    @property
    def caps(self) -> budget.Caps:
        return budget.Caps(self.per_job_usd, self.daily_usd, self.monthly_usd)


@dataclass(frozen=True)
class Web:
    listen: str = "127.0.0.1:8787"
    actions: bool = False


@dataclass(frozen=True)
class Hooks:
    command: str = ""
    webhook: str = ""
    secret_file: Path | None = None
    timeout: float = 10.0
    retries: int = 3


@dataclass(frozen=True)
class Config:
    source: Path | None
    paths: Paths
    watch: Watch = Watch()
    pipeline: Pipeline = Pipeline()
    replicate: Replicate = field(default_factory=Replicate)
    ffmpeg: FFmpeg = FFmpeg()
    log: Log = Log()
    budget: Budget = Budget()
    prices: Mapping[str, pricing.Price] = field(default_factory=lambda: dict(pricing.DEFAULT_PRICES))
    web: Web = Web()
    hooks: Hooks = Hooks()
    output: Output = Output()


# --- validation rules: (type, check, what is allowed) per key --------------------------------------------------

Check = Callable[[Any], bool]


MAX_NUMBER = 1e9  # seconds, counts, rates: far above any sensible value, far below what a wait can take


def _positive(v: Any) -> bool:
    return bool(0 < v <= MAX_NUMBER)


def _non_negative(v: Any) -> bool:
    return bool(0 <= v <= MAX_NUMBER)


def _path(v: Any) -> bool:
    return "\0" not in v


def _one_of(*choices: str) -> tuple[Check, str]:
    return (lambda v: v in choices), "one of " + ", ".join(repr(c) for c in choices)


def _model_ref(v: Any) -> bool:
    owner_name, _, version = str(v).partition(":")
    return owner_name.count("/") == 1 and all(owner_name.split("/")) and len(version) >= 8


def _model_name(v: Any) -> bool:
    """'owner/name' or 'owner/name:version' (a [prices] key)."""
    owner_name, colon, version = str(v).partition(":")
    return owner_name.count("/") == 1 and all(owner_name.split("/")) and (not colon or len(version) >= 8)


def _time_zone(v: Any) -> bool:
    try:
        budget.zone(v)
    except (KeyError, ValueError, OSError):  # an unknown zone is a KeyError (ZoneInfoNotFoundError), a malformed one
        return False                         # a ValueError
    return True


def parse_listen(v: str) -> tuple[str, int] | None:
    """`[web] listen` as (host, port): an IP address (IPv6 in brackets) or `localhost`, a colon and a port
    (0: any free port). None for "" (the page is off). ValueError says what is wrong."""
    if v == "":
        return None
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("needs a port, e.g. '127.0.0.1:8787'")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ipaddress.ip_address(host).version != 6:
            raise ValueError("only IPv6 addresses go in brackets")
    elif host != "localhost":
        if ipaddress.ip_address(host).version != 4:  # a bare IPv6 address is ambiguous with the port's colon
            raise ValueError("write an IPv6 address in brackets: '[::1]:8787'")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _listen(v: Any) -> bool:
    try:
        parse_listen(v)
        return True
    except ValueError:
        return False


def _command(v: Any) -> bool:
    try:
        return v == "" or bool(shlex.split(v))
    except ValueError:
        return False


def _http_url(v: Any) -> bool:
    if v == "":
        return True
    try:
        parts = urlsplit(v)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


_NUM = (int, float)
_POS = (_positive, f"a number > 0 and <= {MAX_NUMBER:g}")
_NONNEG = (_non_negative, f"a number >= 0 and <= {MAX_NUMBER:g}")
_PATH = (_path, "a path without NUL characters")

RULES: dict[str, dict[str, tuple[Any, tuple[Check, str] | None]]] = {
    "paths": {"inbox": (str, _PATH), "outbox": (str, _PATH), "state_dir": (str, _PATH)},
    "watch": {
        "observer": (str, _one_of("inotify", "polling")),
        "stable_seconds": (_NUM, _NONNEG),
        "poll_interval": (_NUM, _POS),
        "rescan_interval": (_NUM, _POS),
    },
    "pipeline": {
        "fps": (_NUM, (lambda v: 0 < v <= 60, "a number > 0 and <= 60")),
        "audio": (str, _one_of("auto", "none")),
        "on_frame_failure": (str, _one_of("hold", "source", "fail")),
        "fit": (str, _one_of("pad", "crop", "stretch")),
        "output_fps": (int, (lambda v: 1 <= v <= 120, "an integer from 1 to 120")),
        "crf": (int, (lambda v: 0 <= v <= 51, "an integer from 0 to 51")),
        "max_jobs": (int, (lambda v: v >= 1, "an integer >= 1")),
        "max_frames": (int, (lambda v: v >= 1, "an integer >= 1")),
    },
    "replicate": {
        "concurrency": (int, (lambda v: 1 <= v <= 256, "an integer from 1 to 256")),
        "prompt_model": (str, (_model_ref, "a model ref 'owner/name:version'")),
        "image_model": (str, (_model_ref, "a model ref 'owner/name:version'")),
        "film_model": (str, (_model_ref, "a model ref 'owner/name:version'")),
        "image_input": (dict, None),
        "prompt_input": (dict, None),
        "token_file": (str, _PATH),
        "seed": (int, (lambda v: 0 <= v < 2**32, "an integer from 0 to 4294967295")),
        "create_wait": (int, (lambda v: 1 <= v <= 60, "an integer from 1 to 60 (seconds; Replicate's Prefer: wait)")),
        "poll_interval": (_NUM, _POS),
        "prediction_timeout": (_NUM, _POS),
        "request_timeout": (_NUM, _POS),
        "inline_max_kb": (int, (lambda v: 0 <= v <= 10240, "an integer from 0 to 10240 (KB; 0 uploads every frame)")),
        "max_attempts": (int, (lambda v: v >= 1, "an integer >= 1")),
        "model_retries": (int, (lambda v: v >= 0, "an integer >= 0")),
        "creations_per_minute": (_NUM, _POS),
        "backoff_base": (_NUM, _POS),
        "backoff_max": (_NUM, _POS),
        "auth_recheck": (_NUM, _POS),
        "unreachable_patience": (_NUM, _POS),
        "reuse": (str, _one_of("prompts", "all", "none")),
        "image_from": (str, _one_of("none", "source")),
    },
    "output": {
        "transition": (str, _one_of(*TRANSITIONS)),
        "transition_seconds": (_NUM, _POS),
        "subtitles": (bool, None),
        "times_to_interpolate": (int, (lambda v: 1 <= v <= 8, "an integer from 1 to 8 (FILM's own limits)")),
    },
    "ffmpeg": {"path": (str, _PATH), "timeout": (_NUM, _POS)},
    "web": {
        "listen": (str, (_listen, "'' (off) or 'HOST:PORT' with an IP address or localhost, e.g. "
                                  "'127.0.0.1:8787' or '[::1]:8787'")),
        "actions": (bool, None),
    },
    "hooks": {
        "command": (str, (_command, "a command line (split like a shell does, run without one)")),
        "webhook": (str, (_http_url, "'' or an http:// or https:// URL")),
        "secret_file": (str, _PATH),
        "timeout": (_NUM, _POS),
        "retries": (int, (lambda v: 0 <= v <= 20, "an integer from 0 to 20")),
    },
    "log": {
        "level": (str, _one_of("debug", "info", "warning", "error")),
        "format": (str, _one_of("auto", "console", "json", "journal")),
    },
    "budget": {
        "per_job_usd": (_NUM, _POS),
        "daily_usd": (_NUM, _POS),
        "monthly_usd": (_NUM, _POS),
        "timezone": (str, (_time_zone, "a time zone name such as 'UTC' or 'Europe/Berlin'")),
    },
}

# [prices."owner/name"] (or "owner/name:version"): each model's table, merged over pricing.DEFAULT_PRICES.
PRICE_RULES: dict[str, tuple[Any, tuple[Check, str] | None]] = {
    "per_second": (_NUM, _NONNEG),
    "per_output": (_NUM, _NONNEG),
    "typical_seconds": (_NUM, _POS),
}

_TYPE_NAMES = {str: "a string", int: "an integer", dict: "a table", _NUM: "a number", bool: "true or false"}


def _check_table(name: str, table: Mapping[str, Any], rules: Mapping[str, tuple[Any, tuple[Check, str] | None]],
                 problems: list[str]) -> None:
    for key, v in table.items():
        rule = rules.get(key)
        if rule is None:
            problems.append(f"unknown key {name}.{key} (known: {', '.join(rules)})")
            continue
        typ, check = rule
        if (isinstance(v, bool) and typ is not bool) or not isinstance(v, typ):
            problems.append(f"{name}.{key} must be {_TYPE_NAMES[typ]}, not {_short(v)}")
        elif isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{name}.{key} = {v!r} is not allowed: must be a finite number")
        elif check is not None and not check[0](v):
            problems.append(f"{name}.{key} = {_short(v)} is not allowed: must be {check[1]}")
        elif typ is dict:
            problems += [f"{name}.{key}.{k} must be a string, a finite number or a boolean, not {_short(x)}"
                         for k, x in v.items() if not _model_input(x)]


def _validate(raw: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    for section, value in raw.items():
        if section not in RULES and section != "prices":
            problems.append(f"unknown section [{section}] (known: {', '.join([*RULES, 'prices'])})")
            continue
        if not isinstance(value, dict):
            problems.append(f"[{section}] must be a table")
            continue
        if section != "prices":
            _check_table(section, value, RULES[section], problems)
            continue
        for model, table in value.items():
            if not _model_name(model):
                problems.append(f"[prices.{_short(model)}]: the key must be a model, 'owner/name' or "
                                "'owner/name:version'")
            elif not isinstance(table, dict):
                problems.append(f"prices.{model!r} must be a table (per_second, per_output, typical_seconds)")
            else:
                _check_table(f"prices.{model!r}", table, PRICE_RULES, problems)
    return problems


def _model_input(v: Any) -> bool:
    """A value a model input may take from the config: a string, a boolean or a finite number."""
    return isinstance(v, (str, int, bool)) or (isinstance(v, float) and math.isfinite(v))


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _unpriced(cfg: Config) -> list[str]:
    """A configured model without a price cannot be counted against a budget: say which, and how to add one."""
    r = cfg.replicate
    paid = [("prompt_model", r.prompt_model), ("image_model", r.image_model)]
    if cfg.output.film:
        paid.append(("film_model", r.film_model))
    return [f"replicate.{key} {ref!r} has no price: add [prices.\"{ref.partition(':')[0]}\"] per_second = ... "
            f"(dollars per second of predict_time; see the README, \"What it costs\")"
            for key, ref in paid if pricing.price_for(cfg.prices, ref) is None]


def _unseen(cfg: Config) -> list[str]:
    """FILM's in-betweens that the output's frame rate could not show would be paid for and dropped."""
    k, fps, out = cfg.output.times_to_interpolate, cfg.pipeline.fps, cfg.pipeline.output_fps
    if not cfg.output.film or 2 ** k * fps <= out:
        return []
    return [f"output.times_to_interpolate = {k} makes {2 ** k:g} pictures per painting ({2 ** k * fps:g} a second at "
            f"pipeline.fps = {fps:g}), more than pipeline.output_fps = {out} can show: those past it would be paid "
            f"for and dropped. Lower times_to_interpolate, or raise output_fps to at least {ceil(2 ** k * fps)}"]


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file to use: `explicit`, else `$SHD_CONFIG`, else the first default location that exists."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("SHD_CONFIG")
    if env:
        return Path(env)
    return next((p for p in DEFAULT_LOCATIONS if p.is_file()), None)


def load(explicit: str | os.PathLike[str] | None = None) -> Config:
    """Find, read and validate the config. Raises ConfigError naming the file and every problem."""
    path = find_config(explicit)
    if path is None:
        return from_mapping({}, None)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, ["file does not exist"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, [f"cannot read: {e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, [f"not valid TOML: {e}"]) from None
    return from_mapping(raw, path)


def from_mapping(raw: Mapping[str, Any], source: Path | None) -> Config:
    """Validate a parsed TOML mapping and build the Config; `source` names the file in errors and anchors paths."""
    problems = _validate(raw)
    if problems:
        raise ConfigError(source or "<defaults>", problems)
    base = (source.parent if source else Path.cwd()).absolute()

    def section(name: str) -> dict[str, Any]:
        return dict(raw.get(name, {}))

    def resolve(p: str) -> Path:
        return (base / os.path.expanduser(p)).absolute()

    p = {**(FILE_PATHS if source else DEFAULT_PATHS), **section("paths")}
    paths = Paths(inbox=resolve(p["inbox"]), outbox=resolve(p["outbox"]), state_dir=resolve(p["state_dir"]))
    w = section("watch")
    r = section("replicate")
    r["image_input"] = {**DEFAULT_IMAGE_INPUT, **r.get("image_input", {})}
    if "token_file" in r:
        r["token_file"] = resolve(r["token_file"])
    h = section("hooks")
    if "secret_file" in h:
        h["secret_file"] = resolve(h["secret_file"]) if h["secret_file"] else None
    f = section("ffmpeg")
    if f.get("path"):
        f["path"] = str(resolve(f["path"])) if "/" in f["path"] else f["path"]
    prices = dict(pricing.DEFAULT_PRICES)
    for model, table in section("prices").items():
        prices[model] = dataclasses.replace(pricing.price_for(prices, model) or pricing.Price(), **table)
    cfg = Config(
        source=source.absolute() if source else None,
        paths=paths,
        watch=Watch(**w),
        pipeline=Pipeline(**section("pipeline")),
        replicate=Replicate(**r),
        ffmpeg=FFmpeg(**f),
        log=Log(**section("log")),
        budget=Budget(**section("budget")),
        prices=prices,
        web=Web(**section("web")),
        hooks=Hooks(**h),
        output=Output(**section("output")),
    )
    problems = _unpriced(cfg) + _unseen(cfg) + _loops(cfg.paths)
    if problems:
        raise ConfigError(source or "<defaults>", problems)
    return cfg


def _loops(paths: Paths) -> list[str]:
    """An inbox that is the outbox would take every finished video (and its sidecars) as a new job, painted and
    paid for again, for ever; one that is the state directory would take shd's own database for a video."""
    inbox = paths.inbox.resolve()
    return [f"paths.inbox and paths.{key} are the same folder ({inbox}): {why}"
            for key, why in (("outbox", "every finished video would be painted (and paid for) again, for ever"),
                             ("state_dir", "shd's own database and work folders would be taken for videos"))
            if getattr(paths, key).resolve() == inbox]


def read_token(cfg: Config, environ: Mapping[str, str] | None = None) -> str:
    """The Replicate API token: `$CREDENTIALS_DIRECTORY/replicate_token` (systemd LoadCredential), else
    `$REPLICATE_API_TOKEN`, else `replicate.token_file`. Raises TokenMissing saying where it looked."""
    env = os.environ if environ is None else environ
    looked: list[str] = []
    if env.get("CREDENTIALS_DIRECTORY"):
        cred = Path(env["CREDENTIALS_DIRECTORY"]) / TOKEN_CREDENTIAL
        looked.append(str(cred))
        if token := _read_token_file(cred):
            return token
    looked.append("$REPLICATE_API_TOKEN")
    if token := env.get("REPLICATE_API_TOKEN", "").strip():
        return token
    if cfg.replicate.token_file:
        looked.append(str(cfg.replicate.token_file))
        if token := _read_token_file(cfg.replicate.token_file):
            return token
    raise TokenMissing("no Replicate API token: looked in " + ", ".join(looked))


def _read_token_file(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def replace(cfg: Config, **sections: Any) -> Config:
    """A copy of `cfg` with whole sections replaced (tests and the benchmark tune a few keys this way)."""
    return dataclasses.replace(cfg, **sections)
