"""Video: encode then decode WebM/MP4/GIF, sizes (odd ones padded), errors, GIF flags, sidecars."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess

import imageio_ffmpeg
import pytest
import torch

import minart
from minart import video
from minart.errors import MediaError, ParamError, ShapeError
from minart.video import encode_video, output_size, read_sidecar, read_video, sidecar_path


def _gradient_clip(t: int = 8, h: int = 26, w: int = 34) -> torch.Tensor:
    """Smooth moving gradients: what a lossy codec should keep well."""
    y = torch.linspace(0, 1, h).view(1, 1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, 1, w)
    k = torch.linspace(0, 1, t).view(t, 1, 1, 1)
    return torch.cat([(0.8 * x + 0.2 * k).expand(t, 1, h, w), (0.7 * y + 0.1).expand(t, 1, h, w),
                      ((x + y) / 2).expand(t, 1, h, w)], dim=1)


def _stream_line(path) -> str:
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                           check=False, capture_output=True, text=True)
    return next(line for line in probe.stderr.splitlines() if "Video:" in line)


@pytest.mark.parametrize(("ext", "codec_name", "mae"), [
    ("webm", "vp9", 0.02), ("mp4", "h264", 0.02), ("gif", "gif", 0.05),
])
def test_round_trip_keeps_frames_size_and_content(tmp_path, ext, codec_name, mae):
    clip = _gradient_clip()
    target = tmp_path / f"clip.{ext}"
    encode_video(target, clip, fps=12)
    back = read_video(target)
    assert back.shape == clip.shape and back.dtype == torch.float32
    assert (back - clip).abs().mean() < mae
    assert f"Video: {codec_name}" in _stream_line(target)
    assert [p.name for p in tmp_path.iterdir()] == [f"clip.{ext}"]


@pytest.mark.parametrize("ext", ["webm", "mp4"])
def test_yuv_video_is_bt709_tagged_and_decodes_saturated_colours(tmp_path, ext):
    clip = torch.zeros(4, 3, 16, 16)
    for i, rgb in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]):
        clip[i] = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1)
    target = tmp_path / f"sat.{ext}"
    encode_video(target, clip, quality=90)
    assert (read_video(target) - clip).abs().max() < 0.03  # a BT.601/709 mix-up gives ~0.1
    assert "yuv420p(tv, bt709" in _stream_line(target)


def test_mp4_is_faststart_and_h265_works(tmp_path):
    clip = _gradient_clip(t=4)
    encode_video(tmp_path / "a.mp4", clip)
    data = (tmp_path / "a.mp4").read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    encode_video(tmp_path / "b.mp4", clip, codec="libx265")
    assert "Video: hevc" in _stream_line(tmp_path / "b.mp4")
    assert (read_video(tmp_path / "b.mp4") - clip).abs().mean() < 0.02


@pytest.mark.parametrize("ext", ["webm", "mp4"])
def test_odd_sizes_are_padded_by_edge_replication(tmp_path, ext):
    clip = _gradient_clip(t=3, h=25, w=33)
    encode_video(tmp_path / f"odd.{ext}", clip, quality=90)
    back = read_video(tmp_path / f"odd.{ext}")
    assert back.shape == (3, 3, 26, 34) and output_size(33, 25, container=ext) == (34, 26)
    assert (back[:, :, :25, :33] - clip).abs().mean() < 0.02
    assert (back[:, :, 25, :33] - clip[:, :, 24]).abs().mean() < 0.03  # repeated last row
    assert (back[:, :, :25, 33] - clip[:, :, :, 32]).abs().mean() < 0.03  # repeated last column


def test_odd_sizes_refused_on_request_and_kept_for_gif(tmp_path):
    clip = _gradient_clip(t=2, h=25, w=33)
    with pytest.raises(MediaError, match=r"webm video \(4:2:0 chroma\) needs an even width and height, got 33x25"):
        encode_video(tmp_path / "odd.webm", clip, pad="refuse")
    assert list(tmp_path.iterdir()) == []
    encode_video(tmp_path / "odd.gif", clip, pad="refuse")
    assert read_video(tmp_path / "odd.gif").shape == (2, 3, 25, 33)


def test_quality_changes_the_file(tmp_path):
    clip = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    encode_video(tmp_path / "low.webm", clip, quality=10)
    encode_video(tmp_path / "high.webm", clip, quality=90)
    low, high = read_video(tmp_path / "low.webm"), read_video(tmp_path / "high.webm")
    assert (tmp_path / "low.webm").stat().st_size < (tmp_path / "high.webm").stat().st_size
    assert (high - clip).abs().mean() < (low - clip).abs().mean()


def _gif_blocks(data: bytes) -> tuple[bytes | None, list[int]]:
    """The NETSCAPE loop field and every frame delay (1/100 s) of a GIF."""
    i = data.find(b"NETSCAPE2.0")
    loop = data[i + 13:i + 15] if i >= 0 else None
    delays, j = [], data.find(b"\x21\xf9\x04")
    while j >= 0:
        delays.append(int.from_bytes(data[j + 4:j + 6], "little"))
        j = data.find(b"\x21\xf9\x04", j + 1)
    return loop, delays


def test_gif_loop_and_frame_delay(tmp_path):
    clip = _gradient_clip(t=3, h=8, w=8)
    encode_video(tmp_path / "forever.gif", clip, fps=10)
    encode_video(tmp_path / "twice.gif", clip, fps=25, loop=2)
    encode_video(tmp_path / "once.gif", clip, loop=-1)
    loop, delays = _gif_blocks((tmp_path / "forever.gif").read_bytes())
    assert loop == b"\x00\x00" and delays == [10, 10, 10]
    loop, delays = _gif_blocks((tmp_path / "twice.gif").read_bytes())
    assert loop == b"\x02\x00" and delays == [4, 4, 4]
    assert _gif_blocks((tmp_path / "once.gif").read_bytes())[0] is None


@pytest.mark.parametrize(("fps", "delays"), [
    (24, [4, 4, 5, 4, 4, 4]), (30, [3, 4, 3, 3, 4, 3]), (12, [8, 9, 8, 8, 9, 8]), (50, [2] * 6),
    (10, [10] * 6), (1 / 655, [65500] * 6),
])
def test_gif_delays_are_frame_times_rounded_to_hundredths(tmp_path, fps, delays):
    encode_video(tmp_path / "r.gif", _gradient_clip(t=6, h=4, w=4), fps=fps)
    assert _gif_blocks((tmp_path / "r.gif").read_bytes())[1] == delays
    starts = [math.floor(100 * k / fps + 0.5) for k in range(7)]  # frame k at k / fps, rounded
    assert [b - a for a, b in itertools.pairwise(starts)] == delays  # average rate: fps


@pytest.mark.parametrize("fps", [240, 100, 60, 50.5, 0.001, 0.0015])
def test_gif_refuses_a_rate_its_delays_cannot_hold(tmp_path, fps):
    # 1/100 s delays in 2 bytes: 240 fps came out as 1/100 s (100 fps), 0.001 fps as 655.35 s;
    # browsers play the 1/100 s that 60 fps needs on every other frame as 1/10 s
    with pytest.raises(ParamError, match=rf"^fps={fps:g} does not fit a GIF: a GIF stores each "
                       r"frame's delay in whole 1/100 s, at most 65535 \(2 bytes, 655.35 s\), and "
                       r"browsers play delays under 2/100 s as 1/10 s; use 0.001526 <= fps <= 50, "
                       r"or a .webm/.mp4 path$") as info:
        encode_video(tmp_path / "x.gif", _gradient_clip(t=2, h=4, w=4), fps=fps)
    assert info.value.param == "fps"
    encode_video(tmp_path / "x.mp4", _gradient_clip(t=2, h=4, w=4), fps=fps)  # fine there
    assert [p.name for p in tmp_path.iterdir()] == ["x.mp4"]


def test_options_a_format_does_not_use_are_refused(tmp_path):
    clip = _gradient_clip(t=2, h=4, w=4)
    with pytest.raises(ParamError, match=r"^quality=10 applies to WebM/MP4 only; a GIF has one "
                       r"256-colour palette and no quality setting, so pass quality=55$"):
        encode_video(tmp_path / "x.gif", clip, quality=10)
    with pytest.raises(ParamError, match=r"^loop=1 applies to GIF only"):
        encode_video(tmp_path / "x.webm", clip, loop=1)
    assert list(tmp_path.iterdir()) == []
    encode_video(tmp_path / "x.gif", clip, quality=55, loop=1)  # the default quality is fine


@pytest.mark.parametrize("ext", ["webm", "mp4", "gif"])
def test_same_frames_give_the_same_bytes(tmp_path, ext):
    clip = _gradient_clip(t=4, h=16, w=16)
    encode_video(tmp_path / f"a.{ext}", clip)
    encode_video(tmp_path / f"b.{ext}", clip)
    first = (tmp_path / f"a.{ext}").read_bytes()
    assert first == (tmp_path / f"b.{ext}").read_bytes()  # WebM wrote random track UIDs
    # no ffmpeg version in the file either ("Lavf63.1.102"), so a newer muxer can match it
    assert re.search(rb"Lav[fc]\d", first) is None


def test_gray_frames_become_gray_video(tmp_path):
    gray = torch.linspace(0, 1, 16).view(1, 1, 4, 4).expand(2, 1, 4, 4)
    encode_video(tmp_path / "g.gif", gray)
    back = read_video(tmp_path / "g.gif")
    assert back.shape == (2, 3, 4, 4)
    assert (back - gray).abs().max() < 0.01


def test_sidecar_round_trip_and_stale_sidecar_removed(tmp_path):
    target = tmp_path / "out" / "art.webm"
    meta = {"recipe": "steps:\n  - fractal: {}\n", "seed": 7, "params": {"fps": 24.0}}
    encode_video(target, _gradient_clip(t=2), metadata=meta)
    assert sidecar_path(target) == tmp_path / "out" / "art.webm.json"
    assert read_sidecar(target) == {**meta, "minart_version": minart.__version__}
    assert json.loads(sidecar_path(target).read_text())["seed"] == 7
    encode_video(target, _gradient_clip(t=2))
    assert read_sidecar(target) is None and not sidecar_path(target).exists()
    sidecar_path(target).write_text("[1, 2]")
    with pytest.raises(MediaError, match="must hold a JSON object"):
        read_sidecar(target)


def test_encode_refusals(tmp_path):
    clip = _gradient_clip(t=2, h=4, w=4)
    with pytest.raises(MediaError, match=r"unsupported video extension '.avi'; use .webm, .mp4, .gif"):
        encode_video(tmp_path / "x.avi", clip)
    with pytest.raises(ParamError, match=r"codec='libx264' is not one of 'libvpx-vp9'"):
        encode_video(tmp_path / "x.webm", clip, codec="libx264")
    with pytest.raises(ParamError, match="loop=3 applies to GIF only"):
        encode_video(tmp_path / "x.mp4", clip, loop=3)
    with pytest.raises(ParamError, match="quality=101 must be an integer in"):
        encode_video(tmp_path / "x.mp4", clip, quality=101)
    with pytest.raises(ParamError, match=r"fps=0 must be > 0.0"):
        encode_video(tmp_path / "x.mp4", clip, fps=0)
    with pytest.raises(ShapeError, match=r"frames must be a \(T, C, H, W\) frame sequence"):
        encode_video(tmp_path / "x.mp4", clip[0])
    with pytest.raises(ShapeError, match="frames must have 1 or 3 channels, got 4"):
        encode_video(tmp_path / "x.mp4", torch.rand(2, 4, 4, 4))
    with pytest.raises(ShapeError, match=r"frames values must lie in \[0, 1\]"):
        encode_video(tmp_path / "x.mp4", clip * 2)
    with pytest.raises(ParamError, match="metadata must be JSON-serialisable"):
        encode_video(tmp_path / "x.mp4", clip, metadata={"tensor": torch.zeros(1)})
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_previous_file(tmp_path, monkeypatch):
    target = tmp_path / "keep.mp4"
    encode_video(target, _gradient_clip(t=2, h=4, w=4))
    before = target.read_bytes()
    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", lambda: os.devnull)  # not executable
    with pytest.raises(MediaError, match="cannot run ffmpeg"):
        encode_video(target, _gradient_clip(t=3, h=4, w=4))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.mp4"]


def test_read_refusals(tmp_path):
    with pytest.raises(MediaError, match=f"^{tmp_path / 'none.webm'}: no such video file$"):
        read_video(tmp_path / "none.webm")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 500)
    with pytest.raises(MediaError, match=f"^{junk}: not a readable video \\(OSError: [^\\[]*Invalid data"):
        read_video(junk)
    with pytest.raises(ParamError, match="max_frames=0 must be an integer >= 1"):
        read_video(junk, max_frames=0)


@pytest.mark.parametrize("ext", ["webm", "gif"])
def test_frames_piped_a_few_at_a_time_give_the_same_file(tmp_path, monkeypatch, ext):
    clip = _gradient_clip(t=5, h=15, w=17)  # odd: padded per chunk for WebM
    encode_video(tmp_path / f"whole.{ext}", clip)
    monkeypatch.setattr(video, "_CHUNK_BYTES", 1)  # one frame per write
    encode_video(tmp_path / f"chunked.{ext}", clip)
    assert (tmp_path / f"whole.{ext}").read_bytes() == (tmp_path / f"chunked.{ext}").read_bytes()


def test_ffmpeg_failing_mid_stream_is_one_clear_error_and_keeps_the_old_file(tmp_path,
                                                                             monkeypatch):
    target = tmp_path / "keep.webm"
    encode_video(target, _gradient_clip(t=2, h=4, w=4))
    before = target.read_bytes()
    monkeypatch.setattr(video, "_codec_args", lambda *a: ["-c:v", "no_such_codec"])
    monkeypatch.setattr(video, "_CHUNK_BYTES", 1)
    with pytest.raises(MediaError, match=r"ffmpeg could not encode the webm video \(libvpx-vp9\): "
                                         r".*Encoder not found"):
        encode_video(target, _gradient_clip(t=40, h=64, w=64))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.webm"]


def test_a_video_is_never_left_beside_the_previous_videos_recipe(tmp_path, monkeypatch):
    target = tmp_path / "art.webm"
    encode_video(target, _gradient_clip(t=2), metadata={"seed": 1})

    def killed(path, data):
        raise KeyboardInterrupt  # the process ends between the video and its sidecar

    monkeypatch.setattr(video, "write_bytes_atomically", killed)
    with pytest.raises(KeyboardInterrupt):
        encode_video(target, _gradient_clip(t=3), metadata={"seed": 2})
    assert read_video(target).shape[0] == 3
    assert read_sidecar(target) is None  # no recipe rather than the wrong one


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, mounted for the test (root only: skipped where mounting is not allowed)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                             capture_output=True, check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("name", ["clip.mp4", "clip.gif"])
def test_a_full_disk_is_a_machine_failure_in_one_line_and_leaves_no_file(full_disk, name):
    from minart.errors import is_io_failure

    keep = full_disk / "old.txt"
    keep.write_text("rendered before")
    frames = torch.rand(30, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with pytest.raises(MediaError) as info:
        encode_video(full_disk / name, frames)
    message = str(info.value)
    assert message == f"{full_disk / name}: ffmpeg could not write the {name[5:]} video: " \
                      "No space left on device", message
    # the engine's classification: exit status 1 (the machine), not 2 (the recipe)
    assert is_io_failure(info.value)
    assert sorted(p.name for p in full_disk.iterdir()) == ["old.txt"]  # no partial video
    assert keep.read_text() == "rendered before"
