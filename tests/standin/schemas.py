"""Cog-style OpenAPI schemas of the fake models, and Replicate-style input validation.

The schemas follow what ``GET /v1/models/{owner}/{name}/versions/{id}`` returns for cog 0.8.x models
(see docs/replicate-api.md §7): an ``Input`` object whose properties carry ``x-order``, enums expressed as
``allOf: [{"$ref": "#/components/schemas/<enum>"}]``, and an ``Output`` schema.

Validation mimics the 422 "Input validation failed" bodies of the real API: a list of
``{"type", "field", "description"}`` entries (``invalid_fields``) and a ``detail`` made of
``"- <field>: <description>\\n"`` lines.
"""

from __future__ import annotations

import copy
import math
from typing import Any
from urllib.parse import urlsplit

JSON = dict[str, Any]


def _prop(kind: str, title: str, order: int, description: str, **extra: Any) -> JSON:
    """One property of a cog ``Input`` schema."""
    prop: JSON = {"type": kind, "title": title, "x-order": order, "description": description}
    prop.update(extra)
    return prop


def _uri(title: str, order: int, description: str) -> JSON:
    return _prop("string", title, order, description, format="uri")


def _enum_ref(name: str, order: int, default: str, description: str) -> JSON:
    return {"allOf": [{"$ref": f"#/components/schemas/{name}"}], "default": default, "x-order": order,
            "description": description}


def _enum(name: str, values: list[str]) -> JSON:
    return {"enum": values, "type": "string", "title": name, "description": "An enumeration."}


SDXL_SCHEDULERS = ["DDIM", "DPMSolverMultistep", "HeunDiscrete", "KarrasDPM", "K_EULER_ANCESTRAL", "K_EULER", "PNDM"]
SDXL_REFINERS = ["no_refiner", "expert_ensemble_refiner", "base_image_refiner"]

SDXL_INPUT: JSON = {
    "type": "object",
    "title": "Input",
    "properties": {
        "prompt": _prop("string", "Prompt", 0, "Input prompt", default="An astronaut riding a rainbow unicorn"),
        "negative_prompt": _prop("string", "Negative Prompt", 1, "Input Negative Prompt", default=""),
        "image": _uri("Image", 2, "Input image for img2img or inpaint mode"),
        "mask": _uri("Mask", 3, "Input mask for inpaint mode. Black areas will be preserved, white areas will be "
                                "inpainted."),
        "width": _prop("integer", "Width", 4, "Width of output image", default=1024),
        "height": _prop("integer", "Height", 5, "Height of output image", default=1024),
        "num_outputs": _prop("integer", "Num Outputs", 6, "Number of images to output.", default=1, minimum=1,
                             maximum=4),
        "scheduler": _enum_ref("scheduler", 7, "K_EULER", "scheduler"),
        "num_inference_steps": _prop("integer", "Num Inference Steps", 8, "Number of denoising steps", default=50,
                                     minimum=1, maximum=500),
        "guidance_scale": _prop("number", "Guidance Scale", 9, "Scale for classifier-free guidance", default=7.5,
                                minimum=1, maximum=50),
        "prompt_strength": _prop("number", "Prompt Strength", 10, "Prompt strength when using img2img / inpaint. "
                                 "1.0 corresponds to full destruction of information in image", default=0.8,
                                 minimum=0, maximum=1),
        "seed": _prop("integer", "Seed", 11, "Random seed. Leave blank to randomize the seed"),
        "refine": _enum_ref("refine", 12, "no_refiner", "Which refine style to use"),
        "high_noise_frac": _prop("number", "High Noise Frac", 13, "For expert_ensemble_refiner, the fraction of noise "
                                 "to use", default=0.8, minimum=0, maximum=1),
        "refine_steps": _prop("integer", "Refine Steps", 14, "For base_image_refiner, the number of steps to refine, "
                              "defaults to num_inference_steps"),
        "apply_watermark": _prop("boolean", "Apply Watermark", 15, "Applies a watermark to enable determining if an "
                                 "image is generated in downstream applications. If you have other provisions for "
                                 "generating or deploying images safely, you can use this to disable watermarking.",
                                 default=True),
        "lora_scale": _prop("number", "Lora Scale", 16, "LoRA additive scale. Only applicable on trained models.",
                            default=0.6, minimum=0, maximum=1),
        "replicate_weights": _prop("string", "Replicate Weights", 17, "Replicate LoRA weights to use. Leave blank to "
                                   "use the default weights."),
        "disable_safety_checker": _prop("boolean", "Disable Safety Checker", 18, "Disable safety checker for generated "
                                        "images. This feature is only available through the API. See "
                                        "[https://replicate.com/docs/how-does-replicate-work#safety]"
                                        "(https://replicate.com/docs/how-does-replicate-work#safety)", default=False),
    },
}
SDXL_ENUMS: JSON = {"scheduler": _enum("scheduler", SDXL_SCHEDULERS), "refine": _enum("refine", SDXL_REFINERS)}
URI_LIST_OUTPUT: JSON = {"type": "array", "items": {"type": "string", "format": "uri"}, "title": "Output"}

IMG2PROMPT_INPUT: JSON = {
    "type": "object",
    "title": "Input",
    "required": ["image"],
    "properties": {"image": _uri("Image", 0, "Input image")},
}
STRING_OUTPUT: JSON = {"type": "string", "title": "Output"}

FILM_INPUT: JSON = {
    "type": "object",
    "title": "Input",
    "required": ["frame1", "frame2"],
    "properties": {
        "frame1": _uri("Frame1", 0, "The first input frame"),
        "frame2": _uri("Frame2", 1, "The second input frame"),
        "times_to_interpolate": _prop("integer", "Times To Interpolate", 2, "Controls the number of times the frame "
                                      "interpolator is invoked. If set to 1, the output will be a single frame (png). "
                                      "Otherwise the output is an mp4 video.", default=1, minimum=1, maximum=8),
    },
}
URI_OUTPUT: JSON = {"type": "string", "format": "uri", "title": "Output"}

FLUX_ASPECT_RATIOS = {"1:1": (1024, 1024), "16:9": (1344, 768), "9:16": (768, 1344), "4:3": (1152, 896),
                      "3:4": (896, 1152), "3:2": (1216, 832), "2:3": (832, 1216)}
FLUX_INPUT: JSON = {
    "type": "object",
    "title": "Input",
    "required": ["prompt"],
    "properties": {
        "prompt": _prop("string", "Prompt", 0, "Prompt for generated image"),
        "aspect_ratio": _enum_ref("aspect_ratio", 1, "1:1", "Aspect ratio for the generated image"),
        "num_outputs": _prop("integer", "Num Outputs", 2, "Number of outputs to generate", default=1, minimum=1,
                             maximum=4),
        "seed": _prop("integer", "Seed", 3, "Random seed. Set for reproducible generation"),
        "disable_safety_checker": _prop("boolean", "Disable Safety Checker", 4, "Disable safety checker for "
                                        "generated images.", default=False),
    },
}
FLUX_ENUMS: JSON = {"aspect_ratio": _enum("aspect_ratio", list(FLUX_ASPECT_RATIOS))}

_COMMON_SCHEMAS: JSON = {
    "Status": _enum("Status", ["starting", "processing", "succeeded", "canceled", "failed"]),
    "WebhookEvent": _enum("WebhookEvent", ["start", "output", "logs", "completed"]),
    "PredictionRequest": {
        "type": "object", "title": "PredictionRequest",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "input": {"$ref": "#/components/schemas/Input"},
            "webhook": {"type": "string", "title": "Webhook", "format": "uri", "maxLength": 65536, "minLength": 1},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "output_file_prefix": {"type": "string", "title": "Output File Prefix"},
            "webhook_events_filter": {"type": "array", "items": {"$ref": "#/components/schemas/WebhookEvent"},
                                      "default": ["start", "output", "logs", "completed"]},
        },
    },
    "PredictionResponse": {
        "type": "object", "title": "PredictionResponse",
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "logs": {"type": "string", "title": "Logs", "default": ""},
            "error": {"type": "string", "title": "Error"},
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "status": {"$ref": "#/components/schemas/Status"},
            "metrics": {"type": "object", "title": "Metrics"},
            "version": {"type": "string", "title": "Version"},
            "created_at": {"type": "string", "title": "Created At", "format": "date-time"},
            "started_at": {"type": "string", "title": "Started At", "format": "date-time"},
            "completed_at": {"type": "string", "title": "Completed At", "format": "date-time"},
        },
    },
}
_PATHS: JSON = {
    "/": {"get": {"summary": "Root", "operationId": "root__get",
                  "responses": {"200": {"description": "Successful Response"}}}},
    "/predictions": {"post": {
        "summary": "Predict", "operationId": "predict_predictions_post",
        "requestBody": {"content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/PredictionRequest"}}}},
        "responses": {"200": {"description": "Successful Response", "content": {"application/json": {"schema": {
            "$ref": "#/components/schemas/PredictionResponse"}}}}},
    }},
}


def openapi_schema(input_schema: JSON, output_schema: JSON, enums: JSON | None = None) -> JSON:
    """A full cog ``openapi_schema`` document embedding the given Input/Output (and enum) schemas."""
    schemas: JSON = copy.deepcopy(_COMMON_SCHEMAS)
    schemas["Input"] = copy.deepcopy(input_schema)
    schemas["Output"] = copy.deepcopy(output_schema)
    schemas.update(copy.deepcopy(enums or {}))
    return {"openapi": "3.0.2", "info": {"title": "Cog", "version": "0.1.0"}, "paths": copy.deepcopy(_PATHS),
            "components": {"schemas": schemas}}


def _resolve(prop: JSON, schemas: JSON) -> JSON:
    """Merge ``allOf``/``$ref`` parts of a property into one flat schema."""
    merged = {k: v for k, v in prop.items() if k != "allOf"}
    for part in prop.get("allOf", []):
        ref = part.get("$ref", "")
        target = schemas.get(ref.rsplit("/", 1)[-1], {}) if ref else part
        for key, value in target.items():
            merged.setdefault(key, value)
    return merged


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(kind: str | None, value: Any) -> bool:
    if kind is None:
        return True
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    return True


def validate_input(openapi: JSON, value: Any) -> list[JSON]:
    """Validate a prediction ``input`` against ``components.schemas.Input``; return the ``invalid_fields`` list."""
    schemas = openapi["components"]["schemas"]
    input_schema = schemas["Input"]
    if not isinstance(value, dict):
        return [{"type": "invalid_type", "field": "input",
                 "description": f"Invalid type. Expected: object, given: {_type_name(value)}"}]
    errors: list[JSON] = []
    props: JSON = input_schema.get("properties", {})
    for name in input_schema.get("required", []):
        if name not in value:
            errors.append({"type": "required", "field": "input", "description": f"{name} is required"})
    for name in value:
        if name not in props:
            errors.append({"type": "additional_property_not_allowed", "field": "input",
                           "description": f"Additional property {name} is not allowed"})
    for name, item in value.items():
        if name not in props:
            continue
        prop = _resolve(props[name], schemas)
        field = f"input.{name}"
        if not _type_ok(prop.get("type"), item):
            errors.append({"type": "invalid_type", "field": field,
                           "description": f"Invalid type. Expected: {prop.get('type')}, given: {_type_name(item)}"})
            continue
        if "enum" in prop and item not in prop["enum"]:
            allowed = ", ".join(f'"{v}"' for v in prop["enum"])
            errors.append({"type": "enum", "field": field,
                           "description": f"{field} must be one of the following: {allowed}"})
        if "minimum" in prop and item < prop["minimum"]:
            errors.append({"type": "number_gte", "field": field,
                           "description": f"Must be greater than or equal to {prop['minimum']}"})
        if "maximum" in prop and item > prop["maximum"]:
            errors.append({"type": "number_lte", "field": field,
                           "description": f"Must be less than or equal to {prop['maximum']}"})
        if prop.get("format") == "uri" and not urlsplit(item).scheme:
            errors.append({"type": "format", "field": field, "description": "Does not match format 'uri'"})
    return errors


def validation_detail(invalid_fields: list[JSON]) -> str:
    """The ``detail`` string of a 422 "Input validation failed" body."""
    return "".join(f"- {f['field']}: {f['description']}\n" for f in invalid_fields)


def with_defaults(openapi: JSON, value: JSON) -> JSON:
    """``value`` with schema defaults filled in (integers given as whole floats are normalised to int)."""
    schemas = openapi["components"]["schemas"]
    out: JSON = {}
    for name, prop in schemas["Input"].get("properties", {}).items():
        flat = _resolve(prop, schemas)
        if name in value:
            item = value[name]
            if flat.get("type") == "integer" and isinstance(item, float):
                item = int(item)
            out[name] = item
        elif "default" in flat:
            out[name] = copy.deepcopy(flat["default"])
    return out


def uri_fields(openapi: JSON) -> list[str]:
    """Names of the top-level inputs with ``format: uri`` (file inputs)."""
    props = openapi["components"]["schemas"]["Input"].get("properties", {})
    return [name for name, prop in props.items() if prop.get("format") == "uri"]
