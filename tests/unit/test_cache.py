"""Tensor cache: safetensors round trips, checksums, atomic writes, LRU eviction and locks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

import pytest
import torch

from minart.cache import TensorCache, format_size, parse_size
from minart.errors import CacheError, ParamError


@pytest.fixture(params=["local", "file-url", "memory"])
def cache(request, tmp_path):
    if request.param == "local":
        yield TensorCache(tmp_path / "cache")
        return
    if request.param == "file-url":
        store = TensorCache(f"file://{tmp_path}/cache")
        assert store.is_local and store.local_path() == tmp_path / "cache"
        yield store
        return
    store = TensorCache(f"memory://minart-test-{uuid.uuid4().hex}")
    yield store
    store.clear()


def test_round_trip_keeps_values_dtype_and_shape(cache, gen):
    image = torch.rand(1, 3, 8, 5, generator=gen)
    cache.put("k1", image, info={"step": "base", "stage": "fractal"})
    back = cache.get("k1")
    assert back.dtype == torch.float32 and back.shape == (1, 3, 8, 5)
    assert torch.equal(back, image)
    assert cache.contains("k1") and not cache.contains("k2")
    assert cache.get("k2") is None
    entry = cache.entries()[0]
    assert (entry.key, entry.step, entry.stage, entry.kind) == ("k1", "base", "fractal", "result")


def test_named_tensors_and_info_round_trip(cache, gen):
    state = {"image": torch.rand(1, 3, 4, 4, generator=gen), "step": torch.tensor(12),
             "moments": torch.rand(2, 2, dtype=torch.float64, generator=gen)}
    cache.put_tensors("k-ckpt", state, info={"iteration": "12"}, kind="checkpoint")
    tensors, meta = cache.get_tensors("k-ckpt")
    assert set(tensors) == set(state)
    assert all(torch.equal(tensors[n], state[n]) and tensors[n].dtype == state[n].dtype
               for n in state)
    assert meta["iteration"] == "12"
    assert cache.entries()[0].kind == "checkpoint"
    with pytest.raises(CacheError, match="holds no result tensor"):
        cache.get("k-ckpt")


def test_payload_is_plain_safetensors_with_checksum(tmp_path):
    from safetensors import safe_open

    cache = TensorCache(tmp_path)
    cache.put("abc", torch.ones(2, 2))
    with safe_open(cache.payload_path("abc"), framework="pt") as f:
        meta = f.metadata()
        assert torch.equal(f.get_tensor("result"), torch.ones(2, 2))
    assert len(meta["minart.sha256"]) == 64 and meta["minart.key"] == "abc"
    assert not list((tmp_path / "tmp").iterdir())  # temp files were renamed into place


def _corrupt(cache, key, how):
    path = cache.payload_path(key)
    raw = bytearray(cache.fs.cat_file(path))
    if how == "flip":
        raw[-3] ^= 0xFF
    elif how == "truncate":
        raw = raw[: len(raw) - 7]
    elif how == "header":
        raw[10:20] = b"x" * 10
    else:
        raw = raw[:5]
    cache.fs.pipe_file(path, bytes(raw))


@pytest.mark.parametrize("how,message", [("flip", "checksum"), ("truncate", "truncated"),
                                         ("header", "unreadable header"), ("stub", "truncated")])
def test_corrupt_entries_raise_cache_error(cache, how, message):
    cache.put("k", torch.rand(1, 1, 4, 4))
    _corrupt(cache, "k", how)
    with pytest.raises(CacheError, match=message):
        cache.get("k")


@pytest.mark.parametrize("old,new", [(b"[1,3,4,4]", b"[1,3,8,2]"), (b'"F32"', b'"I32"')])
def test_a_header_edited_to_another_shape_or_dtype_of_the_same_size_is_refused(cache, old, new):
    cache.put("k", torch.rand(1, 3, 4, 4))
    path = cache.payload_path("k")
    raw = cache.fs.cat_file(path)
    assert raw.count(old) == 1
    cache.fs.pipe_file(path, raw.replace(old, new))  # same length: data and checksum untouched
    with pytest.raises(CacheError, match="fails its layout checksum"):
        cache.get("k")


def test_entry_under_the_wrong_key_is_refused(cache):
    cache.put("aa1", torch.zeros(2))
    cache.fs.pipe_file(cache.payload_path("aa2"), cache.fs.cat_file(cache.payload_path("aa1")))
    with pytest.raises(CacheError, match="holds key 'aa1'"):
        cache.get("aa2")


@pytest.mark.parametrize("key", ["", "../etc", "a/b", "a" * 129, ".hidden"])
def test_bad_keys_raise(cache, key):
    with pytest.raises(CacheError, match="cache key"):
        cache.put(key, torch.zeros(1))


def test_non_tensor_value_raises(cache):
    with pytest.raises(CacheError, match=r"must be a torch.Tensor"):
        cache.put_tensors("k", {"x": [1, 2]})


def test_gc_evicts_least_recently_used(cache):
    for key in ("old", "mid", "new"):
        cache.put(key, torch.zeros(256))
        time.sleep(0.01)
    cache.get("old")  # reading refreshes the access time
    one = cache.entries()[0].size
    report = cache.gc(2 * one)
    assert (report.removed, report.kept, report.freed) == (1, 2, one)
    assert sorted(e.key for e in cache.entries()) == ["new", "old"]
    assert cache.size() == 2 * one


def test_delete_removes_records_first(cache):
    cache.put("k1", torch.zeros(1))
    cache.fs.makedirs(cache.records_dir, exist_ok=True)
    cache.fs.pipe_file(f"{cache.records_dir}/k1", b"{}")
    cache.fs.pipe_file(f"{cache.records_dir}/k10", b"{}")
    assert cache.delete("k1") and not cache.delete("k1")
    assert not cache.fs.exists(f"{cache.records_dir}/k1")
    assert cache.contains("k1") is False


def test_clear(cache):
    cache.put("a", torch.zeros(1))
    cache.put("b", torch.zeros(1))
    assert cache.clear() == 2 and cache.entries() == [] and cache.get("a") is None


def test_sizes():
    assert parse_size("10GB") == 10 * 10**9 and parse_size("512MiB") == 512 * 2**20
    assert parse_size("4096") == 4096 and parse_size("1.5k") == 1500
    for bad in ("ten", "-1", "5 parsecs", -3):
        with pytest.raises(ParamError):
            parse_size(bad)
    assert format_size(999) == "999 B" and format_size(2_500_000) == "2.5 MB"


def test_lock_serialises_threads(cache):
    inside, overlaps = [], []

    def work():
        with cache.lock("shared"):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.02)
            inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []


def test_lock_timeout_raises(cache):
    with cache.lock("busy"):
        result = []
        t = threading.Thread(target=lambda: result.append(_try_lock(cache, "busy")))
        t.start()
        t.join()
    assert result == ["timeout"]
    assert _try_lock(cache, "busy") == "ok"


def _try_lock(cache, key):
    try:
        with cache.lock(key, timeout=0.1):
            return "ok"
    except CacheError as exc:
        assert "locked by another run" in str(exc)
        return "timeout"


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


@pytest.mark.parametrize("holder", [
    {"host": socket.gethostname(), "pid": None, "time": None},  # dead process on this host
    {"host": "elsewhere", "pid": 1, "time": 1.0},  # heartbeat long gone
])
def test_abandoned_lock_files_are_broken(holder):
    cache = TensorCache(f"memory://minart-test-{uuid.uuid4().hex}", stale_after=5)
    holder = {**holder, "pid": holder["pid"] or _dead_pid(), "time": holder["time"] or time.time()}
    cache.fs.makedirs(f"{cache.root}/locks", exist_ok=True)
    cache.fs.pipe_file(f"{cache.root}/locks/k.lock", json.dumps(holder).encode())
    assert _try_lock(cache, "k") == "ok"


def test_live_lock_file_is_respected():
    cache = TensorCache(f"memory://minart-test-{uuid.uuid4().hex}", stale_after=5)
    holder = {"host": "elsewhere", "pid": 1, "time": time.time(), "token": "t"}
    cache.fs.makedirs(f"{cache.root}/locks", exist_ok=True)
    cache.fs.pipe_file(f"{cache.root}/locks/k.lock", json.dumps(holder).encode())
    assert _try_lock(cache, "k") == "timeout"


def test_clear_removes_what_the_cache_wrote_and_nothing_else(cache):
    key, orphan = "a" * 40, "b" * 40
    cache.put(key, torch.zeros(1))
    fs, records = cache.fs, cache.records_dir
    fs.makedirs(f"{records}/results", exist_ok=True)
    fs.makedirs(cache._join("tmp"), exist_ok=True)
    fs.makedirs(cache._join("objects", "photos"), exist_ok=True)
    ours = [f"{records}/{key}", f"{records}/results/{key}", f"{records}/{orphan}",
            f"{records}/results/{orphan}-ckpt", cache._join("tmp", f"{'c' * 32}.part")]
    theirs = [f"{records}/README.md", cache._join("tmp", "notes.txt"),
              cache._join("objects", "photos", "cat.jpg")]
    for path in ours + theirs:
        fs.pipe_file(path, b"{}")
    assert cache.clear() == 1
    assert [p for p in ours if fs.exists(p)] == [] and all(fs.exists(p) for p in theirs)
    assert cache.entries() == [] and not fs.exists(f"{records}/results")



def test_clear_removes_lock_files_no_run_holds(cache):
    cache.put("a", torch.zeros(1))
    with cache.lock("a"):
        pass
    with cache.lock("held"):
        cache.clear()
        assert cache.fs.exists(cache._join("locks", "held.lock"))  # held: kept
    assert not cache.fs.exists(cache._join("locks", "a.lock"))


def test_gc_removes_lock_files_no_run_holds_and_the_lock_still_excludes(cache):
    cache.put("a", torch.zeros(1))
    for key in ("a", "gone"):
        with cache.lock(key):
            pass
    with cache.lock("held"):
        cache.gc("1GB")  # evicts nothing
        assert cache.fs.exists(cache._join("locks", "held.lock"))  # held: kept
        assert _try_lock(cache, "held") == "timeout"  # and still held
    assert not cache.fs.exists(cache._join("locks", "a.lock"))
    assert not cache.fs.exists(cache._join("locks", "gone.lock"))
    assert [e.key for e in cache.entries()] == ["a"]
    assert _try_lock(cache, "a") == "ok"


def test_a_lock_file_removed_while_held_still_excludes(tmp_path):
    # gc and clear remove a free lock file while holding it. A run waiting on it, and a run that
    # then creates a new one, must not both get the lock; with filelock 3.20.4-3.29.4 they did
    # (its release unlinked the path again, taking the new run's file with it)
    cache = TensorCache(tmp_path / "cache")
    path = cache.local_path() / "locks" / "k.lock"
    got = []

    def waiter():
        with cache.lock("k"):
            got.append(True)

    with contextlib.ExitStack() as first:
        first.enter_context(cache.lock("k"))
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)
        path.unlink()  # what gc does, holding the lock
        with contextlib.ExitStack() as second:
            second.enter_context(cache.lock("k", timeout=1))  # a new file, a new run
            first.close()
            time.sleep(0.5)
            assert got == []  # the waiter must not hold it while the new run does
        thread.join(5)
    assert got == [True]


def test_clear_of_a_folder_that_is_not_a_cache_keeps_its_files(tmp_path):
    for folder in ("tmp", "objects", "records"):
        (tmp_path / folder).mkdir()
    (tmp_path / "tmp" / "notes.txt").write_text("important")
    (tmp_path / "objects" / "mesh.obj").write_text("v 0 0 0")
    assert TensorCache(tmp_path).clear() == 0
    assert (tmp_path / "tmp" / "notes.txt").read_text() == "important"
    assert (tmp_path / "objects" / "mesh.obj").is_file()
    assert not (tmp_path / "records").exists()  # an empty folder of the cache's layout goes


def test_delete_removes_the_orchestrators_result_files_too(cache):
    key = "d" * 40
    cache.put(key, torch.zeros(1))
    cache.fs.makedirs(f"{cache.records_dir}/results", exist_ok=True)
    cache.fs.pipe_file(f"{cache.records_dir}/results/{key}", b"{}")
    assert cache.delete(key) and not cache.fs.exists(f"{cache.records_dir}/results/{key}")


def test_bad_location_and_options():
    with pytest.raises(CacheError, match="not usable"):
        TensorCache("nosuchprotocol://x")
    with pytest.raises(CacheError, match="cache location is empty"):
        TensorCache(" ")
    with pytest.raises(ParamError, match="stale_after"):
        TensorCache("memory://x", stale_after=0)


def test_default_location_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINART_CACHE", str(tmp_path / "c"))
    assert TensorCache().location == str(tmp_path / "c")


def test_a_local_location_that_is_not_a_usable_folder_is_refused_before_use(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("")
    for location in (afile, f"file://{afile}"):
        with pytest.raises(CacheError) as info:
            TensorCache(location).check_location(create=True)
        assert str(info.value) == f"{location}: is a file, not a folder; give a folder or an fsspec URL"
        assert info.value.file == str(location)
    with pytest.raises(CacheError, match=rf"^{afile}/sub: cannot create it: {afile} is a file"):
        TensorCache(afile / "sub").check_location(create=True)
    with pytest.raises(CacheError, match=rf"^{tmp_path}/none: no such folder$"):
        TensorCache(tmp_path / "none").check_location(create=False)
    assert not (tmp_path / "none").exists()  # listing creates nothing
    TensorCache(tmp_path / "new" / "cache").check_location(create=True)
    assert (tmp_path / "new" / "cache").is_dir()  # a render creates it


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_a_location_that_cannot_be_created_says_where():
    with pytest.raises(CacheError, match=r"^/proc/minart-cachex: cannot create the folder in /proc \("):
        TensorCache("/proc/minart-cachex").check_location(create=True)


def test_remote_locations_are_not_probed():
    store = TensorCache(f"memory://minart-test-{uuid.uuid4().hex}")
    store.check_location(create=False)  # missing, but a remote store needs no folder
    store.check_location(create=True)
    assert store.entries() == []


def _read_only(cache, monkeypatch, *, only: str = ""):
    """Make removing files under ``cache`` fail as on a read-only mount (paths containing
    ``only``, or all of them); root ignores ``chmod -w``, so the file system is patched."""
    import errno

    real = type(cache.fs).rm_file

    def refuse(fs, path, *args, **kwargs):
        if only in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(fs, path, *args, **kwargs)

    monkeypatch.setattr(type(cache.fs), "rm_file", refuse)


def test_gc_on_a_read_only_cache_is_one_line_with_what_it_evicted(cache, monkeypatch):
    for key in ("aa01", "bb02", "cc03", "dd04"):
        cache.put(key, torch.zeros(64))
        time.sleep(0.01)
    _read_only(cache, monkeypatch, only="/bb")  # the second oldest entry cannot go
    with pytest.raises(CacheError) as info:
        cache.gc(0)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_status == 1
    assert message.startswith("cannot evict cache entry bb02 (Read-only file system: ")
    one = format_size(cache.entries()[0].size)
    assert message.endswith(f"; removed 1 entries ({one}) before it, 3 left "
                            f"({format_size(3 * cache.entries()[0].size)})")
    assert [e.key for e in cache.entries()] == ["bb02", "cc03", "dd04"]


def test_clear_on_a_read_only_cache_says_so_and_counts_what_it_removed(cache, monkeypatch):
    for key in ("aa01", "bb02", "cc03"):
        cache.put(key, torch.zeros(8))
    _read_only(cache, monkeypatch, only="/bb")
    with pytest.raises(CacheError) as info:
        cache.clear()
    assert info.value.exit_status == 1 and "\n" not in str(info.value)
    assert str(info.value).startswith("cannot evict 2 cache files from ")  # payload and sidecar
    assert "(Read-only file system: " in str(info.value)
    assert str(info.value).endswith("; removed 2 of 3 entries, 1 left")
    assert [e.key for e in cache.entries()] == ["bb02"]
    monkeypatch.undo()
    assert cache.clear() == 1 and cache.entries() == []  # the count is what it removed


def test_cache_commands_on_a_read_only_cache_exit_1_with_one_line(tmp_path, monkeypatch, capsys):
    from minart.cli import main

    store = TensorCache(tmp_path / "cache")
    for key in ("aa01", "bb02"):
        store.put(key, torch.zeros(8))
    _read_only(store, monkeypatch)
    for args in (["gc", "--max-size", "0"], ["clear", "--yes"]):
        code = main(["cache", *args, "--cache", str(tmp_path / "cache")])
        out, err = capsys.readouterr()
        assert code == 1 and out == "", (args, out, err)
        assert err.startswith("error: cannot evict ") and err.count("\n") == 1, err
        assert "(Read-only file system: " in err and "Traceback" not in err
    assert len(store.entries()) == 2
