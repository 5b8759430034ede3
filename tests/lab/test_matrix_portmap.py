"""The port-mapping rows of the traversal matrix (ECC §6.1): PCP and NAT-PMP
give a public mapping behind one NAT that the internet reaches, and one
reported as not public behind NATs in tandem, which nothing reaches."""

from __future__ import annotations

import pytest

from natkit.lab.matrix import run_matrix, select
from natkit.lab.matrix_portmap import scenarios


@pytest.mark.parametrize("scenario", scenarios(), ids=lambda s: s.name)
def test_portmap_rows_come_out_as_expected(scenario) -> None:  # type: ignore[no-untyped-def]
    (result,) = run_matrix([scenario], seed=0)
    assert result.ok, (result.expected, result.observed)
    assert result.capture.sent  # the PCP/NAT-PMP exchange is in the ladder and pcap


def test_portmap_rows_are_part_of_the_whole_matrix() -> None:
    from natkit.lab.matrix import all_scenarios

    names = [s.name for s in select(all_scenarios(), "portmap/*")]
    assert names == [s.name for s in scenarios()]
