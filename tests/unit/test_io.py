"""Image I/O: exact 8/16-bit round trips, an independent PNG encoder, metadata, EXIF, refusals."""

from __future__ import annotations

import io as _io
import os
import re
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

import minart
from minart import io as mio
from minart.errors import MediaError, ParamError, ShapeError
from minart.io import decode_image, encode_image, read_image, read_metadata, write_image


def _raw_png(array: np.ndarray, colour_type: int, *, icc: bytes | None = None) -> bytes:
    """An unfiltered 16-bit PNG written from the spec (filter 0 on every row), no OpenCV/Pillow;
    ``icc`` adds an ``iCCP`` chunk with that profile."""
    h, w = array.shape[:2]

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    rows = array.astype(">u2").reshape(h, -1).tobytes()
    stride = w * array.shape[2] * 2
    raw = b"".join(b"\x00" + rows[y * stride:(y + 1) * stride] for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    profile = b"" if icc is None else chunk(b"iCCP", b"test\x00\x00" + zlib.compress(icc))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + profile + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def _gradient(c: int = 3, h: int = 9, w: int = 13) -> torch.Tensor:
    y = torch.linspace(0, 1, h).view(1, h, 1)
    x = torch.linspace(0, 1, w).view(1, 1, w)
    return torch.stack([(x * (k + 1) / c + y * (c - k) / c) / 2 for k in range(c)]).view(c, h, w)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png8_round_trip_is_exact_quantisation(tmp_path, gen, channels):
    image = torch.rand(channels, 5, 7, generator=gen)
    target = tmp_path / "out.png"
    write_image(target, image)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    back = read_image(target, mode=mode)
    assert back.dtype == torch.float32 and back.shape == image.shape
    assert torch.equal(back, (image * 255).round() / 255)
    assert Image.open(target).mode == mode


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png16_round_trip_keeps_16_bits(tmp_path, gen, channels):
    image = torch.rand(channels, 6, 5, generator=gen)
    target = tmp_path / "deep.png"
    write_image(target, image, bits=16)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    back = read_image(target, mode=mode)
    assert torch.equal(back, ((image.double() * 65535).round() / 65535).float())
    assert (back - image).abs().max() <= 0.5 / 65535 + 1e-7
    assert ((back * 255).round() / 255 - back).abs().max() > 1e-4  # not 8-bit data in disguise
    assert target.read_bytes()[24] == 16  # IHDR bit depth


def test_reads_an_independently_encoded_16_bit_png(tmp_path):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 65536, size=(4, 6, 3), dtype=np.uint16)
    (tmp_path / "rgb.png").write_bytes(_raw_png(rgb, colour_type=2))
    back = read_image(tmp_path / "rgb.png")
    np.testing.assert_array_equal(back.permute(1, 2, 0).numpy(), (rgb / 65535).astype(np.float32))
    gray_alpha = rng.integers(0, 65536, size=(3, 5, 2), dtype=np.uint16)
    (tmp_path / "ga.png").write_bytes(_raw_png(gray_alpha, colour_type=4))
    rgba = read_image(tmp_path / "ga.png", mode="RGBA").permute(1, 2, 0).numpy()
    expected = (gray_alpha / 65535).astype(np.float32)
    np.testing.assert_array_equal(rgba[..., 0], expected[..., 0])
    np.testing.assert_array_equal(rgba[..., 2], expected[..., 0])
    np.testing.assert_array_equal(rgba[..., 3], expected[..., 1])


def test_bytes_api_matches_the_file_api(tmp_path, gen):
    image = torch.rand(3, 4, 5, generator=gen)
    data = encode_image(image, bits=16, metadata={"seed": "3"})
    write_image(tmp_path / "same.png", image, bits=16, metadata={"seed": "3"})
    assert (tmp_path / "same.png").read_bytes() == data
    assert torch.equal(decode_image(data), read_image(tmp_path / "same.png"))
    jpeg = encode_image(image, format="jpeg", quality=90)
    assert jpeg[:2] == b"\xff\xd8" and decode_image(jpeg).shape == (3, 4, 5)
    with pytest.raises(MediaError, match=r"^<bytes>: not a readable image"):
        decode_image(b"nonsense")
    with pytest.raises(MediaError, match=r"^upload\.png: 5x4 = 20 pixels exceeds max_pixels=19"):
        decode_image(data, max_pixels=19, source="upload.png")


def test_modes_follow_pillow_conversions(tmp_path, gen):
    image = torch.rand(4, 3, 4, generator=gen)
    write_image(tmp_path / "a.png", image)
    expected_l = np.asarray(Image.open(tmp_path / "a.png").convert("L"), dtype=np.float32) / 255
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", mode="L")[0].numpy(), expected_l)
    assert torch.equal(read_image(tmp_path / "a.png", mode="RGB"), read_image(tmp_path / "a.png", mode="RGBA")[:3])
    write_image(tmp_path / "g.png", image[:1])
    rgba = read_image(tmp_path / "g.png", mode="RGBA")
    assert torch.equal(rgba[3], torch.ones(3, 4)) and torch.equal(rgba[0], rgba[2])


def test_quantisation_rounds_and_tolerates_only_tiny_overshoot(tmp_path):
    values = torch.tensor([0.4 / 255, 0.6 / 255, 1 + 5e-7, -5e-7]).view(1, 1, 4)
    write_image(tmp_path / "r.png", values)
    assert (read_image(tmp_path / "r.png", mode="L") * 255).round().flatten().tolist() == [0, 1, 255, 0]
    with pytest.raises(ShapeError, match=r"image values must lie in \[0, 1\], got \[0, 1.01\]"):
        write_image(tmp_path / "bad.png", torch.tensor([0.0, 1.01]).view(1, 1, 2))
    with pytest.raises(ShapeError, match="image contains NaN or Inf values"):
        write_image(tmp_path / "bad.png", torch.tensor([0.0, float("nan")]).view(1, 1, 2))
    assert not (tmp_path / "bad.png").exists()


def test_png_metadata_round_trip_and_pillow_agrees(tmp_path):
    recipe = "name: ocean 🌊\nsteps:\n" + "  - soften: {dt: 0.2}\n" * 200  # > 1 KiB: compressed iTXt
    target = tmp_path / "meta.png"
    write_image(target, torch.rand(3, 4, 4), bits=16, metadata={"recipe": recipe, "seed": "42"})
    meta = read_metadata(target)
    assert meta == {"recipe": recipe, "seed": "42", "minart_version": minart.__version__}
    with Image.open(target) as im:
        assert dict(im.text) == meta


def test_read_metadata_reads_foreign_text_chunks(tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "someone")
    info.add_text("Comment", "long " * 300, zip=True)
    info.add_itxt("Title", "überschrift", zip=False)
    Image.new("RGB", (3, 2)).save(tmp_path / "foreign.png", pnginfo=info)
    assert read_metadata(tmp_path / "foreign.png") == {
        "Author": "someone", "Comment": "long " * 300, "Title": "überschrift"}


def test_jpeg_round_trip_and_metadata(tmp_path):
    image = _gradient(3, 24, 32)
    target = tmp_path / "photo.JPG"
    write_image(target, image, quality=95, metadata={"seed": "1"})
    back = read_image(target)
    assert back.shape == image.shape and (back - image).abs().mean() < 0.01
    assert read_metadata(target) == {"seed": "1", "minart_version": minart.__version__}
    Image.new("RGB", (2, 2)).save(tmp_path / "other.jpg", comment=b"shot on film")
    assert read_metadata(tmp_path / "other.jpg") == {"comment": "shot on film"}


def test_a_recipe_longer_than_one_jpeg_comment_segment_is_split_and_joined_back(tmp_path):
    recipe = "# notes: " + "étoile de mer " * 12000 + "\n"  # ~170 kB, ~6x that as JSON escapes
    target = tmp_path / "long.jpg"
    write_image(target, _gradient(3, 8, 8), metadata={"minart_recipe": recipe})
    assert read_metadata(target)["minart_recipe"] == recipe
    data = target.read_bytes()
    assert data.count(b"minart+:") > 2  # one segment holds at most 64 KiB
    with Image.open(target) as im:  # still a valid JPEG to other readers
        im.load()
        assert im.size == (8, 8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow_for_8_and_16_bit(tmp_path, orientation):
    image = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(orientation))
    exif = Image.Exif()
    exif[0x0112] = orientation
    rgb8 = mio._quantize(image, 8)
    Image.fromarray(rgb8).save(tmp_path / "o8.png", exif=exif.tobytes())
    expected = read_image(tmp_path / "o8.png")
    with Image.open(tmp_path / "o8.png") as im:
        from PIL import ImageOps
        reference = np.asarray(ImageOps.exif_transpose(im), dtype=np.float32) / 255
    np.testing.assert_array_equal(expected.permute(1, 2, 0).numpy(), reference)
    write_image(tmp_path / "o16.png", image, bits=16)
    data = (tmp_path / "o16.png").read_bytes()
    (tmp_path / "o16.png").write_bytes(mio._insert_after_ihdr(data, mio._png_chunk(b"eXIf", exif.tobytes()[6:])))
    got = read_image(tmp_path / "o16.png")
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 0.5 / 255 + 1e-6
    if orientation in (5, 6, 7, 8):
        assert got.shape == (3, 6, 4)


def test_read_refusals_name_the_file(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(MediaError, match=f"^{missing}: no such image file$"):
        read_image(missing)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"definitely not an image" * 10)
    with pytest.raises(MediaError, match=f"^{junk}: not a readable image"):
        read_image(junk)
    for bits in (8, 16):
        whole = tmp_path / f"whole{bits}.png"
        write_image(whole, torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(bits)), bits=bits)
        cut = tmp_path / f"cut{bits}.png"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        with pytest.raises(MediaError, match=f"^{cut}: "):
            read_image(cut)
        with pytest.raises(MediaError, match=f"^{cut}: truncated PNG"):
            read_metadata(cut)


_CUT_SHORT = "it was cut short or damaged: copy or export it again"


def _damaged(tmp_path, gen) -> dict[str, tuple[object, str]]:
    """Damaged copies of sound 8/16-bit PNGs and a JPEG: ``{name: (file, expected message)}``."""
    cases = {}
    for bits in (8, 16):
        whole = tmp_path / f"whole{bits}.png"
        write_image(whole, torch.rand(3, 40, 40, generator=gen), bits=bits)
        data = whole.read_bytes()
        idat = data.index(b"IDAT") - 4  # the chunk starts with its 4-byte length
        cut = tmp_path / f"cut{bits}.png"
        cut.write_bytes(data[: len(data) // 2])
        cases[f"cut{bits}"] = (cut, f"{cut}: truncated PNG: the file ends inside its 'IDAT' chunk "
                                    f"(at byte {len(data) // 2}); {_CUT_SHORT}")
        no_end = tmp_path / f"noend{bits}.png"
        no_end.write_bytes(data[:-12])  # whole but for the IEND chunk
        cases[f"noend{bits}"] = (no_end, f"{no_end}: truncated PNG: the file ends before its IEND "
                                         f"chunk; {_CUT_SHORT}")
        flipped = bytearray(data)
        flipped[idat + 8 + 100] ^= 0x10  # one bit of the compressed pixels
        bad_crc = tmp_path / f"crc{bits}.png"
        bad_crc.write_bytes(bytes(flipped))
        cases[f"crc{bits}"] = (bad_crc, f"{bad_crc}: corrupt PNG: the 'IDAT' chunk at byte {idat} "
                                        "fails its CRC-32 check, so its bytes were damaged; copy "
                                        "or export the file again")
    whole = tmp_path / "whole.jpg"
    write_image(whole, torch.rand(3, 40, 40, generator=gen))
    data = whole.read_bytes()
    for name, cut_data in [("cut.jpg", data[: len(data) // 2]), ("noeoi.jpg", data[:-2])]:
        (tmp_path / name).write_bytes(cut_data)
        cases[name] = (tmp_path / name, "")
    return cases


def test_verify_image_refuses_damaged_files_as_read_image_does(tmp_path, gen):
    cases = _damaged(tmp_path, gen)
    for name in ("whole8.png", "whole16.png", "whole.jpg"):
        assert mio.verify_image(tmp_path / name) is None
        read_image(tmp_path / name)
    for name, (path, message) in cases.items():
        with pytest.raises(MediaError) as checked:
            mio.verify_image(path)
        with pytest.raises(MediaError) as read:
            read_image(path)
        assert str(checked.value) == str(read.value), name  # check and run say the same thing
        if message:
            assert str(checked.value) == message
        else:  # JPEG: no checksums, Pillow's decoder finds the missing data
            assert re.fullmatch(
                rf"{re.escape(str(path))}: not a readable image \(OSError: image file is "
                r"truncated \(\d+ bytes not processed\)\); it may be cut short or damaged: "
                r"copy or export it again", str(checked.value)), str(checked.value)
    with pytest.raises(MediaError, match="exceeds max_pixels=1599"):
        mio.verify_image(tmp_path / "cut8.png", max_pixels=1599)  # the size is checked first
    with pytest.raises(MediaError, match="no such image file"):
        mio.verify_image(tmp_path / "missing.png")


def test_verify_image_walks_png_chunks_without_decoding_pixels(tmp_path, gen, monkeypatch):
    from PIL import ImageFile

    write_image(tmp_path / "p.png", torch.rand(3, 40, 40, generator=gen))
    write_image(tmp_path / "p.jpg", torch.rand(3, 40, 40, generator=gen))

    def no_decoding(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    mio.verify_image(tmp_path / "p.png")
    with pytest.raises(AssertionError, match="pixels decoded"):  # JPEG has no checksums
        mio.verify_image(tmp_path / "p.jpg")


def test_decode_image_refuses_a_png_with_a_bad_crc_that_pillow_would_decode(tmp_path, gen):
    write_image(tmp_path / "p.png", torch.rand(3, 8, 8, generator=gen))
    data = bytearray((tmp_path / "p.png").read_bytes())
    end = data.index(b"IEND") - 4  # the CRC of IDAT: the 4 bytes before IEND's length
    data[end - 1] ^= 0xFF  # the pixels are intact; Pillow does not check IDAT's CRC
    assert Image.open(_io.BytesIO(bytes(data))).convert("RGB").size == (8, 8)
    with pytest.raises(MediaError, match=r"^up\.png: corrupt PNG: the 'IDAT' chunk at byte \d+ fails "
                                         r"its CRC-32 check"):
        decode_image(bytes(data), source="up.png")


def test_pixel_limit_from_parameter_and_environment(tmp_path, monkeypatch):
    target = tmp_path / "big.png"
    write_image(target, torch.zeros(3, 10, 20))
    with pytest.raises(MediaError, match=r"20x10 = 200 pixels exceeds max_pixels=199 \(decompression-bomb guard"):
        read_image(target, max_pixels=199)
    assert read_image(target, max_pixels=200).shape == (3, 10, 20)
    monkeypatch.setenv("MINART_MAX_PIXELS", "150")
    with pytest.raises(MediaError, match="exceeds max_pixels=150"):
        read_image(target)
    monkeypatch.setenv("MINART_MAX_PIXELS", "lots")
    with pytest.raises(ParamError, match="MINART_MAX_PIXELS='lots' must be an integer"):
        read_image(target)


def test_pillow_bomb_guard_becomes_media_error(tmp_path, monkeypatch):
    target = tmp_path / "bomb.png"
    write_image(target, torch.zeros(1, 10, 10))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # warns above 40 pixels, fails above 80
    with pytest.raises(MediaError, match="image is too large to decode safely"):
        read_image(target, max_pixels=10_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 60)  # only Pillow's warning: max_pixels decides
    assert read_image(target, max_pixels=100, mode="L").shape == (1, 10, 10)
    with pytest.raises(MediaError, match="exceeds max_pixels=99"):
        read_image(target, max_pixels=99)


def test_write_refusals(tmp_path):
    img = torch.rand(3, 4, 4)
    with pytest.raises(MediaError, match=r"unsupported image extension '.webp'; use .png, .jpg, .jpeg"):
        write_image(tmp_path / "x.webp", img)
    with pytest.raises(ShapeError, match="got a batch of shape"):
        write_image(tmp_path / "x.png", torch.rand(2, 3, 4, 4))
    with pytest.raises(ShapeError, match="JPEG has no alpha channel"):
        write_image(tmp_path / "x.jpg", torch.rand(4, 4, 4))
    with pytest.raises(ParamError, match="bits=16 needs PNG; JPEG stores 8 bits"):
        write_image(tmp_path / "x.jpg", img, bits=16)
    with pytest.raises(ParamError, match="bits=12 must be 8 or 16"):
        write_image(tmp_path / "x.png", img, bits=12)
    with pytest.raises(ParamError, match=r"metadata\['seed'\] must be a string, got int"):
        write_image(tmp_path / "x.png", img, metadata={"seed": 7})
    with pytest.raises(ShapeError, match="must have 1, 3 or 4 channels, got 2"):
        write_image(tmp_path / "x.png", torch.rand(2, 4, 4))
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "sub" / "art.png"
    write_image(target, torch.zeros(3, 2, 2))
    before = target.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["art.png"]

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(MediaError, match="cannot write the image"):
        write_image(target, torch.ones(3, 2, 2))
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["art.png"]


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    import stat

    path = tmp_path / "mode.png"
    mio.write_image(path, torch.zeros(3, 4, 4))
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_writing_never_changes_the_process_umask_other_threads_create_files_under(tmp_path,
                                                                                  monkeypatch):
    import stat

    old = os.umask(0o027)
    try:
        def refuse(mask):
            raise AssertionError("os.umask() changes the mask of every thread")

        monkeypatch.setattr(os, "umask", refuse)
        path = tmp_path / "mode.png"
        mio.write_image(path, torch.zeros(3, 4, 4))
        monkeypatch.undo()
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)


# -- colour profiles: a matrix/TRC ICC profile written from the ICC spec, an sRGB reference ------

ADOBE_D50 = np.array([[0.6097, 0.3111, 0.0195],   # Adobe RGB (1998) red, green, blue: D50 XYZ
                      [0.2053, 0.6257, 0.0609],
                      [0.1492, 0.0632, 0.7446]])
ADOBE_GAMMA = 563 / 256
XYZ_D50_TO_SRGB = np.array([[3.1338561, -1.6168667, -0.4906146],  # Bradford-adapted (Lindbloom)
                            [-0.9787684, 1.9161415, 0.0334540],
                            [0.0719453, -0.2289914, 1.4052427]])


def _icc(name: str, gamma: float, primaries: np.ndarray | None = None) -> bytes:
    """An ICC v2 display profile: RGB matrix/TRC with ``primaries`` (rows: D50 XYZ of red,
    green, blue), or grey (``kTRC``) without; every curve a pure ``gamma``."""

    def s15(x: float) -> bytes:
        return struct.pack(">i", round(x * 65536))

    def xyz(values) -> bytes:
        return b"XYZ \0\0\0\0" + b"".join(s15(v) for v in values)

    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    text = name.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 79
    tags = [(b"desc", desc), (b"wtpt", xyz((0.9642, 1.0, 0.8249))), (b"cprt", b"text\0\0\0\0none\0")]
    if primaries is None:
        tags.append((b"kTRC", curve))
    else:
        tags += [(sig, xyz(row)) for sig, row in zip((b"rXYZ", b"gXYZ", b"bXYZ"), primaries, strict=True)]
        tags += [(sig, curve) for sig in (b"rTRC", b"gTRC", b"bTRC")]
    table, data = b"", b""
    start = 128 + 4 + 12 * len(tags)
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", start + len(data), len(body))
        data += body
    space = b"GRAY" if primaries is None else b"RGB "
    header = (struct.pack(">I", start + len(data)) + b"none" + struct.pack(">I", 0x02100000)
              + b"mntr" + space + b"XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 24 + b"\0" * 4
              + s15(0.9642) + s15(1.0) + s15(0.8249) + b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


def _srgb_encode(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0, 1)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _adobe_to_srgb(rgb8: np.ndarray) -> np.ndarray:
    """``(..., 3)`` 8-bit Adobe RGB to sRGB in [0, 1], from the equations (no colour library)."""
    xyz = (rgb8 / 255.0) ** ADOBE_GAMMA @ ADOBE_D50  # (..., 3) linear RGB -> D50 XYZ
    return _srgb_encode(xyz @ XYZ_D50_TO_SRGB.T)


def test_an_embedded_colour_profile_maps_8_bit_colours_to_srgb(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    adobe = _icc("Test Adobe RGB", ADOBE_GAMMA, ADOBE_D50)
    Image.fromarray(rgb).save(tmp_path / "adobe.png", icc_profile=adobe)
    got = read_image(tmp_path / "adobe.png").permute(1, 2, 0).numpy()  # (3, H, W) -> (H, W, 3)
    assert np.abs(got - _adobe_to_srgb(rgb)).max() <= 1 / 255  # LittleCMS rounds to 8 bits
    assert np.abs(got - rgb / 255).max() > 40 / 255  # read as sRGB, saturated colours were off
    assert mio.colour_profile(tmp_path / "adobe.png") == ("Test Adobe RGB", None)

    Image.fromarray(rgb).save(tmp_path / "adobe.jpg", icc_profile=adobe, quality=95)
    plain = np.asarray(Image.open(tmp_path / "adobe.jpg").convert("RGB"))  # the decoded values
    got = read_image(tmp_path / "adobe.jpg").permute(1, 2, 0).numpy()
    assert np.abs(got - _adobe_to_srgb(plain)).max() <= 1 / 255

    alpha = np.random.default_rng(4).integers(0, 256, (6, 7, 1), dtype=np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], 2)).save(tmp_path / "a.png", icc_profile=adobe)
    got = read_image(tmp_path / "a.png", mode="RGBA").permute(1, 2, 0).numpy()
    assert np.abs(got[..., :3] - _adobe_to_srgb(rgb)).max() <= 1 / 255
    assert np.array_equal(got[..., 3], alpha[..., 0] / np.float32(255))  # alpha untouched

    palette = Image.fromarray(rgb).quantize(8)
    palette.save(tmp_path / "p.png", icc_profile=adobe)
    colours = np.asarray(palette.convert("RGB"))
    got = read_image(tmp_path / "p.png").permute(1, 2, 0).numpy()
    assert np.abs(got - _adobe_to_srgb(colours)).max() <= 1 / 255


def test_a_grey_profile_maps_grey_levels_through_its_curve(tmp_path):
    grey = np.arange(0, 256, 5, dtype=np.uint8).reshape(4, 13)
    Image.fromarray(grey, "L").save(tmp_path / "g.png", icc_profile=_icc("Grey 1.8", 1.8))
    got = read_image(tmp_path / "g.png").numpy()
    # Y = white * v^1.8 is a neutral grey: the same sRGB level in every channel
    expected = _srgb_encode((grey / 255.0) ** 1.8)
    assert np.abs(got - expected).max() <= 1.5 / 255
    assert np.ptp(got, axis=0).max() <= 1 / 255


def test_an_srgb_profile_changes_nothing_and_a_profile_that_cannot_apply_is_reported(
        tmp_path, monkeypatch):
    from PIL import ImageCms

    rgb = np.random.default_rng(5).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(rgb).save(tmp_path / "s.png", icc_profile=srgb)
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    assert torch.equal(read_image(tmp_path / "s.png"), read_image(tmp_path / "plain.png"))
    assert mio.colour_profile(tmp_path / "s.png") == ("sRGB built-in", None)
    assert mio.colour_profile(tmp_path / "plain.png") is None

    Image.fromarray(rgb).save(tmp_path / "bad.png", icc_profile=b"not a profile" * 10)
    assert torch.equal(read_image(tmp_path / "bad.png"), read_image(tmp_path / "plain.png"))
    name, problem = mio.colour_profile(tmp_path / "bad.png")
    assert name == "" and problem.startswith("the profile is damaged: ")

    deep = np.random.default_rng(6).integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    adobe = _icc("Test Adobe RGB", ADOBE_GAMMA, ADOBE_D50)
    (tmp_path / "deep.png").write_bytes(_raw_png(deep, 2, icc=adobe))
    assert mio.colour_profile(tmp_path / "deep.png") == ("Test Adobe RGB", "16-bit pixels")
    got = read_image(tmp_path / "deep.png").permute(1, 2, 0).numpy()
    assert np.array_equal(got, (deep / np.float32(65535)).astype(np.float32))  # read as sRGB

    import PIL

    monkeypatch.setitem(sys.modules, "PIL.ImageCms", None)  # a Pillow without LittleCMS
    monkeypatch.delattr(PIL, "ImageCms", raising=False)
    assert mio.colour_profile(tmp_path / "s.png") == (
        "", "this Pillow was built without LittleCMS (ImageCms)")
    assert torch.equal(read_image(tmp_path / "s.png"), read_image(tmp_path / "plain.png"))
    monkeypatch.undo()

    Image.fromarray(rgb).save(tmp_path / "grey-on-rgb.png", icc_profile=_icc("Grey", 2.2))
    name, problem = mio.colour_profile(tmp_path / "grey-on-rgb.png")
    assert name == "Grey" and problem.startswith("it does not fit RGB pixels: ")
    assert torch.equal(read_image(tmp_path / "grey-on-rgb.png"), read_image(tmp_path / "plain.png"))
