"""What ``koda topology show`` prints: the torus, the placement against file order, the model's figures.

``describe`` gathers everything into one JSON-ready dict (the ``--json`` output, stable keys for
scripts); ``format_text`` lays the same dict out for people. Both are library functions so the
CLI stays a parser.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from koda.topology.collectives import hop_stats
from koda.topology.cost import group_latency
from koda.topology.groups import deepspeed_groups
from koda.topology.placement import Placement, naive_placement, place
from koda.topology.queue import path_latency_terms
from koda.topology.spec import Topology, WorkloadSpec


def _queue_figures(topology: Topology) -> dict:
    qs = topology.queue
    ou = qs.process()
    ports = 16  # independent egress ports, enough for a stable sample mean
    q = ou.simulate(qs.steps, qs.dt, seed=qs.seed, paths=ports, scheme=qs.scheme)
    queue_term, drift_term = path_latency_terms(q, qs.dt, topology.links.bandwidth, qs.sigma)
    window = qs.steps * qs.dt
    return {
        "scheme": qs.scheme,
        "seed": qs.seed,
        "dt_s": qs.dt,
        "steps": qs.steps,
        "ports": ports,
        "mu": qs.mu,
        "stationary_var": ou.stationary_var,
        "sample_mean": float(q[:, q.shape[1] // 10 :].mean()),
        "sample_var": float(q[:, q.shape[1] // 10 :].var()),
        "q99": ou.quantile(0.99),
        "l_path_queue_term_mean": float(queue_term.mean()),
        "l_path_drift_term_mean": float(drift_term.mean()),
        "l_path_mean": float((queue_term + drift_term).mean()),
        "mean_queue_delay_s": float(queue_term.mean() / window),
        "mu_over_bandwidth_s": qs.mu / topology.links.bandwidth,
    }


def _placement_figures(topology: Topology, placement: Placement) -> dict:
    nodes = placement.rank_nodes(topology)
    groups = deepspeed_groups(
        topology.world_size, topology.parallel.expert_parallel_size, topology.parallel.data_before_expert
    )
    mean, mx = hop_stats(topology.torus, nodes[groups.ep])
    s = topology.slots_per_host
    return {
        "method": placement.method,
        "hostfile_order": [topology.hosts[h].name for h in placement.order],
        "ranks": [
            {
                "rank": r,
                "host": topology.hosts[placement.order[r // s]].name,
                "coords": list(topology.hosts[placement.order[r // s]].coords),
            }
            for r in range(topology.world_size)
        ],
        "ep_groups": [
            {"ranks": g.tolist(), "mean_hops": float(m), "max_hops": int(x)}
            for g, m, x in zip(groups.ep, mean, mx, strict=True)
        ],
        "edp_groups": [g.tolist() for g in groups.edp],
        "cost": placement.cost(topology).as_dict(),
    }


def describe(
    topology: Topology,
    *,
    workload: WorkloadSpec | None = None,
    rank: int | None = None,
    message_bytes: float | None = None,
    swap_budget: int | None = None,
) -> dict:
    """Everything ``koda topology show`` reports, as plain data."""
    if workload is not None:
        topology = dataclasses.replace(topology, workload=workload)
    torus, link = topology.torus, topology.links.model()
    dist = torus.distance_matrix(topology.host_nodes)
    off = ~np.eye(len(dist), dtype=bool)
    mean_d = float(dist[off].mean()) if off.any() else 0.0
    diameter = int(dist.max())
    naive, placed = naive_placement(topology), place(topology, swap_budget=swap_budget)
    naive_fig, placed_fig = _placement_figures(topology, naive), _placement_figures(topology, placed)
    t0, t1 = naive_fig["cost"]["total_s"], placed_fig["cost"]["total_s"]
    out = {
        "file": topology.path,
        "torus": list(torus.dims),
        "positions": torus.size,
        "hosts": len(topology.hosts),
        "slots_per_host": topology.slots_per_host,
        "world_size": topology.world_size,
        "expert_parallel_size": topology.parallel.expert_parallel_size,
        "data_parallel_size": topology.world_size // topology.parallel.expert_parallel_size,
        "data_before_expert": topology.parallel.data_before_expert,
        "links": dataclasses.asdict(topology.links),
        "workload": dataclasses.asdict(topology.workload),
        "latency": {
            "mean_hops_between_hosts": mean_d,
            "diameter_hops": diameter,
            "l_mem_1hop_mean_queue_s": link.l_mem(1, topology.queue.mu),
            "l_mem_diameter_mean_queue_s": link.l_mem(diameter, topology.queue.mu),
            "l_mem_diameter_p99_queue_s": link.l_mem(diameter, topology.queue.process().quantile(0.99)),
        },
        "queue": _queue_figures(topology),
        "naive": naive_fig,
        "placement": placed_fig,
        "gain": {"step_comm_s_saved": t0 - t1, "relative": (t0 - t1) / t0 if t0 > 0 else 0.0},
    }
    if rank is not None:
        gl = group_latency(topology, placed, rank, message_bytes or 0.0)
        out["group_latency"] = dataclasses.asdict(gl)
    return out


# --- text ---------------------------------------------------------------------------------------


def _t(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds * 1e9:.3g} ns"


def _grid_map(d: dict) -> list[str]:
    """The placement as slices of the torus: a dims[0] x dims[1] grid of ranks per (c3, c4)."""
    dims = d["torus"]
    where = {tuple(r["coords"]): r["rank"] for r in d["placement"]["ranks"] if r["rank"] % d["slots_per_host"] == 0}
    E, s = d["expert_parallel_size"], d["slots_per_host"]
    width = len(f"{d['world_size'] - 1}/{(d['world_size'] - 1) // E}") + 1
    lines = []
    for c3 in range(dims[2]):
        for c4 in range(dims[3]):
            lines.append(f"  slice [*, *, {c3}, {c4}]  (cell: first rank/EP group, . = no host)")
            for c1 in range(dims[0]):
                cells = []
                for c2 in range(dims[1]):
                    r = where.get((c1, c2, c3, c4))
                    cells.append(("." if r is None else f"{r}/{r // E}").rjust(width))
                lines.append("   " + "".join(cells))
    if s > 1:
        lines.append(f"  (each host holds {s} consecutive ranks)")
    return lines


def format_text(d: dict) -> str:
    """Human-readable report of a ``describe`` dict."""
    lk, lat, q, w = d["links"], d["latency"], d["queue"], d["workload"]
    nv, pl = d["naive"]["cost"], d["placement"]["cost"]
    E = d["expert_parallel_size"]
    lines = [
        f"topology {d['file']}",
        f"torus {'x'.join(map(str, d['torus']))}: {d['positions']} positions, {d['hosts']} hosts x "
        f"{d['slots_per_host']} slots = world size {d['world_size']}",
        f"parallel: expert-parallel size {E} ({d['world_size'] // E} EP groups of consecutive ranks), "
        f"data-parallel size {d['data_parallel_size']} ({E} EDP groups strided by {E})"
        + (" [data_before_expert: roles swapped]" if d["data_before_expert"] else ""),
        "",
        "latency model  L_mem = alpha + beta*d + gamma*q",
        f"  alpha {_t(lk['alpha'])}, beta {_t(lk['beta'])}/hop, gamma {lk['gamma']:.3g} s/byte, "
        f"bandwidth {lk['bandwidth'] / 1e9:.3g} GB/s per link",
        f"  hops between hosts: mean {lat['mean_hops_between_hosts']:.3f}, diameter {lat['diameter_hops']}",
        f"  L_mem(1 hop, q=mu) {_t(lat['l_mem_1hop_mean_queue_s'])}; L_mem(diameter, q=mu) "
        f"{_t(lat['l_mem_diameter_mean_queue_s'])}; "
        f"L_mem(diameter, q=p99) {_t(lat['l_mem_diameter_p99_queue_s'])}",
        f"queue (OU, {q['scheme']} scheme, seed {q['seed']}, {q['ports']} ports x {q['steps']} steps of "
        f"{_t(q['dt_s'])})",
        f"  mean {q['sample_mean']:.4g} B (mu {q['mu']:.4g}), variance {q['sample_var']:.4g} "
        f"(sigma^2/2theta {q['stationary_var']:.4g}), p99 depth {q['q99']:.4g} B",
        f"  L_path over {_t(q['steps'] * q['dt_s'])}: "
        f"integral Q/B dt = {q['l_path_queue_term_mean']:.4g} s^2 "
        f"(mean queueing delay {_t(q['mean_queue_delay_s'])}, mu/B {_t(q['mu_over_bandwidth_s'])}); "
        f"sigma*dQ term {q['l_path_drift_term_mean']:.4g} (seed units, mean 0)",
        "",
        f"workload per step: dense {w['dense_params']:.3g} + expert {w['expert_params']:.3g} params x "
        f"{w['bytes_per_param']} B; {w['moe_layers']} MoE layers, {w['tokens_per_rank']} tokens/rank, "
        f"hidden {w['hidden']}, top-{w['top_k']}",
        f"{'':28}{'file order':>14}{'placed':>14}",
    ]
    rows = [
        ("EP mean hops", "ep_mean_hops", "{:.3f}"),
        ("EP max hops", "ep_max_hops", "{}"),
        ("DP ring mean hops", "dp_ring_mean_hops", "{:.3f}"),
        ("EDP ring mean hops", "edp_ring_mean_hops", "{:.3f}"),
    ]
    lines += [f"  {label:<26}{fmt.format(nv[k]):>14}{fmt.format(pl[k]):>14}" for label, k, fmt in rows]
    trows = [
        ("EP all-to-all", "ep_all_to_all_s"),
        ("dense ZeRO-3 (DP)", "dense_zero_s"),
        ("expert ZeRO-3 (EDP)", "expert_zero_s"),
        ("total", "total_s"),
    ]
    lines += [f"  {label:<26}{_t(nv[k]):>14}{_t(pl[k]):>14}" for label, k in trows]
    lines += [
        f"placement: {d['placement']['method']}; modelled step communication {_t(nv['total_s'])} -> "
        f"{_t(pl['total_s'])} ({100 * d['gain']['relative']:.1f}% less than file order)",
        "",
        "EP groups (placed): ranks, hosts, hops",
    ]
    ranks = d["placement"]["ranks"]
    for i, g in enumerate(d["placement"]["ep_groups"]):
        hosts = []
        for r in g["ranks"]:
            name = ranks[r]["host"]
            if name not in hosts:
                hosts.append(name)
        lines.append(
            f"  {i:>3}: ranks {g['ranks'][0]}-{g['ranks'][-1]}  mean {g['mean_hops']:.2f} max "
            f"{g['max_hops']}  {' '.join(hosts)}"
        )
    lines += ["", "placement map"] + _grid_map(d)
    if "group_latency" in d:
        gl = d["group_latency"]
        lines += [
            "",
            f"group latency of rank {gl['rank']} ({gl['host']} at {gl['coords']}):",
            f"  EP all-to-all {_t(gl['ep_all_to_all_s'])} over ranks {gl['ep_ranks']}",
            f"  EDP all-reduce {_t(gl['edp_all_reduce_s'])} over ranks {gl['edp_ranks']}",
            f"  DP all-reduce {_t(gl['dp_all_reduce_s'])} over all {d['world_size']} ranks",
        ]
    return "\n".join(lines)
