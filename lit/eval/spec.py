"""What to score and how: one ``EvalSpec``, built once from the ``eval`` group (``EvalSpec.from_config``) for
``evaluate.py``, the demo and the recipes alike, so no caller can drop a setting on the way."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class EvalSpec:
    tasks: tuple[str, ...]
    data_dir: str
    device: str = "cpu"
    limit: int | None = None  # the first N documents per task (smoke runs)
    batch_size: int = 1  # requests generated together
    dtype: str = "auto"  # the checkpoint's own
    builtin_tasks: tuple[str, ...] = ()  # lmms-eval's own tasks, run as shipped
    # read by the task hooks through settings.json (lit/eval/tasks/*/utils.py)
    yes_no_rule: str = "first_word"
    multiinstruct_max_per_task: int = 1000
    multiinstruct_instructions: str | None = None
    hallusion_judge: dict = field(default_factory=lambda: {"kind": "string_match"})

    @classmethod
    def from_config(cls, e) -> EvalSpec:
        """From a composed ``eval`` group (``conf/eval/default.yaml`` lists every key)."""
        from omegaconf import OmegaConf

        judge = e.get("hallusion_judge")
        return cls(
            tasks=tuple(e.tasks),
            data_dir=str(e.data_dir),
            device=e.device,
            limit=e.get("limit"),
            batch_size=int(e.get("batch_size", 1)),
            dtype=e.get("dtype", "auto"),
            builtin_tasks=tuple(e.get("builtin_tasks") or ()),
            yes_no_rule=e.yes_no_rule,
            multiinstruct_max_per_task=int(e.multiinstruct_max_per_task),
            multiinstruct_instructions=e.get("multiinstruct_instructions"),
            hallusion_judge=OmegaConf.to_container(judge) if judge is not None else {"kind": "string_match"},
        )

    def settings(self, out_dir: str | Path) -> dict:
        """The ``settings.json`` the task hooks read; the HallusionBench judge's cache sits in ``out_dir``."""
        return {
            "yes_no_rule": self.yes_no_rule,
            "multiinstruct_max_per_task": self.multiinstruct_max_per_task,
            "multiinstruct_instructions": self.multiinstruct_instructions,
            "hallusion_judge": {**self.hallusion_judge, "cache": str(Path(out_dir) / "judge_cache.jsonl")},
        }
