"""Reading and writing images: PNG (8 and 16 bit, with text metadata) and JPEG.

Images come in and go out as float32 ``(C, H, W)`` tensors in [0, 1], in sRGB. Reading applies
the EXIF orientation and an embedded ICC colour profile (8-bit images, through Pillow's
LittleCMS) and refuses decompression bombs; writing never clips or casts silently, quantises
with rounding (``q = round(x * (2^bits - 1))``) and replaces the target atomically (a temporary
file in the same folder, then ``os.replace``), so an interrupted run never leaves a half-written
image behind.

Pillow decodes and encodes everything except 16-bit colour PNGs, which Pillow only knows as
8-bit: those go through OpenCV (``cv2.imdecode`` / ``cv2.imencode``), which keeps all 16 bits.
PNG text metadata is written as ``iTXt`` chunks (UTF-8) right after ``IHDR`` and read back by a
small chunk parser, so :func:`read_metadata` never decodes pixels. The same parser checks
every chunk's length and CRC-32 before a PNG is decoded (Pillow skips the pixel chunks' CRCs),
and :func:`verify_image` finds a truncated or damaged file without converting its pixels.
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import os
import re
import secrets
import struct
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from torch import Tensor

from ._checks import as_batch, check_choice
from .composite import _image
from .errors import MediaError, ParamError, ShapeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "colour_profile",
    "decode_image",
    "encode_image",
    "image_frames",
    "image_size",
    "read_image",
    "read_metadata",
    "verify_image",
    "write_image",
]

ImageMode = Literal["RGB", "RGBA", "L"]

DEFAULT_MAX_PIXELS = 64_000_000
"""Largest image :func:`read_image` decodes unless told otherwise (64 megapixels)."""

MAX_PIXELS_ENV = "MINART_MAX_PIXELS"
"""Environment variable that overrides :data:`DEFAULT_MAX_PIXELS` (read at call time)."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAX_TEXT_BYTES = 64 * 1024 * 1024
_COMPRESS_TEXT_OVER = 1024
_JPEG_COMMENT_PREFIX = b"minart:"
_JPEG_COMMENT_MORE = b"minart+:"  # the segments after the first, when the text needs several
_JPEG_SEGMENT_MAX = 65533  # a JPEG segment's payload: its 2-byte length counts itself
_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg"}
# Pillow's ImageOps.exif_transpose methods for EXIF orientations 2..8, applied to (H, W, C) arrays.
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),  # (H, W, C) -> (W, H, C)
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # (H, W, C) -> (W, H, C)
    8: lambda a: np.rot90(a, 1),
}


def _max_pixels(max_pixels: int | None) -> int:
    if max_pixels is None:
        raw = os.environ.get(MAX_PIXELS_ENV)
        if raw is None:
            return DEFAULT_MAX_PIXELS
        try:
            max_pixels = int(raw)
        except ValueError:
            raise ParamError(f"{MAX_PIXELS_ENV}={raw!r} must be an integer", param="max_pixels") from None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ParamError(f"max_pixels={max_pixels!r} must be an integer >= 1", param="max_pixels")
    return max_pixels


def _png_ihdr(data: bytes) -> tuple[int, int] | None:
    """``(bit_depth, colour_type)`` of a PNG, or ``None`` for other formats."""
    if data[:8] != _PNG_SIGNATURE or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    return data[24], data[25]


def _from_gray(gray: np.ndarray, mode: str) -> np.ndarray:
    """``(H, W)`` float gray to ``(H, W, C)`` in ``mode`` (alpha 1 for RGBA)."""
    if mode == "L":
        return gray[..., None]
    rgb = np.repeat(gray[..., None], 3, axis=2)  # (H, W) -> (H, W, 3)
    if mode == "RGB":
        return rgb
    return np.concatenate([rgb, np.ones_like(gray)[..., None]], axis=2)


def _from_color(rgba: np.ndarray, mode: str) -> np.ndarray:
    """``(H, W, 3 or 4)`` float RGB(A) to ``mode``; like Pillow, RGB and L drop alpha."""
    if mode == "L":
        r, g, b = rgba[..., 0], rgba[..., 1], rgba[..., 2]
        return (0.299 * r + 0.587 * g + 0.114 * b)[..., None]  # ITU-R 601-2, as Pillow's convert
    if mode == "RGB":
        return rgba[..., :3]
    if rgba.shape[2] == 4:
        return rgba
    return np.concatenate([rgba, np.ones_like(rgba[..., :1])], axis=2)


_RAMPS = bytes(v for level in range(0, 256, 17)
               for v in (level, 0, 0, 0, level, 0, 0, 0, level, level, level, level))
"""Red, green, blue and grey ramps of 16 levels (64 RGB pixels): a profile that moves none of
them by more than a level is sRGB in effect."""


def _colour_transform(im, sixteen_bit: bool) -> tuple[str, object | None, str | None] | None:
    """How the embedded ICC profile of an opened Pillow image ``im`` maps its colours to sRGB.

    Returns ``None`` without a profile; else ``(name, transform, problem)`` (``name`` empty for
    a profile that cannot be read): ``transform`` is a
    LittleCMS transform from the image's mode (``P``/``PA`` read as ``RGB``/``RGBA``, alpha
    kept aside) to ``RGB``, ``None`` when there is nothing to do (the profile is sRGB in
    effect: no level of :data:`_RAMPS` moves by more than one) or when it cannot be
    applied, which ``problem`` then says (16-bit pixels, a profile that does not fit them).
    """
    from PIL import Image

    data = im.info.get("icc_profile")
    if not data:
        return None
    try:
        from PIL import ImageCms
    except ImportError:  # a Pillow built without LittleCMS (every wheel on PyPI has it)
        return "", None, "this Pillow was built without LittleCMS (ImageCms)"
    try:
        profile = ImageCms.ImageCmsProfile(_io.BytesIO(data))
        name = " ".join(ImageCms.getProfileDescription(profile).split()) or "unnamed"
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        return "", None, f"the profile is damaged: {exc}"
    mode = {"P": "RGB", "PA": "RGB", "RGBA": "RGB", "LA": "L"}.get(im.mode, im.mode)
    if sixteen_bit or im.mode.startswith("I"):
        return name, None, "16-bit pixels"
    if mode not in ("RGB", "L", "CMYK"):
        return name, None, f"pixels of mode {im.mode}"
    try:
        transform = ImageCms.buildTransform(
            profile, ImageCms.createProfile("sRGB"), mode, "RGB",
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        return name, None, f"it does not fit {im.mode} pixels: {exc}"
    if mode == "RGB":
        ramp = Image.frombytes("RGB", (64, 1), _RAMPS)
        moved = np.abs(np.asarray(ImageCms.applyTransform(ramp, transform), np.int16)
                       - np.asarray(ramp, np.int16))
        if int(moved.max()) <= 1:
            return name, None, None
    return name, transform, None


def _to_srgb(im, transform):  # -> PIL.Image.Image in RGB or RGBA
    """``im`` (loaded) with its colours mapped to sRGB by ``transform``, alpha kept."""
    from PIL import ImageCms

    if im.mode in ("P", "PA"):
        im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
    alpha = im.getchannel("A") if im.mode in ("RGBA", "LA") else None
    colour = im.convert(im.mode[:-1]) if alpha is not None else im
    out = ImageCms.applyTransform(colour, transform)
    if alpha is not None:
        out.putalpha(alpha)
    return out


@contextlib.contextmanager
def _decoding(source: str) -> Iterator[None]:
    """Pillow's errors while opening or decoding ``source`` as one-line :class:`MediaError`."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # max_pixels decides
        try:
            yield
        except Image.DecompressionBombError as exc:
            raise MediaError(f"image is too large to decode safely ({exc})", file=source) from None
        except UnidentifiedImageError:
            raise MediaError("not a readable image: Pillow recognises no image format in it "
                             "(use PNG or JPEG)", file=source) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise MediaError(f"not a readable image ({type(exc).__name__}: {exc}); it may be cut "
                             "short or damaged: copy or export it again", file=source) from None


def _open_image(stream: BinaryIO, limit: int, source: str):  # -> PIL.Image.Image, header only
    from PIL import Image

    im = Image.open(stream)
    width, height = im.size
    if width * height > limit:
        raise MediaError(
            f"{width}x{height} = {width * height} pixels exceeds max_pixels={limit} "
            f"(decompression-bomb guard; raise max_pixels (max_pixels: N in a recipe) or set "
            f"{MAX_PIXELS_ENV})",
            file=source)
    return im


def decode_image(data: bytes, *, mode: ImageMode = "RGB", max_pixels: int | None = None,
                 source: str = "<bytes>") -> Tensor:
    """Decode an encoded image (PNG, JPEG, WebP, TIFF, BMP, GIF's first frame, ...) to ``(C, H, W)``.

    Pillow decodes the data and ``ImageOps.exif_transpose`` applies its EXIF orientation. An
    embedded ICC colour profile maps 8-bit colours to sRGB (:func:`colour_profile`). 8-bit
    data becomes ``v / 255``; 16-bit PNGs are read at full precision (``v / 65535``; colour ones
    through OpenCV, with the same EXIF orientation applied). Conversions follow Pillow: ``"L"``
    is ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B``, ``"RGB"`` and ``"L"`` drop an alpha
    channel (no compositing), ``"RGBA"`` adds alpha 1 to opaque images.

    The size is read from the header and checked against ``max_pixels`` before any pixel is
    decoded. That limit supersedes Pillow's ``DecompressionBombWarning``; Pillow's
    ``DecompressionBombError`` (above ``2 * Image.MAX_IMAGE_PIXELS``) still applies.

    Args:
        data: the encoded file's bytes.
        mode: ``"RGB"`` (3 channels), ``"RGBA"`` (4) or ``"L"`` (1).
        max_pixels: refuse images with more pixels than this (decompression-bomb guard).
            Default: the ``MINART_MAX_PIXELS`` environment variable, else 64,000,000.
        source: what to call the data in error messages (a file name).

    Returns:
        Tensor ``(C, H, W)`` float32 in [0, 1], ``H x W`` after EXIF orientation.

    Raises:
        MediaError: unreadable, corrupt or truncated data (for PNG: a chunk cut short, no
            ``IEND``, or a chunk whose CRC-32 does not match), unsupported pixel format, or
            more pixels than allowed; the message starts with ``source``.
        ParamError: bad ``mode`` or ``max_pixels``.

    Example:
        >>> png = encode_image(torch.tensor([[[0.0, 0.2, 1.0]]]), bits=16)
        >>> decode_image(png, mode="RGBA")[:, 0, 1].tolist()
        [0.20000000298023224, 0.20000000298023224, 0.20000000298023224, 1.0]
    """
    from PIL import ImageOps

    check_choice("mode", mode, ("RGB", "RGBA", "L"))
    limit = _max_pixels(max_pixels)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ParamError(f"data must be bytes, got {type(data).__name__}", param="data")
    data = bytes(data)
    with _decoding(source):
        im = _open_image(_io.BytesIO(data), limit, source)
        ihdr = _png_ihdr(data)
        if ihdr is not None:
            _verify_png(data, source)  # Pillow skips IDAT's CRCs; OpenCV (16 bit) does not
        if ihdr is not None and ihdr[0] == 16 and ihdr[1] in (2, 4, 6):
            pixels = _decode_png16_color(data, source)
            orientation = im.getexif().get(0x0112, 1)
            pixels = np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(pixels))
            array = _from_color(pixels.astype(np.float32) / 65535.0, mode)
        else:
            profile = _colour_transform(im, sixteen_bit=False)
            im.load()
            im = ImageOps.exif_transpose(im)
            if profile is not None and profile[1] is not None:
                im = _to_srgb(im, profile[1])
            array = _pillow_to_float(im, mode, source)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    return tensor.permute(2, 0, 1).contiguous()  # (H, W, C) -> (C, H, W)


def read_image(path: str | os.PathLike, *, mode: ImageMode = "RGB",
               max_pixels: int | None = None, sha256: str | None = None) -> Tensor:
    """Read an image file as a float32 ``(C, H, W)`` tensor in [0, 1] (see :func:`decode_image`).

    EXIF orientation applied, 16-bit PNGs at full precision, ``mode`` conversion as Pillow,
    images over ``max_pixels`` (default ``MINART_MAX_PIXELS`` or 64,000,000) refused unread.

    Args:
        path: image file.
        mode: ``"RGB"`` (3 channels), ``"RGBA"`` (4) or ``"L"`` (1).
        max_pixels: decompression-bomb guard, see :func:`decode_image`.
        sha256: the hex SHA-256 the file's bytes must have (checked on the very bytes decoded,
            so a file replaced while it is read cannot pass as the expected one).

    Returns:
        Tensor ``(C, H, W)`` float32 in [0, 1], ``H x W`` after EXIF orientation.

    Raises:
        MediaError: missing, unreadable, corrupt or truncated file, unsupported pixel format,
            more pixels than allowed, or not the expected SHA-256; the message starts with the
            file name.
        ParamError: bad ``mode`` or ``max_pixels``.

    Example:
        >>> read_image("no/such/picture.png")
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: no/such/picture.png: no such image file
    """
    name = os.fspath(path)
    data = _read_bytes(name, "image")
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise MediaError(f"{name} changed since the recipe was checked (its SHA-256 is not "
                         f"{sha256[:12]}...); run the command again to use the new file")
    return decode_image(data, mode=mode, max_pixels=max_pixels, source=name)


def image_size(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` of the image :func:`read_image` would return, reading only headers.

    Reads the header and the EXIF orientation (orientations 5 to 8 turn the picture a quarter,
    swapping width and height); a PNG's ``eXIf`` chunk is found wherever it lies, as Pillow
    finds it once the pixels are decoded.

    Args:
        path: image file.
        max_pixels: decompression-bomb guard, as in :func:`read_image`.

    Returns:
        ``(width, height)`` after EXIF orientation.

    Raises:
        MediaError: missing or unreadable file, no image format recognised, or more pixels
            than allowed; the message starts with the file name.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "wide.png"
        >>> write_image(target, torch.zeros(3, 2, 5))
        >>> image_size(target)
        (5, 2)
    """
    from PIL import Image

    name = os.fspath(path)
    limit = _max_pixels(max_pixels)
    with _opened(name, "image") as stream, _decoding(name):
        im = _open_image(stream, limit, name)
        width, height = im.size
        stream.seek(0)
        if _png_ihdr(stream.read(33)) is not None:  # Pillow's PNG getexif() decodes the pixels
            exif = Image.Exif()
            try:
                raw = next((payload for kind, payload in _png_chunks(stream, name, only=b"eXIf")
                            if kind == b"eXIf"), None)
            except MediaError:  # damaged past the pixels: Pillow may still decode it
                raw = None
            if raw:
                exif.load(raw)
        else:
            exif = im.getexif()
        orientation = exif.get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def colour_profile(path: str | os.PathLike, *,
                   max_pixels: int | None = None) -> tuple[str, str | None] | None:
    """The ICC colour profile an image file embeds, as :func:`read_image` treats it.

    :func:`read_image` maps 8-bit colours (RGB, grey, CMYK, palette) from an embedded profile
    to sRGB with LittleCMS (relative colorimetric), as image viewers and browsers show them.
    It cannot for 16-bit pixels or a damaged profile: their values are read as sRGB.

    Args:
        path: image file.
        max_pixels: decompression-bomb guard, as in :func:`read_image` (checked first).

    Returns:
        ``None`` without a profile; else ``(name, problem)``: the profile's description (empty
        when it cannot be read), and ``None`` when the colours are mapped to sRGB (or the
        profile is sRGB already), or why they cannot be.

    Raises:
        MediaError: missing or unreadable file, no image format recognised, or more pixels
            than allowed; the message starts with the file name.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "plain.png"
        >>> write_image(target, torch.zeros(3, 2, 5))
        >>> colour_profile(target) is None
        True
    """
    name = os.fspath(path)
    with _opened(name, "image") as stream, _decoding(name):
        im = _open_image(stream, _max_pixels(max_pixels), name)
        stream.seek(0)
        ihdr = _png_ihdr(stream.read(33))
        found = _colour_transform(im, sixteen_bit=ihdr is not None and ihdr[0] == 16)
    return None if found is None else (found[0], found[2])


def image_frames(path: str | os.PathLike, *, max_pixels: int | None = None) -> int:
    """How many frames an image file holds: more than one for an animated GIF, PNG or WebP or
    a multi-page TIFF, of which :func:`read_image` decodes the first.

    Args:
        path: image file.
        max_pixels: decompression-bomb guard, as in :func:`read_image` (checked first).

    Returns:
        The number of frames (1 for a still image).

    Raises:
        MediaError: missing or unreadable file, no image format recognised, or more pixels
            than allowed; the message starts with the file name.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "still.png"
        >>> write_image(target, torch.zeros(3, 2, 5))
        >>> image_frames(target)
        1
    """
    name = os.fspath(path)
    with _opened(name, "image") as stream, _decoding(name):
        return int(getattr(_open_image(stream, _max_pixels(max_pixels), name), "n_frames", 1))


def verify_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> None:
    """Refuse an image file that is cut short or damaged, as :func:`read_image` would, quickly.

    A PNG's chunks are walked: each must lie within the file and match its CRC-32, and the
    ``IEND`` chunk must be there. Other formats (JPEG, ...) are decoded by Pillow, as
    :func:`read_image` decodes them, and the pixels dropped.

    Args:
        path: image file.
        max_pixels: decompression-bomb guard, as in :func:`read_image` (checked first).

    Returns:
        None.

    Raises:
        MediaError: missing or unreadable file, no image format recognised, more pixels than
            allowed, a file that is truncated or corrupt, or pixels :func:`read_image` refuses
            (floating point); the message starts with the file name and says what to do.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "cut.png"
        >>> write_image(target, torch.zeros(3, 2, 5))
        >>> verify_image(target)
        >>> _ = target.write_bytes(target.read_bytes()[:-12])  # drop the IEND chunk
        >>> verify_image(target)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: ...cut.png: truncated PNG: the file ends before its IEND chunk; ...
    """
    name = os.fspath(path)
    limit = _max_pixels(max_pixels)
    with _opened(name, "image") as stream, _decoding(name):
        im = _open_image(stream, limit, name)
        stream.seek(0)
        if _png_ihdr(stream.read(33)) is not None:
            # Length and CRC-32 of every chunk find a file cut short and damaged bytes at
            # about the speed of reading it (~20 ms for a 4000x4000 photo, 33 MB); inflating
            # the pixels too (Pillow's verify() does not) would cost 0.3-0.8 s and add only
            # files an encoder wrote wrong with valid CRCs, which the run still refuses.
            _verify_png(stream, name)
        else:
            # JPEG has no checksums: only decoding finds missing scans (~0.15 s for 4000x4000).
            im.load()
            _check_pixel_format(im, name)


def has_transparency(path: str | os.PathLike, *, max_pixels: int | None = None) -> bool:
    """Whether any pixel of an image file is less than fully opaque.

    Only a file that can hold transparency (an alpha channel, a ``tRNS`` chunk) is decoded, as
    :func:`read_image` would in ``"RGBA"`` mode; for the others the header answers.

    Args:
        path: image file.
        max_pixels: decompression-bomb guard, as in :func:`read_image`.

    Returns:
        True when some pixel's alpha is below 1.

    Raises:
        MediaError: as :func:`read_image`.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "half.png"
        >>> write_image(target, torch.cat([torch.zeros(3, 2, 2), torch.full((1, 2, 2), 0.5)]))
        >>> has_transparency(target)
        True
        >>> write_image(target, torch.zeros(3, 2, 2))
        >>> has_transparency(target)
        False
    """
    name = os.fspath(path)
    with _opened(name, "image") as stream, _decoding(name):
        im = _open_image(stream, _max_pixels(max_pixels), name)
        if "A" not in im.getbands() and "transparency" not in im.info:
            return False
    return bool(read_image(name, mode="RGBA", max_pixels=max_pixels)[3].min() < 1)


@contextlib.contextmanager
def _opened(name: str, what: str) -> Iterator[BinaryIO]:
    """``name`` open for reading, its errors as one-line :class:`MediaError`."""
    try:
        handle = open(name, "rb")  # noqa: SIM115 (closed below; the errors are the point)
    except FileNotFoundError:
        raise MediaError(f"no such {what} file", file=name) from None
    except IsADirectoryError:
        raise MediaError(f"is a folder, not an {what} file", file=name) from None
    except OSError as exc:
        raise MediaError(f"cannot read the file ({exc.strerror})", file=name) from None
    with handle:
        yield handle


def _read_bytes(name: str, what: str) -> bytes:
    with _opened(name, what) as handle:
        try:
            return handle.read()
        except OSError as exc:  # EIO, or a folder on systems that open those
            raise MediaError(f"cannot read the file ({exc.strerror})", file=name) from None


def _decode_png16_color(data: bytes, name: str) -> np.ndarray:
    """A 16-bit colour PNG as ``(H, W, 3 or 4)`` uint16 RGB(A), through OpenCV."""
    import cv2

    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint16 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise MediaError("corrupt or truncated 16-bit PNG; copy or export it again", file=name)
    code = cv2.COLOR_BGR2RGB if array.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(array, code)


def _check_pixel_format(im, name: str) -> None:
    """Refuse a loaded Pillow image whose pixels have no [0, 1] reading (float, or 32-bit
    integers outside the 16-bit range)."""
    if im.mode == "F":
        raise MediaError("floating-point images are not supported; convert to 8 or 16 bit", file=name)
    if im.mode == "I":
        values = np.asarray(im)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise MediaError(f"32-bit integer pixels span [{values.min()}, {values.max()}], "
                             "outside the 16-bit range", file=name)


def _pillow_to_float(im, mode: str, name: str) -> np.ndarray:
    """A loaded Pillow image as ``(H, W, C)`` float32 in [0, 1] in ``mode``."""
    _check_pixel_format(im, name)
    if im.mode.startswith("I;16") or im.mode == "I":
        return _from_gray(np.asarray(im).astype(np.float32) / 65535.0, mode)
    array = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    return array.reshape(im.height, im.width, -1)  # (H, W[, C]) -> (H, W, C)


def _quantize(image: Tensor, bits: int) -> np.ndarray:
    """``(..., C, H, W)`` in [0, 1] to ``(..., H, W, C)`` uint8/uint16 with ``round(x * (2^bits - 1))``."""
    scale = (1 << bits) - 1
    q = (image.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * scale).round()
    array = q.movedim(-3, -1).numpy()  # (..., C, H, W) -> (..., H, W, C)
    return np.ascontiguousarray(array.astype(np.uint8 if bits == 8 else np.uint16))


def temp_name_pattern(target: str | os.PathLike) -> re.Pattern[str]:
    """The names of the temporary files :func:`write_image` and friends write ``target`` through.

    ``.<name>.<12 hex digits>.tmp<suffix>`` in ``target``'s folder, renamed over ``target`` once
    complete; a writer killed mid-write leaves one behind.

    Example:
        >>> bool(temp_name_pattern("out/a.png").fullmatch(".a.png.0123456789ab.tmp.png"))
        True
    """
    name = Path(target).name
    return re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp{re.escape(Path(name).suffix)}")


def _temp_path(target: Path) -> Path:
    """A fresh, empty file next to ``target`` whose name ends like ``target``'s.

    Created with mode 0666 less the process umask, as ``open(path, "w")`` would (``mkstemp``
    makes a private 0600 file, and reading the umask means setting it, which races other
    threads' file creation).
    """
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp{target.suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name next to {target}")


def write_bytes_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target``, fsync it, then ``os.replace``.

    Readers see the old file or the new one, never a part (a killed writer leaves only a
    temporary file, see :func:`temp_name_pattern`).
    """
    tmp = _temp_path(target)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _target_format(path: str | os.PathLike, kinds: Mapping[str, str], what: str) -> tuple[Path, str]:
    """The target path and the format its extension names; touches nothing."""
    target = Path(os.fspath(path))
    fmt = kinds.get(target.suffix.lower())
    if fmt is None:
        options = ", ".join(kinds)
        raise MediaError(f"unsupported {what} extension {target.suffix or '(none)'!r}; use {options}",
                         file=str(target))
    if target.is_dir():
        raise MediaError(f"is a folder, not a {what} file", file=str(target))
    return target, fmt


def _text_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Validate text metadata (PNG keyword rules) and add ``minart_version``."""
    from . import __version__

    if metadata is not None and not isinstance(metadata, Mapping):
        raise ParamError(f"metadata must be a dict of strings, got {type(metadata).__name__}",
                         param="metadata")
    items = dict(metadata or {})
    for key, value in items.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 79 or key != key.strip() or "  " in key \
                or any(not (32 <= ord(ch) <= 126 or 161 <= ord(ch) <= 255) for ch in key):
            raise ParamError(f"metadata key {key!r} must be 1-79 printable Latin-1 characters "
                             "without leading, trailing or double spaces (PNG keyword rules)",
                             param="metadata")
        if not isinstance(value, str):
            raise ParamError(f"metadata[{key!r}] must be a string, got {type(value).__name__}; "
                             "convert it yourself (e.g. str(seed) or json.dumps)", param="metadata")
    items.setdefault("minart_version", __version__)
    return items


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk: length, type, payload, CRC-32 of type and payload."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _itxt_chunk(key: str, value: str) -> bytes:
    """An ``iTXt`` chunk (zlib-compressed above 1 KiB), no language tag."""
    text = value.encode("utf-8")
    compressed = len(text) > _COMPRESS_TEXT_OVER
    if compressed:
        text = zlib.compress(text, 9)
    head = key.encode("latin-1") + b"\x00" + bytes([int(compressed), 0]) + b"\x00\x00"
    return _png_chunk(b"iTXt", head + text)


def _insert_after_ihdr(png: bytes, chunks: bytes) -> bytes:
    """Insert encoded chunks right after ``IHDR`` (so they precede ``IDAT``)."""
    end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:end] + chunks + png[end:]


def _encode_png(array: np.ndarray, bits: int) -> bytes:
    """``(H, W, C)`` uint8/uint16 to PNG bytes: Pillow, or OpenCV for 16-bit colour."""
    channels = array.shape[2]
    if bits == 16 and channels in (3, 4):
        import cv2

        code = cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA
        ok, buffer = cv2.imencode(".png", cv2.cvtColor(array, code))
        if not ok:
            raise MediaError("OpenCV could not encode the 16-bit PNG")
        return buffer.tobytes()
    from PIL import Image

    plane = array[..., 0] if channels == 1 else array  # (H, W, 1) -> (H, W): Pillow's L or I;16
    out = _io.BytesIO()
    Image.fromarray(plane).save(out, format="PNG")
    return out.getvalue()


def encode_image(image: Tensor, *, format: Literal["png", "jpeg"] = "png", bits: Literal[8, 16] = 8,
                 metadata: Mapping[str, str] | None = None, quality: int = 95) -> bytes:
    """Encode a ``(C, H, W)`` image in [0, 1] as PNG (8 or 16 bit) or JPEG bytes.

    Pixels are quantised as ``q = round(x * (2^bits - 1))``; values within 1e-6 of [0, 1] count
    as in range, anything else (or NaN/Inf) is refused, never clipped. PNG takes 1 (gray), 3
    (RGB) or 4 (RGBA) channels at 8 or 16 bits; JPEG 1 or 3 channels at 8 bits and ``quality``.
    ``metadata`` plus ``minart_version`` is stored as PNG ``iTXt`` chunks (zlib-compressed above
    1 KiB) or, for JPEG, as one JSON comment (``COM`` segment); :func:`read_metadata` returns it.

    Args:
        image: ``(C, H, W)`` or ``(1, C, H, W)`` float tensor in [0, 1], C in 1, 3, 4.
        format: ``"png"`` or ``"jpeg"``.
        bits: 8 or 16 (16 for PNG only).
        metadata: text to store: string keys (PNG keyword rules: 1-79 Latin-1 characters) and
            string values (any Unicode), e.g. the recipe text and the seed.
        quality: JPEG quality 1-100 (unused by PNG, which is lossless).

    Returns:
        The encoded file as bytes.

    Raises:
        ShapeError: not an image, a batch of several, NaN/Inf, values outside [0, 1], an
            unsupported channel count, or alpha for JPEG.
        ParamError: bad ``format``, ``bits``, ``quality`` or metadata.

    Example:
        >>> png = encode_image(torch.zeros(3, 2, 2), metadata={"seed": "7"})
        >>> png[:4], png[24], png[25]  # signature, IHDR bit depth 8, colour type 2 (RGB)
        (b'\\x89PNG', 8, 2)
    """
    check_choice("format", format, ("png", "jpeg"))
    if bits not in (8, 16) or isinstance(bits, bool):
        raise ParamError(f"bits={bits!r} must be 8 or 16", param="bits")
    if format == "jpeg" and bits == 16:
        raise ParamError("bits=16 needs PNG; JPEG stores 8 bits", param="bits")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ParamError(f"quality={quality!r} must be an integer in [1, 100]", param="quality")
    batch, _ = as_batch(image, name="image")
    if batch.shape[0] != 1:
        raise ShapeError(f"image must be one (C, H, W) image, got a batch of shape {tuple(image.shape)}; "
                         "write each image or make a grid")
    channels = batch.shape[1]
    if channels not in (1, 3, 4):
        raise ShapeError(f"image must have 1, 3 or 4 channels, got {channels}")
    if format == "jpeg" and channels == 4:
        raise ShapeError("JPEG has no alpha channel; write a .png or drop the alpha channel first")
    _image(batch, "image")
    texts = _text_metadata(metadata)
    array = _quantize(batch[0], bits)
    if format == "png":
        chunks = b"".join(_itxt_chunk(key, value) for key, value in texts.items())
        return _insert_after_ihdr(_encode_png(array, bits), chunks)
    from PIL import Image

    plane = array[..., 0] if channels == 1 else array  # (H, W, 1) -> (H, W): Pillow's L
    comment = _JPEG_COMMENT_PREFIX + json.dumps(texts, ensure_ascii=True, sort_keys=True).encode("ascii")
    out = _io.BytesIO()
    if len(comment) <= _JPEG_SEGMENT_MAX:
        Image.fromarray(plane).save(out, format="JPEG", quality=quality, comment=comment)
        return out.getvalue()
    Image.fromarray(plane).save(out, format="JPEG", quality=quality)
    return _with_jpeg_comments(out.getvalue(), comment)


def _with_jpeg_comments(data: bytes, comment: bytes) -> bytes:
    """``data`` (a JPEG) with ``comment`` in as many COM segments as it needs, after its APPn ones.

    A recipe that does not fit the 64 KiB of one segment continues in segments marked
    ``minart+:``, which :func:`read_metadata` joins back.
    """
    room = _JPEG_SEGMENT_MAX - len(_JPEG_COMMENT_MORE)
    rest = comment[_JPEG_SEGMENT_MAX:]
    segments = [comment[:_JPEG_SEGMENT_MAX],
                *(_JPEG_COMMENT_MORE + rest[i:i + room] for i in range(0, len(rest), room))]
    at = 2  # after SOI
    while data[at] == 0xFF and 0xE0 <= data[at + 1] <= 0xEF:  # APP0 (JFIF) .. APP15
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    com = b"".join(b"\xff\xfe" + (len(seg) + 2).to_bytes(2, "big") + seg for seg in segments)
    return data[:at] + com + data[at:]


def write_image(path: str | os.PathLike, image: Tensor, *, bits: Literal[8, 16] = 8,
                metadata: Mapping[str, str] | None = None, quality: int = 95) -> None:
    """Write a ``(C, H, W)`` image in [0, 1] to a PNG or JPEG file, atomically.

    The format comes from the extension (``.png``, ``.jpg``, ``.jpeg``, any case); encoding,
    quantisation and metadata are :func:`encode_image`'s. Everything is validated before the
    file system is touched; then the parent folder is created if needed and the bytes go to a
    temporary file in the same folder that ``os.replace`` moves onto ``path``, so the file
    appears complete or not at all.

    Args:
        path: target file; ``.png``, ``.jpg`` or ``.jpeg``.
        image: ``(C, H, W)`` or ``(1, C, H, W)`` float tensor in [0, 1], C in 1, 3, 4.
        bits: 8 or 16 (16 for PNG only).
        metadata: text to store (string keys and values), e.g. the recipe text and the seed.
        quality: JPEG quality 1-100 (unused by PNG).

    Returns:
        None.

    Raises:
        ShapeError: see :func:`encode_image`.
        ParamError: see :func:`encode_image`.
        MediaError: unsupported extension, or the file cannot be written.

    Example:
        >>> write_image("out/art.tiff", torch.zeros(3, 2, 2))
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: out/art.tiff: unsupported image extension '.tiff'; use .png, .jpg, .jpeg
    """
    target, fmt = _target_format(path, _FORMATS, "image")
    data = encode_image(image, format=fmt, bits=bits, metadata=metadata, quality=quality)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(target, data)
    except OSError as exc:
        raise MediaError(f"cannot write the image ({exc.strerror or exc})", file=str(target)) from None


def _inflate(payload: bytes, name: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(payload, _MAX_TEXT_BYTES)
    except zlib.error:
        raise MediaError("corrupt compressed PNG text chunk", file=name) from None
    if inflater.unconsumed_tail:
        raise MediaError(f"a PNG text chunk inflates beyond {_MAX_TEXT_BYTES} bytes", file=name)
    return text


def _png_chunks(data: bytes | BinaryIO, name: str, *, only: bytes | None = None,
                verify: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """``(kind, payload)`` of each chunk of a PNG up to ``IEND`` (excluded), in file order.

    ``data`` is the file's bytes or an open binary file; from a file, only the chunk headers
    are read (and the payloads of chunks of kind ``only``, when given; others come with ``b""``).
    With ``verify``, every chunk's CRC-32 (``IEND``'s included) is read and checked too.

    Raises:
        MediaError: a chunk runs past the end of the data, there is no ``IEND``, or (with
            ``verify``) a chunk's CRC does not match its bytes.
    """
    stream = _io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    end = stream.seek(0, os.SEEK_END)
    pos = 8
    while pos + 8 <= end:
        stream.seek(pos)
        head = stream.read(8)
        length, kind = struct.unpack(">I", head[:4])[0], head[4:]
        if pos + 8 + length + (4 if verify else 0) > end:
            raise MediaError(f"truncated PNG: the file ends inside its {kind.decode('latin-1')!r} "
                             f"chunk (at byte {end}); it was cut short or damaged: copy or "
                             "export it again", file=name)
        wanted = only is None or kind == only
        payload = stream.read(length) if wanted else b""
        if verify:
            crc = zlib.crc32(payload, zlib.crc32(kind))
            left = 0 if wanted else length
            while left:  # in pieces: an IDAT chunk may hold the whole picture
                piece = stream.read(min(left, 1 << 20))
                crc, left = zlib.crc32(piece, crc), left - len(piece)
            if struct.unpack(">I", stream.read(4))[0] != crc:
                raise MediaError(f"corrupt PNG: the {kind.decode('latin-1')!r} chunk at byte {pos} "
                                 "fails its CRC-32 check, so its bytes were damaged; copy or "
                                 "export the file again", file=name)
        pos += 12 + length
        if kind == b"IEND":
            return
        yield kind, payload
    raise MediaError("truncated PNG: the file ends before its IEND chunk; it was cut short or "
                     "damaged: copy or export it again", file=name)


def _verify_png(data: bytes | BinaryIO, name: str) -> None:
    """Check every chunk's length and CRC-32 and that ``IEND`` is there (see :func:`_png_chunks`)."""
    for _ in _png_chunks(data, name, only=b"", verify=True):  # only=b"": keep no payload
        pass


def _png_text(data: bytes, name: str) -> dict[str, str]:
    """All ``tEXt``, ``zTXt`` and ``iTXt`` chunks of a PNG, without decoding pixels."""
    texts: dict[str, str] = {}
    for kind, payload in _png_chunks(data, name):
        if kind not in (b"tEXt", b"zTXt", b"iTXt"):
            continue
        key, sep, rest = payload.partition(b"\x00")
        if not sep:
            raise MediaError(f"malformed PNG {kind.decode()} chunk", file=name)
        if kind == b"tEXt":
            value = rest.decode("latin-1")
        elif kind == b"zTXt":
            value = _inflate(rest[1:], name).decode("latin-1")
        else:
            if len(rest) < 2:
                raise MediaError("malformed PNG iTXt chunk", file=name)
            compressed, fields = rest[0], rest[2:].split(b"\x00", 2)
            if len(fields) != 3:
                raise MediaError("malformed PNG iTXt chunk", file=name)
            raw = _inflate(fields[2], name) if compressed else fields[2]
            value = raw.decode("utf-8", errors="replace")
        texts[key.decode("latin-1")] = value
    return texts


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The text metadata of an image: PNG text chunks or minart's JSON JPEG comment.

    PNG: every ``tEXt``, ``zTXt`` and ``iTXt`` chunk, ``{keyword: text}`` (pixels are not
    decoded). JPEG: the dict :func:`write_image` stored, or ``{"comment": text}`` for a foreign
    comment. Other formats: the string entries of Pillow's ``info``.

    Args:
        path: image file.

    Returns:
        dict[str, str], empty when the file has no text.

    Raises:
        MediaError: missing, unreadable or corrupt file.

    Example:
        >>> read_metadata("no/such/picture.png")
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: no/such/picture.png: no such image file
"""
    from PIL import Image, UnidentifiedImageError

    name = os.fspath(path)
    data = _read_bytes(name, "image")
    if data[:8] == _PNG_SIGNATURE:
        return _png_text(data, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(_io.BytesIO(data)) as im:
                info = dict(im.info)
                comments = [c for kind, c in getattr(im, "applist", ()) if kind == "COM"]
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"not a readable image ({type(exc).__name__}: {exc})", file=name) from None
    comment = info.pop("comment", None)
    texts = {k: v for k, v in info.items() if isinstance(k, str) and isinstance(v, str)}
    ours = next((i for i, c in enumerate(comments) if c.startswith(_JPEG_COMMENT_PREFIX)), None)
    if ours is not None:
        payload = [comments[ours][len(_JPEG_COMMENT_PREFIX):]]
        for more in comments[ours + 1:]:
            if not more.startswith(_JPEG_COMMENT_MORE):
                break
            payload.append(more[len(_JPEG_COMMENT_MORE):])
        try:
            stored = json.loads(b"".join(payload))
        except ValueError:
            raise MediaError("corrupt minart metadata comment", file=name) from None
        if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
            raise MediaError("corrupt minart metadata comment", file=name)
        texts.update(stored)
    elif comment:
        texts["comment"] = comment.decode("latin-1") if isinstance(comment, bytes) else str(comment)
    return texts
