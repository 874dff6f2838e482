"""``koda topology show``: text and JSON, with the placement compared to file order."""

import json

from koda import cli
from tests.topology._topology_files import EXAMPLE_4D, LOOPBACK


def test_show_text_has_torus_placement_groups_and_model(capsys):
    assert cli.main(["topology", "show", str(EXAMPLE_4D), "--swap-budget", "0"]) == 0
    out = capsys.readouterr().out
    for needle in (
        "torus 4x4x2x2: 64 positions",
        "L_mem = alpha + beta*d + gamma*q",
        "queue (OU, exact",
        "file order",
        "EP all-to-all",
        "less than file order",
        "EP groups (placed)",
        "slice [*, *, 1, 1]",
    ):
        assert needle in out


def test_show_json_is_complete_and_consistent(capsys):
    assert cli.main(["topology", "show", str(EXAMPLE_4D), "--json", "--swap-budget", "0", "--rank", "3"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["world_size"] == 64 and d["expert_parallel_size"] == 8 and len(d["placement"]["ep_groups"]) == 8
    assert d["placement"]["cost"]["total_s"] < d["naive"]["cost"]["total_s"] and d["gain"]["relative"] > 0.15
    assert sorted(d["placement"]["hostfile_order"]) == sorted(d["naive"]["hostfile_order"])
    assert d["group_latency"]["rank"] == 3 and 3 in d["group_latency"]["ep_ranks"]
    q = d["queue"]
    assert abs(q["sample_mean"] - q["mu"]) < 0.05 * q["mu"]


def test_show_overrides_and_errors(capsys):
    assert cli.main(["topology", "show", str(LOOPBACK), "--dense-params", "1e6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["workload"]["dense_params"] == 1e6
    assert cli.main(["topology", "show", str(LOOPBACK), "--rank", "9"]) == 2
    assert "--rank 9 outside 0..1" in capsys.readouterr().err
