#!/usr/bin/env bash
# Multi-node launch with DeepSpeed's OpenMPI runner (mpirun), from one node of the allocation.
#
# Needs: OpenMPI (`ompi_info` on PATH), mpirun able to start processes on every host, and the
# same checkout + virtualenv on every host.
#
#   launchers/openmpi.sh launchers/topologies/torus-4x4x2x2.yaml --config small --world-size 64
#
# DeepSpeed's OpenMPI runner refuses --include/--exclude/--num_nodes, so koda launch passes only
# the hostfile: mpirun maps ranks by slot in hostfile order, which carries the placement. In effect:
#
#   DS_ENV_FILE=runs/launch/torus-4x4x2x2.env deepspeed --hostfile runs/launch/torus-4x4x2x2.hostfile \
#       --master_addr <rank-0 host> --master_port 29500 --launcher openmpi --module koda.train --config small --world-size 64
#
# mpirun defaults to `--mca btl_tcp_if_include eth0` under DeepSpeed; pass another interface with
# DeepSpeed's --launcher_args if your nodes name it differently (edit the printed --dry-run command).
set -euo pipefail
TOPOLOGY=${1:?usage: launchers/openmpi.sh TOPOLOGY.yaml [training args...]}
shift
exec koda launch --topology "$TOPOLOGY" --launcher openmpi -- "$@"
