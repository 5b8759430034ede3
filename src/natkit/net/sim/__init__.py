"""The simulated internet: a virtual clock, and (built on it) hosts, links and NATs."""

from natkit.net.sim.clock import SimulationFailed, SimulationStalled, VirtualClockLoop, run_virtual
from natkit.net.sim.network import Internet, Link, Middlebox, SimHost, TraceRecord
from natkit.net.sim.stack import SimStack

__all__ = [
    "Internet",
    "Link",
    "Middlebox",
    "SimHost",
    "SimStack",
    "SimulationFailed",
    "SimulationStalled",
    "TraceRecord",
    "VirtualClockLoop",
    "run_virtual",
]
