"""Content-addressed per-item cache, and a backend wrapper that uses it.

A key is the sha256 of: what answers (base hash + adapter hash), the backend
and its scoring parameters, the method, the exact request (prompt bytes and
sampling parameters) and a task tag (name and version). The same request
against the same model is computed once, across reruns and across comparisons
that share a baseline. Finished items are committed in small chunks, so a run
that dies keeps them and a rerun resumes.

The same SQLite file holds task manifests (table `tasks`): a task's finished rows under a
key of everything that shapes them (harness.task_manifest), so an unchanged rerun answers a
whole task without lm-eval or the model.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from harness.backends.base import Backend
from harness.logs import progress
from harness.records import (
    GenerateRequest, Generation, LoglikelihoodRequest, LoglikelihoodResult, RollingRequest, RollingResult, to_jsonable
)

R = TypeVar("R")


class ItemCache:
    """A SQLite table of key -> JSON value; safe for several processes (WAL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS items (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS tasks (key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL)")
        self._db.commit()

    @staticmethod
    def key(parts: dict[str, Any]) -> str:
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self._lock:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i:i + 500])
                q = f"SELECT key, value FROM items WHERE key IN ({','.join('?' * len(chunk))})"
                found.update((k, json.loads(v)) for k, v in self._db.execute(q, chunk))
        return found

    def put_many(self, pairs: Sequence[tuple[str, Any]]) -> None:
        now = time.time()
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?)",
                                 [(k, json.dumps(v), now) for k, v in pairs])
            self._db.commit()

    def get_task(self, key: str) -> Any:
        """The task manifest stored under `key` (harness.task_manifest), or None."""
        with self._lock:
            found = self._db.execute("SELECT value FROM tasks WHERE key = ?", (key,)).fetchone()
        # zlib: a task's rows repeat their prompts and documents (an MMLU 5-shot task is megabytes of JSON).
        return None if found is None else json.loads(zlib.decompress(found[0]))

    def put_task(self, key: str, value: Any) -> None:
        # default=str as the run's items.jsonl is written (harness.atomic.write_jsonl)
        blob = zlib.compress(json.dumps(value, default=str).encode("utf-8"), 6)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tasks VALUES (?, ?, ?)", (key, blob, time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedBackend:
    """Wrap a backend so each request is computed at most once.

    `tag` names the task and its version ("mmlu/5shot@1"); it is part of every
    key. Misses go to the inner backend in chunks of `chunk_size`, each chunk
    committed before the next starts. `stats` counts hits and misses;
    `n_requests` every request asked (what a fully cached rerun counts as hits).
    Copies made by `with_tag` share both counts.
    """

    def __init__(self, inner: Backend, cache: ItemCache, *, tag: str = "", chunk_size: int = 32,
                 show_progress: bool = True):
        self.inner = inner
        self.cache = cache
        self.tag = tag
        self.chunk_size = chunk_size
        self.show_progress = show_progress
        self.name = inner.name
        self.identity = inner.identity
        self.stats = {"hits": 0, "misses": 0}
        self._asked = [0]  # shared with with_tag copies, as `stats` is

    @property
    def n_requests(self) -> int:
        return self._asked[0]

    def count_answered(self, n_requests: int) -> None:
        """Count requests answered from the cache without asking for them one by one (a task
        manifest holds a whole task's results): hits, as a rerun through `_run` would count them."""
        self.stats["hits"] += n_requests
        self._asked[0] += n_requests

    @property
    def scoring_params(self) -> dict[str, Any]:
        return self.inner.scoring_params

    @property
    def notice(self) -> str | None:
        return self.inner.notice

    @property
    def runtime(self) -> dict[str, Any] | None:
        return self.inner.runtime

    @property
    def resolved(self) -> Any:
        return self.inner.resolved

    def with_tag(self, tag: str) -> "CachedBackend":
        other = CachedBackend(self.inner, self.cache, tag=tag, chunk_size=self.chunk_size,
                              show_progress=self.show_progress)
        other.stats = self.stats
        other._asked = self._asked
        return other

    def _run(self, method: str, requests: Sequence[Any], compute: Callable[[list[Any]], list[Any]],
             decode: Callable[[dict[str, Any]], R]) -> list[R]:
        params = self.inner.scoring_params
        keys = [self._key(method, params, r) for r in requests]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        # Duplicate requests in one batch are computed once.
        first: dict[str, int] = {}
        for i in todo:
            first.setdefault(keys[i], i)
        unique = list(first.values())
        self.stats["hits"] += len(requests) - len(todo)
        self.stats["misses"] += len(unique)
        self._asked[0] += len(requests)
        # The task's one bar: every request, those read from the cache counted up front.
        cached = len(requests) - len(unique)
        bar = progress(total=len(requests), initial=cached, desc=self._label(), unit="item",
                       disable=not self.show_progress or not requests,
                       postfix=f"{cached} cached",
                       bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {n_fmt}/{total_fmt}{postfix} "
                                  "[{elapsed}<{remaining}, {rate_fmt}]")
        try:
            for start in range(0, len(unique), self.chunk_size):
                idx = unique[start:start + self.chunk_size]
                results = compute([requests[i] for i in idx])
                if len(results) != len(idx):
                    raise RuntimeError(f"backend '{self.name}' returned {len(results)} results for {len(idx)} requests")
                if self.inner.scoring_params != params:
                    # The backend settled its scorer at this first request (a GPU vLLM engine that
                    # fell back to hf): file these results under the parameters that produced
                    # them, and read every request again under those, so none mixes scorers.
                    self.stats["misses"] -= len(unique)
                    self.stats["hits"] -= len(requests) - len(todo)
                    self._asked[0] -= len(requests)
                    self._store(method, [requests[i] for i in idx], results)
                    return self._run(method, requests, compute, decode)
                pairs = [(keys[i], to_jsonable(r)) for i, r in zip(idx, results)]
                self.cache.put_many(pairs)
                found.update(pairs)
                bar.update(len(idx))
        finally:
            bar.close()
        return [decode(found[k]) for k in keys]

    def _label(self) -> str:
        """'mmlu_local', 'perplexity/alpaca_heldout', 'golden', 'judge:pairwise' (the tag without its
        version) and the model answering, so a comparison's bars say which side they score."""
        task = self.tag.rsplit("@", 1)[0].removeprefix("lm_eval/") or "requests"
        ref = self.inner.resolved.ref.raw if self.inner.resolved is not None else self.name
        base, plus, adapter = ref.partition("+")
        short = "+".join(Path(p).name if "/" in p else p for p in ((base, adapter) if plus else (base,)))
        return f"{task} ({short})"

    def _key(self, method: str, params: dict[str, Any], request: Any) -> str:
        return ItemCache.key({"identity": self.identity, "backend": self.name, "params": params,
                              "method": method, "tag": self.tag, "request": to_jsonable(request)})

    def _store(self, method: str, requests: Sequence[Any], results: Sequence[Any]) -> None:
        params = self.inner.scoring_params
        self.cache.put_many([(self._key(method, params, r), to_jsonable(res)) for r, res in zip(requests, results)])

    def loglikelihood(self, requests: Sequence[LoglikelihoodRequest]) -> list[LoglikelihoodResult]:
        return self._run("loglikelihood", requests, self.inner.loglikelihood, lambda d: LoglikelihoodResult(**d))

    def loglikelihood_rolling(self, requests: Sequence[RollingRequest]) -> list[RollingResult]:
        return self._run("loglikelihood_rolling", requests, self.inner.loglikelihood_rolling, lambda d: RollingResult(**d))

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        return self._run("generate", requests, self.inner.generate, lambda d: Generation(**d))

    def close(self) -> None:
        self.inner.close()
