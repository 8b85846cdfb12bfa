#!/usr/bin/env bash
# Cluster mode's benchmark, all in one run on one etcd (issue 15):
#   W2 (64 connections, a lock each) and W4 (16 contenders on one lock)
#   through a single-server lockd, through one cluster node, and with the
#   same clients using etcd's own lock recipe directly.
# Needs etcd (apt-get install etcd-server). Starts a three-member etcd and
# two lockd processes on loopback in a temp dir, stops them by PID at exit.
#
#   bash scripts/cluster-bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
cargo build --release --quiet --bin lockd --bin lockctl --example etcd_recipe_bench
bin=target/release
dir="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT

base=$((21000 + RANDOM % 5000))
cluster=""
for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((base + 2 * i + 1))"; done
for i in 0 1 2; do
  c=$((base + 2 * i)); p=$((c + 1))
  etcd --name "m$i" --data-dir "$dir/m$i" \
    --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
    --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token "bench-$base" --log-level error 2>"$dir/m$i.log" &
  pids+=($!)
done
endpoints="127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))"
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$base/health" | grep -q '"health":"true"' && break
  sleep 0.1
done

$bin/lockd --listen "127.0.0.1:$((base + 10))" --no-state 2>"$dir/single.log" &
pids+=($!)
$bin/lockd --listen "127.0.0.1:$((base + 11))" --no-state --cluster "etcd://$endpoints" \
  --node-name bench 2>"$dir/node.log" &
pids+=($!)
sleep 1

echo "== single-server lockd"
$bin/lockctl -s "127.0.0.1:$((base + 10))" bench --workloads W2,W4 --duration "${secs}s" --no-echo
echo "== one cluster node (lockd --cluster, three-member etcd)"
$bin/lockctl -s "127.0.0.1:$((base + 11))" bench --workloads W2,W4 --duration "${secs}s" --no-echo
echo "== etcd's lock recipe, same etcd"
$bin/examples/etcd_recipe_bench "$endpoints" W2 64 "$secs"
$bin/examples/etcd_recipe_bench "$endpoints" W4 16 "$secs"
