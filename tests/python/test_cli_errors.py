"""Every CLI verb with bad input: one line on stderr naming the problem, a non-zero exit, no traceback."""

import numpy as np
import pytest

from grpokit import cli


def _run(argv, capsys):
    """(exit status, stdout, stderr) of the CLI in this process: an uncaught exception fails the test."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ok = dict(rewards=np.array([1.0, 0.0, 1.0, 0.0]), logp=-np.ones((4, 3)))
    np.savez(d / "ok.npz", group_size=2, **ok)
    np.savez(d / "frac.npz", group_size=2.5, **ok)
    np.savez(d / "two.npz", group_size="two", **ok)
    np.save(d / "one.npy", np.ones(3))
    (d / "empty.npz").write_bytes(b"")
    data = (d / "ok.npz").read_bytes()
    (d / "trunc.npz").write_bytes(data[: len(data) // 2])
    (d / "exists.png").write_text("")
    return d


ST = ["stationary", "--pi-ref", "0.5,0.5", "--beta", "0.1"]

BAD = [
    (["compare", "{d}/empty.npz"], "empty.npz: not a readable .npz file"),
    (["compare", "{d}/trunc.npz"], "trunc.npz: "),
    (["compare", "{d}"], "is a directory"),
    (["compare", "{d}/one.npy"], "is a .npy file"),
    (["compare", "{d}/missing.npz"], "No such file or directory"),
    (["compare", "{d}/frac.npz"], "group_size: expected a whole number >= 1, got 2.5"),
    (["compare", "{d}/two.npz"], "group_size: expected a whole number >= 1, got"),
    (["compare", "{d}/ok.npz", "--presets", "trl.grpo:epsilon=abc"], "epsilon (epsilon_low): expected a number"),
    (
        ["compare", "{d}/ok.npz", "--presets", "verl.reinforce:loss_scale_factor=0"],
        "loss_scale_factor (max_completion_length): expected a positive count",
    ),
    (["compare", "{d}/ok.npz", "--presets", "trl.nope"], "trl.nope"),
    (["explain", "{d}/empty.npz", "trl.grpo", "trl.dapo"], "not a readable .npz file"),
    (["explain", "{d}/ok.npz", "trl.grpo", "trl.nope"], "trl.nope"),
    (ST + ["--rewards", "1,,0"], "argument --rewards: expected comma-separated numbers"),
    (ST + ["--rewards", "1,0", "--G", "2.5"], "argument --G: expected comma-separated whole numbers >= 2 or inf"),
    (ST + ["--rewards", "1,0", "--G", "99999999999999999999999"], "argument --G: expected"),
    (ST[:3] + ["--beta", "abc", "--rewards", "1,0"], "argument --beta: expected a number, got 'abc'"),
    (ST + ["--rewards", "1,0,0"], "pi_ref"),
    (["demo", "--out", "{d}/exists.png"], "--out: "),
    (["demo", "--weight-decay", "inf"], "argument --weight-decay: expected a finite number, got 'inf'"),
    (["demo", "--lr", "-1"], "argument --lr: expected a number > 0"),
    (["demo", "-G", "2.5"], "argument -G/--group-size: invalid int value"),
    (["info", "--bogus"], "unrecognized arguments: --bogus"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_cli_input_is_one_line(files, argv, fragment, capsys):
    code, _, err = _run([a.format(d=files) for a in argv], capsys)
    assert code not in (0, None)
    assert "Traceback" not in err
    assert fragment in err, err
    last = err.strip().splitlines()[-1]  # argparse prints its usage first, then the one error line
    assert last.startswith("grpokit") and "error:" in last, err


def test_compare_without_old_logp_is_on_policy(files, capsys):
    code, out, err = _run(["compare", str(files / "ok.npz"), "--presets", "trl.grpo", "verl.dppo_tv"], capsys)
    assert code == 0, err
    assert "on-policy" in out
