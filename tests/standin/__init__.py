"""A faithful loopback stand-in for the Replicate HTTP API (see docs/replicate-api.md §10).

Public API::

    from tests.standin import StandIn, prompt_for, color_for, IMG2PROMPT, SDXL
"""

from .models import FILM, FLUX, IMG2PROMPT, SDXL, color_for, decode_png, prompt_for, solid_png
from .server import Options, StandIn

__all__ = ["FILM", "FLUX", "IMG2PROMPT", "SDXL", "Options", "StandIn", "color_for", "decode_png", "prompt_for",
           "solid_png"]
