"""Shared fixtures: tokenizers trained here (no hub), small LLaVA-format records, demo data, a local chat API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions.",
    "USER: What color is the circle? Answer the question using a single word or phrase. ASSISTANT: red",
    "Is there a blue square in the image? Answer yes or no. Yes No",
    "Describe the image briefly. A green triangle in the top left and a yellow circle in the bottom right.",
    "How many shapes are there? two three one. Tell me more about it, please! What is 3.5 plus 2?",
    "<|im_start|>system You are a helpful assistant.<|im_end|> [INST] question [/INST] answer",
]


def _sentencepiece_dir(tmp: Path) -> Path:
    import sentencepiece as spm

    text = tmp / "corpus.txt"
    text.write_text("\n".join(CORPUS * 30))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp / "tokenizer"),
        vocab_size=400,
        model_type="bpe",
        byte_fallback=True,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        character_coverage=1.0,
        minloglevel=2,
    )
    return tmp


@pytest.fixture(scope="session")
def sp_model_dir(tmp_path_factory) -> Path:
    """A SentencePiece BPE model in the Llama layout (<unk>=0, <s>=1, </s>=2, byte fallback)."""
    return _sentencepiece_dir(tmp_path_factory.mktemp("sp"))


def _with_all_specials(tok):
    from lit.mask.chat_templates import TEMPLATES
    from lit.mask.tokenizer import prepare_tokenizer

    for template in TEMPLATES.values():
        prepare_tokenizer(tok, template)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "[INST]", "[/INST]"]})
    return tok


@pytest.fixture(scope="session")
def tokenizers(sp_model_dir) -> dict:
    """Three fast tokenizers with every template's special tokens: a byte-level BPE, and transformers'
    LlamaTokenizer converted from the SentencePiece model with legacy=True and legacy=False."""
    from transformers import LlamaTokenizer

    from lit.mask.tokenizer import train_bpe

    out = {"bpe": _with_all_specials(train_bpe(CORPUS * 30, vocab_size=400))}
    for legacy in (True, False):  # add_bos_token as in Vicuna's tokenizer config
        tok = LlamaTokenizer.from_pretrained(str(sp_model_dir), legacy=legacy, add_bos_token=True)
        out["llama_legacy" if legacy else "llama_nonlegacy"] = _with_all_specials(tok)
    return out


@pytest.fixture(params=["llama_legacy", "llama_nonlegacy"])
def llama_tokenizer(request, tokenizers):
    return tokenizers[request.param]


@pytest.fixture
def bpe_tokenizer(tokenizers):
    return tokenizers["bpe"]


@pytest.fixture(params=["bpe", "llama_legacy", "llama_nonlegacy"])
def any_tokenizer(request, tokenizers):
    return tokenizers[request.param]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    from lit.data.synthetic import generate

    out = tmp_path_factory.mktemp("demo")
    generate(out, n_train=48, n_test=8, progress=False)
    return out


@pytest.fixture(scope="session")
def trained(tmp_path_factory, demo_data):
    """A tiny LIT model trained 3 steps on the demo data: (cfg, run dir, metrics)."""
    from tiny_runs import tiny_cfg

    from lit.train.run import run

    out = tmp_path_factory.mktemp("run")
    cfg = tiny_cfg(demo_data, out, "train.max_steps=3")
    metrics = run(cfg, out)
    return cfg, out, metrics


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory) -> Path:
    """A tiny random-weight causal LM with a chat template, saved locally (no hub): the LLM that InstrAug's
    backends, `transformers serve` and the Slurm augmentation job are tested against."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from lit.mask.tokenizer import train_bpe

    path = tmp_path_factory.mktemp("tinychat")
    tok = train_bpe(["Rewrite the instruction. Describe {A} in the image please."] * 20, vocab_size=300)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant:{% endif %}"
    )
    tok.save_pretrained(path)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    ).save_pretrained(path)
    return path


@pytest.fixture
def chat_server():
    """A local OpenAI-compatible chat-completions server, started (``tests/chat_server.py``: scripted replies,
    status codes, empty or garbage bodies, a server that dies; every request recorded)."""
    from chat_server import ChatServer

    with ChatServer() as server:
        yield server
