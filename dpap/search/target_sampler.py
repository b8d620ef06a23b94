"""An Optuna sampler that steers one knob toward a target compression.

Under the ``gradual`` protocol the final compression grows monotonically with ε (docs/pruning.md,
"Controlling compression"), and smoothly: what a search for a compression *target* needs
is then not a global optimiser for that knob but a root finder. :class:`TargetSampler`
wraps any sampler (TPE by default): the other knobs are sampled by it, as usual; the
control knob is solved for. It fits ``logit(compression) ≈ w0 + Σ_k w_k·x_k`` to the trials seen
so far (least squares of the logit of compression over the knobs, the control one
included; with fewer trials than knobs, over the control knob alone; with one trial, the
prior slope "the range spans compression 0 to 1") and picks the control value that puts the new trial, with the
knobs already drawn for it, on the target. Trials near the target weigh most (the curve
is not a line), and a trial stopped early for overshooting the band counts as a lower
bound of its compression. Where the fit says compression would not grow with the knob
(noise with few trials), it bisects between the nearest trials below and above the
target instead.

Only public Optuna API: ``BaseSampler``'s methods, ``study.get_trials``, trial params and
user attributes (``compression``, set by the search's objective).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState


def _logit(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.01, 0.99)
    return np.log(c / (1 - c))


class TargetSampler(optuna.samplers.BaseSampler):
    """``base`` samples every knob but ``knob``; ``knob`` is solved for ``target``.

    ``knob`` must be a float parameter whose larger values give more compression.
    ``epochs``: the epochs of a trial, to judge how far a trial stopped early (at the epoch
    its compression overshot the band) would have gone."""

    def __init__(self, base: optuna.samplers.BaseSampler, knob: str, target: float, seed: Optional[int] = None, jitter: float = 0.01, epochs: Optional[int] = None):
        self.base = base
        self.epochs = epochs
        self.knob = knob
        self.target = float(target)
        self.jitter = float(jitter)
        self._rng = np.random.default_rng(seed)

    # -------------------------------------------------------------- delegation

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        space = dict(self.base.infer_relative_search_space(study, trial))
        space.pop(self.knob, None)
        return space

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        if param_name != self.knob or not isinstance(param_distribution, FloatDistribution):
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        return self.propose(study, trial, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = np.random.default_rng()

    # ---------------------------------------------------------------- steering

    def observations(self, study: optuna.Study) -> list[tuple[dict[str, float], float, bool]]:
        """(params, compression, censored) of every finished trial that measured its
        compression. A trial stopped early above the target (it overshot the band at epoch
        k of E) is *censored*: its final compression would have been at least that; it is
        counted as ``c + (1 − c)·(1 − k/E)`` (the earlier it overshot, the further it would
        have gone), and as a lower bound in the fit."""
        out = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
            c = t.user_attrs.get("compression")
            if c is None or self.knob not in t.params or not math.isfinite(float(c)):
                continue
            c = float(c)
            censored = t.state == TrialState.PRUNED and c > self.target
            if censored and self.epochs and t.last_step is not None:
                c += (1.0 - c) * max(0.0, 1.0 - (t.last_step + 1) / self.epochs)
            out.append(({k: float(v) for k, v in t.params.items() if isinstance(v, (int, float))}, c, censored))
        return out

    def propose(self, study: optuna.Study, trial: FrozenTrial, dist: FloatDistribution) -> float:
        """The control value for ``trial`` (whose other knobs are already in ``trial.params``)."""
        low, high, log = dist.low, dist.high, dist.log
        fwd = (lambda v: math.log(v)) if log else (lambda v: v)
        inv = (lambda u: math.exp(u)) if log else (lambda u: u)
        ulo, uhi = fwd(low), fwd(high)
        obs = self.observations(study)
        if not obs:
            u = (ulo + uhi) / 2
        else:
            u = self._solve(obs, trial, fwd, ulo, uhi)
        u += self._rng.uniform(-1, 1) * self.jitter * (uhi - ulo)
        return float(min(high, max(low, inv(min(uhi, max(ulo, u))))))

    def _solve(self, obs, trial: FrozenTrial, fwd, ulo: float, uhi: float) -> float:
        others = sorted(k for k in trial.params if k != self.knob and all(k in p for p, _, _ in obs))
        x = np.array([fwd(p[self.knob]) for p, _, _ in obs])
        c = np.array([v for _, v, _ in obs])
        censored = np.array([cens for _, _, cens in obs])
        if len(obs) == 1:
            slope = 1.0 / (uhi - ulo)  # prior: the whole range spans compression 0 -> 1
            step = (self.target - c[0]) / slope
            return float(x[0] + (min(step, -0.05 * (uhi - ulo)) if censored[0] else step))
        # weighted least squares on the logit of compression (a compression curve is
        # S-shaped: flat near 0 and near 1), the points nearest the target weighing most;
        # censored points enter as lower bounds (Tobit-style: their value is raised to the
        # fit's prediction wherever the fit says more)
        weight = np.where(censored, 1.0 / 0.35, 1.0 / (np.abs(c - self.target) + 0.05))  # a lower bound says little
        z, z_target = _logit(c), float(_logit(np.array([self.target]))[0])
        multi = len(obs) >= len(others) + 3
        cols = [x] + ([np.array([p[k] for p, _, _ in obs]) for k in others] if multi else [])
        mean = np.array([col.mean() for col in cols])
        scale = np.array([col.std() or 1.0 for col in cols])
        A = np.column_stack([np.ones(len(obs))] + [(col - m) / s for col, m, s in zip(cols, mean, scale)])
        ridge = 1e-3 * np.eye(A.shape[1])
        ridge[0, 0] = 0.0
        y = z.copy()
        sw = np.sqrt(weight)[:, None]
        for _ in range(5):
            w = np.linalg.lstsq(np.vstack([A * sw, np.sqrt(ridge)]), np.concatenate([y * sw[:, 0], np.zeros(A.shape[1])]), rcond=None)[0]
            y = np.where(censored, np.maximum(z, A @ w), z)
        if w[1] <= 1e-9 or not np.all(np.isfinite(w)):
            return self._bisect(x, c, ulo, uhi)
        rest = sum(w[2 + i] * (trial.params[k] - mean[1 + i]) / scale[1 + i] for i, k in enumerate(others)) if multi else 0.0
        return float(mean[0] + scale[0] * (z_target - w[0] - rest) / w[1])

    def _bisect(self, x: np.ndarray, c: np.ndarray, ulo: float, uhi: float) -> float:
        below = x[c < self.target]
        above = x[c >= self.target]
        lo = below.max() if below.size else ulo
        hi = above.min() if above.size else uhi
        if lo > hi:  # noisy: the two sides overlap
            lo, hi = hi, lo
        return float((lo + hi) / 2)
