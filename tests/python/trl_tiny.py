"""A tiny offline GRPO setup: random 2-layer Qwen2 from a config, a local word-level tokenizer, a
synthetic prompt dataset and a programmatic reward (no downloads)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


def tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def model(seed=0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(WORDS) + 2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg)


def dataset(n=16):
    from datasets import Dataset

    prompts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(3)) for i in range(n)]
    return Dataset.from_dict({"prompt": prompts})


def reward_count_a(completions, **kwargs):
    """+1 per 'a' in the completion: a programmatic reward with within-group variance."""
    return [float(c.split().count("a")) for c in completions]


def config(tmp_path, **over):
    from trl import GRPOConfig

    kw = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        gradient_accumulation_steps=2,
        max_completion_length=6,
        max_steps=4,
        logging_steps=1,
        learning_rate=1e-2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
        temperature=1.0,
        disable_tqdm=True,
        dataloader_num_workers=0,
        bf16=False,
    )
    kw.update(over)
    return GRPOConfig(**kw)
