"""Resumable, placeholder-protected generation into a JSONL cache.

Every (seed or parent, meta-prompt, temperature, sample index, model, prompt hash) is one job with a
unique key. Finished jobs are appended to the cache (one JSON line each, written and fsynced per batch once
the whole batch is generated); a run that is killed restarts where it stopped: keys already in the cache are
skipped, and a torn last line (killed mid-write) is cut off, logged and counted (``FilterReport``). Nothing is
lost and nothing is generated twice. An LLM server that fails for good (``lit.chat_api``'s retries exhausted)
stops the run with one line (``GenerationStopped``) naming the server, the task, the seed instruction and the
sampling seed; the batch it was in is not written, and the same command run again resumes from the cache. A full
disk takes the batch being written back off and stops with one line naming the cache and saying to free space.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tqdm import tqdm

from instraug import meta_prompts
from instraug.backends import Sampling
from instraug.parse import candidates, official_line
from instraug.placeholders import protect, restore
from lit.chat_api import ChatAPIError
from lit.files import DamagedFile, disk_full, is_disk_full, read_appended_jsonl


class GenerationStopped(SystemExit):
    """The LLM server failed for good: exits with one line naming it, the job and what to do (no traceback)."""


def read_cache(path: Path, dropped: list | None = None) -> dict[str, dict]:
    """The cache's rows by key. A last line cut off by a kill is dropped (logged; its file and line appended to
    ``dropped``); a broken line inside stops, naming it."""
    remedy = "delete that line (its generation is made again) or the whole file, then run again"
    rows, cut = read_appended_jsonl(path, "generation cache", remedy)
    if cut is not None and dropped is not None:
        dropped.append({"file": str(path), "line": cut})
    for lineno, row in enumerate(rows, 1):
        if "key" not in row:
            raise DamagedFile(f"generation cache {path}: a line has no 'key' (row {lineno}): {remedy}")
    return {row["key"]: row for row in rows}


def job_seed(key: str, base: int) -> int:
    """A sampling seed that depends only on the job (not on its batch): stable across restarts."""
    return (int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) + base) % (2**31)


def jobs_for(
    parents: list[dict], prompt_mix: dict[str, int], temperatures: list[float], model: str, hint: bool = False
) -> list[dict]:
    """parents: ``{"id", "task", "text", "root_id"}``; one job per (parent, meta-prompt, T, sample), with
    ``prompt_mix[name]`` samples of each meta-prompt (``meta_prompts.OFFICIAL_MIX``: 10 per seed)."""
    jobs = []
    for parent in parents:
        for name, samples in prompt_mix.items():
            meta = meta_prompts.load(name)
            for t in temperatures:
                for k in range(samples):
                    key = f"{parent['id']}|{name}@{meta.sha256}{'+hint' if hint else ''}|T{t:.2f}|{k}|{model}"
                    jobs.append(
                        {"key": key, "parent": parent, "meta": meta, "temperature": t, "sample": k, "hint": hint}
                    )
    return jobs


def _stopped(err: ChatAPIError, jobs: list[dict], n_jobs: int, n_done: int, cache_path: Path) -> GenerationStopped:
    seed = getattr(err, "seed", None)
    job = next((j for j in jobs if j["seed"] == seed), None)
    at = (
        f"task {job['parent']['task']!r}, seed instruction {job['parent']['id']!r}, sampling seed {seed}"
        if job
        else "a batch"
    )
    return GenerationStopped(
        f"augmentation stopped at {at}: the LLM server at {str(err).rstrip('.')}. {n_done} of {n_jobs} generations "
        f"are saved in {cache_path} (the failed batch was not written). Once the server answers again (check "
        "augmentation.backend.args.base_url), run the same command again: it resumes from the cache"
    )


def _append_batch(fh, rows: list[dict], cache_path: Path, n_saved: int, n_jobs: int) -> None:
    """Append one batch's lines to the cache (``fh``: opened unbuffered for appending) and fsync them. A write
    that fails takes the batch back off (the file is cut to where the batch began), so the cache holds whole
    batches only; a full disk then stops with one line (``lit.files.DiskFull``) naming the cache."""
    data = memoryview("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))
    start = os.lseek(fh.fileno(), 0, os.SEEK_END)
    try:
        while data:
            data = data[fh.write(data) :]
        os.fsync(fh.fileno())
    except OSError as err:
        os.ftruncate(fh.fileno(), start)
        if is_disk_full(err, cache_path):
            left = f"the batch being written was taken back off, {n_saved} of {n_jobs} generations are saved there"
            raise disk_full("the generation cache", cache_path, err, left) from err
        raise


def run_jobs(
    jobs: list[dict],
    backend,
    cache_path: str | Path,
    sampling: Sampling,
    batch_size: int = 64,
    progress: bool = True,
    dropped: list | None = None,
) -> list[dict]:
    """Generate what the cache lacks; return the cache rows of ``jobs`` in job order. ``dropped`` collects the
    cache lines cut off by an earlier kill (file and line)."""
    cache_path = Path(cache_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_cache(cache_path, dropped)
    todo = [j for j in jobs if j["key"] not in done]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="generating instructions", disable=not progress)
    with bar, open(cache_path, "ab", buffering=0) as fh:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            protected = [protect(j["parent"]["text"]) for j in batch]
            chats = [j["meta"].chat(text, j.get("hint", False)) for j, (text, _) in zip(batch, protected)]
            by_t: dict[float, list[int]] = {}
            for i, j in enumerate(batch):
                by_t.setdefault(j["temperature"], []).append(i)
            replies: list[str] = [""] * len(batch)
            for t, idx in by_t.items():
                s = Sampling(
                    temperature=t, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, seed=sampling.seed
                )
                seeds = [job_seed(batch[i]["key"], sampling.seed) for i in idx]
                try:
                    generated = backend.generate([chats[i] for i in idx], s, seeds)
                except ChatAPIError as err:
                    failed = [{**batch[i], "seed": seed} for i, seed in zip(idx, seeds)]
                    raise _stopped(err, failed, len(jobs), len(jobs) - len(todo) + start, cache_path) from err
                for i, reply in zip(idx, generated):
                    replies[i] = reply
            rows = []
            for j, (_, mapping), reply in zip(batch, protected, replies):
                rows.append(
                    {
                        "key": j["key"],
                        "task": j["parent"]["task"],
                        "parent_id": j["parent"]["id"],
                        "parent_text": j["parent"]["text"],
                        "root_id": j["parent"]["root_id"],
                        "meta_prompt": j["meta"].name,
                        "meta_sha256": j["meta"].sha256,
                        "temperature": j["temperature"],
                        "top_p": sampling.top_p,
                        "sample": j["sample"],
                        "model": backend.name,
                        "reply": reply,
                        "candidates": [restore(c, mapping) for c in candidates(reply)],
                    }
                )
            _append_batch(fh, rows, cache_path, len(jobs) - len(todo) + start, len(jobs))
            done.update((row["key"], row) for row in rows)
            bar.update(len(batch))
    return [done[j["key"]] for j in jobs]


REPLY_LINES = ("official", "first", "all")


def reply_texts(row: dict, reply_lines: str = "official") -> list[str]:
    """The instructions taken from one cached reply, placeholders restored. ``official``: the official one-line
    parse of the raw reply (``parse.official_line``; none for a reply the official code could not parse);
    ``first`` / ``all``: the first / every candidate of the lenient parser (``parse.candidates``)."""
    if reply_lines not in REPLY_LINES:
        raise ValueError(f"augmentation.reply_lines must be one of {', '.join(REPLY_LINES)}, got {reply_lines!r}")
    if reply_lines == "official":
        line = official_line(row["reply"])
        return [] if line is None else [restore(line, protect(row["parent_text"])[1])]
    return row["candidates"][:1] if reply_lines == "first" else list(row["candidates"])


def candidate_rows(rows: list[dict], reply_lines: str = "official") -> list[dict]:
    """One row per instruction taken from each reply (``reply_texts``), with provenance, ready for the filter."""
    out = []
    for row in rows:
        for i, text in enumerate(reply_texts(row, reply_lines)):
            out.append(
                {
                    "id": f"{row['key']}#{i}",
                    "task": row["task"],
                    "text": text,
                    "parent_text": row["parent_text"],
                    "parent_id": row["parent_id"],
                    "root_id": row["root_id"],
                    "meta_prompt": row["meta_prompt"],
                    "temperature": row["temperature"],
                    "model": row["model"],
                }
            )
    return out
