"""Content-addressed tensor cache: safetensors entries named by step keys, on any fsspec store.

Layout under the cache root (a local folder, ``file://`` or any fsspec URL such as ``s3://`` or
``memory://``)::

    objects/<k[:2]>/<key>.safetensors   payload: the tensors + metadata (checksum, key, step info)
    objects/<k[:2]>/<key>.json          sidecar: created/accessed times, size, step, stage (LRU)
    records/<key>, records/results/<key> the orchestrator's record and result for the entry
    locks/<key>.lock                    per-key lock
    tmp/                                partial writes

Why this design (and not Prefect's own result store), given how Prefect 3.9 was measured to
cache, hash and lock:

* **Keys, not tensors.** An entry is found by its step key (:mod:`minart.keys`), computed from
  the recipe before anything runs; no tensor is hashed to find it.
* **safetensors, never pickle.** Prefect's default record base64-pickles a 100 MB tensor into
  137 MB of JSON; here a payload is a plain safetensors file (read with ``safetensors``, no code
  execution), whatever the orchestrator.
* **Checksummed.** The sha256 of the data section (``minart.sha256``) and of the tensors'
  dtypes, shapes and offsets (``minart.layout``) are stored in the safetensors header and
  checked on every read, together with the length, so a truncated or corrupt entry raises
  :class:`~minart.errors.CacheError` (the engine then warns, recomputes and counts it) instead of
  handing back wrong pixels.
* **Atomic.** Writes go to ``tmp/`` and are renamed into place, so readers see the whole entry
  or none; a ``kill -9`` mid-write leaves only a temp file (``gc`` removes old ones).
* **Locks that recover.** Two runs computing the same step serialise on a per-key lock. On a local
  folder it is an OS lock (``filelock``/``fcntl``), released by the kernel when the holder dies,
  so ``kill -9`` never leaves a lock behind (Prefect's file locks never expire). On other fsspec
  stores it is an exclusive-create lock file holding host, pid and a heartbeat time, broken when
  the holder's pid is gone (same host) or its heartbeat is older than ``stale_after`` seconds.
* **Shareable.** Any fsspec URL works, so GPU workers on several machines can share one store.
* **LRU.** Reads refresh ``accessed`` in the sidecar; :meth:`TensorCache.gc` evicts the least
  recently used entries until the store fits ``max_size``. Records in ``records/`` that refer to
  an entry are removed *before* its payload, so no record outlives the tensor it points at.

How it ties into Prefect (``tasks/render_step.py``; this module never imports Prefect): a step's
task takes the step key and paths, never tensors (Prefect would hash and pickle them, and tensor
hashes differ between processes); a custom ``CachePolicy`` returns that key, so a cached step
shows as Cached in the UI without running. Prefect's record holds only the step's small JSON
report (JSON serializer, ``key_storage`` = ``<cache>/records`` as a ``Path``), never a tensor: no
safetensors serializer is needed, nothing is base64-pickled, nothing is kept in memory
(``cache_result_in_memory=False``), and :meth:`TensorCache.delete` drops the record before the
payload. The policy also drops a record whose payload is gone, and the flow refreshes the record
of any step it has to run. Isolation stays ``READ_COMMITTED``: the per-key lock here already
serialises two runs of a step, and Prefect's ``SERIALIZABLE`` file locks never expire after
``kill -9``. The flow skips every step whose whole subtree is cached
(:meth:`minart.engine.Plan.schedule`), so Prefect never loads inputs it does not need.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
import torch  # noqa: F401  (the doctests below use it)
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

from .errors import EXIT_FAILED, CacheError, ParamError

__all__ = [
    "CacheEntry",
    "GcReport",
    "TensorCache",
    "default_cache_location",
    "entry_dict",
    "format_size",
    "parse_size",
]

_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGTP]?I?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15}
_RECORD_RE = re.compile(r"^[0-9a-f]{32,128}(?:-ckpt)?(?:\.[a-z]+)?$")  # records/[*/]<key>
_OBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.(?:safetensors|json)$")
_PART_RE = re.compile(r"^[0-9a-f]{32}\.part$")  # tmp/<uuid4 hex>.part
_CHECKSUM = "minart.sha256"
_KEYFIELD = "minart.key"
_LAYOUT = "minart.layout"
_TMP_MAX_AGE = 3600.0


def default_cache_location() -> str:
    """``$MINART_CACHE`` if set, else ``platformdirs.user_cache_dir("minart")``.

    Example:
        >>> isinstance(default_cache_location(), str)
        True
    """
    env = os.environ.get("MINART_CACHE")
    if env:
        return env
    import platformdirs

    return platformdirs.user_cache_dir("minart")


def parse_size(text: str | int) -> int:
    """Bytes in a size such as ``"10GB"``, ``"512 MiB"``, ``"1.5G"`` or ``4096``.

    Decimal units (``KB`` = 1000) and binary ones (``KiB`` = 1024) are both accepted.

    Raises:
        ParamError: not a non-negative size.

    Example:
        >>> parse_size("10GB"), parse_size("1KiB"), parse_size(12)
        (10000000000, 1024, 12)
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ParamError(f"size={text} must be >= 0", param="max_size")
        return text
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ParamError(f"size={text!r} is not a size such as '10GB', '512MiB' or '4096'",
                         param="max_size")
    number, unit = float(match.group(1)), (match.group(2) or "").upper()
    prefix = unit.rstrip("B").rstrip("I")
    if unit.startswith("I"):
        raise ParamError(f"size={text!r} is not a size such as '10GB', '512MiB' or '4096'",
                         param="max_size")
    if "I" in unit:  # binary units: KiB = 1024
        factor = 1024 ** ("KMGTP".index(prefix) + 1)
    else:
        factor = _UNITS[prefix]
    return int(number * factor)


def format_size(size: int) -> str:
    """Human-readable decimal size.

    Example:
        >>> format_size(1234), format_size(5_000_000_000)
        ('1.2 kB', '5.0 GB')
    """
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


@dataclass(frozen=True)
class CacheEntry:
    """One stored entry, as listed by :meth:`TensorCache.entries`."""

    key: str
    size: int
    created: float
    accessed: float
    step: str = ""
    stage: str = ""
    kind: str = "result"


@dataclass(frozen=True)
class GcReport:
    """What :meth:`TensorCache.gc` removed and what is left."""

    removed: int
    freed: int
    kept: int
    size: int


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise CacheError(f"cache key {key!r} must be 1-128 characters of [A-Za-z0-9_.-]")
    return key


def _encode(tensors: Mapping[str, Tensor], metadata: Mapping[str, str]
            ) -> tuple[bytes, memoryview]:
    """Safetensors bytes split as (length + header, data), with the data's sha256 in the header.

    The data is a view of the serialised bytes, not a copy: an entry costs its size once in
    memory while it is written, not twice.
    """
    for name, tensor in tensors.items():
        if not isinstance(tensor, Tensor):
            raise CacheError(f"cache value {name!r} must be a torch.Tensor, got "
                             f"{type(tensor).__name__}")
    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    raw = _st_save(cpu, metadata={str(k): str(v) for k, v in metadata.items()})
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = memoryview(raw)[8 + n :]
    meta = header.setdefault("__metadata__", {})
    meta[_CHECKSUM] = hashlib.sha256(data).hexdigest()
    meta[_LAYOUT] = _layout_digest(header)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors keeps the data section 8-byte aligned
    return struct.pack("<Q", len(text)) + text, data


def _layout_digest(header: Mapping[str, object]) -> str:
    """sha256 of the tensors' names, dtypes, shapes and offsets in a safetensors header.

    The data checksum alone would accept a header whose shape was changed to another of the same
    size (``[3, 64, 64]`` read as ``[3, 128, 32]``): a wrong image, not an error.
    """
    table = {k: [v["dtype"], v["shape"], v["data_offsets"]]  # type: ignore[index]
             for k, v in header.items() if k != "__metadata__"}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def _decode(raw: bytes, key: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Verify length, header and checksum of a payload; raise CacheError if anything is off."""
    if len(raw) < 8:
        raise CacheError(f"cache entry {key} is truncated ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise CacheError(f"cache entry {key} is truncated (header of {n} bytes, file of "
                         f"{len(raw)})")
    try:
        header = json.loads(raw[8 : 8 + n])
        metadata = dict(header.get("__metadata__") or {})
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                  default=0)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CacheError(f"cache entry {key} has an unreadable header") from exc
    data = memoryview(raw)[8 + n :]
    if len(data) != end:
        raise CacheError(f"cache entry {key} is truncated ({len(data)} of {end} data bytes)")
    if metadata.get(_KEYFIELD) != key:
        raise CacheError(f"cache entry {key} holds key {metadata.get(_KEYFIELD)!r}")
    if hashlib.sha256(data).hexdigest() != metadata.get(_CHECKSUM):
        raise CacheError(f"cache entry {key} fails its sha256 checksum")
    try:
        layout = _layout_digest(header)
    except (KeyError, TypeError) as exc:
        raise CacheError(f"cache entry {key} has an unreadable header") from exc
    if _LAYOUT in metadata and layout != metadata[_LAYOUT]:  # (entries before it have none)
        raise CacheError(f"cache entry {key} fails its layout checksum (dtype or shape changed)")
    try:
        tensors = _st_load(raw)
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise CacheError(f"cache entry {key} is not valid safetensors: {exc}") from exc
    return tensors, metadata


class _OsLock:
    """Local-folder lock: an OS lock (``filelock``: fcntl/msvcrt), freed by the kernel on death."""

    def __init__(self, path: str) -> None:
        import filelock

        self._lock = filelock.FileLock(path, thread_local=False)

    def acquire(self, timeout: float | None) -> bool:
        import filelock

        try:
            self._lock.acquire(timeout=-1 if timeout is None else timeout, poll_interval=0.05)
        except filelock.Timeout:
            return False
        return True

    def release(self) -> None:
        self._lock.release()


class _FileLock:
    """Lock file on any fsspec store, created exclusively, holding host, pid and a heartbeat.

    A background thread refreshes the heartbeat every ``stale_after / 3`` seconds. A waiter breaks
    the lock when the holder's pid no longer exists on this host, or its heartbeat is older than
    ``stale_after``.
    """

    def __init__(self, fs, path: str, stale_after: float) -> None:
        self._fs, self._path, self._stale_after = fs, path, stale_after
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                           "token": self._token}).encode()

    def _try_create(self) -> bool:
        try:
            with self._fs.open(self._path, "xb") as f:
                f.write(self._content())
            return True
        except FileExistsError:
            return False

    def _holder(self) -> dict | None:
        try:
            return json.loads(self._fs.cat_file(self._path))
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            return {}

    def _is_stale(self, holder: dict) -> bool:
        if not holder:  # unreadable: a holder died mid-write, or it is being written right now
            try:
                info = self._fs.info(self._path)
            except FileNotFoundError:
                return False
            mtime = info.get("mtime") or info.get("created")
            if hasattr(mtime, "timestamp"):
                mtime = mtime.timestamp()
            return mtime is None or time.time() - float(mtime) > self._stale_after
        same_host = holder.get("host") == socket.gethostname()
        if same_host and not _pid_alive(int(holder.get("pid", -1))):
            return True
        return time.time() - float(holder.get("time", 0.0)) > self._stale_after

    def acquire(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._try_create():
                self._stop.clear()
                self._thread = threading.Thread(target=self._beat, daemon=True,
                                                name="minart-cache-lock")
                self._thread.start()
                return True
            holder = self._holder()
            if holder is not None and self._is_stale(holder) and self._holder() == holder:
                with contextlib.suppress(FileNotFoundError):
                    self._fs.rm_file(self._path)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _beat(self) -> None:
        while not self._stop.wait(self._stale_after / 3):
            holder = self._holder()
            if not holder or holder.get("token") != self._token:
                return
            with contextlib.suppress(OSError):
                self._fs.pipe_file(self._path, self._content())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = self._holder()
        if holder and holder.get("token") == self._token:
            with contextlib.suppress(FileNotFoundError):
                self._fs.rm_file(self._path)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TensorCache:
    """Safetensors store of step results and checkpoints, addressed by step key.

    Args:
        location: a folder, ``file://`` URL or any fsspec URL (default
            :func:`default_cache_location`).
        stale_after: seconds without a heartbeat after which a lock file on a non-local store
            is considered abandoned (local folders use OS locks, freed when the holder dies).

    Raises:
        CacheError: the location cannot be used.

    Example:
        >>> cache = TensorCache("memory://minart-doctest")
        >>> cache.put("abc", torch.zeros(1, 3, 2, 2), info={"step": "demo"})
        >>> cache.get("abc").shape
        torch.Size([1, 3, 2, 2])
        >>> cache.get("missing") is None
        True
        >>> cache.clear()
        1
    """

    def __init__(self, location: str | os.PathLike | None = None, *,
                 stale_after: float = 60.0) -> None:
        if stale_after <= 0:
            raise ParamError(f"stale_after={stale_after} must be > 0", param="stale_after")
        location = default_cache_location() if location is None else location
        self.location = os.fspath(location)
        if not self.location.strip():
            raise CacheError("the cache location is empty; give a folder or URL (or leave it "
                             "out for the default)")
        try:
            self.fs, root = fsspec.core.url_to_fs(self.location)
        except (ValueError, ImportError) as exc:
            raise CacheError(f"cache location {self.location!r} is not usable: {exc}") from exc
        self.root = root.rstrip("/") or "/"
        self.stale_after = stale_after
        self._local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple)
                                 else (self.fs.protocol,))

    def __repr__(self) -> str:
        return f"TensorCache({self.location!r})"

    def check_location(self, *, create: bool) -> None:
        """Refuse a local location that is not a usable folder, before any work is done.

        Other fsspec stores (``s3://``, ``memory://``...) are not probed: they need no folder and
        may be slow to reach; their errors come when they are used.

        Args:
            create: the caller will write (a render): create the folder if it is missing and
                check that it is writable. Otherwise (listing, eviction) it must exist.

        Raises:
            CacheError: the location is a file, a missing folder (``create`` false), a folder
                that cannot be created or written; ``file`` is the location.

        Example:
            >>> TensorCache("/").check_location(create=False)
            >>> TensorCache("/no/such/minart/cache").check_location(create=False)
            Traceback (most recent call last):
            ...
            minart.errors.CacheError: /no/such/minart/cache: no such folder
        """
        if not self._local:
            return
        root = Path(self.root)

        def fail(message: str) -> None:
            raise CacheError(message, file=self.location, param="location")

        if root.exists() and not root.is_dir():
            fail("is a file, not a folder; give a folder or an fsspec URL")
        if not root.exists():
            if not create:
                fail("no such folder")
            above = next((p for p in root.parents if p.exists()), None)
            if above is not None and not above.is_dir():
                fail(f"cannot create it: {above} is a file, not a folder")
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                fail(f"cannot create the folder in {above} ({exc.strerror or exc}); give a "
                     "folder that can be created")
        if create and not os.access(root, os.W_OK | os.X_OK):
            fail("is not a writable folder")

    @property
    def is_local(self) -> bool:
        """Whether the store is a local folder (OS locks, ``Path`` access)."""
        return self._local

    # -- paths ---------------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def payload_path(self, key: str) -> str:
        """Path of ``key``'s safetensors payload inside the store.

        Example:
            >>> TensorCache("memory://c").payload_path("abc123")
            '/c/objects/ab/abc123.safetensors'
        """
        _check_key(key)
        return self._join("objects", key[:2], f"{key}.safetensors")

    def _sidecar_path(self, key: str) -> str:
        return self._join("objects", key[:2], f"{key}.json")

    @property
    def records_dir(self) -> str:
        """Folder for records of an orchestrator that point at entries (evicted with them)."""
        return self._join("records")

    def _mkdir(self, path: str) -> None:
        try:
            self.fs.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create cache folder {path}: {exc}") from exc

    def _atomic_write(self, path: str, chunks: tuple[bytes | memoryview, ...]) -> None:
        tmp_dir = self._join("tmp")
        self._mkdir(tmp_dir)
        self._mkdir(path.rsplit("/", 1)[0])
        tmp = f"{tmp_dir}/{uuid.uuid4().hex}.part"
        try:
            with self.fs.open(tmp, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
            self.fs.mv(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.fs.rm_file(tmp)
            raise CacheError(f"cannot write cache entry {path}: {exc}") from exc

    # -- entries -------------------------------------------------------------------------------

    def contains(self, key: str) -> bool:
        """Whether a payload exists for ``key`` (cheap; the checksum is checked on read).

        Example:
            >>> TensorCache("memory://minart-doctest-contains").contains("nothing")
            False
        """
        return bool(self.fs.exists(self.payload_path(key)))

    def put_tensors(self, key: str, tensors: Mapping[str, Tensor], *,
                    info: Mapping[str, str] | None = None, kind: str = "result") -> int:
        """Store named tensors under ``key`` atomically; return the payload size in bytes.

        Tensors are moved to the CPU and made contiguous; their dtype and shape are kept.

        Args:
            key: the entry's key (``[A-Za-z0-9_.-]``).
            tensors: ``{name: tensor}``.
            info: strings kept with the entry (e.g. ``step``, ``stage``, ``iteration``).
            kind: ``"result"`` or ``"checkpoint"`` (shown by ``minart cache ls``).

        Raises:
            CacheError: a bad key, a non-tensor value or an unwritable store.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-put")
            >>> size = cache.put_tensors("k", {"image": torch.ones(3, 2, 2)},
            ...                          info={"iteration": "4"})
            >>> tensors, info = cache.get_tensors("k")
            >>> tensors["image"].shape, info["iteration"], cache.clear()
            (torch.Size([3, 2, 2]), '4', 1)
        """
        _check_key(key)
        metadata = {**{str(k): str(v) for k, v in (info or {}).items()}, _KEYFIELD: key,
                    "minart.kind": kind}
        head, data = _encode(tensors, metadata)
        self._atomic_write(self.payload_path(key), (head, data))
        size = len(head) + len(data)
        now = time.time()
        self._write_sidecar(key, {"key": key, "size": size, "created": now, "accessed": now,
                                  "step": str((info or {}).get("step", "")),
                                  "stage": str((info or {}).get("stage", "")), "kind": kind})
        return size

    def put(self, key: str, tensor: Tensor, *, info: Mapping[str, str] | None = None) -> None:
        """Store one result tensor (any shape and dtype) under ``key`` (see :meth:`put_tensors`).

        Raises:
            CacheError: a bad key, a non-tensor value or an unwritable store.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-put1")
            >>> cache.put("k", torch.zeros(2, 3, 4, 4))
            >>> cache.get("k").shape, cache.clear()
            (torch.Size([2, 3, 4, 4]), 1)
        """
        self.put_tensors(key, {"result": tensor}, info=info, kind="result")

    def get_tensors(self, key: str) -> tuple[dict[str, Tensor], dict[str, str]] | None:
        """Read and verify ``key``'s tensors and metadata; ``None`` when there is no entry.

        Refreshes the entry's access time (LRU).

        Returns:
            ``({name: tensor}, {metadata key: text})`` with the tensors on the CPU, or ``None``.

        Raises:
            CacheError: the entry exists but is truncated, corrupt or not safetensors.

        Example:
            >>> TensorCache("memory://minart-doctest-get").get_tensors("missing") is None
            True
        """
        path = self.payload_path(key)
        try:
            raw = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CacheError(f"cannot read cache entry {key}: {exc}") from exc
        tensors, metadata = _decode(raw, key)
        self._touch(key, size=len(raw), metadata=metadata)
        return tensors, metadata

    def get(self, key: str) -> Tensor | None:
        """The result tensor stored under ``key`` (on the CPU), or ``None`` on a miss.

        Raises:
            CacheError: the entry is truncated, corrupt or holds no ``result`` tensor.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-get1")
            >>> cache.put("k", torch.full((1, 2, 2), 0.5))
            >>> cache.get("k").tolist(), cache.get("other"), cache.clear()
            ([[[0.5, 0.5], [0.5, 0.5]]], None, 1)
        """
        found = self.get_tensors(key)
        if found is None:
            return None
        tensors, _ = found
        if "result" not in tensors:
            raise CacheError(f"cache entry {key} holds no result tensor")
        return tensors["result"]

    def touch(self, key: str) -> bool:
        """Refresh ``key``'s access time without reading it (LRU); False when there is no entry.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-touch")
            >>> cache.put("a", torch.zeros(1)); cache.put("b", torch.zeros(1))
            >>> cache.touch("a"), cache.touch("missing")
            (True, False)
            >>> [e.key for e in cache.entries()], cache.clear()
            (['b', 'a'], 2)
        """
        try:
            size = int(self.fs.info(self.payload_path(key)).get("size", 0))
        except FileNotFoundError:
            return False
        except OSError:
            return False  # unreadable store: an access time is not worth failing a run for
        self._touch(key, size=size, metadata={})
        return True

    def delete(self, key: str) -> bool:
        """Remove ``key``'s records, payload and sidecar (in that order); True if it existed.

        Raises:
            CacheError: a file of the entry cannot be removed (read-only store); the files
                before it (records first) are gone.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-delete")
            >>> cache.put("k", torch.zeros(1))
            >>> cache.delete("k"), cache.delete("k")
            (True, False)
        """
        existed = self.contains(key)
        for path in [*self._record_paths(key), self.payload_path(key), self._sidecar_path(key)]:
            self._remove(path, key)
        return existed

    def _remove(self, path: str, key: str) -> None:
        """Remove one file of ``key``'s entry (gone already is fine).

        Raises:
            CacheError: the store refused (a read-only or full file system, a permission), as
                one line naming the entry and the reason; its exit status is 1.
        """
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            error = CacheError(f"cannot evict cache entry {key} ({exc.strerror or exc}: {path})")
            error.exit_status = EXIT_FAILED
            raise error from exc

    def _record_paths(self, key: str) -> list[str]:
        """``records/<key>`` and ``records/results/<key>`` (the orchestrator's record and result),
        looked up by name: listing ``records/`` for every deleted key made ``gc`` quadratic."""
        found = []
        for path in (f"{self.records_dir}/{key}", f"{self.records_dir}/results/{key}"):
            with contextlib.suppress(FileNotFoundError, OSError):
                if self.fs.exists(path):
                    found.append(path)
        return found

    def _write_sidecar(self, key: str, data: dict) -> None:
        self._atomic_write(self._sidecar_path(key), (json.dumps(data).encode(),))

    def _read_sidecar(self, key: str) -> dict | None:
        try:
            return json.loads(self.fs.cat_file(self._sidecar_path(key)))
        except (FileNotFoundError, ValueError, OSError):
            return None

    def _touch(self, key: str, *, size: int, metadata: Mapping[str, str]) -> None:
        data = self._read_sidecar(key) or {
            "key": key, "size": size, "created": time.time(), "step": metadata.get("step", ""),
            "stage": metadata.get("stage", ""), "kind": metadata.get("minart.kind", "result")}
        data["accessed"] = time.time()
        with contextlib.suppress(CacheError):
            self._write_sidecar(key, data)

    # -- listing and eviction ------------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first.

        Example:
            >>> TensorCache("memory://minart-doctest-empty").entries()
            []
        """
        try:
            paths = self.fs.glob(self._join("objects", "*", "*.safetensors"))
        except FileNotFoundError:
            return []
        found = []
        for path in paths:
            key = path.rsplit("/", 1)[-1].removesuffix(".safetensors")
            side = self._read_sidecar(key)
            if side is None:
                try:
                    info = self.fs.info(path)
                except FileNotFoundError:
                    continue
                stamp = info.get("mtime") or info.get("created") or 0.0
                stamp = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
                side = {"size": int(info.get("size", 0)), "created": stamp, "accessed": stamp}
            found.append(CacheEntry(key=key, size=int(side.get("size", 0)),
                                    created=float(side.get("created", 0.0)),
                                    accessed=float(side.get("accessed", 0.0)),
                                    step=str(side.get("step", "")),
                                    stage=str(side.get("stage", "")),
                                    kind=str(side.get("kind", "result"))))
        return sorted(found, key=lambda e: (e.accessed, e.key))

    def size(self) -> int:
        """Total payload bytes.

        Example:
            >>> TensorCache("memory://minart-doctest-size").size()
            0
        """
        return sum(e.size for e in self.entries())

    def gc(self, max_size: int | str) -> GcReport:
        """Evict least recently used entries until the payloads fit in ``max_size``.

        Also removes temp files older than an hour (left by killed writers) and the lock files no
        run holds, so a nightly ``gc`` keeps the ``locks`` folder from growing.

        Args:
            max_size: bytes, or a size such as ``"10GB"``.

        Returns:
            A :class:`GcReport`.

        Raises:
            ParamError: ``max_size`` is not a size.
            CacheError: an entry cannot be removed (a read-only store): one line with the
                reason and what was evicted before it; exit status 1.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-gc")
            >>> cache.put("a", torch.zeros(100)); cache.put("b", torch.zeros(100))
            >>> one = cache.entries()[0].size
            >>> cache.gc(one).removed
            1
            >>> [e.key for e in cache.entries()], cache.clear()
            (['b'], 1)
        """
        limit = parse_size(max_size)
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = freed = 0
        for entry in entries:
            if total <= limit:
                break
            try:
                self.delete(entry.key)
            except CacheError as exc:
                exc.message += (f"; removed {removed} entries ({format_size(freed)}) before it, "
                                f"{len(entries) - removed} left ({format_size(total)})")
                raise
            total -= entry.size
            freed += entry.size
            removed += 1
        self._clean_tmp(_TMP_MAX_AGE)
        self._remove_free_locks()
        return GcReport(removed=removed, freed=freed, kept=len(entries) - removed, size=total)

    def _clean_tmp(self, max_age: float) -> None:
        try:
            paths = self.fs.glob(self._join("tmp", "*.part"))
        except FileNotFoundError:
            return
        now = time.time()
        for path in paths:
            with contextlib.suppress(FileNotFoundError, OSError):
                info = self.fs.info(path)
                stamp = info.get("mtime") or info.get("created") or now
                stamp = stamp.timestamp() if hasattr(stamp, "timestamp") else float(stamp)
                if now - stamp > max_age:
                    self.fs.rm_file(path)

    def clear(self) -> int:
        """Remove every entry, record and temp file; return the number of entries removed.

        Only files named the way this cache names them are removed (payloads and sidecars under
        ``objects/``, records named by a key, ``tmp/*.part``, lock files no run holds), and then
        the folders they leave empty: a location that is not a minart cache, or holds other files
        too, keeps them.

        Raises:
            CacheError: files could not be removed (a read-only store): one line with the
                reason and how many entries were removed and are left; exit status 1.

        Example:
            >>> TensorCache("memory://minart-doctest-clear").clear()
            0
        """
        count = len(self.entries())
        removed = 0
        refused: list[tuple[str, OSError]] = []
        # records first, so no record outlives its tensor; one listing per folder (not per entry)
        patterns = {"records": (_RECORD_RE, True), "tmp": (_PART_RE, False),
                    "objects": (_OBJECT_RE, True)}
        for folder, (pattern, nested) in patterns.items():
            top = self._join(folder)
            for path in self._files(top, nested):
                name = path.rsplit("/", 1)[-1]
                if pattern.match(name):
                    try:
                        self.fs.rm_file(path)
                    except FileNotFoundError:
                        continue  # another process removed it
                    except OSError as exc:
                        refused.append((path, exc))
                        continue
                    removed += name.endswith(".safetensors")
            self._remove_empty(top, nested)
        if refused:
            path, exc = refused[0]
            error = CacheError(
                f"cannot evict {len(refused)} cache files from {self.location} "
                f"({exc.strerror or exc}: {path}); removed {removed} of {count} entries, "
                f"{len(self.entries())} left")
            error.exit_status = EXIT_FAILED
            raise error from exc
        self._remove_free_locks()
        return removed

    def _remove_free_locks(self) -> None:
        """Remove the lock files no run holds (one per key or output file ever locked, left by
        every release), each while holding it. A run that opened the file before it went still
        cannot hold a lock on the removed file: ``filelock`` (>= 3.29.5) retries a lock won on
        an unlinked file and leaves the path alone on release; other stores' lock files exist
        only while held."""
        locks = self._join("locks")
        for path in self._files(locks, False):
            key = path.rsplit("/", 1)[-1].removesuffix(".lock")
            if path.endswith(".lock") and _KEY_RE.match(key):
                with contextlib.suppress(CacheError, FileNotFoundError, OSError):
                    with self.lock(key, timeout=0):  # a lock a running step holds stays
                        self.fs.rm_file(path)
        self._remove_empty(locks, False)

    def _files(self, top: str, nested: bool) -> list[str]:
        try:
            found = self.fs.glob(f"{top}/*") + (self.fs.glob(f"{top}/*/*") if nested else [])
            return [p for p in found if self.fs.isfile(p)]
        except (FileNotFoundError, OSError):
            return []

    def _remove_empty(self, top: str, nested: bool) -> None:
        folders = []
        with contextlib.suppress(FileNotFoundError, OSError):
            if nested:
                folders = [p for p in self.fs.glob(f"{top}/*") if self.fs.isdir(p)]
        for folder in [*folders, top]:
            with contextlib.suppress(FileNotFoundError, OSError):
                if self.fs.isdir(folder) and not self.fs.ls(folder):
                    self.fs.rmdir(folder)

    # -- locks ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, key: str, *, timeout: float | None = None) -> Iterator[None]:
        """Hold ``key``'s lock: other processes and threads wait until it is released.

        A holder killed with ``kill -9`` never blocks the next run: local folders use OS locks
        (freed by the kernel), other stores break a lock whose pid is gone or whose heartbeat is
        older than ``stale_after`` seconds.

        Args:
            key: the entry's key.
            timeout: seconds to wait (``None``: wait as long as the holder lives).

        Raises:
            CacheError: the lock was not obtained within ``timeout``.

        Example:
            >>> cache = TensorCache("memory://minart-doctest-lock")
            >>> with cache.lock("k"):
            ...     cache.contains("k")
            False
        """
        _check_key(key)
        folder = self._join("locks")
        self._mkdir(folder)
        path = f"{folder}/{key}.lock"
        lock = _OsLock(path) if self._local else _FileLock(self.fs, path, self.stale_after)
        if not lock.acquire(timeout):
            raise CacheError(f"cache entry {key} is locked by another run (waited {timeout} s)")
        try:
            yield
        finally:
            lock.release()

    def local_path(self) -> Path | None:
        """The store's folder when it is local, else ``None``.

        Example:
            >>> TensorCache("memory://x").local_path() is None
            True
        """
        return Path(self.root) if self._local else None


def entry_dict(entry: CacheEntry) -> dict:
    """:class:`CacheEntry` as a plain dict (for JSON output).

    Example:
        >>> entry_dict(CacheEntry("k", 1, 0.0, 0.0))["key"]
        'k'
    """
    return asdict(entry)

