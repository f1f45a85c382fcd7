"""Running ``augment.py``'s job in this process against a local chat server (``tests/chat_server.py``), on the
demo seeds with two official rephrasings each (16 generations, in batches of 4) and millisecond backoff."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RETRIES = 2


def rewrite(body: dict) -> str:
    """A deterministic rewrite the filter keeps: the protected seed plus two words chosen by the sampling seed."""
    word = ("now", "please", "today", "here")[body["seed"] % 4]
    return f"{body['messages'][-1]['content']} Answer {word}."


def overrides(url: str, cache: Path, run_dir: Path) -> list[str]:
    retry = f"max_retries: {RETRIES}, backoff: 0.001, max_backoff: 0.002"
    args = f'{{model: m, base_url: "{url}", concurrency: 1, {retry}}}'
    return [
        "augmentation=mins_plus",
        "augmentation.seeds=instraug/demo/seeds.yaml",
        "~augmentation.meta_prompts",
        "+augmentation.meta_prompts={official_rephrase: 2}",  # 8 seeds x 2 = 16 jobs
        "augmentation.batch_size=4",
        "augmentation.backend.kind=openai",
        "~augmentation.backend.args",
        f"+augmentation.backend.args={args}",
        f"augmentation.cache_dir={cache}",
        f"output_dir={run_dir}",
    ]


def augment(url: str, cache: Path, run_dir: Path) -> dict:
    """``augment.py`` in this process (what its ``main`` runs), on the demo seeds."""
    from hydra import compose, initialize_config_dir

    from instraug.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("augment", overrides=overrides(url, cache, run_dir))
    return run(cfg)


def cache_lines(cache: Path) -> list[str]:
    return (cache / "generations.jsonl").read_text().splitlines()
