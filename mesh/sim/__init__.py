"""`mesh sim`: the real Node and DHT code on an in-memory network with a virtual clock.

    from mesh.sim import Scenario, simulate
    report = simulate(Scenario(peers=50, duration=3600, churn=0.3, loss=0.05, seed=7))
    report.to_json()["delivered"]

Modules: `clock` (an asyncio loop whose time jumps when idle), `network` (datagrams in
memory: latency, loss, duplication, partitions), `plan` (the scenario, decided from the
seed), `scenario` (plays the plan on real nodes), `report` (numbers, JSON, plot).
"""

from mesh.errors import SimulationStalled
from mesh.sim.clock import VirtualTimeLoop, run_virtual
from mesh.sim.network import Impairments, LinkModel, Network
from mesh.sim.plan import Event, Plan, Scenario, make_plan, sim_config, sim_options
from mesh.sim.report import Report, Sent, plot
from mesh.sim.scenario import Simulation, simulate

__all__ = [
    "Event",
    "Impairments",
    "LinkModel",
    "Network",
    "Plan",
    "Report",
    "Scenario",
    "Sent",
    "Simulation",
    "SimulationStalled",
    "VirtualTimeLoop",
    "make_plan",
    "plot",
    "run_virtual",
    "sim_config",
    "sim_options",
    "simulate",
]
