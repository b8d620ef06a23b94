"""The spiking network itself: LIF neurons (Eq. 1-2, surrogate Eq. 4) and their fused
kernels, input encodings, and networks built from the paper's notation. Knows nothing of
pruning."""

from dpap.snn.encoding import encode
from dpap.snn.networks import ArchError, SpikingNetwork, build_network, parse_arch
from dpap.snn.neurons import LIF, firing_rate_mse

__all__ = ["ArchError", "LIF", "SpikingNetwork", "build_network", "encode", "firing_rate_mse", "parse_arch"]
