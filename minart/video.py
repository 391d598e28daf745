"""Video: encode frame sequences to WebM (VP9), MP4 (H.264/H.265) or GIF, and decode them back.

Encoding pipes raw RGB frames into the ffmpeg binary bundled with imageio-ffmpeg
(``imageio_ffmpeg.get_ffmpeg_exe()``), with every setting explicit: the codec matches the
container (imageio's writer would pick libx264 for ``.webm``), frames are never resized to
multiples of 16 (imageio's ``macro_block_size``), odd sizes are padded to even ones by
replicating the last row/column, or refused, before 4:2:0 chroma subsampling, and GIFs get a
palette built for the clip (``palettegen`` + ``paletteuse``). The file appears complete or not at
all (temporary file in the same folder + ``os.replace``). A JSON sidecar ``<file>.json`` holds
the ``metadata`` (the recipe layer stores the recipe there for ``minart reproduce``).

WebM and MP4 are converted to Y'CbCr with the BT.709 matrix in limited ("tv") range and tagged
BT.709, the usual tagging for web video; :func:`read_video` decodes with the file's tags.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ._checks import check_choice, check_range
from .composite import _frames, _image
from .errors import MediaError, ParamError, ShapeError
from .io import _quantize, _target_format, _temp_path, write_bytes_atomically

__all__ = [
    "GIF_FPS_RANGE",
    "VIDEO_CODECS",
    "check_gif_fps",
    "encode_video",
    "output_size",
    "read_sidecar",
    "read_video",
    "sidecar_path",
]

Pad = Literal["even", "refuse"]

_CONTAINERS = {".webm": "webm", ".mp4": "mp4", ".gif": "gif"}
VIDEO_CODECS: dict[str, tuple[str, ...]] = {
    "webm": ("libvpx-vp9",),
    "mp4": ("libx264", "libx265"),
    "gif": ("gif",),
}
"""Codecs :func:`encode_video` accepts per container; the first one is the default."""

_MAX_CRF = {"libvpx-vp9": 63, "libx264": 51, "libx265": 51}

GIF_FPS_RANGE = (100 / 65535, 50.0)
"""Frame rates a GIF plays as written: a GIF stores each frame's delay in whole 1/100 s in two
bytes (at most 65535, 655.35 s), and browsers play a delay of 0 or 1 (10 ms or less) as 1/10 s,
so every delay must be 2 to 65535 hundredths."""

_DEFAULT_QUALITY = 55
"""``quality`` of :func:`encode_video` when it is left out (libx264's own default CRF 23)."""


def check_gif_fps(fps: float) -> None:
    """Refuse a frame rate a GIF cannot hold (see :data:`GIF_FPS_RANGE`).

    Args:
        fps: frames per second (> 0).

    Raises:
        ParamError: ``fps`` outside :data:`GIF_FPS_RANGE`, with the range and why.

    Example:
        >>> check_gif_fps(24)
        >>> check_gif_fps(60)
        Traceback (most recent call last):
        ...
        minart.errors.ParamError: fps=60 does not fit a GIF: ... use 0.001526 <= fps <= 50, ...
    """
    low, high = GIF_FPS_RANGE
    if not low <= fps <= high:
        raise ParamError(
            f"fps={fps:g} does not fit a GIF: a GIF stores each frame's delay in whole 1/100 s, "
            "at most 65535 (2 bytes, 655.35 s), and browsers play delays under 2/100 s as "
            "1/10 s; use 0.001526 <= fps <= 50, or a .webm/.mp4 path", param="fps")


def _crf(codec: str, quality: int) -> int:
    return round((1 - quality / 100) * _MAX_CRF[codec])


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a video: the video's path with ``.json`` appended.

    Args:
        path: the video file.

    Returns:
        ``Path`` of ``<path>.json`` (``clip.webm`` -> ``clip.webm.json``).

    Example:
        >>> sidecar_path("out/ocean.webm").as_posix()
        'out/ocean.webm.json'
    """
    target = Path(os.fspath(path))
    return target.with_name(target.name + ".json")


def output_size(width: int, height: int, *, container: Literal["webm", "mp4", "gif"],
                pad: Pad = "even") -> tuple[int, int]:
    """``(width, height)`` of the video :func:`encode_video` writes for frames of this size.

    WebM and MP4 store 4:2:0 chroma, which needs even sizes: ``pad="even"`` rounds each odd
    side up by one (the last row/column is repeated), ``pad="refuse"`` raises. GIF keeps any size.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        container: ``"webm"``, ``"mp4"`` or ``"gif"``.
        pad: ``"even"`` or ``"refuse"``.

    Returns:
        ``(width, height)`` of the encoded (and decoded) video.

    Raises:
        MediaError: odd size for WebM/MP4 with ``pad="refuse"``.
        ParamError: unknown ``container`` or ``pad``.

    Example:
        >>> output_size(33, 26, container="mp4"), output_size(33, 26, container="gif")
        ((34, 26), (33, 26))
    """
    check_choice("container", container, tuple(VIDEO_CODECS))
    check_choice("pad", pad, ("even", "refuse"))
    if container == "gif" or (width % 2 == 0 and height % 2 == 0):
        return width, height
    if pad == "refuse":
        raise MediaError(
            f"{container} video (4:2:0 chroma) needs an even width and height, got {width}x{height}; "
            "use pad='even' to repeat the last column/row, or resize/crop first")
    return width + width % 2, height + height % 2


_BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact"]
"""Same frames, same bytes: no random WebM track/segment UIDs, no dates, no ffmpeg version."""


def _codec_args(container: str, codec: str, quality: int, loop: int) -> list[str]:
    if container == "gif":
        graph = ("[0:v]split[a][b];[a]palettegen=stats_mode=full:reserve_transparent=0[p];"
                 "[b][p]paletteuse=dither=sierra2_4a")
        return ["-filter_complex", graph, "-loop", str(loop), *_BITEXACT]
    scale = ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
             "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv"]
    crf = ["-crf", str(_crf(codec, quality))]
    if codec == "libvpx-vp9":
        return [*scale, "-c:v", codec, *crf, "-b:v", "0", "-deadline", "good", "-cpu-used", "4",
                "-row-mt", "1", *_BITEXACT]
    if codec == "libx264":
        return [*scale, "-c:v", codec, *crf, "-preset", "medium", "-movflags", "+faststart",
                *_BITEXACT]
    return [*scale, "-c:v", codec, *crf, "-preset", "medium", "-x265-params", "log-level=error",
            "-tag:v", "hvc1", "-movflags", "+faststart", *_BITEXACT]


def _sidecar_text(metadata: Mapping[str, Any]) -> str:
    from . import __version__

    if not isinstance(metadata, Mapping):
        raise ParamError(f"metadata must be a dict, got {type(metadata).__name__}", param="metadata")
    items = dict(metadata)
    if not all(isinstance(key, str) for key in items):
        raise ParamError("metadata keys must be strings", param="metadata")
    items.setdefault("minart_version", __version__)
    try:
        return json.dumps(items, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise ParamError(f"metadata must be JSON-serialisable ({exc})", param="metadata") from None


def encode_video(path: str | os.PathLike, frames: Tensor, *, fps: float = 24.0,
                 quality: int = _DEFAULT_QUALITY, loop: int = 0, codec: str | None = None,
                 metadata: Mapping[str, Any] | None = None, pad: Pad = "even") -> None:
    """Encode ``(T, C, H, W)`` frames in [0, 1] to ``.webm``, ``.mp4`` or ``.gif``, atomically.

    The container comes from the extension:

    ``.webm``  VP9 (``libvpx-vp9``), constant quality ``-crf N -b:v 0``, ``-deadline good
               -cpu-used 4 -row-mt 1``, yuv420p.
    ``.mp4``   H.264 (``libx264``, default) or H.265 (``libx265``), ``-crf N``, yuv420p,
               ``-movflags +faststart`` (playable while downloading).
    ``.gif``   one 256-colour palette for the whole clip (``palettegen=stats_mode=full``, then
               ``paletteuse`` with Sierra dithering); it has no ``quality`` setting.

    ``N = round((1 - quality / 100) * max_crf)`` with ``max_crf`` 63 for VP9 and 51 for
    H.264/H.265; the default quality 55 gives libx264's own default CRF 23 (VP9: 28). Frames are
    quantised to 8 bits with rounding; 1-channel frames are encoded as gray RGB.

    Output size: WebM/MP4 frames of odd width or height are padded to the next even size by
    repeating the last column/row (``pad="even"``), so a 33x25 clip comes out, and decodes,
    as 34x26; ``pad="refuse"`` raises instead. GIFs keep the exact size. See :func:`output_size`.

    ``metadata`` (plus ``minart_version``) is written as JSON to :func:`sidecar_path`
    (``<file>.json``); without ``metadata`` a stale sidecar from an earlier run is removed.

    The same frames and options give the same bytes (ffmpeg's ``bitexact`` muxer and encoder
    flags: no random WebM UIDs, dates or ffmpeg version in the file) with the same ffmpeg
    build; VP9 and H.264 bitstreams can change with the number of CPU threads ffmpeg uses.

    Args:
        path: target file ending in ``.webm``, ``.mp4`` or ``.gif``; its folder is created.
        frames: ``(T, C, H, W)`` float tensor in [0, 1], C in 1 or 3, T >= 1.
        fps: frames per second, in (0, 240]; for a GIF in :data:`GIF_FPS_RANGE` (0.0015259 to
            50). A GIF stores each frame's delay in whole 1/100 s: frame ``k`` starts at
            ``k / fps`` rounded to 1/100 s, so delays alternate where ``100 / fps`` is not
            whole (24 fps: 4, 4, 5, 4, 4, 4 hundredths) and the average rate stays ``fps``.
        quality: 0 (smallest) to 100 (best) for WebM/MP4. 100 gives CRF 0, which for H.264
            is lossless (High 4:4:4 Predictive profile) and does not play in most browsers.
            A GIF has no quality setting, so anything but the default 55 is refused for it.
        loop: GIF only: 0 loops forever, -1 plays once, n > 0 repeats n more times. WebM/MP4 have
            no loop flag (use ``<video loop>``), so anything but 0 is refused for them.
        codec: ``None`` for the container's default, or one of :data:`VIDEO_CODECS`.
        metadata: JSON-serialisable dict for the sidecar, e.g. ``{"recipe": ..., "seed": 7}``.
        pad: ``"even"`` or ``"refuse"`` (see above).

    Returns:
        None.

    Raises:
        ShapeError: not a ``(T, C, H, W)`` sequence, NaN/Inf, values outside [0, 1], or 2/4+ channels.
        ParamError: bad ``fps``, ``quality``, ``loop``, ``codec``, ``pad`` or ``metadata``, or
            an option the format does not use (``loop`` on WebM/MP4, ``quality`` on GIF).
        MediaError: unsupported extension, odd size with ``pad="refuse"``, or ffmpeg failed.

    Example:
        >>> encode_video("out/clip.mp4", torch.rand(4, 3, 25, 33), pad="refuse")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: out/clip.mp4: mp4 video (4:2:0 chroma) needs an even width and height, ...
    """
    target, container = _target_format(path, _CONTAINERS, "video")
    check_range("fps", fps, gt=0.0, le=240.0)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 100:
        raise ParamError(f"quality={quality!r} must be an integer in [0, 100]", param="quality")
    if isinstance(loop, bool) or not isinstance(loop, int) or loop < -1:
        raise ParamError(f"loop={loop!r} must be an integer >= -1", param="loop")
    if container != "gif" and loop != 0:
        raise ParamError(f"loop={loop} applies to GIF only; {container} videos loop in the player "
                         "(<video loop>), so pass loop=0", param="loop")
    if container == "gif" and quality != _DEFAULT_QUALITY:
        raise ParamError(f"quality={quality} applies to WebM/MP4 only; a GIF has one 256-colour "
                         f"palette and no quality setting, so pass quality={_DEFAULT_QUALITY}",
                         param="quality")
    if container == "gif":
        check_gif_fps(fps)
    codec = VIDEO_CODECS[container][0] if codec is None else codec
    check_choice("codec", codec, VIDEO_CODECS[container])
    check_choice("pad", pad, ("even", "refuse"))
    seq = _frames(frames)
    channels, height, width = seq.shape[1:]
    if channels not in (1, 3):
        raise ShapeError(f"frames must have 1 or 3 channels, got {channels}; "
                         "blend an alpha channel onto a background first")
    _image(seq, "frames")
    try:
        out_w, out_h = output_size(width, height, container=container, pad=pad)
    except MediaError as exc:
        raise exc.at(file=str(target)) from None
    sidecar = _sidecar_text(metadata) if metadata is not None else None

    import imageio_ffmpeg

    rate = Fraction(fps).limit_denominator(1001)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_path(target)
    except OSError as exc:
        raise MediaError(f"cannot write the video ({exc.strerror or exc})", file=str(target)) from None
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{out_w}x{out_h}",
        "-framerate", f"{rate.numerator}/{rate.denominator}", "-i", "pipe:0",
        *_codec_args(container, codec, quality, loop), "-f", container, str(tmp),
    ]
    side = sidecar_path(target)
    try:
        returncode, message = _run_ffmpeg(command, _rgb24(seq, out_w, out_h), target)
        if returncode != 0:
            cause = _os_error_in(message)
            if cause is not None:  # the disk, not the recipe: is_io_failure's exit status 1
                raise MediaError(f"ffmpeg could not write the {container} video: "
                                 f"{cause.strerror}", file=str(target)) from cause
            raise MediaError(f"ffmpeg could not encode the {container} video ({codec}): {message}",
                             file=str(target))
        side.unlink(missing_ok=True)  # never the new video beside the old video's recipe
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sidecar is not None:
        write_bytes_atomically(side, sidecar.encode("utf-8"))


_CHUNK_BYTES = 1 << 26  # rgb24 frames quantised and piped at a time: bounds the extra memory


def _rgb24(seq: Tensor, out_w: int, out_h: int) -> Iterator[memoryview]:
    """``(T, C, H, W)`` frames in [0, 1] as rgb24 bytes, a few frames at a time, edge-padded."""
    frames, channels, height, width = seq.shape
    step = max(1, _CHUNK_BYTES // (out_w * out_h * 3))
    for t0 in range(0, frames, step):
        array = _quantize(seq[t0:t0 + step], 8)  # (t, H, W, C) uint8
        if channels == 1:
            array = np.repeat(array, 3, axis=3)  # (t, H, W, 1) -> (t, H, W, 3)
        if (out_w, out_h) != (width, height):
            array = np.pad(array, ((0, 0), (0, out_h - height), (0, out_w - width), (0, 0)),
                           mode="edge")  # (t, H, W, 3) -> (t, out_h, out_w, 3)
        yield memoryview(np.ascontiguousarray(array)).cast("B")


_MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES)
"""Failures of the machine's files that ffmpeg reports by their ``strerror`` text."""


def _os_error_in(message: str) -> OSError | None:
    """The ``OSError`` that ffmpeg's last error line names (a full or read-only disk, an I/O
    error, a permission), or ``None`` when it names none: then the encoding itself failed.

    Example:
        >>> _os_error_in("[out#0/mp4 @ 0x55] Error closing file: No space left on device").strerror
        'No space left on device'
        >>> _os_error_in("Invalid argument") is None
        True
    """
    for code in _MACHINE_ERRNOS:
        if os.strerror(code) in message:
            return OSError(code, os.strerror(code))
    return None


def _run_ffmpeg(command: list[str], chunks: Iterator[memoryview], target: Path) -> tuple[int, str]:
    """Run ffmpeg feeding ``chunks`` to its stdin; ``(exit status, its last error line)``."""
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty ffmpeg cannot block
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                       stderr=errors)
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg {command[0]} ({exc.strerror or exc})",
                             file=str(target)) from None
        try:
            with process.stdin:
                for chunk in chunks:
                    process.stdin.write(chunk)
        except BrokenPipeError:
            pass  # ffmpeg stopped reading: its exit status and message say why
        except BaseException:
            process.kill()
            process.wait()
            raise
        returncode = process.wait()
        errors.seek(0)
        lines = errors.read().decode("utf-8", "replace").strip().splitlines() or ["no message"]
    return returncode, lines[-1]


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata :func:`encode_video` stored next to a video, or ``None`` if it has none.

    Args:
        path: the video file (not the ``.json``).

    Returns:
        The sidecar's JSON object, or ``None`` when ``<file>.json`` does not exist.

    Raises:
        MediaError: the sidecar exists but is not a JSON object.

    Example:
        >>> read_sidecar("no/such/video.webm") is None
        True
    """
    side = sidecar_path(path)
    try:
        text = side.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MediaError(f"cannot read the video sidecar ({exc})", file=str(side)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MediaError(f"the video sidecar is not valid JSON ({exc})", file=str(side)) from None
    if not isinstance(data, dict):
        raise MediaError("the video sidecar must hold a JSON object", file=str(side))
    return data


def read_video(path: str | os.PathLike, *, max_frames: int | None = None) -> Tensor:
    """Decode a video (any format ffmpeg reads: WebM, MP4, GIF, ...) to ``(T, 3, H, W)``.

    ffmpeg (imageio-ffmpeg's binary) converts every frame to 8-bit RGB using the stream's colour
    tags, one output frame per stored frame; values become ``v / 255``.

    Args:
        path: video file.
        max_frames: stop after this many frames (>= 1); ``None`` reads them all.

    Returns:
        Tensor ``(T, 3, H, W)`` float32 in [0, 1].

    Raises:
        MediaError: missing, unreadable or corrupt file, or no frames; the message names the file.
        ParamError: bad ``max_frames``.

    Example:
        >>> read_video("no/such/clip.webm")
        Traceback (most recent call last):
        ...
        minart.errors.MediaError: no/such/clip.webm: no such video file
    """
    import imageio_ffmpeg

    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                   or max_frames < 1):
        raise ParamError(f"max_frames={max_frames!r} must be an integer >= 1", param="max_frames")
    name = os.fspath(path)
    if not Path(name).is_file():
        raise MediaError("no such video file", file=name)
    reader = imageio_ffmpeg.read_frames(name, pix_fmt="rgb24", output_params=["-fps_mode", "passthrough"])
    decoded = []
    try:
        meta = next(reader)
        width, height = meta["size"]
        for raw in reader:
            if len(raw) != width * height * 3:
                raise MediaError(f"decoded frame has {len(raw)} bytes, expected {width}x{height}x3",
                                 file=name)
            decoded.append(np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3))  # bytes -> (H, W, 3)
            if max_frames is not None and len(decoded) >= max_frames:
                break
    except (OSError, RuntimeError, StopIteration, KeyError, ValueError) as exc:
        last = (str(exc).strip().splitlines() or ["no message"])[-1]
        raise MediaError(f"not a readable video ({type(exc).__name__}: {last})", file=name) from None
    finally:
        reader.close()
    if not decoded:
        raise MediaError("the video has no frames", file=name)
    array = np.stack(decoded)  # T x (H, W, 3) -> (T, H, W, 3)
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(255.0).contiguous()  # (T, H, W, 3) -> (T, 3, H, W)
