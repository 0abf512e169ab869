#!/usr/bin/env bash
# The OpenSSH client's side of the SSH fan-out benchmark, under `xargs -P`.
#
#   openssh.sh <a|b> <work-dir> [hosts] [concurrency]
#                                         fan out over the first `hosts` (100) names
#                                         of the inventory <work-dir>/hosts.tsv
#   openssh.sh task <work-dir> <host>     workload b on one host (xargs calls it)
#
# OpenSSH has no concurrency of its own: `default` (the default) is
# `xargs -P 100`, a number is `xargs -P <number>`. Every host is reached
# through <work-dir>/ssh_config (made from the inventory). a: `ssh host true`
# per host. b: per host one master connection (ControlMaster, as a careful
# user would), then `scp` of the 100 KB payload and five commands over it.
# Prints concurrency=<n> and op_wall=<seconds>; any failure exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1 work=$2
cfg=$work/ssh_config

if [[ $mode == task ]]; then
    h=$3
    sock=$work/mux/$h
    path=bench-openssh-$h.bin
    rm -f "$sock"
    ssh -F "$cfg" -o ControlMaster=yes -o ControlPath="$sock" -N "$h" &
    master=$!
    trap 'ssh -F "$cfg" -o ControlPath="$sock" -O exit "$h" 2>/dev/null || kill $master 2>/dev/null; wait $master 2>/dev/null || true' EXIT
    # The control socket appears once the master has logged in.
    until [[ -S $sock ]]; do
        kill -0 $master 2>/dev/null || { echo "$h: master connection failed" >&2; exit 1; }
        sleep 0.005
    done
    s() { ssh -F "$cfg" -o ControlMaster=no -o ControlPath="$sock" "$h" "$@"; }
    scp -q -F "$cfg" -o ControlMaster=no -o ControlPath="$sock" "$work/payload.bin" "$h:$path"
    size=$(s "wc -c < $path")
    want=$(stat -L -c %s "$work/payload.bin")
    [[ $size == "$want" ]] || { echo "$h: uploaded file has '$size' bytes" >&2; exit 1; }
    s uname -r >/dev/null
    s id -u >/dev/null
    s ls -l "$path" >/dev/null
    s rm -f "$path"
    exit 0
fi

n=${3:-100}
parallel=${4:-default}
[[ $parallel == default ]] && parallel=100
names() { head -n "$n" "$work/hosts.tsv" | cut -f1; }
(($(names | wc -l) == n)) || { echo "$work/hosts.tsv has fewer than $n hosts" >&2; exit 1; }
mkdir -p "$work/mux"
echo "concurrency=$parallel"
started=$(date +%s.%N)
case $mode in
    a) names | xargs -P "$parallel" -I{} ssh -F "$cfg" {} true ;;
    b) names | xargs -P "$parallel" -I{} bash "$here/openssh.sh" task "$work" {} ;;
    *) echo "unknown workload $mode" >&2; exit 2 ;;
esac
ended=$(date +%s.%N)
awk -v a="$started" -v b="$ended" 'BEGIN { printf "op_wall=%.4f\n", b - a }'
