"""natkit: NAT traversal for real-time communication.

STUN, TURN, ICE, SIP with Outbound, RTP media and a NAT lab, built on sans-IO
protocol cores that run on real sockets, a simulated internet or Linux
network namespaces. See DESIGN.md for the architecture.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("natkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
