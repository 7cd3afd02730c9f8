"""A keyed, process-safe cache of built engines.

An engine is reused only when everything that shapes it is the same. The key is a SHA-256 over:
the ONNX file's bytes (and any external-data files it references), the shape profile, the precision,
the toolkit flavor and version, the build target (compute capability; for TensorRT also the local GPU),
the workspace limit and the bytes of every plugin library. Layout under ``root``::

    <key>.engine                      one engine per key (built in a private folder, then renamed into place)
    index.json                        key -> metadata (source, profile, precision, toolkit, size, build time...)
    .locks/<key>.lock                 fcntl.flock'ed while a process builds that key; index.lock guards index.json
    .<key16>.pid<pid>.<rnd>.building  the private folder of a build in progress

Two processes asking for the same key build it once: the second waits on the lock and then finds the engine.
A build folder whose process has exited (killed before it could clean up) is removed by the next
:class:`EngineCache` opened on the same root.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from fastadasp.core.dtypes import precision as precision_info
from fastadasp.core.files import atomic_write_text, sha256_file
from fastadasp.engines.builder import build_engine
from fastadasp.engines.profile import ShapeProfile
from fastadasp.engines.toolkit import ToolkitInfo, describe_toolkit, normalize_compute_capability
from fastadasp.engines.util import remove_stale_temps, temp_dir

log = logging.getLogger("fastadasp.engines")

__all__ = ["CachedEngine", "EngineCache", "onnx_external_data_files"]

INDEX_NAME = "index.json"
KEY_SCHEMA = 1


def onnx_external_data_files(onnx_path: str | os.PathLike) -> list[Path]:
    """Files holding the model's external data (weights stored next to the .onnx), sorted; [] without onnx."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(os.fspath(onnx_path), load_external_data=False)
    locations: set[str] = set()

    def tensors_of_nodes(nodes):
        for node in nodes:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from tensors_of_graph(attr.g)
                for g in attr.graphs:
                    yield from tensors_of_graph(g)

    def tensors_of_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
        yield from tensors_of_nodes(graph.node)

    tensors = list(tensors_of_graph(model.graph))
    for function in model.functions:
        tensors.extend(tensors_of_nodes(function.node))
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    base = Path(onnx_path).parent
    return sorted(base / loc for loc in locations)


@contextlib.contextmanager
def _flock(path: Path, what: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for %s (another process holds %s)", what, path)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


Builder = Callable[..., Any]


@dataclass(frozen=True)
class CachedEngine:
    """What :meth:`EngineCache.get_or_build` found or made."""

    path: Path  # the engine inside the cache
    key: str
    built: bool  # False: reused (built earlier, or by another process while this one waited)
    seconds: float  # time get_or_build took, waiting and building included


class EngineCache:
    """Engines keyed by everything that shapes them; see the module docstring.

    ``toolkit`` identifies the builder in keys; left out, it is read from the installed TensorRT /
    TensorRT-RTX (:func:`describe_toolkit`, optionally restricted to ``flavor``) on first use. ``builder``
    (default :func:`build_engine`) is called as ``builder(onnx_path, engine_path, profile, precision=...,
    compute_capability=..., workspace_bytes=..., plugin_libraries=[...], progress=..., flavor=...)`` (plus
    ``label=...`` when the caller gives one) and must write the engine to ``engine_path``.
    """

    def __init__(self, root: str | os.PathLike, *, toolkit: ToolkitInfo | None = None, flavor: str | None = None,
                 builder: Builder | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._toolkit = toolkit
        self._flavor = flavor
        self.builder = builder or build_engine
        remove_stale_temps(self.root)

    # ---------------------------------------------------------------- keys
    @property
    def toolkit(self) -> ToolkitInfo:
        if self._toolkit is None:
            self._toolkit = describe_toolkit(self._flavor)
        return self._toolkit

    def key_fields(self, onnx_path, profile: ShapeProfile, precision: str = "fp32",
                   compute_capability: str | None = None, *, plugin_libraries: Iterable = (),
                   workspace_bytes: int | None = None) -> dict:
        precision_info(precision)  # an unknown name is an InvalidOption
        onnx_path = Path(onnx_path)
        tk = self.toolkit
        external = [
            {"file": p.name, "sha256": sha256_file(p)} for p in onnx_external_data_files(onnx_path) if p.is_file()
        ]
        return {
            "schema": KEY_SCHEMA,
            "onnx_sha256": sha256_file(onnx_path),
            "external_data": external,
            "profile": profile.to_json(),
            "precision": precision,
            "flavor": tk.flavor,
            "flavor_version": tk.version,
            "device": tk.device,
            "compute_capability": normalize_compute_capability(compute_capability) or "default",
            "workspace_bytes": workspace_bytes,
            "plugins": [sha256_file(p) for p in plugin_libraries],
        }

    @staticmethod
    def key_of(fields: dict) -> str:
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def key_for(self, onnx_path, profile, precision="fp32", compute_capability=None, **kw) -> str:
        return self.key_of(self.key_fields(onnx_path, profile, precision, compute_capability, **kw))

    def path_for_key(self, key: str) -> Path:
        return self.root / f"{key}.engine"

    # ---------------------------------------------------------------- index
    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def entries(self) -> dict[str, dict]:
        """key -> metadata of every indexed engine ({} when there is no index yet or it is unreadable)."""
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.warning("engine cache index %s is unreadable (%s); treating it as empty", self.index_path, exc)
            return {}
        return dict(data.get("engines", {})) if isinstance(data, dict) else {}

    def _record(self, key: str, meta: dict) -> None:
        with _flock(self.root / ".locks" / "index.lock", "the engine index lock"):
            engines = self.entries()
            engines[key] = meta
            atomic_write_text(self.index_path, json.dumps({"schema": KEY_SCHEMA, "engines": engines},
                                                          indent=2, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- build
    def get_or_build(
        self,
        onnx_path: str | os.PathLike,
        profile: ShapeProfile,
        precision: str = "fp32",
        compute_capability: str | None = None,
        builder: Builder | None = None,
        *,
        plugin_libraries: Iterable[str | os.PathLike] = (),
        workspace_bytes: int | None = None,
        progress: bool = True,
        label: str | None = None,
    ) -> CachedEngine:
        """The engine for these inputs, building it (once, across processes) when it is not cached.

        ``builder`` overrides the cache's builder for this call; ``label`` names the build in progress lines.
        """
        t0 = time.perf_counter()
        plugin_libraries = [os.fspath(p) for p in plugin_libraries]
        fields = self.key_fields(onnx_path, profile, precision, compute_capability,
                                 plugin_libraries=plugin_libraries, workspace_bytes=workspace_bytes)
        key = self.key_of(fields)
        path = self.path_for_key(key)
        source = _Source(fields, Path(onnx_path), plugin_libraries)

        def result(built: bool) -> CachedEngine:
            return CachedEngine(path, key, built, time.perf_counter() - t0)

        if self._hit(key, path, source):
            return result(built=False)
        with _flock(self.root / ".locks" / f"{key}.lock", f"the build of {path.name}"):
            if self._hit(key, path, source):  # built by another process while we waited
                return result(built=False)
            build = dict(precision=precision, compute_capability=compute_capability, workspace_bytes=workspace_bytes,
                         plugin_libraries=plugin_libraries, progress=progress, flavor=self.toolkit.flavor)
            if label is not None:
                build["label"] = label
            report = self._build(builder or self.builder, source.onnx_path, profile, path, build)
            self._record(key, _metadata(source, path, time.perf_counter() - t0, report))
            log.info("engine cache: built %s", path)
            return result(built=True)

    def _build(self, builder: Builder, onnx_path: Path, profile: ShapeProfile, path: Path, build: dict):
        """Run `builder` in a private folder on the cache's file system and rename only a complete engine into
        place; the folder goes away whatever happens (error, interrupt)."""
        build_dir = temp_dir(self.root, path.stem[:16])
        tmp = build_dir / path.name
        try:
            report = builder(onnx_path, tmp, profile, **build)
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise RuntimeError(f"builder {getattr(builder, '__name__', builder)!r} wrote no engine")
            os.replace(tmp, path)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        return report

    def _hit(self, key: str, path: Path, source: "_Source") -> bool:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        if size == 0:
            return False
        entry = self.entries().get(key)
        if entry is not None and entry.get("bytes") not in (None, size):
            log.warning("engine cache: %s has %d bytes but the index says %s; rebuilding", path, size, entry["bytes"])
            return False
        if entry is None:  # engine present but index lost or written by an older run: re-index it
            self._record(key, _metadata(source, path, None, None))
        return True


@dataclass(frozen=True)
class _Source:
    """What an engine was built from, as recorded in the index."""

    fields: dict
    onnx_path: Path
    plugin_libraries: list[str]


def _metadata(source: _Source, path: Path, seconds: float | None, report) -> dict:
    meta = {k: v for k, v in source.fields.items() if k != "schema"}
    meta.update(
        engine=path.name,
        onnx_path=os.path.abspath(source.onnx_path),
        plugin_libraries=[os.path.abspath(p) for p in source.plugin_libraries],
        bytes=path.stat().st_size,
        build_seconds=None if seconds is None else round(seconds, 3),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    if report is not None and getattr(report, "compute_capability", None):
        meta["built_compute_capability"] = report.compute_capability
    return meta
