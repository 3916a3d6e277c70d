"""The Thompson router's per-worker models: a LinTS linear model with forgetting and a Beta success model.

Per worker ``w``: ``A_w`` (starts ``λI``), ``b_w`` (starts 0) and ``(α_w, β_w)`` (start 1, 1). A reward
``r`` in [0, 1] for context ``x`` updates ``A ← γA + xxᵀ + (1−γ)λI``, ``b ← γb + r·x``, ``α += r``,
``β += 1−r`` (γ: the forget rate). ``posterior(w)`` gives ``(μ, S)`` with ``θ = μ + v·S z`` a LinTS draw:
Cholesky of ``A`` with jitter 1e-9 ×10 up to 1e-3, else an eigendecomposition with eigenvalues floored
at 1e-10 (NAT's fixed numerics); it is cached until the worker's next update.
"""

from __future__ import annotations

import numpy as np

_JITTER_START, _JITTER_MULT, _JITTER_MAX, _EIG_FLOOR = 1e-9, 10.0, 1e-3, 1e-10


class WorkerBandits:
    def __init__(self, dim: int, lam: float, forget: float):
        self.dim = dim
        self.lam = lam
        self.forget = forget
        self.A: dict[int, np.ndarray] = {}
        self.b: dict[int, np.ndarray] = {}
        self.beta: dict[int, list[float]] = {}      # wid -> [alpha, beta]
        self._factor: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # wid -> (mu, L^-T)

    def ensure(self, wid: int) -> None:
        """Give ``wid`` its prior models if it has none yet."""
        if wid not in self.A:
            self.A[wid] = self.lam * np.eye(self.dim)
            self.b[wid] = np.zeros(self.dim)
            self.beta[wid] = [1.0, 1.0]

    def posterior(self, wid: int) -> tuple[np.ndarray, np.ndarray]:
        """(μ, S) of ``wid``'s LinTS model (see the module docstring)."""
        got = self._factor.get(wid)
        if got is not None:
            return got
        A = self.A[wid]
        A = 0.5 * (A + A.T)
        b = self.b[wid]
        eye = np.eye(self.dim)
        jitter = _JITTER_START
        while jitter <= _JITTER_MAX:
            try:
                L = np.linalg.cholesky(A + jitter * eye)
            except np.linalg.LinAlgError:
                jitter *= _JITTER_MULT
                continue
            if not np.all(np.isfinite(L)):
                jitter *= _JITTER_MULT
                continue
            mu = np.linalg.solve(L.T, np.linalg.solve(L, b))
            S = np.linalg.solve(L.T, eye)
            break
        else:
            vals, vecs = np.linalg.eigh(A)
            vals = np.maximum(vals, _EIG_FLOOR)
            mu = vecs @ ((vecs.T @ b) / vals)
            S = vecs / np.sqrt(vals)
        self._factor[wid] = (mu, S)
        return mu, S

    def update(self, wid: int, x: np.ndarray, reward: float) -> None:
        """Fold one reward (clipped to [0, 1]) for context ``x`` into ``wid``'s models."""
        r = min(max(float(reward), 0.0), 1.0)
        self.ensure(wid)
        ab = self.beta[wid]
        ab[0] += r
        ab[1] += 1.0 - r
        g = self.forget
        A = g * self.A[wid] + np.outer(x, x) + (1.0 - g) * self.lam * np.eye(self.dim)
        self.A[wid] = 0.5 * (A + A.T)
        self.b[wid] = g * self.b[wid] + r * x
        self._factor.pop(wid, None)
