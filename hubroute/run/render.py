"""How a task's output reads: as text (:func:`render_text`) and as JSON (:func:`to_json`).

``InferenceClient`` returns typed objects (dataclasses such as ``TranslationOutput``), ``PIL`` images, raw
bytes (speech, video) and numpy arrays. The JSON form keeps every field; images and audio become
``{"mime_type", "b64", ...}`` objects. The text form is what a person reads in a chat: the translation, the
transcript, the best labels with their scores, the detected objects, or a one-line description of an image
or a clip (the bytes themselves are in the JSON).
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from .inputs import sniff_audio
from .tasks import TaskSpec

__all__ = ["render_text", "to_json", "image_bytes", "binary_mime"]

_SHOWN = 5


def image_bytes(image: Any) -> tuple[bytes, str]:
    """``(bytes, mime type)`` of a ``PIL`` image (PNG unless it came in another format)."""
    fmt = (getattr(image, "format", None) or "PNG").upper()
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (KeyError, OSError, ValueError):
        fmt, buffer = "PNG", io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue(), f"image/{fmt.lower().replace('jpg', 'jpeg')}"


def binary_mime(data: bytes, default: str = "application/octet-stream") -> str:
    """The MIME type of generated audio or video bytes, from their signature."""
    audio = sniff_audio(data)
    if audio is not None:
        return audio
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return default


def _is_image(value: Any) -> bool:
    return hasattr(value, "save") and hasattr(value, "size") and hasattr(value, "mode")


def to_json(output: Any) -> Any:
    """A JSON-ready copy of an ``InferenceClient`` output.

    Dataclasses become dicts of their fields (and extra keys), images and bytes become
    ``{"mime_type", "b64", "bytes"}`` objects (images also ``width`` and ``height``), numpy arrays lists.
    """
    if _is_image(output):
        data, mime = image_bytes(output)
        width, height = output.size
        return {"mime_type": mime, "width": width, "height": height, "bytes": len(data),
                "b64": base64.b64encode(data).decode()}  # fmt: skip
    if isinstance(output, (bytes, bytearray)):
        data = bytes(output)
        return {"mime_type": binary_mime(data), "bytes": len(data), "b64": base64.b64encode(data).decode()}
    if isinstance(output, np.ndarray):
        return output.astype(float).tolist()
    if isinstance(output, np.generic):
        return output.item()
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        fields = {f.name: to_json(getattr(output, f.name)) for f in dataclasses.fields(output)}
        extra = {k: to_json(v) for k, v in vars(output).items() if k not in fields}
        return {k: v for k, v in {**fields, **extra}.items() if v is not None}
    if isinstance(output, Mapping):
        return {str(k): to_json(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)):
        return [to_json(v) for v in output]
    if isinstance(output, float) and not np.isfinite(output):
        return None
    return output


def _get(item: Any, name: str, default: Any = None) -> Any:
    if isinstance(item, Mapping) and name in item:
        return item[name]
    return getattr(item, name, default)


def _score(item: Any) -> str:
    score = _get(item, "score")
    return f" ({float(score):.2f})" if isinstance(score, (int, float)) else ""


def _describe_image(image: Any) -> str:
    data, mime = image_bytes(image)
    width, height = image.size
    return f"[image: {width}x{height} {mime.split('/')[-1].upper()}, {len(data) / 1024:.1f} kB]"


def _describe_binary(data: bytes, kind: str) -> str:
    mime = binary_mime(data, f"{kind}/octet-stream")
    return f"[{kind}: {mime.split('/')[-1].upper()}, {len(data) / 1024:.1f} kB]"


def render_text(spec: TaskSpec, output: Any) -> str:
    """The output of a ``spec`` task as text a person reads (see the module docstring)."""
    kind = spec.output
    items = list(output) if isinstance(output, (list, tuple)) else [output]
    if kind == "chat":
        choices = _get(output, "choices") or []
        message = _get(choices[0], "message") if choices else None
        return str(_get(message, "content") or "") if message is not None else ""
    if kind == "text":
        if isinstance(output, str):
            return output
        for name in ("translation_text", "summary_text", "generated_text", "text"):
            value = _get(output, name)
            if isinstance(value, str):
                return value
        return str(output)
    if kind == "labels":
        return ", ".join(f"{_get(item, 'label')}{_score(item)}" for item in items[:_SHOWN])
    if kind == "entities":
        lines = [
            f"{_get(item, 'word')}: {_get(item, 'entity_group') or _get(item, 'entity')}{_score(item)}"
            for item in items
        ]
        return "\n".join(lines) or "(no entities found)"
    if kind == "boxes":
        lines = []
        for item in items:
            box = _get(item, "box")
            corners = (
                [_get(box, name) for name in ("xmin", "ymin", "xmax", "ymax")] if box is not None else []
            )
            lines.append(f"{_get(item, 'label')}{_score(item)} at {corners}")
        return "\n".join(lines) or "(no objects found)"
    if kind == "masks":
        lines = []
        for item in items:
            mask = _get(item, "mask")
            size = f": mask {mask.size[0]}x{mask.size[1]}" if _is_image(mask) else ""
            lines.append(f"{_get(item, 'label')}{_score(item)}{size}")
        return "\n".join(lines) or "(no segments found)"
    if kind == "answers":
        return str(_get(items[0], "answer", "")) if items else ""
    if kind == "fill":
        return str(_get(items[0], "sequence", "")) if items else ""
    if kind == "scores":
        return ", ".join(f"{float(score):.3f}" for score in items)
    if kind == "embedding":
        return f"[embedding: {np.asarray(output).shape[-1]} floats]"
    if kind == "image":
        return _describe_image(output)
    if kind in ("audio", "video"):
        return _describe_binary(bytes(output), kind)
    if kind == "audios":
        return "\n".join(
            f"{_get(item, 'label')}: {_describe_binary(bytes(_get(item, 'blob')), 'audio')}" for item in items
        )
    if kind == "predictions":
        return ", ".join(str(value) for value in items)
    return str(output)
