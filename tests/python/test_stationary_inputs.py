"""grpokit.stationary: degenerate and bad input (clear errors), and the presentation of results (text
tables, the paper's figures, plots). The solvers against the paper's tables: test_stationary.py."""

import math

import numpy as np
import pytest

import grpokit
from grpokit import stationary as st

INF = math.inf

# ---- degenerate input -------------------------------------------------------------------------


def test_bad_input_errors():
    with pytest.raises(ValueError, match="beta: expected a finite value > 0"):
        st.solve([1, 0], [0.5, 0.5], 0.0)
    with pytest.raises(ValueError, match="beta"):
        st.solve([1, 0], [0.5, 0.5], -1.0, INF)
    with pytest.raises(ValueError, match="summing to 1"):
        st.solve([1, 0], [0.5, 0.6], 1.0)
    with pytest.raises(ValueError, match="pi_ref: element 1 is -0.5"):
        st.solve([1, 0], [1.5, -0.5], 1.0)
    with pytest.raises(ValueError, match="pi_ref: element 0 is nan"):
        st.solve([1, 0], [float("nan"), 1.0], 1.0)
    with pytest.raises(ValueError, match="pi_ref: expected 2 probabilities"):
        st.solve([1, 0], [0.2, 0.3, 0.5], 1.0)
    with pytest.raises(ValueError, match="G: expected an integer >= 2"):
        st.solve([1, 0], [0.5, 0.5], 1.0, G=1)
    with pytest.raises(ValueError, match="G: expected an integer >= 2"):
        st.solve([1, 0], [0.5, 0.5], 1.0, G=2.5)
    with pytest.raises(TypeError, match="G: expected"):
        st.solve([1, 0], [0.5, 0.5], 1.0, G=True)
    with pytest.raises(ValueError, match="rewards: element 0 is inf"):
        st.solve([INF, 0], [0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match="penalty: expected one of"):
        st.solve([1, 0], [0.5, 0.5], 1.0, penalty="kl")
    with pytest.raises(ValueError, match="normalisation: expected one of"):
        st.solve([1, 0], [0.5, 0.5], 1.0, normalisation="std")
    with pytest.raises(ValueError, match="std_ddof"):
        st.solve([1, 0], [0.5, 0.5], 1.0, 4, std_ddof=2)
    with pytest.raises(ValueError, match="only apply to normalisation='mean_std'"):
        st.solve([1, 0], [0.5, 0.5], 1.0, 4, normalisation="mean_only", std_eps=1e-4)
    with pytest.raises(ValueError, match="pass exactly one"):
        st.solve([1, 0], [0.5, 0.5], 1.0, pairwise=[[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="G = 2 only"):
        st.solve(None, [0.5, 0.5], 1.0, 4, pairwise=[[0, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"Q\(0, 1\) \+ Q\(1, 0\)"):
        st.solve(None, [0.5, 0.5], 1.0, pairwise=[[0, 0.8], [0.5, 0]])
    with pytest.raises(ValueError, match="M\\(0, 1\\) \\+ M\\(1, 0\\)"):
        st.nlhf([0.5, 0.5], 1.0, preference_matrix=[[0.5, 0.8], [0.5, 0.5]])
    with pytest.raises(NotImplementedError, match="no closed form"):
        st.solve([2, 1, 0], [0.2, 0.3, 0.5], 1.0, 4, method="closed_form")
    with pytest.raises(ValueError, match="method: expected one of"):
        st.solve([1, 0], [0.5, 0.5], 1.0, method="magic")
    with pytest.raises(ValueError, match="pi: element 0 is 0.5; expected finite probabilities >= 0, and 0 where"):
        st.residuals([0.5, 0.5], [1, 0], [0.0, 1.0], 1.0)
    R, fp = st.residuals([0.5, 0.5], [1, 0], [0.5, 0.5], 1.0)  # π_ref itself is not stationary
    assert np.max(np.abs(fp)) > 0.1 and abs(R.sum()) < 1e-15
    with pytest.raises(ValueError, match="binary problem"):
        st.equilibria([2, 1, 0], [0.2, 0.3, 0.5], 1.0)


def test_documented_limits():
    # π_ref with zeros: those outputs stay at 0 (support); the rest is solved as usual.
    res = st.solve([1.0, 0.5, 0.0], [0.0, 0.4, 0.6], 1.0, 4)
    assert res.pi[0] == 0.0 and not res.boundary
    ref = st.solve([0.5, 0.0], [0.4, 0.6], 1.0, 4)
    np.testing.assert_allclose(res.pi[1:], ref.pi, atol=1e-13)
    # all rewards equal (or one supported level): P_G = 0, π = π_ref.
    for G in (2, 5, INF):
        res = st.solve([1.0, 1.0, 1.0], [0.2, 0.3, 0.5], 0.1, G)
        np.testing.assert_array_equal(res.pi, [0.2, 0.3, 0.5])
        assert res.method == "trivial" and "pi = pi_ref" in res.message
    # the value at π_ref(a) = 0 is 0, the right-limit is not (the paper's discontinuity).
    assert st.binary(0.0, 0.5, 2) == 0.0 and st.right_limit(0.5, 2) == pytest.approx(0.5)


def test_non_convergence_is_never_silent():
    with pytest.raises(st.ConvergenceError, match="did not converge") as info:
        st.solve([2, 1, 0], [0.2, 0.3, 0.5], 0.1, 4, method="flow", max_steps=5)
    assert not info.value.result.converged
    flagged = st.solve([2, 1, 0], [0.2, 0.3, 0.5], 0.1, 4, method="flow", max_steps=5, allow_unconverged=True)
    assert not flagged.converged and "NOT CONVERGED" in str(flagged)
    with pytest.raises(st.ConvergenceError):
        st.solve([2, 1, 0], [0.2, 0.3, 0.5], 0.01, 4, method="newton", max_iter=1)
    # direct KL at G = ∞: past the fold Newton stops and says so; "auto" then follows the flow
    # from π_ref, which collapses onto the best output (a stable boundary point).
    res = st.solve([1, 0.5, 0], [0.2, 0.3, 0.5], 0.05, INF, penalty="k3_is", method="newton", allow_unconverged=True)
    assert not res.converged and "fold" in res.message
    auto = st.solve([1, 0.5, 0], [0.2, 0.3, 0.5], 0.05, INF, penalty="k3_is")
    assert auto.method == "flow" and "converged instead" in auto.message
    assert auto.pi[0] > 1 - 1e-12 and auto.fixed_point_residual < 1e-10


# ---- presentation and plots ---------------------------------------------------------------------


def test_results_print_readably():
    res = st.solve([2, 1, 0], [0.2, 0.3, 0.5], 0.1, 4)
    text = str(res)
    assert "converged" in text and "newton" in text and "0.953652956" in text and "G = 4" in text
    assert "StationaryPolicy(pi=[0.953653" in repr(res)
    cmp = st.compare([1, 0, 0], [0.05, 0.55, 0.4], 1.0, G_values=(4, INF), include_nlhf=True)
    table = str(cmp)
    assert "GRPO k3 G=4" in table and "RLHF log-pooling" in table and "NLHF" in table
    assert "0.450298" in table and "0.125161" in table  # a worked example
    labels = [row[0] for row in cmp.summary()]
    assert labels == ["GRPO k3 G=4", "GRPO k3 G=inf", "RLHF log-pooling", "NLHF"]
    assert "monte_carlo" in repr(st.preference([0.5, 0.5], [1, 0], 4, method="monte_carlo", samples=100))


def test_plots():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for fn, n_open in ((st.plot_figure1, 2), (st.plot_figure2, 5), (st.plot_figure3, 0)):
        ax = fn()
        # five curves + the diagonal, plus markers at p = 0 for the jump figures
        assert len([ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]) == 5
        opens = [ln for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_markerfacecolor() == "white"]
        assert len(opens) == n_open
        plt.close(ax.figure)
    ax = st.plot_binary_comparison(1.0)
    assert len(ax.get_lines()) == 7
    plt.close(ax.figure)
    ax = st.compare([1, 0.5, 0], [0.2, 0.3, 0.5], 0.5, G_values=(2, INF)).plot()
    assert len(ax.patches) == 4 * 3
    plt.close(ax.figure)


def test_public_module():
    assert grpokit.stationary is st
    for name in st.__all__:
        assert getattr(st, name).__doc__ or name == "INF"


def test_cli(capsys, tmp_path):
    from grpokit.cli import main

    out = tmp_path / "cmp.png"
    assert (
        main(
            [
                "stationary",
                "--rewards",
                "1,0,0",
                "--pi-ref",
                "0.05,0.55,0.4",
                "--beta",
                "1",
                "--G",
                "4,inf",
                "--nlhf",
                "--plot",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "GRPO k3 G=4" in text and "0.450298" in text and "NLHF" in text and out.exists()
    assert main(["stationary", "--rewards", "1,0", "--pi-ref", "0.5,0.6", "--beta", "1"]) == 1
    assert "summing to 1" in capsys.readouterr().err
