"""The step engine on real stages: keys, subtree skipping, recompute counts, outputs, locks."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from minart import engine
from minart.cache import TensorCache
from minart.errors import Interrupted, ParamError, RecipeError
from minart.io import read_metadata, write_image
from minart.registry import get_stage


def _step(name, stage, inputs=(), **params):
    return SimpleNamespace(name=name, stage=stage, inputs=list(inputs),
                           params=get_stage(stage).params(**params))


def _recipe(tmp_path, *, kappa=0.1, opacity=0.5, path="out/{name}.png", extra=()):
    source = tmp_path / "src.png"
    if not source.exists():
        write_image(source, torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))
    steps = [
        _step("photo", "load_image", path="src.png"),
        _step("soft", "perona_malik", ["photo"], steps=2, kappa=kappa, dt=0.2),
        _step("hard", "perona_malik", ["photo"], steps=1, kappa=0.05, dt=0.1),
        _step("mix", "blend", ["soft", "hard"], opacity=opacity),
        _step("save", "save_image", ["mix"], path=path),
        *extra,
    ]
    return SimpleNamespace(steps=steps, seed=3, name="tiny", size=(8, 8),
                           path=str(tmp_path / "r.yaml"), text="name: tiny\n", outputs=())


def _render(tmp_path, cache, out="out-a", **changes):
    plan = engine.plan(_recipe(tmp_path, **changes), device="cpu", output_dir=tmp_path / out)
    return engine.render(plan, cache=cache)


@pytest.fixture
def cache(tmp_path):
    return TensorCache(tmp_path / "cache")


def test_first_run_computes_all_second_run_nothing(tmp_path, cache):
    first = _render(tmp_path, cache)
    assert sorted(first.computed) == ["hard", "mix", "photo", "save", "soft"]
    target = tmp_path / "out-a" / "out" / "tiny.png"
    assert first.outputs == [str(target)] and target.is_file()
    assert read_metadata(target)["minart_recipe"] == "name: tiny\n"
    second = _render(tmp_path, cache)
    assert second.computed == []
    assert {s.step: s.status for s in second.steps} == {
        "photo": "skipped", "soft": "skipped", "hard": "skipped", "mix": "skipped",
        "save": "cached"}
    assert second.outputs == [str(target)]


def test_last_step_change_computes_only_it(tmp_path, cache):
    _render(tmp_path, cache)
    assert _render(tmp_path, cache, path="out/other.png").computed == ["save"]


def test_upstream_change_computes_it_and_descendants(tmp_path, cache):
    _render(tmp_path, cache)
    assert sorted(_render(tmp_path, cache, kappa=0.2).computed) == ["mix", "save", "soft"]
    assert sorted(_render(tmp_path, cache, opacity=0.25).computed) == ["mix", "save"]


def test_results_are_deterministic_and_match_the_ops(tmp_path, cache):
    from minart.composite import blend
    from minart.diffusion import perona_malik
    from minart.io import read_image

    report = _render(tmp_path, cache)
    keys = {s.step: s.key for s in report.steps}
    photo = read_image(tmp_path / "src.png")
    soft = perona_malik(photo, steps=2, kappa=0.1, dt=0.2)
    hard = perona_malik(photo, steps=1, kappa=0.05, dt=0.1)
    assert torch.allclose(cache.get(keys["mix"]), blend(soft, hard, opacity=0.5), atol=1e-6)


def test_missing_output_file_rewrites_only_the_output(tmp_path, cache):
    first = _render(tmp_path, cache)
    Path(first.outputs[0]).unlink()
    again = _render(tmp_path, cache)
    assert again.computed == ["save"] and Path(first.outputs[0]).is_file()
    assert _render(tmp_path, cache, out="out-b").computed == ["save"]  # another folder


def test_output_overwritten_by_another_run_or_edited_is_written_again(tmp_path, cache):
    from minart.io import read_image

    first = _render(tmp_path, cache)
    target = Path(first.outputs[0])
    mine = target.read_bytes()
    assert sorted(_render(tmp_path, cache, kappa=0.3).computed) == ["mix", "save", "soft"]
    assert target.read_bytes() != mine  # the same file now holds the other run's image
    again = _render(tmp_path, cache)
    assert again.computed == ["save"] and target.read_bytes() == mine
    # edited or truncated by hand: written again from the cached input, not reported as a hit
    write_image(target, 1.0 - read_image(target))
    assert _render(tmp_path, cache).computed == ["save"] and target.read_bytes() == mine
    target.write_bytes(mine[: len(mine) // 2])
    assert _render(tmp_path, cache).computed == ["save"] and target.read_bytes() == mine
    assert _render(tmp_path, cache).computed == []


def test_untouched_outputs_are_not_read_again_to_be_confirmed(tmp_path, cache, monkeypatch):
    _render(tmp_path, cache)

    def no_reading(path):
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(engine, "_file_digest", no_reading)
    assert _render(tmp_path, cache).computed == []


def test_video_sidecar_is_checked_with_its_video(tmp_path, cache):
    extra = (_step("clip", "concatenate", ["mix", "soft"]),
             _step("movie", "encode_video", ["clip"], path="out/tiny.webm", fps=2))
    first = _render(tmp_path, cache, extra=extra)
    video = tmp_path / "out-a" / "out" / "tiny.webm"
    sidecar = video.with_name("tiny.webm.json")
    assert str(video) in first.outputs and str(sidecar) not in first.outputs
    assert sidecar.is_file()
    sidecar.unlink()
    assert _render(tmp_path, cache, extra=extra).computed == ["movie"] and sidecar.is_file()


def test_corrupt_entries_are_recomputed_and_counted(tmp_path, cache):
    first = _render(tmp_path, cache)
    keys = {s.step: s.key for s in first.steps}
    path = cache.payload_path(keys["soft"])
    raw = bytearray(cache.fs.cat_file(path))
    raw[-1] ^= 0xFF
    cache.fs.pipe_file(path, bytes(raw))
    report = _render(tmp_path, cache, opacity=0.9)  # mix needs soft: it is read and found corrupt
    assert sorted(report.computed) == ["mix", "save", "soft"]
    assert report.corrupt == 1
    final = cache.entries()
    assert keys["soft"] in {e.key for e in final}
    out = cache.payload_path(report.steps[-1].key)
    cache.fs.pipe_file(out, cache.fs.cat_file(out)[:-5])  # truncate the final result
    again = _render(tmp_path, cache, opacity=0.9)
    assert again.computed == ["save"] and again.corrupt == 1


def test_evicted_intermediates_are_not_recomputed_when_unused(tmp_path, cache):
    first = _render(tmp_path, cache)
    for s in first.steps[:3]:
        cache.delete(s.key)
    assert _render(tmp_path, cache).computed == []
    assert sorted(_render(tmp_path, cache, opacity=0.3).computed) == ["hard", "mix", "photo",
                                                                      "save", "soft"]


def test_a_cached_run_keeps_the_steps_it_was_made_from_recently_used(tmp_path, cache):
    first = _render(tmp_path, cache)
    cache.put("unrelated", torch.zeros(1))  # used after the first run...
    time.sleep(0.01)
    assert _render(tmp_path, cache).computed == []  # ...but before this one, served by 'save'
    lineage = [s.key for s in first.steps]
    assert [e.key for e in cache.entries()] == ["unrelated", *lineage]  # upstream first
    cache.gc(cache.size() - 1)
    assert sorted(e.key for e in cache.entries()) == sorted(lineage)
    assert _render(tmp_path, cache, opacity=0.3).computed == ["mix", "save"]


def test_an_edited_input_image_is_read_again_by_the_same_process(tmp_path, cache):
    write_image(tmp_path / "in.png", torch.zeros(3, 8, 8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  a: {stage: load_image, params: {path: in.png}}\n")
    first = engine.load_plan(recipe, output_dir=tmp_path)
    engine.render(first, cache=cache)
    write_image(tmp_path / "in.png", torch.ones(3, 8, 8))  # the recipe file is unchanged
    second = engine.load_plan(recipe, output_dir=tmp_path)
    assert second.step("a").key != first.step("a").key
    assert engine.render(second, cache=cache).computed == ["a"]
    assert cache.get(second.step("a").key).min() == 1
    assert engine.load_plan(recipe, output_dir=tmp_path) is second  # unchanged: memoised


def test_a_step_reading_a_writer_step_gets_the_image_when_the_cache_is_empty(tmp_path, cache):
    saved = _step("save", "save_image", ["mix"], path="out/{name}.png")
    recipe = _recipe(tmp_path, extra=[_step("again", "perona_malik", ["save"], steps=1,
                                            kappa=0.1, dt=0.2)])
    recipe.steps = [s for s in recipe.steps if s.name != "save"][:4] + [saved, recipe.steps[-1]]
    plan = engine.plan(recipe, device="cpu", output_dir=tmp_path)
    result = engine.run_step(plan, "again", cache=cache)  # runs photo..mix and save first
    assert result.status == "computed"
    other = TensorCache(tmp_path / "other")
    engine.render(plan, cache=other)  # the usual order: every step run by the schedule
    assert torch.equal(cache.get(plan.step("again").key), other.get(plan.step("again").key))


def test_concurrent_runs_compute_each_step_once(tmp_path, cache):
    plan = engine.plan(_recipe(tmp_path), output_dir=tmp_path / "out")
    reports = []

    def work():
        reports.append(engine.render(plan, cache=cache))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    computed = [name for r in reports for name in r.computed]
    assert sorted(computed) == ["hard", "mix", "photo", "save", "soft"]


def test_checkpoint_is_dropped_once_the_step_is_stored(tmp_path, cache):
    plan = engine.plan(_recipe(tmp_path), output_dir=tmp_path / "out")
    soft = plan.steps["soft"]
    engine.Checkpoint(cache, soft.key, every=0).save(1, {"image": torch.zeros(3, 8, 8)})
    assert cache.contains(f"{soft.key}-ckpt")
    report = engine.render(plan, cache=cache)
    assert next(s for s in report.steps if s.step == "soft").resumed_from is None  # not used
    assert not cache.contains(f"{soft.key}-ckpt")


def test_checkpoint_round_trip_and_corrupt_checkpoint_is_dropped(tmp_path, cache):
    ckpt = engine.Checkpoint(cache, "k1", step="s", stage="minimize", every=0)
    assert ckpt.load() is None and ckpt.resumed_from is None
    assert ckpt.save(7, {"image": torch.ones(3, 4, 4), "momentum": torch.zeros(3, 3, 3, 3)})
    state, iteration = ckpt.load()
    assert iteration == 7 == ckpt.resumed_from and torch.equal(state["image"], torch.ones(3, 4, 4))
    path = cache.payload_path("k1-ckpt")
    cache.fs.pipe_file(path, cache.fs.cat_file(path)[:-9])
    assert engine.Checkpoint(cache, "k1").load() is None
    assert not cache.contains("k1-ckpt")


def test_keys_depend_on_device_class_and_seed(tmp_path):
    recipe = _recipe(tmp_path)
    a = engine.plan(recipe, output_dir=tmp_path)
    recipe.seed = 4
    b = engine.plan(recipe, output_dir=tmp_path)
    assert a.device_class == "cpu-float32"
    assert all(a.steps[n].key != b.steps[n].key for n in a.steps)


def test_errors_name_the_step(tmp_path, cache):
    recipe = _recipe(tmp_path, extra=[_step("ghost", "blend", ["mix", "nowhere"])])
    with pytest.raises(RecipeError, match="input 'nowhere' is not a step"):
        engine.plan(recipe)
    recipe = _recipe(tmp_path, path="../escape.png")
    with pytest.raises(RecipeError) as info:
        engine.plan(recipe, output_dir=tmp_path / "o")
    assert info.value.step == "save"
    with pytest.raises(ParamError, match="not a torch device"):
        engine.plan(_recipe(tmp_path), device="tpu-9")


def test_report_json_and_markdown(tmp_path, cache):
    report = _render(tmp_path, cache)
    data = report.to_dict()
    assert [s["step"] for s in data["steps"]] == ["photo", "soft", "hard", "mix", "save"]
    assert all(len(s["key"]) == 40 and s["hit"] is False for s in data["steps"])
    path = report.write_json(tmp_path / "r" / "report.json")
    assert path.read_text().startswith("{")
    assert "| save | save_image | miss |" in report.markdown()


def test_embedded_recipe_round_trip(tmp_path, cache):
    from minart.errors import MediaError

    (tmp_path / "r.yaml").write_text("name: tiny\n")
    report = _render(tmp_path, cache)
    embedded = engine.embedded_recipe(report.outputs[0])
    assert embedded.text == "name: tiny\n" and embedded.path == str(tmp_path / "r.yaml")
    assert embedded.materialize(tmp_path / "x") == tmp_path / "r.yaml"  # unchanged original
    (tmp_path / "r.yaml").write_text("name: edited\n")
    copy = embedded.materialize(tmp_path / "x")
    assert copy == tmp_path / "x" / "r.yaml" and copy.read_text() == "name: tiny\n"
    plain = tmp_path / "plain.png"
    write_image(plain, torch.zeros(3, 2, 2))
    with pytest.raises(MediaError, match="carries no minart recipe"):
        engine.embedded_recipe(plain)
    with pytest.raises(MediaError, match="no such file"):
        engine.embedded_recipe(tmp_path / "missing.png")
    if Path("/dev/null").exists():
        with pytest.raises(MediaError, match="/dev/null: is not a regular file"):
            engine.embedded_recipe("/dev/null")
    video = tmp_path / "v.gif"
    video.write_bytes(b"GIF89a")
    video.with_name("v.gif.json").write_text('{"fps": 12}')
    with pytest.raises(MediaError, match=r"v\.gif\.json: holds no minart_recipe text, so it is "
                                         r"not the sidecar 'minart run' wrote"):
        engine.embedded_recipe(video)


def test_output_steps_store_a_reference_not_a_copy(tmp_path, cache):
    report = _render(tmp_path, cache)
    keys = {s.step: s.key for s in report.steps}
    stored, _ = cache.get_tensors(keys["save"])
    assert [t.numel() for t in stored.values()] == [0]  # no pixels: a reference to 'mix'
    # something downstream of an output step still gets the pixels
    recipe = _recipe(tmp_path, extra=[_step("after", "perona_malik", ["save"], steps=1, kappa=0.1,
                                            dt=0.1)])
    plan = engine.plan(recipe, output_dir=tmp_path / "out-a")
    again = engine.render(plan, cache=cache)
    assert again.computed == ["after"]
    from minart.diffusion import perona_malik
    expected = perona_malik(cache.get(keys["mix"]), steps=1, kappa=0.1, dt=0.1)
    assert torch.allclose(cache.get(plan.steps["after"].key), expected)


def test_checkpoint_saves_are_throttled(tmp_path, cache, monkeypatch):
    ckpt = engine.Checkpoint(cache, "k2", every=3600)
    assert not ckpt.save(1, {"x": torch.zeros(1)}) and not cache.contains("k2-ckpt")
    assert ckpt.save(2, {"x": torch.zeros(1)}, force=True) and ckpt.load()[1] == 2
    engine.request_stop()  # Ctrl-C: the next save is kept whatever the throttle says
    try:
        assert ckpt.save(3, {"x": torch.zeros(1)}) and ckpt.load()[1] == 3
    finally:
        engine.clear_stop()
    assert not ckpt.save(4, {"x": torch.zeros(1)})
    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", "0")
    assert engine.Checkpoint(cache, "k2").save(3, {"x": torch.zeros(1)})
    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(ParamError, match="MINART_CHECKPOINT_SECONDS='soon'"):
        engine.Checkpoint(cache, "k2")
    with pytest.raises(ParamError, match="every=-1"):
        engine.Checkpoint(cache, "k2", every=-1)


@pytest.mark.slow  # minimize's first call in a process costs seconds
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_minimize_resumes_from_its_checkpoint_bit_identically(device):
    from minart.minimize import minimize
    from minart.recipe import parse_recipe

    plan = engine.plan(parse_recipe(
        "size: [12, 12]\nsteps:\n  base: {stage: fractal, params: {iterations: 8}}\n"
        "  art: {stage: minimize, input: base, params: {iterations: 60, frame_every: 10}}\n"),
        device=device)
    assert plan.device_class == f"{device}-float32"
    whole = TensorCache("memory://minart-test-minimize-whole")
    engine.render(plan, cache=whole)
    reference = whole.get(plan.steps["art"].key)

    cache = TensorCache("memory://minart-test-minimize-resumed")
    engine.run_step(plan, "base", cache=cache)
    checkpoint = engine.Checkpoint(cache, plan.steps["art"].key, every=0)
    params = plan.recipe.step("art").params

    class Killed(Exception):
        pass

    def kill_at_30(done, state):
        if done > 30:
            raise Killed

    with pytest.raises(Killed):  # a run that dies after iteration 30, as kill -9 would
        minimize(cache.get(plan.steps["base"].key).to(device), callback=kill_at_30,
                 checkpoint=checkpoint, **params.model_dump())
    report = engine.render(plan, cache=cache)
    art = next(s for s in report.steps if s.step == "art")
    assert art.status == "computed" and art.resumed_from == 31  # saved before the callback died
    assert "| art | minimize | miss (resumed at 31) |" in report.markdown()
    assert torch.equal(cache.get(plan.steps["art"].key), reference)
    assert not cache.contains(plan.steps["art"].key + "-ckpt")
    assert art.corrupt == 0 and report.corrupt == 0

    cache.delete(plan.steps["art"].key)  # a checkpoint cut short (a full disk): start again
    with pytest.raises(Killed):
        minimize(cache.get(plan.steps["base"].key).to(device), callback=kill_at_30,
                 checkpoint=checkpoint, **params.model_dump())
    path = cache.payload_path(checkpoint.key)
    cache.fs.pipe_file(path, cache.fs.cat_file(path)[:-9])
    report = engine.render(plan, cache=cache)
    art = next(s for s in report.steps if s.step == "art")
    assert (art.status, art.resumed_from, art.corrupt, report.corrupt) == ("computed", None, 1, 1)
    assert torch.equal(cache.get(plan.steps["art"].key), reference)
    whole.clear()
    cache.clear()


@pytest.mark.slow  # minimize's first call in a process costs seconds
def test_ctrl_c_keeps_the_work_up_to_the_last_frame(monkeypatch):
    from minart.recipe import parse_recipe

    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", "3600")  # only the stop makes it save
    plan = engine.plan(parse_recipe(
        "size: [12, 12]\nsteps:\n  base: {stage: fractal, params: {iterations: 8}}\n"
        "  art: {stage: minimize, input: base, params: {iterations: 60, frame_every: 10}}\n"))
    whole = TensorCache("memory://minart-test-ctrl-c-whole")
    engine.render(plan, cache=whole)
    cache = TensorCache("memory://minart-test-ctrl-c")

    def press_ctrl_c(step, done, total):
        if step == "art" and done >= 30:
            engine.request_stop()

    try:
        with pytest.raises(Interrupted, match="stopped on request at 41 of 60"):
            engine.render(plan, cache=cache, progress=press_ctrl_c)
    finally:
        engine.clear_stop()
    report = engine.render(plan, cache=cache)
    art = next(s for s in report.steps if s.step == "art")
    assert art.resumed_from == 41  # the frame at which the stop was seen, not the start
    assert torch.equal(cache.get(plan.steps["art"].key), whole.get(plan.steps["art"].key))
    whole.clear()
    cache.clear()


def test_embedded_recipe_from_a_video_sidecar(tmp_path):
    import json

    from minart.video import sidecar_path

    video = tmp_path / "clip.webm"
    video.write_bytes(b"not decoded")
    sidecar_path(video).write_text(json.dumps({
        "minart_recipe": "name: clip\n", "minart_recipe_path": "",
        "minart_overrides": json.dumps(["seed=4"]), "minart_preview": "4",
        "minart_inputs": json.dumps({"photo": "f" * 64})}))
    embedded = engine.embedded_recipe(video)
    assert (embedded.text, embedded.path, embedded.overrides, embedded.preview) == (
        "name: clip\n", None, ("seed=4",), 4)
    assert embedded.input_checks() == (f"steps.photo.params.sha256={'f' * 64}",)
    assert embedded.materialize(tmp_path / "x").read_text() == "name: clip\n"
    from minart.errors import MediaError

    for overrides, preview, message in [("5", "1", "not a JSON list of 'path=value' strings"),
                                        ('{"a": 1}', "1", "not a JSON list"),
                                        ("[]", "0", "minart_preview=0 is not a preview factor")]:
        sidecar_path(video).write_text(json.dumps({
            "minart_recipe": "name: clip\n", "minart_overrides": overrides,
            "minart_preview": preview}))
        with pytest.raises(MediaError, match=message):
            engine.embedded_recipe(video)


def test_a_run_fixes_its_date_so_steps_after_midnight_write_where_it_planned(tmp_path):
    recipe = tmp_path / "dated.yaml"
    recipe.write_text("name: dated\nsize: [8, 8]\nsteps:\n  a: {stage: fractal}\n"
                      "outputs:\n  still: {step: a, path: \"{date}/{name}.png\"}\n")
    before = engine.load_plan(recipe, output_dir=tmp_path, date="2026-11-26")
    after = engine.load_plan(recipe, output_dir=tmp_path, date="2026-11-27")
    assert before.step("out.still").files == (str(tmp_path / "2026-11-26" / "dated.png"),)
    assert after.step("out.still").files == (str(tmp_path / "2026-11-27" / "dated.png"),)
    assert before.step("a").key == after.step("a").key
    engine.render(before, cache=TensorCache(tmp_path / "cache"))
    assert (tmp_path / "2026-11-26" / "dated.png").is_file()
    assert not (tmp_path / "2026-11-27").exists()


def test_date_in_the_output_folder_moves_only_the_written_files(tmp_path):
    recipe = tmp_path / "nightly.yaml"
    recipe.write_text("name: n\nsize: [8, 8]\nsteps:\n  a: {stage: fractal}\n"
                      "outputs:\n  still: {step: a, path: \"{name}.png\"}\n")
    nights = [engine.load_plan(recipe, output_dir=tmp_path / "r" / "{date}", date=day)
              for day in ("2026-11-26", "2026-11-27")]
    for plan, day in zip(nights, ("2026-11-26", "2026-11-27"), strict=True):
        assert plan.output_dir == tmp_path / "r" / day
        assert plan.step("out.still").files == (str(tmp_path / "r" / day / "n.png"),)
    assert nights[0].step("a").key == nights[1].step("a").key
    assert nights[0].step("out.still").key != nights[1].step("out.still").key
    for bad, problem in (("{name}", "unknown field {name}"), ("{date:%Y}", "unknown field {date:%Y}"),
                         ("{}", "unknown field {}"), ("{date", "a brace with no partner")):
        with pytest.raises(ParamError, match=re.escape(f"output folder {bad!r}: {problem}; ")):
            engine.load_plan(recipe, output_dir=bad)
    assert engine.output_folder("a/{{b}}/{date}", "2026-11-27") == "a/{b}/2026-11-27"


@pytest.mark.parametrize("items", [
    ["size=[64, 64]", "size.0=40", "size=[16, 16]"],
    ["size=[16, 16]", "size.0=40"],
    ["size.0=40", "size=[24, 16]"],
    ["seed=3", "seed=5", "steps.soften.params.kappa=0.05"],
])
def test_overrides_as_a_mapping_give_the_recipe_the_list_gives(items):
    from minart.recipe import load_recipe

    ocean = Path(__file__).resolve().parents[2] / "recipes" / "ocean.yaml"
    by_list = load_recipe(ocean, items)
    by_mapping = load_recipe(ocean, engine.overrides_list(engine.overrides_dict(items)))
    assert (by_mapping.size, by_mapping.seed) == (by_list.size, by_list.seed)
    assert by_mapping.steps == by_list.steps


def test_a_device_this_machine_lacks_is_a_clear_error_before_anything_runs(tmp_path):
    with pytest.raises(ParamError, match=r"device='cuda:99' is not available"):
        engine.resolve_device("cuda:99")
    with pytest.raises(ParamError, match="is not a torch device"):
        engine.resolve_device("gpu")
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text("device: cuda:99\nsize: [8, 8]\nsteps:\n  a: {stage: fractal}\n")
    with pytest.raises(ParamError) as info:
        engine.load_plan(recipe)
    assert str(info.value).startswith(f"{recipe}: device='cuda:99' is not available")
    assert engine.load_plan(recipe, device="cpu").device == "cpu"  # --device wins


def test_a_reproduced_copy_finds_relative_inputs_and_refuses_a_changed_one(tmp_path):
    from minart.errors import ParamError as _ParamError
    from minart.recipe import load_recipe

    project = tmp_path / "project"
    (project / "recipes").mkdir(parents=True)
    (project / "shared").mkdir()
    pic = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    write_image(project / "recipes" / "pic.png", pic)
    write_image(project / "shared" / "other.png", pic.flip(-1))
    text = ("size: [8, 8]\nsteps:\n"
            "  a: {stage: load_image, params: {path: pic.png}}\n"
            "  b: {stage: load_image, params: {path: ../shared/other.png}}\n"
            "  c: {stage: blend, inputs: [a, b]}\n")
    original = project / "recipes" / "mine.yaml"
    original.write_text(text)
    rendered = load_recipe(original)
    digests = {s.name: s.params.sha256 for s in rendered.steps if s.stage == "load_image"}
    # the recipe file was edited since: the copy is rendered from elsewhere, its inputs still found
    original.write_text(text + "# edited\n")
    embedded = engine.EmbeddedRecipe(text=text, path=str(original),
                                     inputs=tuple(sorted(digests.items())))
    copy = embedded.materialize(tmp_path / "tmp")
    assert copy != original and copy.name == "mine.yaml"
    again = load_recipe(copy, embedded.input_checks())
    assert {s.name: s.params.sha256 for s in again.steps if s.stage == "load_image"} == digests
    write_image(project / "shared" / "other.png", pic)  # an input replaced since the render
    with pytest.raises(_ParamError, match=r"path='../shared/other.png': the file's SHA-256 is "
                                          "not the expected"):
        load_recipe(copy, embedded.input_checks())


def test_an_output_rendered_from_a_copy_records_the_original_recipe(tmp_path):
    import shutil

    from minart.io import read_metadata

    text = ("name: copy\nsize: [8, 8]\nsteps:\n  a: {stage: fractal, params: {iterations: 2}}\n"
            "outputs:\n  still: {step: a, path: still.png}\n")
    original = tmp_path / "r.yaml"
    original.write_text(text + "# edited since\n")
    copy = engine.EmbeddedRecipe(text=text, path=str(original)).materialize(tmp_path / "tmp")
    plan = engine.load_plan(copy, output_dir=tmp_path / "out", origin=original)
    engine.render(plan, cache=TensorCache(tmp_path / "cache"))
    meta = read_metadata(tmp_path / "out" / "still.png")
    assert (meta["minart_recipe_path"], meta["minart_recipe"]) == (str(original), text)
    shutil.rmtree(tmp_path / "tmp")  # the copy is gone; the output still leads to the recipe
    assert engine.embedded_recipe(tmp_path / "out" / "still.png").path == str(original)


def test_an_output_that_would_overwrite_an_input_image_or_the_recipe_is_refused(tmp_path):
    recipe = tmp_path / "ow.yaml"
    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))
    before = (tmp_path / "pic.png").read_bytes()
    recipe.write_text("size: [8, 8]\nsteps:\n  photo: {stage: load_image, params: {path: pic.png}}"
                      "\noutputs:\n  still: {step: photo, path: pic.png}\n")
    with pytest.raises(RecipeError) as info:
        engine.load_plan(recipe, output_dir=tmp_path)
    assert str(info.value) == (f"{recipe}:5:30: step 'out.still': writing {tmp_path / 'pic.png'} "
                               "would overwrite the input image of step 'photo'; give the output "
                               "another path or --output-dir")
    assert engine.load_plan(recipe, output_dir=tmp_path / "out").steps["out.still"].files
    assert (tmp_path / "pic.png").read_bytes() == before


def test_an_error_found_while_a_step_runs_names_the_recipe_line_of_the_step(tmp_path):
    from minart.errors import MinartError

    # (what check can see, such as grid labels that do not match the tiles, never gets this
    # far: an input image replaced after the recipe was checked is found only as the step runs)
    from minart.io import write_image

    write_image(tmp_path / "in.png", torch.zeros(3, 8, 8))
    recipe = tmp_path / "photo.yaml"
    recipe.write_text("size: [16, 16]\nsteps:\n  a: {stage: fractal}\n"
                      "  p: {stage: load_image, params: {path: in.png}}\n")
    plan = engine.load_plan(recipe, output_dir=tmp_path)
    write_image(tmp_path / "in.png", torch.ones(3, 8, 8))
    with pytest.raises(MinartError) as info:
        engine.render(plan, cache=TensorCache(tmp_path / "cache"))
    assert str(info.value).startswith(f"{recipe}:4:6: step 'p': ")
    assert "in.png changed since the recipe was checked" in str(info.value)


@contextlib.contextmanager
def _address_space_capped(headroom: int):
    """On Linux, cap this process's address space at its present size plus ``headroom`` bytes.

    A larger allocation then fails whatever ``vm.overcommit_memory`` says: with 1 the kernel
    would grant it, and the OOM killer would end the test run when it is written.
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    import resource

    with open("/proc/self/statm") as statm:  # first field: the address space's size in pages
        cap = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + headroom
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def test_a_step_that_runs_out_of_memory_is_a_one_line_error(tmp_path, monkeypatch):
    # A result larger than the machine is refused when the plan is made (tests/unit/
    # test_shapes.py); this is what happens when an allocation fails all the same (memory
    # taken by others, a stage's working buffers), so the plan is made as on a machine whose
    # memory is unknown.
    monkeypatch.setattr(engine, "device_memory", lambda device: None)
    recipe = tmp_path / "huge.yaml"
    recipe.write_text("size: [16, 16]\nsteps:\n"
                      "  f: {stage: fractal_frames, params: {frames: 1000, iterations: 2}}\n"
                      "  r: {stage: resize, input: f, params: {width: 16384, height: 16384}}\n")
    plan = engine.load_plan(recipe, output_dir=tmp_path)
    with pytest.raises(ParamError) as info, _address_space_capped(2**40):  # 1 TiB < 3.2 TB
        engine.render(plan, cache=TensorCache(tmp_path / "cache"))
    assert str(info.value) == (
        f"{recipe}:4:6: step 'r': not enough memory on cpu for this step (it asked for 3.2 TB); "
        "lower its size, frames or iterations, or render with --preview")


def test_an_output_whose_path_is_another_outputs_folder_is_refused(tmp_path):
    recipe = tmp_path / "nest.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  a: {stage: fractal}\noutputs:\n"
                      "  one: {step: a, path: x.png}\n  two: {step: a, path: x.png/y.png}\n")
    with pytest.raises(RecipeError) as info:
        engine.load_plan(recipe, output_dir=tmp_path)
    assert str(info.value) == (
        f"{recipe}:6:24: step 'out.two': writing {tmp_path / 'x.png' / 'y.png'} needs "
        f"{tmp_path / 'x.png'} to be a folder, but step 'out.one' writes a file there; give one "
        "of the outputs another path")


def test_a_report_path_that_would_overwrite_what_the_run_reads_or_writes_is_refused(tmp_path):
    write_image(tmp_path / "pic.png", torch.rand(3, 8, 8))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  photo: {stage: load_image, params: {path: pic.png}}"
                      "\noutputs:\n  still: {step: photo, path: out/still.png}\n")
    plan = engine.load_plan(recipe, output_dir=tmp_path)
    for path, what in [(recipe, "the recipe file"),
                       (tmp_path / "pic.png", "the input image of step 'photo'"),
                       (tmp_path / "out" / "still.png", "the output of step 'out.still'"),
                       (tmp_path / "out", "the folder of the output of step 'out.still'")]:
        with pytest.raises(ParamError) as info:
            engine.check_report_path(plan, path, option="--report")
        assert str(info.value) == (f"--report {path}: writing it would overwrite {what}; give the "
                                   "report another path")
    engine.check_report_path(plan, tmp_path / "report.json")
    # a reproduced copy protects the recipe it was copied from too
    copy = engine.EmbeddedRecipe(text=recipe.read_text(), path=str(recipe)).materialize(
        tmp_path / "tmp")
    recipe.write_text(recipe.read_text() + "# edited\n")
    copied = engine.load_plan(copy, output_dir=tmp_path, origin=recipe)
    with pytest.raises(ParamError, match="would overwrite the recipe file"):
        engine.check_report_path(copied, recipe)


@pytest.mark.parametrize("value", ["abc", "-1", "nan"])
def test_a_bad_checkpoint_interval_stops_a_run_before_any_step(tmp_path, monkeypatch, value):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  a: {stage: fractal}\n")
    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", value)
    with pytest.raises(ParamError) as info:
        engine.load_plan(recipe)
    assert str(info.value) == (f"MINART_CHECKPOINT_SECONDS={value!r} must be a number of seconds "
                               ">= 0 (how often long steps save a checkpoint; default 30); fix or "
                               "unset it")
    monkeypatch.setenv("MINART_CHECKPOINT_SECONDS", "0.5")
    assert engine.checkpoint_seconds() == 0.5
    assert engine.Checkpoint(TensorCache("memory://minart-ckpt-env"), "k").every == 0.5


def test_hit_is_true_only_for_cached_steps():
    hits = {status: engine.StepResult("a", "fractal", "k", status).to_dict()["hit"]
            for status in ("cached", "computed", "skipped", "failed", "blocked", "interrupted")}
    assert hits == {"cached": True, "computed": False, "skipped": False, "failed": False,
                    "blocked": False, "interrupted": False}


def test_the_report_says_how_the_run_ended_and_is_replaced_atomically(tmp_path, cache, monkeypatch):
    report = _render(tmp_path, cache)
    data = report.to_dict()
    assert (data["status"], data["error"], data["flow_run_id"]) == ("ok", None, None)
    assert {"recipe", "device", "seconds", "computed", "corrupt", "outputs", "steps"} <= data.keys()
    target = report.write_json(tmp_path / "report.json")
    before = target.read_text()
    report.status, report.error = "failed", "step 'mix': boom"

    def no_rename(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine.os, "replace", no_rename)
    with pytest.raises(ParamError, match=r"report=.*: cannot write it \(No space left on device\)"):
        report.write_json(target)
    assert target.read_text() == before  # never half a report
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []
    monkeypatch.undo()
    written = json.loads(report.write_json(target).read_text())
    assert (written["status"], written["error"]) == ("failed", "step 'mix': boom")


def test_date_in_a_report_path_is_the_runs_date_and_other_fields_are_refused():
    assert engine.report_path("/tmp/d/{date}.json", "2026-11-27") == "/tmp/d/2026-11-27.json"
    assert engine.report_path("r/{{x}}-{date}.json", "2026-11-27") == "r/{x}-2026-11-27.json"
    for bad, problem in (("{name}.json", "unknown field {name}"), ("{date:%Y}", "unknown field "
                         "{date:%Y}"), ("{date", "a brace with no partner")):
        with pytest.raises(ParamError) as info:
            engine.report_path(bad, "2026-11-27", option="--report")
        assert str(info.value).startswith(f"--report {bad!r}: {problem}; ")
        assert info.value.param == "--report"


def test_an_output_folder_that_cannot_be_created_is_refused_although_access_says_yes(
        tmp_path, monkeypatch):
    import errno

    engine.check_folder_option(tmp_path / "a" / "b" / "c", "--output-dir")
    assert not (tmp_path / "a").exists()  # the probe leaves nothing behind
    real_mkdir = Path.mkdir

    def read_only(path, *args, **kwargs):  # as on /proc or a read-only mount, for root too
        if tmp_path in path.parents:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(engine.os, "access", lambda path, mode: True)  # what root is told
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(ParamError) as info:
        engine.check_folder_option(tmp_path / "renders" / "2026-11-27", "--output-dir")
    assert str(info.value) == (f"--output-dir {tmp_path / 'renders' / '2026-11-27'}: cannot "
                               f"create {tmp_path / 'renders'} (Read-only file system); give a "
                               "folder that can be created")
    real_open = os.open

    def no_files(path, *args, **kwargs):
        if str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(engine.os, "open", no_files)
    with pytest.raises(ParamError, match=re.escape(
            f"--output-dir {tmp_path}: {tmp_path} is not a writable folder (Read-only file "
            "system)")):
        engine.check_folder_option(tmp_path, "--output-dir")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc")
def test_an_output_folder_under_proc_fails_before_any_step(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("size: [8, 8]\nsteps:\n  a: {stage: fractal}\n"
                      "outputs:\n  still: {step: a, path: a.png}\n")
    plan = engine.load_plan(recipe, output_dir="/proc/minart-test/{date}")
    with pytest.raises(ParamError, match=r"^--output-dir /proc/minart-test/\d{4}-\d\d-\d\d: "):
        engine.check_run_paths(plan, check_output_dir=True, output_dir_option="--output-dir")


def test_a_writer_removes_the_temporary_files_a_killed_writer_left_for_its_target(tmp_path, cache):
    out = tmp_path / "out-a" / "out"
    out.mkdir(parents=True)
    stale = [out / ".tiny.png.0123456789ab.tmp.png", out / ".tiny.png.json.ba9876543210.tmp.json"]
    kept = [out / ".tiny.png.0123456789ab.tmp.png.keep",  # not exactly io's pattern
            out / ".tiny.png.0123456789abc.tmp.png", out / ".tiny.png.0123456789AB.tmp.png",
            out / ".other.png.0123456789ab.tmp.png",  # another target's
            out / "tiny.png.0123456789ab.tmp.png"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    _render(tmp_path, cache)
    assert (out / "tiny.png").is_file()
    assert [p for p in stale if p.exists()] == [] and all(p.exists() for p in kept)


def test_an_errors_repr_carries_its_whole_line_for_prefects_error_log(tmp_path):
    with pytest.raises(RecipeError) as info:  # Prefect logs "...during execution: %r"
        engine.load_plan(tmp_path / "none.yaml")
    assert repr(info.value) == f"RecipeError('{tmp_path / 'none.yaml'}: no such recipe file')"


def test_failures_of_the_machine_are_told_apart_from_the_recipes_errors():
    import errno

    from minart.errors import CacheError, MediaError, is_io_failure

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise MediaError("cannot write the image", file="a.png") from None
    except MediaError as exc:
        full_disk = exc
    try:
        try:
            raise OSError("broken data stream when reading image file")  # Pillow: no errno
        except OSError:
            raise MediaError("not a readable image", file="a.png") from None
    except MediaError as exc:
        broken_input = exc
    assert is_io_failure(full_disk) and is_io_failure(CacheError("cannot write cache entry"))
    assert is_io_failure(OSError(errno.EIO, "Input/output error"))
    assert not is_io_failure(broken_input) and not is_io_failure(ParamError("dt=-1"))
    assert ParamError("x").exit_status == 2


@pytest.mark.slow
def test_a_step_logs_what_makes_its_first_call_slow(tmp_path, cache, monkeypatch, caplog):
    """A CPU step that compiles (here forced by a zero threshold) says so in the step's log."""
    from minart import kernels
    from minart.kernels import cpu, dispatch

    monkeypatch.setattr(dispatch, "CPU_COMPILE_MIN_WORK", 0)
    monkeypatch.setattr(cpu, "_COMPILED", {})
    monkeypatch.setenv("MINART_KERNELS", "auto")
    assert kernels.step_path(torch.zeros(1, 3, 8, 8), compiled="classic", work=1) == "compiled"
    plan = engine.plan(_recipe(tmp_path), device="cpu", output_dir=tmp_path / "out")
    log = logging.getLogger("minart-test-run")
    with caplog.at_level(logging.INFO, logger="minart-test-run"):
        engine.run_step(plan, "soft", cache=cache, log=log)
    said = [r.getMessage() for r in caplog.records if r.name == "minart-test-run"]
    assert "step 'soft': compiling the CPU classic step for this image size (once per process " \
           "and size: seconds, fewer when Inductor's disk cache has it)" in said, said
