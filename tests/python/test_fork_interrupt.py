"""Fork safety and Ctrl-C (docs/robustness.md), each in a child process with a timeout.

A forked child must not hang on its first grpokit call after the parent ran a multi-threaded one
(GNU OpenMP's pool does not survive fork), whatever the start method; a long engine call must raise
KeyboardInterrupt within about a second of SIGINT instead of running to its end.
"""

import signal
import subprocess
import sys
import textwrap
import time

import pytest

# A (512, 4096) call is above the engine's threshold for an OpenMP loop: the parent's pool is busy.
_WORK = textwrap.dedent(
    """
    import numpy as np, grpokit

    def work(seed):
        x = np.random.default_rng(seed).standard_normal((512, 4096)).astype(np.float32)
        return float(grpokit.token_logprobs(x, np.zeros(512, np.int64)).logp.sum())
    """
)


def _run_child(code: str, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung (no exit within {timeout} s)")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_pool_workers_after_a_multithreaded_parent_call(method, tmp_path):
    # forkserver and spawn import the worker function from a module: write one.
    (tmp_path / "fork_work.py").write_text(_WORK)
    code = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(tmp_path)!r})
        import multiprocessing as mp
        from fork_work import work
        if __name__ == "__main__":
            expected = [work(s) for s in range(4)]  # multi-threaded in the parent first
            with mp.get_context({method!r}).Pool(2) as pool:
                got = pool.map(work, range(4))
            assert got == expected, (got, expected)
            print("ok")
        """
    )
    assert _run_child(code).strip() == "ok"


def test_raw_fork_child_runs_single_threaded():
    code = _WORK + textwrap.dedent(
        """
        import os
        expected = work(0)
        pid = os.fork()
        if pid == 0:
            ok = work(0) == expected and grpokit._core.cpu_max_threads() == 1
            os._exit(0 if ok else 3)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert _run_child(code).strip() == "0"


def test_torch_dataloader_workers():
    pytest.importorskip("torch")
    code = _WORK + textwrap.dedent(
        """
        import torch

        class Data(torch.utils.data.Dataset):
            def __len__(self):
                return 4
            def __getitem__(self, i):
                return work(i)

        if __name__ == "__main__":
            expected = [work(i) for i in range(4)]
            loader = torch.utils.data.DataLoader(Data(), batch_size=None, num_workers=2)
            got = [float(v) for v in loader]
            assert got == expected, (got, expected)
            print("ok")
        """
    )
    assert _run_child(code).strip() == "ok"


# Each call runs for many seconds uninterrupted (zero-stride views: no large input buffers).
_LONG_CALLS = {
    "token_logprobs": """
        x = np.broadcast_to(np.zeros(32768, np.float32), (1 << 20, 32768))
        call = lambda: grpokit.token_logprobs(x, np.zeros(1 << 20, np.int64))
    """,
    "linear_token_logprobs": """
        h = np.broadcast_to(np.ones(1024, np.float32), (1 << 16, 1024))
        w = np.broadcast_to(np.ones(1024, np.float32), (1 << 15, 1024))
        call = lambda: grpokit.linear_token_logprobs(h, w, np.zeros(1 << 16, np.int64))
    """,
    "policy_loss": """
        lp = np.broadcast_to(np.float32(-1.0), (1 << 11, 1 << 15))
        old = np.broadcast_to(np.float32(-1.1), (1 << 11, 1 << 15))
        call = lambda: grpokit.policy_loss(lp, old, np.ones(1 << 11, np.float32), spec="trl.grpo")
    """,
    "diagnostics.loss_decomposition": """
        a = np.broadcast_to(np.float32(0.5), (1 << 12, 1 << 22))
        call = lambda: grpokit.diagnostics.loss_decomposition(a, np.zeros(1 << 12), 4, ratios=a, epsilon=0.2)
    """,
    "stationary.compare": """
        call = lambda: grpokit.stationary.compare(list(np.linspace(0, 1, 12)), [1 / 12] * 12, 0.1, [16])
    """,
}


@pytest.mark.parametrize("name", sorted(_LONG_CALLS))
def test_sigint_interrupts_a_long_call(name):
    code = (
        "import os, signal, numpy as np, grpokit\n"
        # Python's own SIGINT handler, as in a terminal: a child of a background job (`cmd &` in a script,
        # some CI runners) inherits SIGINT ignored, and then Python installs no handler at all.
        + "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        + textwrap.dedent(_LONG_CALLS[name])
        + textwrap.dedent(
            """
        print("ready", flush=True)
        try:
            result = call()
            print("finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            os._exit(0)  # no teardown of the views: the bound below measures the engine, not the exit
        """
        )
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.5)  # inside the call
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=2.5)
        waited = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: SIGINT did not stop the call within 2.5 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert out.split() == ["interrupted"], (out, err)
    assert waited < 2.5
