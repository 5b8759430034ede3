"""Issue 3 acceptance with real packets: behind natkit's TUN NAT, RFC 5780
discovery returns the emulated mapping and filtering for all nine
combinations, and hairpinning on/off is detected.

One lab holds a NAT per case beside one natkit STUN server pair; natcheck
runs from all client hosts at once (each run mostly waits out probe timeouts).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from natkit.nat.types import Filtering, Mapping
from natkit.net.netns import Lab
from natkit.net.netns.scenario import NatLab, build_nat_lab, run_natcheck, start_stun_server
from natkit.net.netns.topology import TunNat

from .conftest import assert_gone, require_lab

pytestmark = [pytest.mark.netns, pytest.mark.timeout(120)]

GRID = [(m, f) for m in Mapping for f in Filtering]
HAIRPIN = [(f, h) for f in Filtering for h in (True, False)]


def _engines() -> dict[str, TunNat]:
    engines = {
        f"grid-{m.value}-{f.value}": TunNat("port-restricted-cone", mapping=m, filtering=f)
        for m, f in GRID
    }
    engines.update(
        {
            f"hairpin-{f.value}-{h}": TunNat(
                "port-restricted-cone", filtering=f, hairpinning=h, seed=1
            )
            for f, h in HAIRPIN
        }
    )
    return engines


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    require_lab(tun=True, nft=False)
    workdir: Path = tmp_path_factory.mktemp("behavior-grid")
    lab = Lab(workdir=workdir)
    try:
        lab.open()
        labs: dict[str, NatLab] = {}
        for index, (name, engine) in enumerate(_engines().items()):
            labs[name] = build_nat_lab(lab, engine, name=f"g{index}", client=f"c{index}")
        start_stun_server(next(iter(labs.values())))
        with ThreadPoolExecutor(max_workers=len(labs)) as pool:
            found = dict(zip(labs, pool.map(run_natcheck, labs.values()), strict=True))
        yield found
    finally:
        lab.close()
        assert_gone(lab.prefix)


@pytest.mark.parametrize(
    ("mapping", "filtering"), [pytest.param(m, f, id=f"{m.value}/{f.value}") for m, f in GRID]
)
def test_rfc5780_mapping_and_filtering_all_nine(
    answers: dict[str, dict[str, Any]], mapping: Mapping, filtering: Filtering
) -> None:
    found = answers[f"grid-{mapping.value}-{filtering.value}"]
    assert (found["mapping"], found["filtering"]) == (mapping.value, filtering.value), found


@pytest.mark.parametrize(
    ("filtering", "hairpinning"),
    [pytest.param(f, h, id=f"{f.value}-{'on' if h else 'off'}") for f, h in HAIRPIN],
)
def test_hairpinning_on_and_off_with_real_packets(
    answers: dict[str, dict[str, Any]], filtering: Filtering, hairpinning: bool
) -> None:
    assert answers[f"hairpin-{filtering.value}-{hairpinning}"]["hairpinning"] is hairpinning
