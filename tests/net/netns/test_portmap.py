"""natkit's port-mapping front on a thread inside a lab namespace, the way
lab code runs it (system.in_namespace)."""

from __future__ import annotations

import pytest

from natkit.nat.portmap.aio import default_gateway
from natkit.net.netns import KernelNat, Lab
from natkit.net.netns.system import in_namespace

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]


def test_default_gateway_is_the_calling_threads_namespaces(lab: Lab) -> None:
    """/proc/net is the route table of the process's (main thread's) namespace;
    a thread that entered a lab namespace must see that namespace's gateway."""
    nat = lab.add_nat("nat", KernelNat())
    client = lab.add_host("client", behind=nat)
    assert in_namespace(client.netns, default_gateway) == client.gateway
