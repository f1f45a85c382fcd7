"""JSON-lines files left damaged by a crash. In an append-only cache (InstrAug's generation cache, the judge's
verdicts) a last line cut off by a kill is dropped with a logged, counted note naming the file and line, and
made again; a broken line inside is a clear stop naming it. A ``pool.jsonl`` cut mid-line (augment.py writes
it whole, so something else cut it) stops the MIns+ build naming the file, the line and what to do. Never a
JSON traceback, never a damaged row used."""

from __future__ import annotations

import json
import logging

import pytest
from augment_runs import augment, rewrite
from chat_server import ChatServer

from instraug.build import build_dataset
from instraug.generate import read_cache
from lit.files import DamagedFile


def cut_last_line(path, keep: float = 0.5) -> int:
    """Cut the file inside its last line (a kill while it was written); returns that line's number."""
    raw = path.read_bytes()
    start = raw.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(raw[: start + int((len(raw) - start) * keep)])
    return raw.count(b"\n")


@pytest.mark.integration
def test_a_cut_off_cache_line_is_dropped_counted_and_generated_again(tmp_path, caplog):
    cache = tmp_path / "cache"
    with ChatServer(rewrite) as server:
        augment(server.url, cache, tmp_path / "run1")
        cached = cache / "generations.jsonl"
        line = cut_last_line(cached)
        server.requests.clear()
        with caplog.at_level(logging.WARNING):
            augment(server.url, cache, tmp_path / "run2")
    assert len(server.requests) == 1  # only the job whose line was cut
    note = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(note) == 1 and f"generation cache {cached}: line {line} was cut off" in note[0]
    report = json.loads((tmp_path / "run2" / "filter_report.json").read_text())
    assert report["cache_lines_dropped"] == [{"file": str(cached), "line": line}]
    assert (tmp_path / "run2" / "pool.jsonl").read_bytes() == (tmp_path / "run1" / "pool.jsonl").read_bytes()
    assert len(cached.read_text().splitlines()) == line and all(json.loads(x) for x in cached.read_text().splitlines())


@pytest.mark.parametrize("broken", ['{"key": "a", "reply"', "\x00\x00\x00", '["not", "an", "object"]', '{"no": "key"}'])
def test_a_broken_line_inside_the_cache_stops_naming_file_and_line(tmp_path, broken):
    cache = tmp_path / "generations.jsonl"
    rows = [json.dumps({"key": f"k{i}", "reply": "r"}) for i in range(3)]
    text = "\n".join([rows[0], broken, *rows[1:]]) + "\n"
    cache.write_text(text)
    with pytest.raises(DamagedFile, match=f"generation cache {cache}: .*(line 2|row 2).*delete that line") as err:
        read_cache(cache)
    assert "\n" not in str(err.value)
    assert cache.read_text() == text  # left as it was: nothing dropped silently


def _pool(tmp_path):
    rows = [{"task": "colour_vqa", "text": f"What colour is the {{shape}}? ({i})", "origin": "seed"} for i in range(3)]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_pool_cut_mid_line_stops_the_mins_plus_build_naming_the_line(tmp_path):
    pool, instances = _pool(tmp_path), tmp_path / "train.jsonl"
    instances.write_text("")
    line = cut_last_line(pool)
    with pytest.raises(DamagedFile) as err:
        build_dataset(instances, pool, tmp_path / "set", variant="mins_plus")
    message = str(err.value)
    assert message.startswith(f"instruction pool {pool}: line {line} is cut off (the last line, no line end)")
    assert "delete it and run augment.py again" in message and "\n" not in message
    assert not (tmp_path / "set").exists()
    pool.write_text(pool.read_text() + '\n{"task": "colour_vqa", "text": "Name the colour.", "origin": "seed"}\n')
    with pytest.raises(DamagedFile, match=f"instruction pool {pool}: line {line} is not valid JSON"):
        build_dataset(instances, pool, tmp_path / "set", variant="mins_plus")
    pool.write_text(pool.read_text().replace("What colou\n", 'What colour"}\n'))  # whole JSON, no origin
    with pytest.raises(DamagedFile, match=f"instruction pool {pool}: row {line} is not a pool row"):
        build_dataset(instances, pool, tmp_path / "set", variant="mins_plus")


def test_a_cut_off_judge_verdict_is_asked_again(chat_server, tmp_path, monkeypatch, caplog):
    from lit.eval.judge import ChatJudge

    monkeypatch.setenv("TEST_JUDGE_KEY", "k")
    chat_server.reply = lambda body: "Correct."
    cache = tmp_path / "verdicts.jsonl"

    def judge():
        return ChatJudge(chat_server.completions_url, "m", api_key_env="TEST_JUDGE_KEY", cache=str(cache))

    first = judge()
    assert [first.verdict("q", "yes", p) for p in ("yes", "yes!", "yes.")] == [1, 1, 1]
    line = cut_last_line(cache)
    with caplog.at_level(logging.WARNING):
        again = judge()
        assert [again.verdict("q", "yes", p) for p in ("yes", "yes!", "yes.")] == [1, 1, 1]
    assert len(chat_server.requests) == 4  # the cut-off verdict only
    assert any(f"judge cache {cache}: line {line} was cut off" in r.getMessage() for r in caplog.records)
    cache.write_text("garbage\n" + cache.read_text())
    with pytest.raises(DamagedFile, match=f"judge cache {cache}: line 1 is not a JSON object"):
        judge().verdict("q", "yes", "yes")
