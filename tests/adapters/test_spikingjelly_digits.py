"""The issue's judgement, on digits, for a SpikingJelly multi-step CNN (test_snntorch_digits.py:
the same for snnTorch), each attached with ``dpap.attach`` and trained in a plain loop, prune gradually
(no epoch above 10 points of compression, pruning starts in the first third) to at least
40 % at no more than 2 points below the same network trained unpruned from the same seed;
``dpap.compact`` gives a smaller model with the same outputs.

Accuracy is compared as the mean of the last three epochs' test accuracy: one epoch to the
next moves by up to ±1.5 points on digits' 360 test images (both runs, pruned or not)."""

import torch

import dpap
from adapter_nets import EPOCHS, judge, params, same_outputs, spikingjelly_net, train_digits


def test_spikingjelly_multistep_cnn_prunes_gradually_and_compacts(digits, report):
    train = digits[0]
    torch.manual_seed(0)
    base, t_base = train_digits(spikingjelly_net((16, 64)), digits, EPOCHS, sj=True)
    torch.manual_seed(0)
    net = spikingjelly_net((16, 64))
    pruner = dpap.attach(net, method="dpap", example_input=train.x[:2])  # DPAP's defaults, no run length
    assert pruner.layers == ["conv1.0", "conv2", "fc"]
    history, seconds = train_digits(net, digits, EPOCHS, pruner, sj=True)
    judge(base, history, report, "spikingjelly", seconds)
    small = dpap.compact(net)
    assert params(small) < params(net)
    report("spikingjelly compact", {"params": params(net), "params_compact": params(small),
                                    "conv2_channels": small.conv2.out_channels, "unpruned_seconds": round(t_base, 1)})
    same_outputs(net, small, digits[1].x, sj=True)
    assert small.conv2.out_channels == int(pruner.masks()["conv2"]["units"].sum())
    assert small.bn2.num_features == small.conv2.out_channels


