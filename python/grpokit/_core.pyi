from typing import Any

__version__: str

def advantages(
    rewards: Any,
    group_ids: Any,
    out: Any,
    group_size: int,
    baseline: str,
    std: str,
    std_scope: str,
    epsilon: float,
    stream: int = 0,
) -> None: ...

# ---- stationary policies (bind_stationary.cpp; see grpokit.stationary) ----
import numpy as np
from typing import List, Tuple

class StationaryModel:
    @property
    def num_outputs(self) -> int: ...
    @property
    def num_atoms(self) -> int: ...
    @property
    def atom_of(self) -> List[int]: ...
    @property
    def exact(self) -> bool: ...
    @property
    def num_terms(self) -> float: ...
    def describe(self) -> str: ...
    def preference(self, pi: np.ndarray) -> np.ndarray: ...
    def preference_monte_carlo(self, pi: np.ndarray, samples: int, seed: int) -> Tuple[np.ndarray, np.ndarray]: ...

class StationaryEquilibrium:
    pi: np.ndarray
    stable: bool
    boundary: bool

class StationaryResult:
    pi: np.ndarray
    converged: bool
    residual: float
    fixed_point_residual: float
    iterations: int
    stages: int
    method: str
    message: str
    stable: bool
    stability_known: bool
    boundary: bool
    equilibria: List[StationaryEquilibrium]
    preference_std_error: float

def stationary_model_rewards(
    rewards: np.ndarray, G: int, normalisation: str, std_ddof: int, std_eps: float, max_terms: int
) -> StationaryModel: ...
def stationary_model_pairwise(pairwise: np.ndarray) -> StationaryModel: ...
def stationary_model_nlhf(preference_matrix: np.ndarray) -> StationaryModel: ...
def stationary_solve(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, method: str, penalty: str, tol: float,
    max_iter: int, beta_start: float, beta_factor: float, samples: int = 20000, mc_rounds: int = 8,
    mc_tol: float = 2e-3, seed: int = 0,
) -> StationaryResult: ...
def stationary_flow(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, penalty: str, inner_steps: int, step: float,
    rtol: float, tol: float, max_steps: int,
) -> StationaryResult: ...
def stationary_equilibria(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, penalty: str
) -> List[StationaryEquilibrium]: ...
def stationary_residuals(
    model: StationaryModel, pi: np.ndarray, pi_ref: np.ndarray, beta: float, penalty: str
) -> Tuple[np.ndarray, np.ndarray]: ...
def stationary_binary(p: np.ndarray, beta: float, G: int, penalty: str, gamma: float) -> np.ndarray: ...
def stationary_binary_phi(x: float, G: int) -> float: ...
def stationary_log_pooling(rewards: np.ndarray, pi_ref: np.ndarray, beta: float) -> np.ndarray: ...
