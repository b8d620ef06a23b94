"""Compaction while training: the run shrinks between epochs (network, Adam moments,
schedule, pruner state, checkpoint) and ends as an uncompacted run would; a run killed
with SIGKILL after a compaction resumes to the same end. A method that regrows (SD-SNN)
trains each epoch compact and decides on the dense shapes, as an uncompacted run would."""

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from dpap.compaction import CompactionError, compact, expand
from dpap.training.compact_run import CompactWhenShrunk, compact_run, dense_report
from dpap.training.compact_run import KEY
from dpap.pruning.compression import compression_of
from dpap.config import Config
from dpap.training.model_file import load_model, save_model
from dpap.snn.networks import build_network
from dpap.training.loop import TrainingRun

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def one_thread():
    """Runs compared bit for bit use one CPU thread (TrainingRun sets it for the process;
    restored afterwards)."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _cfg(epochs=5):
    cfg = Config()
    cfg.train.epochs = epochs
    cfg.train.threads = 1
    cfg.pruning.dpap.max_death_share = 0.3
    cfg.pruning.dpap.epsilon = 1.5
    cfg.pruning.dpap.conv.beta = cfg.pruning.dpap.fc.beta = 0.5
    return cfg


def _masks(run):
    n = len(run.net.blocks)
    return [run.pruner.unit_mask(i).cpu() for i in range(n)], [run.pruner.synapse_mask(i).cpu() for i in range(n)]


def _kill_units(run, layer, units):
    dead = torch.zeros(run.net.blocks[layer].units, dtype=torch.bool)
    dead[list(units)] = True
    run.pruner.kill_units(layer, dead)
    run.pruner.refresh_masks()
    run.pruner.apply_masks()


def test_compacting_while_training_ends_as_an_uncompacted_run(digits, one_thread, tmp_path):
    train, test = digits
    plain = TrainingRun(_cfg(), train, test, (1, 8, 8), 10, progress=False)
    plain.run()
    archs = []
    run = TrainingRun(_cfg(), train, test, (1, 8, 8), 10, progress=False,
                      callbacks=[CompactWhenShrunk(0.2), lambda r, m: archs.append((r.net.arch, sum(p.numel() for p in r.net.parameters())))])
    history = run.run()
    dense = build_network(_cfg().model.arch, (1, 8, 8), 10)
    # the network shrank epoch after epoch ...
    sizes = [n for _, n in archs]
    assert len(set(a for a, _ in archs)) >= 3 and sizes == sorted(sizes, reverse=True)
    assert sizes[-1] < 0.5 * sum(p.numel() for p in dense.parameters())
    # ... and the run ends with the dense shapes, the same masks and metrics as without compaction
    assert run.net.arch == plain.net.arch and KEY not in run.extra
    assert [tuple(p.shape) for p in run.net.parameters()] == [tuple(p.shape) for p in plain.net.parameters()]
    for a, b in zip(_masks(run), _masks(plain)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for m, p in zip(history, plain.history):
        assert m.params_retained == p.params_retained and m.compression == p.compression
        assert abs(m.test_accuracy - p.test_accuracy) <= 2 / len(test)  # float ties only
        assert m.train_loss == pytest.approx(p.train_loss, rel=1e-3)
    for (k, a), b in zip(run.net.state_dict().items(), plain.net.state_dict().values()):
        if "running" not in k:  # BN statistics of dead channels are not kept
            assert torch.allclose(a, b, atol=1e-4), k
    # the saved model is the usual dense, masked one
    model = load_model(save_model(tmp_path / "model.pt", run))
    assert model.net.arch == dense.arch
    assert compact(model.net, model.unit_masks, model.synapse_masks).parameters_retained() == history[-1].params_retained


def test_the_learning_rate_goes_on_through_a_compaction(digits, one_thread):
    """A compaction builds a new optimizer and schedule; the epoch after it trains at the
    schedule's rate, not at train.lr (the restarted cosine, train.restart_epoch)."""
    train, test = digits
    cfg = _cfg(epochs=6)
    cfg.train.restart_epoch, cfg.train.restart_lr = 4, 0.5
    archs = []
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False, callbacks=[CompactWhenShrunk(0.2), lambda r, m: archs.append(r.net.arch)])
    history = run.run()
    assert len(set(archs)) >= 2  # compacted at least once before the last epoch
    lr = cfg.train.lr  # epochs 0-3: (1 + cos(pi e / 4)) / 2; epochs 4-5: 0.5 (1 + cos(pi (e - 4) / 2)) / 2
    assert [m.lr for m in history] == pytest.approx([lr, lr * 0.8535534, lr * 0.5, lr * 0.1464466, lr * 0.5, lr * 0.25], rel=1e-6)


def test_optimizer_moments_and_pruner_state_follow_the_units(digits, one_thread):
    train, test = digits
    cfg = Config()  # the default prunes nothing in its first epochs: only the units killed here die
    cfg.train.epochs, cfg.train.threads = 3, 1
    twins = [TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False) for _ in range(2)]
    for run in twins:
        run.train_epoch(0)
        run.pruner.end_epoch(0)
        _kill_units(run, 0, [1, 5, 6])
        _kill_units(run, 2, range(0, 128, 3))
    big, small = twins
    before = big.optimizer.state_dict()
    report = compression_of(big.net, big.pruner)
    assert compact_run(small)
    kept = [torch.tensor(k) for k in small.extra[KEY]["kept"]]
    assert small.net.arch == "13C3-AP2-32C3-AP2-85FC-10FC"
    # the report is counted against the dense network, as before compaction
    assert dense_report(small).as_dict() == report.as_dict()
    # Adam's moments: those of the kept weights, the same step count
    after = small.optimizer.state_dict()
    fc_old, fc_new = before["state"][4], after["state"][4]  # layer 2 (FC after the conv blocks): weight
    cols = (kept[1][:, None] * 4 + torch.arange(4)).flatten()  # 32 channels of 2×2 positions
    assert torch.equal(fc_new["exp_avg"], fc_old["exp_avg"][kept[2]][:, cols])
    assert torch.equal(fc_new["exp_avg_sq"], fc_old["exp_avg_sq"][kept[2]][:, cols])
    assert torch.equal(fc_new["step"], fc_old["step"])
    assert torch.equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"][kept[0]])
    # DPAP's survival values and sliding thresholds: those of the kept units and synapses
    old_layers, new_layers = big.pruner.method.layers, small.pruner.method.layers
    assert torch.equal(new_layers[0].unit_survival.values, old_layers[0].unit_survival.values[kept[0]])
    assert torch.equal(new_layers[2].theta.value, old_layers[2].theta.value[kept[2]])
    assert torch.equal(new_layers[2].synapse_survival.values, old_layers[2].synapse_survival.values[kept[2]][:, cols])
    # one more epoch of both: same masks, weights equal up to float summation order
    for run in twins:
        run.train_epoch(1)
        run.pruner.end_epoch(1)
    big_w = big.net.blocks[2].synapse.weight.detach()[kept[2]][:, cols]
    assert torch.allclose(small.net.blocks[2].synapse.weight.detach(), big_w, atol=1e-5)
    small_units, _ = _masks(small)
    big_units, _ = _masks(big)
    assert all(torch.equal(s, b[k]) for s, b, k in zip(small_units, big_units, kept))


def test_a_run_killed_after_a_compaction_resumes_to_the_same_end(digits, one_thread, tmp_path):
    train, test = digits
    ckpt = tmp_path / "train.pt"
    data = tmp_path / "digits.pt"
    torch.save({"train": (train.x, train.y), "test": (test.x, test.y)}, data)
    script = textwrap.dedent(f"""
        import os, signal, torch
        from dpap.training.compact_run import CompactWhenShrunk
        from dpap.training import Split, TrainingRun
        import tests.training.test_compaction_training as t
        d = torch.load({str(data)!r})
        def kill(run, metrics):
            if metrics.epoch + 1 == 3:  # epoch 3 done, its checkpoint not written: the file holds epoch 2
                os.kill(os.getpid(), signal.SIGKILL)
        run = TrainingRun(t._cfg(4), Split(*d["train"]), Split(*d["test"]), (1, 8, 8), 10, checkpoint={str(ckpt)!r},
                          progress=False, callbacks=[CompactWhenShrunk(0.2), kill])
        run.run()
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 2 and state["extra"][KEY]["compactions"] >= 1  # a compacted checkpoint
    assert state["model"]["blocks.2.synapse.weight"].shape[0] < 128

    resumed = TrainingRun(_cfg(4), train, test, (1, 8, 8), 10, checkpoint=ckpt, progress=False, callbacks=[CompactWhenShrunk(0.2)])
    assert resumed.resumed and resumed.epoch == 2 and resumed.net.arch == state["extra"][KEY]["arch"]
    history = resumed.run()
    full = TrainingRun(_cfg(4), train, test, (1, 8, 8), 10, progress=False, callbacks=[CompactWhenShrunk(0.2)])
    full.run()
    strip = lambda ms: [dataclasses.replace(m, seconds=0.0) for m in ms]  # noqa: E731
    assert strip(history) == strip(full.history)
    assert all(torch.equal(a, b) for a, b in zip(resumed.net.state_dict().values(), full.net.state_dict().values()))
    for a, b in zip(_masks(resumed), _masks(full)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_sdsnn_which_may_bring_units_back_is_not_compacted_for_good(digits):
    train, test = digits
    cfg = _cfg(epochs=2)
    cfg.pruning.method = "sdsnn"
    run = TrainingRun(cfg, train, test, (1, 8, 8), 10, progress=False)
    _kill_units(run, 2, range(64))
    with pytest.raises(CompactionError, match="method 'sdsnn' can bring pruned units back"):
        compact_run(run)
    CompactWhenShrunk(0.2)(run, None)  # the callback leaves it alone
    assert run.net.arch == "16C3-AP2-32C3-AP2-128FC-10FC" and KEY not in run.extra


def test_dpap_with_regrowth_is_compacted_between_epochs_and_swaps_as_the_dense_run(digits, one_thread):
    """Regrowth swaps synapses between living units at a fixed count: no unit comes back, so
    the run is compacted for good like plain DPAP, and it swaps in the compact network as
    the dense run does in the dense one. A compaction inside an epoch, with the epoch's
    gradients summed in the dense shapes, is refused."""
    def cfg(share):
        c = _cfg(epochs=8)
        # decide in epochs 0-3, swap in 4-5: 2 % then 1 % of the living FC synapses, fewer
        # than the dead ones between living units, so the gradients choose which grow
        c.pruning.dpap.end_fraction, c.pruning.dpap.regrow_share = 0.5, 0.02
        c.train.compact_share = share
        return c

    def candidates(r):  # dead FC synapses whose two units live
        p = r.pruner
        return int((~p.synapses[2] & p.units[2][:, None] & p.input_mask(2)[None, :]).sum())

    train, test = digits
    plain = TrainingRun(cfg(0.0), train, test, (1, 8, 8), 10, progress=False)
    plain.run()
    archs = []
    pool = []
    run = TrainingRun(cfg(0.2), train, test, (1, 8, 8), 10, progress=False,
                      callbacks=[lambda r, m: (archs.append(r.net.arch), pool.append(candidates(r)))])
    history = run.run()
    assert run.pruner.method.permanent and run.pruner.method.swaps == 2
    assert len(set(archs[:4])) >= 2 and archs[4] != plain.net.arch  # compacted before the swaps
    regrown = [sum(row["regenerated"] for row in m.layers) for m in history]
    assert regrown[:4] == [0] * 4 and 0 < regrown[5] < regrown[4] < pool[4], (regrown, pool)
    assert regrown == [sum(row["regenerated"] for row in m.layers) for m in plain.history]
    assert len({m.params_retained for m in history[3:]}) == 1  # the swaps keep the count
    assert run.net.arch == plain.net.arch and KEY not in run.extra
    for a, b in zip(_masks(run), _masks(plain)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for m, p in zip(history, plain.history):
        assert m.params_retained == p.params_retained
        assert abs(m.test_accuracy - p.test_accuracy) <= 2 / len(test)  # float ties only
    # inside a quiet epoch the summed gradients are in the network's shapes: no compaction then
    mid = TrainingRun(cfg(0.0), train, test, (1, 8, 8), 10, progress=False)
    _kill_units(mid, 2, range(8))
    mid.net.zero_grad()
    torch.nn.functional.cross_entropy(mid.net(train.x[:32]).sum(0), train.y[:32]).backward()
    mid.pruner.mask_gradients()
    with pytest.raises(CompactionError, match="holds this epoch's regrowth gradients"):
        compact_run(mid)


def _sdsnn(epochs=12, share=0.1, protocol="fixed", restart=None):
    cfg = Config()
    cfg.pruning.method = "sdsnn"
    cfg.pruning.sdsnn.protocol = protocol
    cfg.pruning.sdsnn.fc_rate_gain = 1.3  # most FC neurons die early, and some of their sites regrow later
    cfg.train.epochs, cfg.train.threads, cfg.train.compact_share = epochs, 1, share
    cfg.train.restart_epoch = restart  # a restarted cosine: building a schedule resets its rate (continue_scheduler)
    return cfg


def test_a_method_that_regrows_trains_its_epochs_compact_and_ends_as_an_uncompacted_run(digits, one_thread):
    train, test = digits
    plain = TrainingRun(_sdsnn(share=0.0, restart=8), train, test, (1, 8, 8), 10, progress=False)
    plain.run()
    run = TrainingRun(_sdsnn(restart=8), train, test, (1, 8, 8), 10, progress=False)
    history = run.run()
    assert [m.lr for m in history] == [m.lr for m in plain.history] and history[8].lr == pytest.approx(0.5 * plain.cfg.train.lr)
    widths = [[row["width"] for row in m.layers] for m in history]
    regrown = [sum(row["regenerated"] for row in m.layers) for m in history]
    # epochs trained with most of the FC neurons removed, then sites regrew into them ...
    assert min(w[2] for w in widths) < 40 and widths[0][2] == 128, widths
    assert sum(regrown) > 0 and regrown == [sum(row["regenerated"] for row in m.layers) for m in plain.history]
    assert all(row["width"] == row["units"] for row in plain.history[-1].layers)
    # ... and the run decided exactly as the masked one: same masks, metrics, weights and moments
    assert run.net.arch == plain.net.arch and KEY not in run.extra
    for a, b in zip(_masks(run), _masks(plain)):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    for m, p in zip(history, plain.history):
        assert (m.compression, m.params_retained, m.test_accuracy) == (p.compression, p.params_retained, p.test_accuracy)
    for (k, a), b in zip(run.net.state_dict().items(), plain.net.state_dict().values()):
        assert torch.allclose(a.double(), b.double(), atol=1e-6), k
    for a, b in zip(run.optimizer.state_dict()["state"].values(), plain.optimizer.state_dict()["state"].values()):
        for name in ("exp_avg", "exp_avg_sq"):  # the removed units' moments decayed as zero gradients decay them
            assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-8), name
    assert torch.allclose(run.pruner.method.layers[2].shadow, plain.pruner.method.layers[2].shadow, atol=1e-6)  # values when pruned


def test_the_reference_protocol_trains_dense_and_a_method_may_not_decide_inside_the_epoch(digits):
    from dpap.training.compact_epoch import compacted_epoch

    train, test = digits
    ref = TrainingRun(_sdsnn(epochs=7, protocol="reference"), train, test, (1, 8, 8), 10, progress=False)
    assert all(row["width"] == row["units"] for m in ref.run() for row in m.layers)  # pruned shadow weights train on
    # without regeneration SD-SNN is permanent, yet its state stays dense: it trains epoch by epoch compact too
    lasting = _sdsnn(epochs=9)
    lasting.pruning.sdsnn.regenerate = False
    plain = _sdsnn(epochs=9, share=0.0)
    plain.pruning.sdsnn.regenerate = False
    runs = [TrainingRun(c, train, test, (1, 8, 8), 10, progress=False) for c in (lasting, plain)]
    histories = [r.run() for r in runs]
    assert min(row["width"] for row in histories[0][-1].layers if row["index"] == 2) < 40
    assert [m.compression for m in histories[0]] == [m.compression for m in histories[1]]
    with pytest.raises(CompactionError, match="keeps state for every unit in the dense shapes"):
        compact_run(runs[0])

    run = TrainingRun(_sdsnn(epochs=3), train, test, (1, 8, 8), 10, progress=False)
    _kill_units(run, 2, range(64))
    with pytest.raises(CompactionError, match="changed masks within an epoch"):
        with compacted_epoch(run, 0.1) as compacted:
            assert compacted and run.net.blocks[2].units == 64
            _kill_units(run, 2, [0])
    assert run.net.blocks[2].units == 128  # the dense network back, whatever happened


def test_expand_puts_a_compact_network_back():
    g = torch.Generator().manual_seed(0)
    net = build_network("6C3-BN-AP2-10FC-5FC", (1, 6, 6), 5)
    units = [torch.rand(6, generator=g) < 0.5, torch.rand(10, generator=g) < 0.5, torch.ones(5, dtype=torch.bool)]
    units[0][0] = units[1][0] = True
    c = compact(net, units)
    back = expand(c.net, c.kept, build_network("6C3-BN-AP2-10FC-5FC", (1, 6, 6), 5))
    assert back.arch == net.arch
    again = compact(back, units)
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(), c.net.state_dict().values()))
    dead = ~units[0]
    assert bool((back.blocks[0].synapse.weight[dead] == 0).all()) and bool((back.blocks[0].norm.weight[dead] == 0).all())
    assert bool((back.blocks[1].synapse.weight.view(10, 6, 9)[:, dead] == 0).all())
    with pytest.raises(CompactionError, match="expand: block 0 has weight"):
        expand(c.net, [torch.arange(6), c.kept[1], c.kept[2]], net)
