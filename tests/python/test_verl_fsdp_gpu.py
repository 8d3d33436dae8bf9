"""verl's FSDP model engine end to end (issue 19): one actor update of the tiny random Qwen2 of
trl_tiny.py through ``verl.workers.engine`` (FSDPEngineWithLMHead: FSDP wrap, micro-batches of the
unpadded batch, verl's ``ppo_loss``, gradient clipping, optimizer step) with verl's built-in
``vanilla`` and with ``grpokit.verl.vanilla``: the parameters after the step agree. verl has no CPU
platform (docs/verl.md, "End to end"), so this runs on the GPU machine only (scripts/gpu_check.sh);
skipped without CUDA or without verl's engine (verl, peft, ray, tensordict: pip install 'grpokit[verl]')."""

from __future__ import annotations

import os
from functools import partial

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
pytest.importorskip("verl.workers.engine", exc_type=ImportError)

from verl.utils import tensordict_utils as tu  # noqa: E402
from verl.workers.config import (  # noqa: E402
    FSDPActorConfig,
    FSDPEngineConfig,
    FSDPOptimizerConfig,
    HFModelConfig,
    PolicyLossConfig,
)
from verl.workers.utils.losses import ppo_loss  # noqa: E402
from verl.workers.utils.padding import left_right_2_no_padding  # noqa: E402

import grpokit.integrations.verl  # noqa: E402,F401  (registers the grpokit.* losses)
import trl_tiny as tt  # noqa: E402

B, P, T = 8, 3, 5  # completions, prompt tokens, response width
# float32 compute (verl's default is bfloat16 parameters): only the loss functions differ, in float32 rounding
FP32 = {"param_dtype": "fp32", "reduce_dtype": "fp32", "buffer_dtype": "fp32"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch.distributed as dist

    if not torch.cuda.is_available():
        pytest.skip("no usable CUDA device")
    if not dist.is_initialized():  # verl's engine needs a process group: one process here
        for k, v in dict(
            MASTER_ADDR="127.0.0.1", MASTER_PORT="29541", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1"
        ).items():
            os.environ.setdefault(k, v)
        dist.init_process_group("nccl", rank=0, world_size=1)
    path = tmp_path_factory.mktemp("tiny_qwen2")
    tt.model().save_pretrained(path)
    tt.tokenizer().save_pretrained(path)
    return str(path)


def rollout(seed=0):
    """A left/right-padded rollout batch as verl's trainer hands it to update_actor."""
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    response_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    prompts = torch.randint(2, 10, (B, P), generator=g)
    responses = torch.randint(2, 10, (B, T), generator=g) * response_mask
    attention_mask = torch.cat([torch.ones(B, P, dtype=torch.long), response_mask], dim=1)
    adv = torch.randn(B, generator=g)[:, None].expand(B, T) * response_mask
    td = TensorDict(
        {
            "prompts": prompts,
            "responses": responses,
            "input_ids": torch.cat([prompts, responses], dim=1),
            "attention_mask": attention_mask,
            "position_ids": (attention_mask.cumsum(-1) - 1).clamp(min=0),
            "response_mask": response_mask,
            "old_log_probs": torch.log(torch.rand(B, T, generator=g) * 0.5 + 0.05),  # ratios ≠ 1: clipping
            "advantages": adv.contiguous(),
        },
        batch_size=[B],
    )
    td = left_right_2_no_padding(td)
    tu.assign_non_tensor(
        td,
        temperature=1.0,
        calculate_entropy=False,
        global_batch_size=B,
        global_token_num=(attention_mask.sum(-1)).tolist(),
        use_remove_padding=True,
        use_dynamic_bsz=False,
        max_token_len_per_gpu=None,
        micro_batch_size_per_gpu=B // 2,  # two micro-batches accumulated into the step
        use_fused_kernels=False,
        compute_loss=True,
    )
    return td


def update(model_dir, loss_mode):
    """The parameters after one actor update through verl's FSDP engine with `loss_mode`."""
    from verl.workers.engine import EngineRegistry

    actor = FSDPActorConfig(
        rollout_n=1,
        ppo_mini_batch_size=B,
        ppo_micro_batch_size_per_gpu=B // 2,
        loss_agg_mode="token-mean",
        clip_ratio_high=0.28,
        use_kl_loss=False,
        entropy_coeff=0.0,
        use_torch_compile=False,
        use_remove_padding=True,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
        # SGD: the step is linear in the gradient, so float32 rounding stays float32 rounding
        optim=FSDPOptimizerConfig(optimizer="SGD", lr=0.5, weight_decay=0.0),
        fsdp_config=FSDPEngineConfig(use_torch_compile=False, model_dtype="fp32", mixed_precision=FP32),
    )
    actor.model_config = HFModelConfig(path=model_dir, use_remove_padding=True, enable_gradient_checkpointing=False)
    actor.engine.micro_batch_size_per_gpu = B // 2
    actor.engine.use_dynamic_bsz = False
    actor.engine.use_remove_padding = True
    engine = EngineRegistry.new(
        model_type="language_model",
        backend=actor.engine.strategy,
        model_config=actor.model_config,
        engine_config=actor.engine,
        optimizer_config=actor.optim,
        checkpoint_config=actor.checkpoint,
    )
    engine.initialize()
    with engine.train_mode():
        engine.train_batch(rollout(), loss_function=partial(ppo_loss, config=actor))
    params, _ = engine.get_per_tensor_param()
    return {name: p.detach().float().cpu().clone() for name, p in params}


def test_one_actor_update_through_verls_fsdp_engine_matches_verl(model_dir):
    want = update(model_dir, "vanilla")
    got = update(model_dir, "grpokit.verl.vanilla")
    start = dict(tt.model().named_parameters())
    assert set(got) == set(want)
    common = [n for n in want if n in start]
    assert common, f"no parameter names in common with the model: {sorted(want)[:3]}"
    moved = max(float((want[n] - start[n].detach()).abs().max()) for n in common)
    assert moved > 1e-4, "the update did not move the parameters"
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=f"parameter {name}")
