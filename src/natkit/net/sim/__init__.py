"""The simulated internet: a virtual clock, and (built on it) hosts, links and NATs."""

from natkit.net.sim.clock import SimulationStalled, VirtualClockLoop, run_virtual

__all__ = ["SimulationStalled", "VirtualClockLoop", "run_virtual"]
