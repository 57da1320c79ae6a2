"""Config validation: every problem reported at once, naming the file and the key."""

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shd import config, pricing
from shd.errors import ConfigError, TokenMissing

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "shd.toml"
    p.write_text(text)
    return p


def test_the_shipped_config_loads_and_paths_resolve_against_its_folder(tmp_path: Path) -> None:
    cfg = config.load(REPO / "config" / "shd.toml")
    assert cfg.paths.inbox == Path.home() / "shd" / "inbox"  # out of the checkout, and the built-in default
    assert cfg.paths == config.from_mapping({}, None).paths  # no config file at all: the same places
    other = config.load(write(tmp_path, '[paths]\ninbox = "in"\n')).paths  # a file's own paths are beside it
    assert other.inbox == tmp_path / "in" and other.state_dir == tmp_path / "state"
    assert cfg.pipeline.fps == 1.0 and cfg.pipeline.audio == "auto" and cfg.replicate.concurrency == 8
    assert cfg.replicate.prompt_model == config.IMG2PROMPT and cfg.replicate.image_model == config.SDXL


def test_every_rule_is_documented_in_the_shipped_config_and_vice_versa() -> None:
    """The shipped file mentions every key the code knows (commented or not), and sets no unknown key."""
    text = (REPO / "config" / "shd.toml").read_text()
    for section, keys in config.RULES.items():
        assert f"[{section}]" in text
        for key in keys:
            documented = f"{key} =" in text or f"[{section}.{key}]" in text
            assert documented, f"{section}.{key} is not documented in config/shd.toml"
    for model in pricing.DEFAULT_PRICES:
        table = text[text.index(f'[prices."{model}"]'):]
        for key in config.PRICE_RULES:
            assert f"\n{key} =" in table.split("\n[", 1)[0], f'prices."{model}".{key} is not in config/shd.toml'


def test_unknown_keys_wrong_types_and_impossible_values_are_all_reported(tmp_path: Path) -> None:
    p = write(tmp_path, """
[pipeline]
fps = 0
audio = "loud"
colour = "red"
[replicate]
concurrency = "eight"
image_model = "sdxl"
[nonsense]
x = 1
""")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert msg.startswith(str(p))
    for part in ("pipeline.fps = 0 is not allowed", "pipeline.audio", "unknown key pipeline.colour",
                 "replicate.concurrency must be an integer", "replicate.image_model = 'sdxl' is not allowed",
                 "unknown section [nonsense]"):
        assert part in msg
    assert len(e.value.problems) == 6


def test_a_file_that_is_not_toml_or_missing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(write(tmp_path, "[paths\ninbox="))
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "nope.toml")


def test_config_is_found_through_shd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write(tmp_path, "[pipeline]\nfps = 2.0\n")
    monkeypatch.setenv("SHD_CONFIG", str(p))
    assert config.load().pipeline.fps == 2.0
    assert config.load(None).source == p


def test_image_input_overrides_merge_with_the_defaults(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, "[replicate.image_input]\nwidth = 512\n"))
    assert cfg.replicate.image_input["width"] == 512
    assert cfg.replicate.image_input["num_outputs"] == 1


# ../shared/docs/first-version.md, step 3: the first version's SDXL inputs, exactly (its size aside).
FIRST_VERSION = {"refine": "expert_ensemble_refiner", "scheduler": "K_EULER", "lora_scale": 0.6, "num_outputs": 1,
                 "guidance_scale": 7.5, "apply_watermark": False, "high_noise_frac": 0.8, "negative_prompt": "",
                 "prompt_strength": 0.8, "num_inference_steps": 25}


def test_the_default_image_inputs_are_the_first_versions_but_the_size_follows_the_source(tmp_path: Path) -> None:
    for cfg in (config.from_mapping({}, None), config.load(REPO / "config" / "shd.toml")):
        assert dict(cfg.replicate.image_input) == FIRST_VERSION
        assert cfg.replicate.image_from == "none" and cfg.output == config.Output()
    assert config.Output() == config.Output(transition="cut", transition_seconds=0.5, subtitles=True)


def test_output_and_image_from_are_checked(tmp_path: Path) -> None:
    p = write(tmp_path, '[output]\ntransition = "wipe"\ntransition_seconds = 0\nsubtitles = "yes"\n'
                        '[replicate]\nimage_from = "frame"\n')
    with pytest.raises(ConfigError) as e:
        config.load(p)
    for part in ("output.transition = 'wipe' is not allowed: must be one of 'cut', 'crossfade', 'motion'",
                 "output.transition_seconds = 0 is not allowed", "output.subtitles must be true or false",
                 "replicate.image_from = 'frame' is not allowed: must be one of 'none', 'source'"):
        assert part in str(e.value)
    cfg = config.load(write(tmp_path, '[output]\ntransition = "motion"\ntransition_seconds = 1\n'
                                      '[replicate]\nimage_from = "source"\n'))
    assert cfg.output.transition == "motion" and cfg.output.transition_seconds == 1
    assert cfg.replicate.image_from == "source"


def test_token_comes_from_the_credential_then_the_environment_then_the_file(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[replicate]\ntoken_file = "tok"\n'))
    (tmp_path / "tok").write_text("r8_file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "replicate_token").write_text("r8_cred\n")
    assert config.read_token(cfg, {"CREDENTIALS_DIRECTORY": str(creds), "REPLICATE_API_TOKEN": "x"}) == "r8_cred"
    assert config.read_token(cfg, {"REPLICATE_API_TOKEN": "r8_env"}) == "r8_env"
    assert config.read_token(cfg, {}) == "r8_file"
    bare = config.from_mapping({}, None)
    with pytest.raises(TokenMissing, match=r"REPLICATE_API_TOKEN"):
        config.read_token(bare, {})


def test_prices_are_per_model_merged_over_the_defaults_and_validated(tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[prices."stability-ai/sdxl"]\nper_second = 0.000725\n'
                                      '[prices."google-research/frame-interpolation"]\nper_second = 0.000725\n'))
    sdxl = pricing.price_for(cfg.prices, config.SDXL)
    assert sdxl == pricing.Price(per_second=0.000725, typical_seconds=10.0)  # the rest stays the default
    assert pricing.price_for(cfg.prices, config.IMG2PROMPT) == pricing.DEFAULT_PRICES["methexis-inc/img2prompt"]
    with pytest.raises(ConfigError) as e:
        config.load(write(tmp_path, '[prices.sdxl]\nper_second = 1\n[prices."a/b"]\nper_second = -1\ncolour = 2\n'
                                    '[budget]\ndaily_usd = 0\ntimezone = "Mars/Olympus"\n'))
    msg = str(e.value)
    for part in ("[prices.'sdxl']: the key must be a model", "prices.'a/b'.per_second = -1 is not allowed",
                 "unknown key prices.'a/b'.colour", "budget.daily_usd = 0 is not allowed",
                 "budget.timezone = 'Mars/Olympus' is not allowed"):
        assert part in msg, part


def test_a_configured_model_without_a_price_is_refused(tmp_path: Path) -> None:
    """Spend cannot be counted, nor capped, without a price: nothing starts until it has one."""
    p = write(tmp_path, '[replicate]\nimage_model = "someone/painter:0123456789abcdef"\n')
    with pytest.raises(ConfigError, match=r'image_model .* has no price: add \[prices."someone/painter"\]'):
        config.load(p)
    p.write_text(p.read_text() + '[prices."someone/painter:0123456789abcdef"]\nper_output = 0.003\n')
    assert pricing.price_for(config.load(p).prices, "someone/painter:0123456789abcdef") == pricing.Price(
        per_output=0.003)


def test_web_and_hooks_keys_are_checked_like_the_others(tmp_path: Path) -> None:
    p = write(tmp_path, """
[web]
listen = "8787"
actions = "yes"
port = 1
[hooks]
command = "notify 'unterminated"
webhook = "file:///etc/passwd"
timeout = 0
retries = 99
""")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    for part in ("web.listen = '8787' is not allowed", "web.actions must be true or false",
                 "unknown key web.port", "hooks.command", "hooks.webhook = 'file:///etc/passwd' is not allowed",
                 "hooks.timeout = 0 is not allowed", "hooks.retries = 99 is not allowed"):
        assert part in msg
    assert len(e.value.problems) == 7
    cfg = config.load(write(tmp_path, '[web]\nlisten = ""\nactions = true\n[hooks]\nsecret_file = "s"\n'
                                      'command = "notify-send shd"\n'))
    assert cfg.web.listen == "" and cfg.web.actions is True
    assert cfg.hooks.secret_file == tmp_path / "s" and cfg.hooks.command == "notify-send shd"
    defaults = config.load(REPO / "config" / "shd.toml")
    assert defaults.web == config.Web() and defaults.hooks == config.Hooks()
    assert defaults.web.listen == "127.0.0.1:8787" and defaults.web.actions is False


# --- any TOML value in any key: a ConfigError or a Config, never anything else -----------------------------------

TOML_SCALARS = st.one_of(
    st.text(max_size=12), st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(), st.booleans(),
    st.datetimes(), st.dates(), st.times(),
    st.sampled_from(["", "\0", "~", "0", "inbox", "127.0.0.1:0", "hold", "a/b:12345678", "[::1]:1", "1e400"]))
TOML_VALUES = st.recursive(TOML_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
KEYS = [(section, key) for section, keys in config.RULES.items() for key in keys]


@st.composite
def toml_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A parsed TOML document: known keys with random values, whole sections replaced by random values, and
    unknown keys and sections, in any mix."""
    doc: dict[str, Any] = {}
    for section, key in draw(st.lists(st.sampled_from(KEYS), max_size=8)):
        table = doc.setdefault(section, {})
        if isinstance(table, dict):
            table[key] = draw(TOML_VALUES)
    for section in draw(st.lists(st.sampled_from([*config.RULES, "prices", "extra"]), max_size=2)):
        doc[section] = draw(TOML_VALUES)
    if draw(st.booleans()):  # [prices."owner/name"] tables: known and unknown keys, any values, odd model names
        models = st.sampled_from([*pricing.DEFAULT_PRICES, config.SDXL, "a/b", "a/b:12345678", "sdxl", "", "a/b:1"])
        keys = st.sampled_from([*config.PRICE_RULES, "colour"])
        doc["prices"] = draw(st.dictionaries(models, TOML_VALUES | st.dictionaries(keys, TOML_VALUES, max_size=3),
                                             max_size=3))
    return doc


@settings(max_examples=400, derandomize=True, database=None, deadline=None)
@given(toml_documents())
def test_any_toml_value_in_any_key_is_a_config_error_or_a_config(doc: dict[str, Any]) -> None:
    """What SIGHUP and `shd status` read: a wrong type anywhere (`[replicate] image_input = 5`, a table where a
    number goes, NaN, a date) is reported as a ConfigError naming the file, never an AttributeError or such."""
    try:
        cfg = config.from_mapping(doc, Path("/etc/shd/shd.toml"))
    except ConfigError as e:
        assert str(e).startswith("/etc/shd/shd.toml: ") and e.problems
    else:
        assert isinstance(cfg, config.Config)


def test_the_wrong_types_the_issue_found_are_config_errors(tmp_path: Path) -> None:
    for text, words in (("[replicate]\nimage_input = 5\n", "replicate.image_input must be a table"),
                        ("replicate = 5\n", "[replicate] must be a table"),
                        ("[replicate]\nbackoff_max = inf\n", "replicate.backoff_max = inf is not allowed"),
                        ("[replicate]\npoll_interval = 1e300\n", "replicate.poll_interval = 1e+300 is not allowed"),
                        ("[replicate.image_input]\nwidth = nan\n", "replicate.image_input.width must be"),
                        ('[paths]\ninbox = "in\\u0000box"\n', "paths.inbox")):
        with pytest.raises(ConfigError, match=re.escape(words)):
            config.load(write(tmp_path, text))


def test_an_inbox_that_is_the_outbox_or_the_state_directory_is_refused(tmp_path: Path) -> None:
    """The daemon would claim every video it publishes as a new job and pay for it again, for ever (no cap is
    set by default); or claim its own database. Refused before anything starts."""
    for key in ("outbox", "state_dir"):
        cfg = tmp_path / f"{key}.toml"
        cfg.write_text(f'[paths]\ninbox = "shared"\n{key} = "./shared/"\n')
        with pytest.raises(ConfigError) as e:
            config.load(cfg)
        assert f"paths.inbox and paths.{key} are the same folder ({tmp_path / 'shared'})" in str(e.value)


def test_film_takes_times_to_interpolate_from_1_to_8_and_no_more_in_betweens_than_the_output_can_show(
        tmp_path: Path) -> None:
    cfg = config.load(write(tmp_path, '[output]\ntransition = "film"\n'))
    assert cfg.output.film and cfg.output.times_to_interpolate == 4 and cfg.replicate.film_model == config.FILM
    assert not config.load(write(tmp_path, "")).output.film
    for bad in (0, 9, 2.5):
        with pytest.raises(ConfigError, match="output.times_to_interpolate"):
            config.load(write(tmp_path, f'[output]\ntransition = "film"\ntimes_to_interpolate = {bad}\n'))
    with pytest.raises(ConfigError) as e:  # 32 pictures a second at 30 fps: two of them would be paid for and lost
        config.load(write(tmp_path, '[output]\ntransition = "film"\ntimes_to_interpolate = 5\n'))
    assert "more than pipeline.output_fps = 30 can show" in str(e.value) and "at least 32" in str(e.value)
    assert config.load(write(tmp_path, '[pipeline]\noutput_fps = 32\n[output]\ntransition = "film"\n'
                                       'times_to_interpolate = 5\n')).output.times_to_interpolate == 5
    with pytest.raises(ConfigError, match="more than pipeline.output_fps"):  # fps 2: 16 pictures a gap, 32 a second
        config.load(write(tmp_path, '[pipeline]\nfps = 2\n[output]\ntransition = "film"\n'))
    assert config.load(write(tmp_path, '[output]\ntimes_to_interpolate = 8\n')).output.times_to_interpolate == 8


def test_a_film_model_without_a_price_is_refused_only_when_film_is_on(tmp_path: Path) -> None:
    other = '[replicate]\nfilm_model = "someone/film:0123456789abcdef"\n'
    assert config.load(write(tmp_path, other)).replicate.film_model == "someone/film:0123456789abcdef"
    with pytest.raises(ConfigError, match="replicate.film_model 'someone/film:0123456789abcdef' has no price"):
        config.load(write(tmp_path, other + '[output]\ntransition = "film"\n'))
