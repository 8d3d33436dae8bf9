"""verl's own modules for the parity tests, imported as they are (verl 0.9.1 installed with
``pip install --no-deps "verl==0.9.1"`` plus ``pip install 'grpokit[verl]'``, what importing them needs:
docs/verl.md). Tests skip when they do not import."""

from __future__ import annotations

import pytest


def _module(name: str):
    return pytest.importorskip(
        name, reason=f"{name} does not import: install verl and grpokit[verl]", exc_type=ImportError
    )


def core_algos():
    """verl.trainer.ppo.core_algos: the advantage estimators, policy losses, agg_loss, kl_penalty."""
    return _module("verl.trainer.ppo.core_algos")


def rollout_corr_helper():
    """verl.trainer.ppo.rollout_corr_helper: rollout IS weights, rejection sampling, mismatch metrics."""
    return _module("verl.trainer.ppo.rollout_corr_helper")


def workers_config():
    """verl.workers.config: ActorConfig and PolicyLossConfig, which verl's losses read."""
    return _module("verl.workers.config")
