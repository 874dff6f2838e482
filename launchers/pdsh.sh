#!/usr/bin/env bash
# Multi-node launch over ssh with DeepSpeed's default pdsh runner, from one login node.
#
# Needs: passwordless ssh from here to every host of the topology file, pdsh installed here, and
# the same checkout + virtualenv at the same path on every host (pdsh runs `cd $PWD; python ...`).
#
#   launchers/pdsh.sh launchers/topologies/torus-4x4x2x2.yaml --config small --world-size 64
#
# koda launch writes runs/launch/<topology>.hostfile in placement order and an env file that
# DeepSpeed exports on every node (DS_ENV_FILE), then runs, in effect:
#
#   DS_ENV_FILE=runs/launch/torus-4x4x2x2.env deepspeed --hostfile runs/launch/torus-4x4x2x2.hostfile \
#       --master_addr <rank-0 host> --master_port 29500 --num_nodes 64 --launcher pdsh \
#       --module koda.train --config small --world-size 64
#
# (--dry-run prints the exact command without running anything.)
set -euo pipefail
TOPOLOGY=${1:?usage: launchers/pdsh.sh TOPOLOGY.yaml [training args...]}
shift
koda topology show "$TOPOLOGY" | sed -n '/file order/,/less than file order/p'
exec koda launch --topology "$TOPOLOGY" --launcher pdsh -- "$@"
