"""Score a checkpoint with lmms-eval: `python evaluate.py ckpt=PATH eval=demo` (see conf/eval.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    from lit.evaluate import evaluate

    scores = evaluate(cfg.ckpt, list(cfg.eval.tasks), cfg.eval.data_dir, cfg.output_dir,
                      chat_template=cfg.model.chat_template, device=cfg.eval.device, limit=cfg.eval.limit)
    for task, metrics in scores.items():
        print(task, {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    main()
