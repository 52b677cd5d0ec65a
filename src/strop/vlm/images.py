"""Images named by a dataset row: a local file, a base64 string, or (only when allowed) a URL.

An image part is `{"type": "image", "path": ...}`, `{"type": "image", "url": ...}` or
`{"type": "image", "base64": ...}` (OpenAI's `{"type": "image_url", "image_url": {"url": ...}}` is read
too, a `data:image/...;base64,` URL included). Relative paths resolve against the dataset file's folder,
then the config's folder, then the working folder. Every failure is a StropError naming the row (file and
line), the field and the image, because a bad image found mid-run would cost the run.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from strop.errors import StropError

SOURCE_KEYS = ("path", "url", "base64", "image")
#: Seconds an image download may take (URL images, allow_image_urls: true).
URL_TIMEOUT = 30


def image_source(part: dict[str, Any], loc: str) -> tuple[str, str]:
    """(kind, value) of an image part: kind is path, url or base64."""
    if part.get("type") == "image_url":
        inner = part.get("image_url")
        value = inner.get("url") if isinstance(inner, dict) else inner
        kind = "url"
    else:
        present = [k for k in SOURCE_KEYS if part.get(k) is not None]
        if len(present) != 1:
            raise StropError(
                f"{loc}: an image part needs exactly one of 'path', 'url' or 'base64' "
                f"(got {', '.join(present) or 'none'})"
            )
        kind, value = present[0], part[present[0]]
        if kind == "image":  # HF datasets' {"type": "image", "image": "file.png"}
            kind = "url" if str(value).startswith(("http://", "https://", "data:")) else "path"
    if not isinstance(value, str) or not value.strip():
        raise StropError(f"{loc}: the image {kind} must be a non-empty string")
    if kind == "url" and value.startswith("data:"):
        return "base64", value.split(",", 1)[-1]
    return kind, value


def _open(data: bytes, loc: str, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise StropError(f"{loc}: {what} is not a readable image ({' '.join(str(err).split())})") from err


def _resolve(path: str, folders: list[Path]) -> Path | None:
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    return next((folder / candidate for folder in [*folders, Path.cwd()] if (folder / candidate).is_file()), None)


def image_bytes(part: dict[str, Any], loc: str, folders: list[Path], allow_urls: bool = False) -> bytes:
    """The encoded bytes (PNG, JPEG, ...) of the image an image part names, checked to decode. Rows keep
    these, not pixel tensors: a compressed image is tens of times smaller than its pixels."""
    kind, value = image_source(part, loc)
    if kind == "path":
        found = _resolve(value, folders)
        if found is None:
            searched = ", ".join(str(f) for f in [*folders, Path.cwd()])
            raise StropError(f"{loc}: image file not found: {value} (looked in {searched})")
        try:
            data, what = found.read_bytes(), f"image file {found}"
        except OSError as err:
            raise StropError(f"{loc}: cannot read image file {found}: {err.strerror or err}") from err
    elif kind == "base64":
        try:
            data, what = base64.b64decode(value, validate=True), "the base64 image"
        except (binascii.Error, ValueError) as err:
            raise StropError(f"{loc}: field 'base64' is not valid base64 ({err})") from err
    else:
        data, what = _download(value, loc, allow_urls), f"image URL {value}"
    _open(data, loc, what)
    return data


def decode(data: bytes):
    """The RGB PIL image of bytes `image_bytes` returned (and so already checked)."""
    return _open(data, "image", "image")


def load_image(part: dict[str, Any], loc: str, folders: list[Path], allow_urls: bool = False):
    """The RGB PIL image an image part names."""
    return decode(image_bytes(part, loc, folders, allow_urls))


def _download(url: str, loc: str, allow_urls: bool) -> bytes:
    if not allow_urls:
        raise StropError(
            f"{loc}: image URL {url}: strop reads no URL unless allowed; download the image and "
            "give its 'path', or set allow_image_urls: true"
        )
    if not url.startswith(("http://", "https://")):
        raise StropError(f"{loc}: image URL {url} is neither http(s) nor a data: URL")
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT) as response:  # noqa: S310 - http(s) checked above
            return response.read()
    except OSError as err:
        raise StropError(f"{loc}: could not download image URL {url}: {err}") from err
