"""A request's inputs (:class:`RunInputs`), and loading and checking images and audio.

Images and audio are read into bytes here, checked (an image must open with Pillow; audio must carry the
signature of a known container: WAV, MP3, FLAC, Ogg, WebM/Matroska, MP4/M4A, AAC, AIFF) and bounded in size
before any model sees them. They are always passed on to ``InferenceClient`` as bytes: a string given to
the client would be read as a local path or fetched as a URL. ``http(s)`` URLs are fetched only when
:class:`MediaPolicy` allows it, with a size and a time limit.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from ..errors import InvalidInputError
from .tasks import MASK_TOKENS

__all__ = ["Media", "MediaPolicy", "RunInputs", "load_image", "load_audio", "sniff_audio", "parse_data_url"]

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I
)
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg",
                  "webm": "audio/webm", "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac",
                  "aiff": "audio/aiff", "opus": "audio/ogg", "pcm": "audio/L16"}  # fmt: skip


@dataclass(frozen=True)
class Media:
    """One image or audio clip.

    Attributes:
        data: The raw bytes.
        mime_type: Its type (``"image/png"``, ``"audio/wav"``).
        width, height: The size of an image (``None`` for audio).
    """

    data: bytes = field(repr=False)
    mime_type: str
    width: int | None = None
    height: int | None = None

    @property
    def kind(self) -> str:
        """``"image"`` or ``"audio"``."""
        return self.mime_type.split("/", 1)[0]

    def data_url(self) -> str:
        """The media as a ``data:`` URL."""
        return f"data:{self.mime_type};base64,{base64.b64encode(self.data).decode()}"

    def b64(self) -> str:
        """The bytes, base64-encoded."""
        return base64.b64encode(self.data).decode()

    @property
    def audio_format(self) -> str:
        """The OpenAI ``input_audio`` format name of an audio clip (``"wav"``, ``"mp3"``, ...)."""
        for name, mime in _AUDIO_FORMATS.items():
            if mime == self.mime_type:
                return name
        return self.mime_type.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class MediaPolicy:
    """Limits on the images and audio a request may carry.

    Attributes:
        max_image_bytes: Largest image, in bytes (20 MB, as OpenAI's vision inputs).
        max_audio_bytes: Largest audio clip, in bytes (25 MB, as OpenAI's transcriptions).
        allow_urls: Fetch ``http(s)`` URLs given as inputs (off by default: a server would fetch whatever a
            client names).
        fetch_timeout: Seconds a fetch may take in all.
        allow_paths: Read local file paths (on for Python callers, off for servers).
    """

    max_image_bytes: int = 20 * 1024 * 1024
    max_audio_bytes: int = 25 * 1024 * 1024
    allow_urls: bool = False
    fetch_timeout: float = 10.0
    allow_paths: bool = True

    def __post_init__(self) -> None:
        for name in ("max_image_bytes", "max_audio_bytes", "fetch_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"MediaPolicy.{name} must be a positive number, got {value!r}.")

    def limit(self, kind: str) -> int:
        """The size limit of ``kind`` (``"image"`` or ``"audio"``)."""
        return self.max_image_bytes if kind == "image" else self.max_audio_bytes


@dataclass(frozen=True)
class RunInputs:
    """What one request gives the model (the router reads ``text``).

    Attributes:
        text: The prompt.
        image: An image (see :func:`load_image`).
        audio: An audio clip (see :func:`load_audio`).
        table: A table, ``{column: [cells]}``.
        context: A passage to answer a question from (question answering).
        labels: Candidate labels (zero-shot classification).
        sentences: Sentences to compare the prompt with (sentence similarity).
        messages: An OpenAI conversation: chat models get it as it is (with its image and audio parts); other
            tasks get the inputs above.
    """

    text: str | None = None
    image: Media | None = None
    audio: Media | None = None
    table: Mapping[str, Sequence[Any]] | None = None
    context: str | None = None
    labels: tuple[str, ...] | None = None
    sentences: tuple[str, ...] | None = None
    messages: tuple[Mapping[str, Any], ...] | None = None

    def kinds(self) -> frozenset[str]:
        """The input kinds this request carries (see :mod:`hubroute.run.tasks`)."""
        kinds = set()
        if self.text and self.text.strip():
            kinds.add("text")
            if any(token in self.text for token in MASK_TOKENS):
                kinds.add("masked_text")
        for name in ("image", "audio", "table", "context", "labels", "sentences"):
            if getattr(self, name):
                kinds.add(name)
        return frozenset(kinds)

    def describe(self) -> str:
        """The input kinds in words (``"audio + text"``)."""
        return " + ".join(sorted(self.kinds() - {"masked_text"})) or "nothing"


def parse_data_url(url: str) -> tuple[str | None, bytes]:
    """``(mime type, bytes)`` of a ``data:`` URL.

    Raises:
        InvalidInputError: not a base64 ``data:`` URL.
    """
    match = _DATA_URL.match(url)
    if match is None or not match.group("b64"):
        raise InvalidInputError("Not a base64 data URL: expected 'data:<type>;base64,<data>'.")
    return match.group("mime"), _b64decode(url[match.end() :])


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("The data is not valid base64.") from None


def sniff_audio(data: bytes) -> str | None:
    """The MIME type of an audio container recognised by its first bytes, or ``None``."""
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "audio/ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE6 in (0xE2, 0xE4, 0xE6)):
        return "audio/mpeg"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0:
        return "audio/aac"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "audio/webm"
    if head[4:8] == b"ftyp":
        return "audio/mp4"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    return None


def _label(kind: str, where: str) -> str:
    return f"The {kind}" if where == kind else f"The {kind} at {where}"


def _size_check(data: bytes, kind: str, policy: MediaPolicy, where: str) -> None:
    limit = policy.limit(kind)
    if len(data) > limit:
        raise InvalidInputError(
            f"The {kind} in {where} is {len(data):,} bytes, over the limit of {limit:,} bytes: send a smaller "
            f"{kind} (the limit is the server's --max-{kind}-bytes, or MediaPolicy.max_{kind}_bytes).",
            param=where,
            too_large=True,
        )


async def _fetch(url: str, kind: str, policy: MediaPolicy, where: str) -> bytes:
    if not policy.allow_urls:
        raise InvalidInputError(
            f"The {kind} in {where} is a URL, and fetching URLs is off: send the {kind} itself (a base64 data "
            "URL), or start the server with --allow-input-urls (Python: MediaPolicy(allow_urls=True)).",
            param=where,
        )
    limit = policy.limit(kind)
    chunks, size = [], 0
    try:
        async with (
            httpx2.AsyncClient(
                timeout=policy.fetch_timeout, follow_redirects=True, max_redirects=3
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise InvalidInputError(
                    f"Fetching the {kind} in {where} answered HTTP {response.status_code}.", param=where
                )
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise InvalidInputError(
                        f"The {kind} at the URL in {where} is over the limit of {limit:,} bytes.",
                        param=where,
                        too_large=True,
                    )
                chunks.append(chunk)
    except httpx2.HTTPError as err:
        raise InvalidInputError(
            f"Could not fetch the {kind} in {where} ({type(err).__name__}) within {policy.fetch_timeout:g} s.",
            param=where,
        ) from None
    return b"".join(chunks)


async def _raw(value: Any, kind: str, policy: MediaPolicy, where: str) -> bytes:
    """The bytes of an image or audio given as bytes, a data URL, a URL, a path or (servers) plain base64."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str) and value.startswith("data:"):
        try:
            return parse_data_url(value)[1]
        except InvalidInputError as err:
            raise InvalidInputError(f"The {kind} in {where}: {err}", param=where) from None
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return await _fetch(value, kind, policy, where)
    if isinstance(value, str) and not policy.allow_paths:
        try:
            return _b64decode(value)
        except InvalidInputError:
            raise InvalidInputError(
                f"The {kind} in {where} is neither a base64 data URL nor base64.", param=where
            ) from None
    if isinstance(value, (str, Path)):
        if not policy.allow_paths:
            raise InvalidInputError(
                f"The {kind} in {where} is a file path, which is not read here.", param=where
            )
        path = Path(value)
        if not path.is_file():
            raise InvalidInputError(f"The {kind} file {str(path)!r} does not exist.", param=where)
        size = path.stat().st_size
        if size > policy.limit(kind):
            raise InvalidInputError(
                f"The {kind} file {str(path)!r} is {size:,} bytes, over the limit of {policy.limit(kind):,} bytes.",
                param=where,
                too_large=True,
            )
        return path.read_bytes()
    raise InvalidInputError(
        f"The {kind} in {where} must be bytes, a base64 data URL, a URL or a file path, not {type(value).__name__}.",
        param=where,
    )


def _pil_image(value: Any) -> bytes | None:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow comes with matplotlib
        return None
    if isinstance(value, Image.Image):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    return None


async def load_image(value: Any, policy: MediaPolicy | None = None, where: str = "image") -> Media:
    """Read and check an image.

    Args:
        value: bytes, a ``PIL.Image``, a base64 ``data:`` URL, an ``http(s)`` URL (with
            ``policy.allow_urls``), a file path (with ``policy.allow_paths``), or, when paths are off, plain
            base64.
        policy: Size limits and what may be fetched or read (default :class:`MediaPolicy()`).
        where: The input's name in error messages (``"messages[0].content[1]"``).

    Returns:
        The image's bytes, type and size.

    Raises:
        InvalidInputError: not an image, too large (``too_large``), or a source the policy refuses.
    """
    policy = policy or MediaPolicy()
    raw = _pil_image(value)
    data = raw if raw is not None else await _raw(value, "image", policy, where)
    _size_check(data, "image", policy, where)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            mime = Image.MIME.get(image.format or "", "image/png")
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidInputError(
            f"{_label('image', where)} is not an image Pillow can read: send PNG, JPEG, GIF, WebP or another common "
            "format.",
            param=where,
        ) from None
    return Media(data, mime, width, height)


async def load_audio(
    value: Any, policy: MediaPolicy | None = None, where: str = "audio", audio_format: str | None = None
) -> Media:
    """Read and check an audio clip.

    Args:
        value: bytes, a base64 ``data:`` URL, an ``http(s)`` URL (with ``policy.allow_urls``), a file path
            (with ``policy.allow_paths``), or, when paths are off, plain base64 (OpenAI's ``input_audio``).
        policy: Size limits and what may be fetched or read (default :class:`MediaPolicy()`).
        where: The input's name in error messages.
        audio_format: The format the caller declared (``"wav"``, ``"mp3"``); the bytes must still carry the
            signature of a known container.

    Returns:
        The clip's bytes and type.

    Raises:
        InvalidInputError: not audio in a known container, too large (``too_large``), or a source the policy
            refuses.
    """
    policy = policy or MediaPolicy()
    data = await _raw(value, "audio", policy, where)
    _size_check(data, "audio", policy, where)
    mime = sniff_audio(data)
    if mime is None:
        declared = f" (declared {audio_format!r})" if audio_format else ""
        raise InvalidInputError(
            f"{_label('audio', where)} is not audio in a known format{declared}: send WAV, MP3, FLAC, Ogg/Opus, WebM, "
            "M4A, AAC or AIFF.",
            param=where,
        )
    return Media(data, mime)
