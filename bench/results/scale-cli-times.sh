#!/bin/bash
# --help and status, main (a copy of /work/main at /tmp/scl-main, byte-compiled) and this branch
# alternately, N rounds, from the shell (the figures of RESULTS.md, issue 13).
P=/opt/netlab/bin/python
cd /tmp   # python -m puts the cwd first on sys.path
N=${1:-20}
declare -A T
for side in main wt; do mkdir -p /tmp/scl-state-$side; done
PYTHONPATH=/work/wt-scale NETLAB_STATE_DIR=/tmp/scl-state-wt $P -m netlab up --name scl-stw >/dev/null 2>&1
PYTHONPATH=/tmp/scl-main NETLAB_STATE_DIR=/tmp/scl-state-main $P -m netlab up --name scl-stm >/dev/null 2>&1
for i in $(seq $N); do
  for side in main wt; do
    root=$([ $side = main ] && echo /tmp/scl-main || echo /work/wt-scale)
    for cmd in "--help" "status"; do
      s=$(date +%s%N); PYTHONPATH=$root NETLAB_STATE_DIR=/tmp/scl-state-$side $P -m netlab $cmd >/dev/null 2>&1; e=$(date +%s%N)
      T["$side $cmd"]+="$(( (e - s) / 1000000 )) "
    done
  done
done
PYTHONPATH=/work/wt-scale NETLAB_STATE_DIR=/tmp/scl-state-wt $P -m netlab down scl-stw >/dev/null 2>&1
PYTHONPATH=/tmp/scl-main NETLAB_STATE_DIR=/tmp/scl-state-main $P -m netlab down scl-stm >/dev/null 2>&1
for k in "${!T[@]}"; do
  echo "$k: $(echo ${T[$k]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1; t+=$1} END {printf "n=%d min=%d ms median=%d ms mean=%d ms", NR, a[1], a[int((NR+1)/2)], t/NR}')"
done | sort
uptime
