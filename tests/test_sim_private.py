"""The simulator runs a private mesh too (`mesh sim --network-key`): the same plan
delivers the same messages, and nothing on the simulated network is readable."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mesh import wire
from mesh.errors import MalformedError
from mesh.sim import Scenario, simulate
from mesh.sim.network import Network


def test_a_private_mesh_delivers_and_its_network_carries_nothing_readable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    captured: list[bytes] = []
    real_send = Network.send

    def capture(self: Network, src: Any, data: bytes, dst: Any) -> None:
        captured.append(bytes(data))
        real_send(self, src, data, dst)

    monkeypatch.setattr(Network, "send", capture)
    scenario = Scenario(peers=12, duration=300, churn=0.2, loss=0.02, messages=12, seed=5)
    sealed = simulate(dataclasses.replace(scenario, network_key=True)).to_json()
    sealed_datagrams, captured[:] = list(captured), []
    plain = simulate(scenario).to_json()
    assert sealed["network_key"] is True and plain["network_key"] is False
    assert sealed["delivered"] == sealed["acked"] == plain["acked"] > 0
    assert sealed["lost"] == [] and sealed["errors"] == {}
    assert len(sealed_datagrams) > 200 and captured  # both runs talked
    assert all(wire.decode_datagram(d) for d in captured)  # the open mesh: readable
    for data in sealed_datagrams:
        with pytest.raises(MalformedError):
            wire.decode_datagram(data)
