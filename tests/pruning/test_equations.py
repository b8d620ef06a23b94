"""Each equation of the paper against numbers computed by hand (METHOD.md, Eq. 1-17)."""

import math

import pytest
import torch

from dpap.pruning.dpap.importance import (
    SlidingThreshold,
    bcm,
    dendritic_spine,
    dendritic_spine_reference,
    hebb,
    spike_trace,
    static_trace,
    stdp,
)
from dpap.snn.neurons import LIF, LIFFunction, firing_rate_mse, lif_reference, rectangle_surrogate
from dpap.pruning.dpap.survival import SurvivalFunction, decay_factor, delta, normalized, survival_increment, update_survival


def test_lif_eq1_2_by_hand():
    # two neurons, three steps, λ=0.2, V_th=0.5
    current = torch.tensor([[0.3, 0.6], [0.3, 0.1], [0.45, 0.5]])
    # neuron 0: u=0.3 (no spike); u=0.2*0.3+0.3=0.36 (no); u=0.2*0.36+0.45=0.522 (spike)
    # neuron 1: u=0.6 spike; reset -> u=0.2*0.6*0+0.1=0.1 (no); u=0.02+0.5=0.52 spike
    out = LIF(decay=0.2, threshold=0.5)(current)
    assert out.tolist() == [[0.0, 1.0], [0.0, 0.0], [1.0, 1.0]]


def test_lif_threshold_is_inclusive_and_configurable():
    out = LIF(decay=0.0, threshold=1.0)(torch.tensor([[1.0, 0.999]]))
    assert out.tolist() == [[1.0, 0.0]]


def test_rectangle_surrogate_eq4():
    u = torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0, 1.2])
    # (1/a)·1[|u − 0.5| < a/2], a = 1
    assert rectangle_surrogate(u, 0.5, 1.0).tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    # a = 0.5: window (0.25, 0.75), height 2
    assert rectangle_surrogate(u, 0.5, 0.5).tolist() == [0.0, 0.0, 2.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("detach_reset", [False, True])
def test_lif_backward_matches_autograd_of_the_equations(detach_reset):
    torch.manual_seed(0)
    current = (torch.randn(6, 4, 5, dtype=torch.float64) * 0.7 + 0.4).requires_grad_()
    grad_out = torch.randn(6, 4, 5, dtype=torch.float64)
    fast = LIFFunction.apply(current, 0.2, 0.5, 1.0, detach_reset)
    (fast * grad_out).sum().backward()
    g_fast = current.grad.clone()
    current.grad = None
    ref = lif_reference(current, 0.2, 0.5, 1.0, detach_reset)
    (ref * grad_out).sum().backward()
    assert torch.equal(fast, ref)
    assert torch.allclose(g_fast, current.grad, atol=1e-12)


def test_lif_gradient_through_reset_by_hand():
    # one neuron, two steps: u0 = I0 = 0.6 -> o0 = 1; u1 = λ·u0·(1 − o0) + I1 = I1 = 0.7 -> o1 = 1
    # L = o0 + o1. dL/dI1 = σ'(u1) = 1. dL/dI0 = σ'(u0)·(1 + dL/du1·(−λ·u0)) + dL/du1·λ·(1 − o0)
    #       = 1·(1 − 0.2·0.6) + 0 = 0.88
    current = torch.tensor([[0.6], [0.7]], requires_grad=True)
    LIF()(current).sum().backward()
    assert current.grad[:, 0].tolist() == pytest.approx([0.88, 1.0])


def test_firing_rate_mse_eq3_by_hand():
    spikes = torch.tensor([[[1.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]]])  # T=2, N=1, 3 classes
    # rate = [1, 0, 0.5]; label 0 -> (1-1)^2 + 0 + 0.25 = 0.25
    assert float(firing_rate_mse(spikes, torch.tensor([0]), 3)) == pytest.approx(0.25)
    # label 2 -> 1 + 0 + 0.25
    assert float(firing_rate_mse(spikes, torch.tensor([2]), 3)) == pytest.approx(1.25)


def test_spike_trace_eq5_by_hand():
    # S[t+1] = τ S[t] + o[t+1], τ = 0.5; spikes 1,0,1 -> 1, 0.5, 1.25
    spikes = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]])  # [T=3, N=1, 2 neurons]
    assert spike_trace(spikes, 0.5).tolist() == [[1.25, 1.0]]
    assert spike_trace(spikes, 0.5, average=True)[0].tolist() == pytest.approx([1.25 / 3, 1 / 3])


def test_spike_trace_eq6_conv_sums_positions():
    spikes = torch.zeros(2, 1, 2, 2, 2)  # T=2, N=1, C=2, 2x2
    spikes[0, 0, 0, 0, 0] = 1  # channel 0, step 0, one position
    spikes[1, 0, 0] = 1  # channel 0, step 1, all four positions
    spikes[1, 0, 1, 1, 1] = 1  # channel 1, step 1, one position
    # channel 0: 0.5·1 + 4 = 4.5; channel 1: 1
    assert spike_trace(spikes, 0.5, conv=True).tolist() == [[4.5, 1.0]]


def test_static_trace_equals_trace_of_repeated_input():
    x = torch.rand(3, 2, 4, 4)
    rep = x.unsqueeze(0).expand(4, *x.shape)
    assert torch.allclose(static_trace(x, 0.5, 4, conv=True), spike_trace(rep, 0.5, conv=True))


def test_bcm_eq7_by_hand():
    pre = torch.tensor([[1.0, 2.0], [0.0, 1.0]])  # N=2 samples, 2 pre neurons
    post = torch.tensor([[1.0, 0.5], [2.0, 1.0]])  # N=2, 2 post neurons
    theta = torch.tensor([1.0, 1.0])
    # sample 0: post·(post−θ) = [0, -0.25]; sample 1: [2, 0]
    # BCM[i,j] = Σ_n pre[n,j]·g[n,i]
    # i=0: j0: 1·0 + 0·2 = 0; j1: 2·0 + 1·2 = 2
    # i=1: j0: 1·(−0.25) + 0 = −0.25; j1: 2·(−0.25) + 1·0 = −0.5
    assert bcm(pre, post, theta).tolist() == [[0.0, 2.0], [-0.25, -0.5]]
    assert hebb(pre, post).tolist() == [[1.0, 4.0], [0.5, 2.0]]


def test_sliding_threshold_eq8_over_unequal_batches():
    torch.manual_seed(1)
    batches = [torch.rand(n, 3) for n in (5, 5, 2)]  # a smaller last batch
    th = SlidingThreshold(3)
    values = [th.update(b) for b in batches]
    # equal batches: Eq. 8 with the batch mean, θ = (θ·(Num−1) + S)/Num
    eq8 = (batches[0].mean(0) * 1 + batches[1].mean(0)) / 2
    assert torch.allclose(values[1], eq8, atol=1e-6)
    # after the small batch: the mean over every sample seen, not over batches
    assert torch.allclose(values[2], torch.cat(batches).mean(0), atol=1e-6)
    assert th.count == 12


def test_sliding_threshold_fold_from_batch_sums_and_across_ranks():
    """fold: θ from each batch's sum (the DPAP observer shares that sum with Eq. 11); with
    ``reduce`` (data-parallel: a sum over ranks) the sums and counts of every rank."""
    torch.manual_seed(2)
    batches = [torch.rand(n, 3) for n in (4, 4, 3)]
    th = SlidingThreshold(3)
    for i, b in enumerate(batches):
        got = th.fold(b.sum(0), b.shape[0])
        assert got.dtype == torch.float32
        assert torch.allclose(got.double(), torch.cat(batches[: i + 1]).double().mean(0), atol=1e-7)
    assert th.count == 11
    # two ranks with unequal shares (4 and 3 samples): θ is the mean over all 7, not the
    # mean of the two ranks' means; `reduce` adds the other rank's sums and count
    other = batches[2]
    two_ranks = SlidingThreshold(3)
    reduce = lambda t: t + torch.cat([other.sum(0).double(), torch.tensor([3.0], dtype=torch.float64)])  # noqa: E731
    got = two_ranks.fold(batches[0].sum(0), 4, reduce=reduce)
    assert torch.allclose(got.double(), torch.cat([batches[0], other]).double().mean(0), atol=1e-7)
    assert two_ranks.count == 7


def test_dendritic_spine_eq11_by_hand():
    post_sum = torch.tensor([2.0, 3.0])
    bcm_e = torch.tensor([[1.0, -0.5], [0.0, 2.0]])
    assert dendritic_spine(post_sum, bcm_e).tolist() == [1.0, 6.0]
    # reference code: minmax(Σ_j BCM) · minmax(Σ S) = [0, 1]·[0, 1]
    assert dendritic_spine_reference(post_sum, bcm_e).tolist() == [0.0, 1.0]


def test_stdp_by_hand():
    # one pre and one post neuron, T=3: pre fires at t0, post at t1 -> LTP = o_post[1]·S_pre[0] = 1
    pre = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])
    post = torch.tensor([[[0.0]], [[1.0]], [[0.0]]])
    assert stdp(pre, post, 0.5).tolist() == [[1.0]]
    # reversed order: depression of the same size
    assert stdp(post, pre, 0.5).tolist() == [[-1.0]]


def test_normalisation_delta_increment_eq12_15_by_hand():
    x = torch.tensor([2.0, 4.0, 6.0])
    n = normalized(x)
    assert n.tolist() == [0.0, 0.5, 1.0]
    d = delta(n, 0.5)  # 2·n − ε
    assert d.tolist() == [-0.5, 0.5, 1.5]
    assert survival_increment(d, 2.0).tolist() == [-0.5, 2.5, 3.5]
    # F ← γF + exp(−e/η)·ΔF with F=1, γ=0.999, e=1, η=2
    F = update_survival(torch.ones(3), survival_increment(d, 2.0), 0.999, decay_factor(1, 2.0))
    f = math.exp(-0.5)
    assert F.tolist() == pytest.approx([0.999 - 0.5 * f, 0.999 + 2.5 * f, 0.999 + 3.5 * f])


def test_normalisation_uses_living_entries_and_percentile_option():
    x = torch.tensor([-100.0, 0.0, 1.0, 2.0, 3.0, 4.0])
    alive = torch.tensor([False, True, True, True, True, True])
    assert normalized(x, alive)[1:].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    # 75th percentile of [0..4] is 3: (x − 0)/3 clipped to [0, 1]
    assert normalized(x, alive, "percentile75")[1:].tolist() == pytest.approx([0, 1 / 3, 2 / 3, 1.0, 1.0])
    assert normalized(torch.tensor([3.0, 3.0])).tolist() == [0.5, 0.5]


def test_decay_schedules():
    assert decay_factor(0, 10.0) == 1.0
    assert decay_factor(5, 10.0) == pytest.approx(math.exp(-0.5))
    # the authors' step function with pruning starting at epoch 5, η = 12
    assert decay_factor(4, 12.0, start_epoch=5, step=True) == 0.0
    assert decay_factor(5, 12.0, start_epoch=5, step=True) == 1.0
    assert decay_factor(16, 12.0, start_epoch=5, step=True) == 1.0
    assert decay_factor(17, 12.0, start_epoch=5, step=True) == pytest.approx(math.exp(-1))


def test_unit_with_negative_delta_dies_when_the_formula_says():
    # importance [0, 1, 1] every epoch: unit 0 has δ = −ε, the others δ = 2 − ε > 0.
    # β = 1, ε = 0.5, η = 2, γ = 0.999, by hand:
    #   e0: 0.999·1 − 0.5            = 0.499
    #   e1: 0.999·0.499 − 0.5·e^-0.5 = 0.19524
    #   e2: 0.999·0.19524 − 0.5·e^-1 = 0.01110
    #   e3: 0.999·0.01110 − 0.5·e^-1.5 = −0.10048 -> pruned at epoch 3
    sf = SurvivalFunction((3,), beta=1.0)
    deaths = []
    for epoch in range(300):
        died = sf.step(torch.tensor([0.0, 1.0, 1.0]), epsilon=0.5, protect=2.0, gamma=0.999, factor=decay_factor(epoch, 2.0))
        deaths += [(epoch, i) for i in died.nonzero().flatten().tolist()]
        if epoch == 2:
            assert sf.values[0].item() == pytest.approx(0.011103, abs=1e-5)
    assert deaths == [(3, 0)]
    assert sf.alive.tolist() == [False, True, True]
    # pruning is permanent: the dead unit stays dead even if it becomes important
    sf.step(torch.tensor([5.0, 0.0, 1.0]), epsilon=0.5, protect=2.0, gamma=0.999, factor=1.0)
    assert not sf.alive[0]


def test_rank_normalisation_by_hand():
    # mid-ranks among the living entries: values 5, 1, 1, 9 -> ranks 2, 0.5, 0.5, 3 of n − 1 = 3
    x = torch.tensor([5.0, 1.0, 1.0, 9.0, -50.0])
    alive = torch.tensor([True, True, True, True, False])
    assert normalized(x, alive, "rank")[:4].tolist() == pytest.approx([2 / 3, 0.5 / 3, 0.5 / 3, 1.0])
    # a heavy tail: min-max puts 9 of 10 values near 0, rank spreads them evenly
    tail = torch.tensor([0.0, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 100.0])
    assert (delta(normalized(tail), 0.5) < 0).sum() == 9
    assert (delta(normalized(tail, method="rank"), 0.5) < 0).sum() == 3  # ranks 0, 1/9, 2/9 < ε/2


def test_bounded_survival_and_death_cap_by_hand():
    from dpap.pruning.dpap.survival import cap_deaths

    # five units, β = 1; rank normalisation of importance 0..4 -> 0, .25, .5, .75, 1
    f = SurvivalFunction((5,), beta=1.0)
    imp = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    # ε = 1: δ = 2·rank − 1 = −1, −.5, 0, .5, 1; C = 2 on δ ≥ 0; γ = 1, factor 1
    died = f.step(imp, epsilon=1.0, protect=2.0, gamma=1.0, factor=1.0, normalization="rank", ceiling=1.0)
    # F = 1 + ΔF = 0, .5, 3, 3.5, 4 -> capped at β = 1: 0, .5, 1, 1, 1; F = 0 is not < 0
    assert f.values.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert not died.any()
    # without the ceiling the protected units bank credit (the paper)
    g = SurvivalFunction((5,), beta=1.0)
    g.step(imp, epsilon=1.0, protect=2.0, gamma=1.0, factor=1.0, normalization="rank")
    assert g.values.tolist() == [0.0, 0.5, 3.0, 3.5, 4.0]
    # second epoch, same importance: F = −1, 0, 1, 1, 1 -> unit 0 dies
    died = f.step(imp, epsilon=1.0, protect=2.0, gamma=1.0, factor=1.0, normalization="rank", ceiling=1.0)
    assert died.tolist() == [True, False, False, False, False]
    # cap: of the candidates with F < 0, the lowest F die first, ties by position
    values = torch.tensor([-0.5, -2.0, 3.0, -2.0, -0.1])
    cand = values < 0
    assert cap_deaths(values, cand, 2).tolist() == [False, True, False, True, False]
    assert cap_deaths(values, cand, 3).tolist() == [True, True, False, True, False]
    assert cap_deaths(values, cand, None).tolist() == cand.tolist()
    assert not cap_deaths(values, cand, 0).any()


def test_capped_deaths_wait_for_the_next_epoch():
    # four units, all equally useless (δ = −ε = −1 for all: constant importance maps to 0.5,
    # ε = 2 -> δ = −1), β = 0.5: all have F < 0 after one epoch; at most 1 dies per epoch
    f = SurvivalFunction((4,), beta=0.5)
    imp = torch.zeros(4)
    deaths = []
    for _ in range(4):
        died = f.step(imp, epsilon=2.0, protect=0.0, gamma=1.0, factor=1.0, normalization="rank", ceiling=0.5, max_deaths=1)
        deaths.append(died.nonzero().flatten().tolist())
    assert deaths == [[0], [1], [2], [3]]
    assert not f.alive.any()
