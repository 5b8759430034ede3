"""RFC 8445 §5.1 candidate arithmetic."""

from __future__ import annotations

import pytest

from natkit.addr import Endpoint, Transport
from natkit.ice.candidate import (
    Candidate,
    CandidateType,
    candidate_priority,
    compute_foundation,
    pair_priority,
    prune_redundant,
)

HOST = Endpoint("192.0.2.10", 5000)
SRFLX = Endpoint("203.0.113.7", 40000)
STUN = Endpoint("198.51.100.1", 3478)


def test_priority_formula_matches_rfc_8445_5_1_2_1() -> None:
    assert candidate_priority(126, 65535, 1) == 2130706431  # the classic host value
    assert candidate_priority(100, 65535, 2) == 1694498814
    assert candidate_priority(0, 0, 256) == 0


@pytest.mark.parametrize(("tp", "lp", "comp"), [(127, 0, 1), (0, 65536, 1), (0, 0, 0)])
def test_priority_rejects_out_of_range(tp: int, lp: int, comp: int) -> None:
    with pytest.raises(ValueError):
        candidate_priority(tp, lp, comp)


def test_pair_priority_orders_by_min_then_max_then_role() -> None:
    g, d = 2130706431, 1694498815
    assert pair_priority(g, d) == (d << 32) + 2 * g + 1
    assert pair_priority(d, g) == (d << 32) + 2 * g
    assert pair_priority(g, d) > pair_priority(d, g)


def test_foundation_equal_exactly_when_inputs_equal() -> None:
    a = compute_foundation(CandidateType.SERVER_REFLEXIVE, HOST.host, STUN)
    assert a == compute_foundation(CandidateType.SERVER_REFLEXIVE, HOST.host, STUN)
    assert a != compute_foundation(CandidateType.SERVER_REFLEXIVE, "192.0.2.11", STUN)
    assert a != compute_foundation(CandidateType.HOST, HOST.host)
    assert a != compute_foundation(CandidateType.SERVER_REFLEXIVE, HOST.host, STUN, Transport.TCP)
    assert 1 <= len(a) <= 32 and a.isalnum()


def test_local_candidate_priority_and_base() -> None:
    host = Candidate.local(CandidateType.HOST, HOST, base=HOST)
    srflx = Candidate.local(
        CandidateType.SERVER_REFLEXIVE, SRFLX, base=HOST, server=STUN, related=HOST
    )
    assert host.priority > srflx.priority
    assert srflx.effective_base == HOST
    assert host.foundation != srflx.foundation


def test_candidate_validates_fields() -> None:
    with pytest.raises(ValueError):
        Candidate(
            foundation="",
            component=1,
            transport=Transport.UDP,
            priority=1,
            address=HOST,
            type=CandidateType.HOST,
        )
    with pytest.raises(ValueError):
        Candidate(
            foundation="x",
            component=1,
            transport=Transport.UDP,
            priority=0,
            address=HOST,
            type=CandidateType.HOST,
        )


def test_prune_drops_srflx_equal_to_its_host() -> None:
    # Not behind a NAT: the server-reflexive address equals the host address.
    host = Candidate.local(CandidateType.HOST, HOST, base=HOST)
    srflx = Candidate.local(CandidateType.SERVER_REFLEXIVE, HOST, base=HOST, server=STUN)
    other = Candidate.local(CandidateType.SERVER_REFLEXIVE, SRFLX, base=HOST, server=STUN)
    assert prune_redundant([srflx, host, other]) == [host, other]
