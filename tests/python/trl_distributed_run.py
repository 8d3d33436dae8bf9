"""Launched by test_trl_distributed.py, once in 1 process and once under ``accelerate launch
--num_processes 2 --cpu`` (gloo): grpokit's GRPOTrainer with DiagnosticsCallback on the tiny model of
``trl_tiny``, the same global batch either way. Writes each rank's parameters and log history.

Completions come from a ``rollout_func`` that is a fixed function of the prompt and of the completion's
index in its group, so both runs train on the same completions (sampling would draw different random
numbers in one process than in two)."""

from __future__ import annotations

import os
import random
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402

import trl_tiny as tt  # noqa: E402


def rollout(prompts, trainer):
    tok = trainer.processing_class
    seen: dict = {}
    prompt_ids, completion_ids = [], []
    for p in prompts:  # TRL repeats each prompt num_generations times, groups whole on every process
        j = seen[p] = seen.get(p, -1) + 1
        rng = random.Random(f"{p}|{j}")
        n = rng.randint(1, trainer.args.max_completion_length)
        ids = [rng.randrange(2, len(tt.WORDS) + 2) for _ in range(n)]
        completion_ids.append(ids + [tok.eos_token_id] if n < trainer.args.max_completion_length else ids)
        prompt_ids.append(tok(p)["input_ids"])
    return {
        "prompt_ids": prompt_ids,
        "completion_ids": completion_ids,
        "logprobs": [[0.0] * len(c) for c in completion_ids],
    }


def main(out_dir: str, processes_in_run: int, losses: list, zero_stage: int = 0) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    import grpokit.integrations.trl as gtrl

    per_device = 8 // processes_in_run  # global batch per micro-step: 8 completions = 2 groups
    for loss in losses:
        cb = gtrl.DiagnosticsCallback(warn=False, momentum_every=1, prefix_every=1, eps_every=1)
        trainer = gtrl.GRPOTrainer(
            model=tt.model(),
            reward_funcs=tt.reward_count_a,
            args=tt.config(
                os.path.join(out_dir, "run"),
                per_device_train_batch_size=per_device,
                gradient_accumulation_steps=2,
                num_iterations=2,
                max_steps=3,
                deepspeed=None
                if not zero_stage
                else {
                    "zero_optimization": {"stage": zero_stage},
                    "train_micro_batch_size_per_gpu": "auto",
                    "gradient_accumulation_steps": "auto",
                    "optimizer": {
                        "type": "AdamW",
                        "params": {"lr": "auto", "weight_decay": "auto", "torch_adam": True},
                    },
                },
            ),
            train_dataset=tt.dataset(8),  # 8 distinct prompts
            processing_class=tt.tokenizer(),
            rollout_func=rollout,
            callbacks=[cb],
            loss=loss,
        )
        trainer.train()
        rank = trainer.accelerator.process_index
        torch.save(
            {
                "params": [p.detach().clone() for p in trainer.model.parameters()],
                "logs": [h for h in trainer.state.log_history if "loss" in h],
                "num_processes": trainer.accelerator.num_processes,
            },
            os.path.join(out_dir, f"{loss}.{processes_in_run}.rank{rank}.pt"),
        )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), *map(int, sys.argv[4:]))
