"""An LLM server that fails mid-augmentation: it dies between two requests, answers a storm of 500s, an empty
body, an HTML page or JSON without choices, or drops the connection. Each bad answer is retried (bounded, with
backoff) and a short fault is survived; a long one stops the run with one line naming the server, the task,
the seed and what to do, with nothing half-written; the same command run again once the server is back resumes
from the cache and writes byte for byte the pool of an undisturbed run. Backoff is milliseconds, by config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from augment_runs import RETRIES, ROOT, augment, cache_lines, overrides, rewrite
from chat_server import DROP, EMPTY, GARBAGE, NO_CHOICES, STOP, ChatServer

FAULTS = {"500": 500, "empty body": EMPTY, "garbage": GARBAGE, "no choices": NO_CHOICES, "dropped": DROP}
SAID = {
    "500": "answered 500",
    "empty body": "answered with an empty body",
    "garbage": "answered with a body that is not JSON",
    "no choices": "answered with JSON that is not a chat completion",
    "dropped": "is unreachable",
}


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory) -> bytes:
    """The pool an undisturbed run writes."""
    tmp = tmp_path_factory.mktemp("undisturbed")
    with ChatServer(rewrite) as server:
        augment(server.url, tmp / "cache", tmp / "run")
    assert len(server.requests) == 16
    return (tmp / "run" / "pool.jsonl").read_bytes()


@pytest.mark.parametrize("fault", FAULTS)
def test_a_short_fault_is_retried_and_a_long_one_stops_naming_server_and_request(fault, chat_server):
    from instraug.backends import OpenAIBackend, Sampling
    from lit.chat_api import ChatAPIError

    chat_server.reply = lambda body: "Rewritten {A}."
    backend = OpenAIBackend("m", base_url=chat_server.url, concurrency=1, max_retries=RETRIES, backoff=0.001)
    chat = [{"role": "system", "content": "Rewrite."}, {"role": "user", "content": "Describe {A}."}]
    chat_server.script = [FAULTS[fault]] * RETRIES
    assert backend.generate([chat], Sampling(), [7]) == ["Rewritten {A}."]
    assert len(chat_server.requests) == RETRIES + 1
    chat_server.requests.clear()
    chat_server.script = [FAULTS[fault]] * (RETRIES + 1) + ["never reached"]
    with pytest.raises(ChatAPIError) as err:
        backend.generate([chat], Sampling(), [7])
    assert len(chat_server.requests) == RETRIES + 1  # bounded
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{chat_server.url} (model 'm') {SAID[fault]}")
    assert f"retries exhausted after {RETRIES} retries) to request (seed 7) 'Describe {{A}}.'" in message


def test_a_server_that_dies_is_retried_then_named_and_answers_again_once_restarted(chat_server):
    from instraug.backends import OpenAIBackend, Sampling
    from lit.chat_api import ChatAPIError

    chat_server.script = [STOP]  # dies while the first request is on its way; later ones are refused
    backend = OpenAIBackend("m", base_url=chat_server.url, max_retries=RETRIES, backoff=0.001)
    chat = [{"role": "user", "content": "Describe {A}."}]
    with pytest.raises(ChatAPIError, match=f"{chat_server.url} \\(model 'm'\\) is unreachable \\(transient, retries"):
        backend.generate([chat], Sampling(), [1])
    assert len(chat_server.requests) == 1
    chat_server.start()  # back on the same address
    assert backend.generate([chat], Sampling(), [1]) == ["Rewritten {A}."]


@pytest.mark.integration
@pytest.mark.parametrize("fault", [*FAULTS, "server dies"])
def test_augmentation_stops_clearly_and_the_rerun_writes_the_undisturbed_pool(fault, tmp_path, undisturbed):
    from instraug.generate import GenerationStopped

    cache, server = tmp_path / "cache", ChatServer(rewrite)
    # one batch of 4 is written and 2 of the next answered; then the server dies between two requests, or
    # answers the fault for longer than the retries last
    if fault == "server dies":
        server.stop_after = 6
    else:
        server.script = [None] * 6 + [FAULTS[fault]] * (RETRIES + 1)
    with server, pytest.raises(GenerationStopped) as stop:
        augment(server.url, cache, tmp_path / "run1")
    message = str(stop.value)
    assert "\n" not in message and server.url in message and SAID.get(fault, "is unreachable") in message
    assert "task 'counting', seed instruction 'counting#1'" in message
    assert "4 of 16 generations are saved in" in message and "run the same command again" in message
    assert not (tmp_path / "run1" / "pool.jsonl").exists()  # nothing half-written: no pool, only whole batches
    assert len(cache_lines(cache)) == 4 and all(json.loads(line) for line in cache_lines(cache))
    server.stop_after, server.script = None, []
    server.requests.clear()
    with server:  # the server is back, on the same address
        augment(server.url, cache, tmp_path / "run2")
    assert len(server.requests) == 12  # only what the cache lacked
    assert (tmp_path / "run2" / "pool.jsonl").read_bytes() == undisturbed
    assert len(cache_lines(cache)) == 16


@pytest.mark.integration
def test_augment_py_stops_in_one_line_without_a_traceback(tmp_path, chat_server):
    chat_server.stop()  # nothing listens at the configured address
    cmd = [sys.executable, "augment.py", *overrides(chat_server.url, tmp_path / "cache", tmp_path / "run")]
    cmd[-1] = f"hydra.run.dir={tmp_path / 'run'}"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("augmentation stopped at task 'colour_vqa', seed instruction 'colour_vqa#0'")
    assert f"{chat_server.url} (model 'm') is unreachable" in last and "run the same command again" in last
    assert not (tmp_path / "run" / "pool.jsonl").exists() and not (tmp_path / "cache" / "generations.jsonl").read_text()
