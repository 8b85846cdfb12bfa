#!/usr/bin/env bash
# Cluster mode's benchmark, all in one run on one three-member etcd (issue 15):
#   W1 (1 connection, g/r: every request counts),
#   W2 (64 connections, a lock each, g/r: every request counts) and
#   W4 (16 contenders on one lock, wg/r: every grant counts)
#   through a single-server lockd, through one cluster node, through three
#   cluster nodes (connections spread over them), and with the same clients
#   using etcd's own lock recipe directly; then the ratios to the recipe.
# "etcd req/op" is how many KV requests etcd served per counted operation
# (from etcd's own /metrics): group commit is what brings it below 1.
# "CPU µs/op" is the CPU time etcd's three members and the lockd processes
# used per counted operation.
# Needs etcd (apt-get install etcd-server). Starts a three-member etcd and
# four lockd processes on loopback in a temp dir, stops them by PID at exit.
#
# With --no-fsync, etcd runs with --unsafe-no-fsync (3.4 and 3.5): a loaded
# disk then no longer sets the pace of every etcd write, and what is left is
# etcd's work per request, which group commit saves.
#
#   bash scripts/cluster-bench.sh [SECONDS] [--no-fsync]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-3}"
fsync=()
[ "${2:-}" = --no-fsync ] && fsync=(--unsafe-no-fsync)
cargo build --release --quiet --bin lockd --example etcd_recipe_bench --example cluster_bench
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
    --initial-cluster-token "bench-$base" --log-level error ${fsync[@]+"${fsync[@]}"} \
    2>"$dir/m$i.log" &
  pids+=($!)
done
endpoints="127.0.0.1:$base,127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4))"
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$base/health" | grep -q '"health":"true"' && break
  sleep 0.1
done

single="127.0.0.1:$((base + 10))"
$bin/lockd --listen "$single" --no-state 2>"$dir/single.log" &
pids+=($!)
nodes=()
for i in 1 2 3; do
  nodes+=("127.0.0.1:$((base + 10 + i))")
  $bin/lockd --listen "${nodes[-1]}" --no-state --cluster "etcd://$endpoints" \
    --node-name "bench$i" 2>"$dir/node$i.log" &
  pids+=($!)
done
sleep 1

# KV requests etcd's members have served so far.
etcd_requests() {
  local total=0 n
  for i in 0 1 2; do
    n=$(curl -fs "http://127.0.0.1:$((base + 2 * i))/metrics" | awk '
      /^grpc_server_handled_total\{.*grpc_method="(Txn|Range|Put|DeleteRange)".*grpc_service="etcdserverpb.KV"/ { s += $2 }
      END { printf "%d", s }')
    total=$((total + n))
  done
  echo "$total"
}

# CPU time (clock ticks) the given processes have used so far.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

# run LABEL COMMAND...: prints the command's line plus etcd requests per op
# and the CPU etcd's members and the lockd processes used per op (µs), and
# remembers ops/s under LABEL.
declare -A rate
run() {
  local label="$1" before after line ops etcd0 etcd1 lockd0 lockd1
  shift
  before=$(etcd_requests)
  etcd0=$(cpu_ticks "${pids[@]:0:3}")
  lockd0=$(cpu_ticks "${pids[@]:3}")
  line=$("$@")
  etcd1=$(cpu_ticks "${pids[@]:0:3}")
  lockd1=$(cpu_ticks "${pids[@]:3}")
  after=$(etcd_requests)
  ops=$(sed -n 's/.*ops \([0-9]*\)$/\1/p' <<<"$line")
  rate[$label]=$(sed -n 's/.*, \([0-9]*\) ops\/s,.*/\1/p' <<<"$line")
  printf '%-28s %s, etcd req/op %s, CPU µs/op etcd %s lockd %s\n' "$label" "$line" \
    "$(awk -v r=$((after - before)) -v o="${ops:-0}" 'BEGIN { printf (o ? "%.2f" : "-"), (o ? r / o : 0) }')" \
    "$(awk -v t=$((etcd1 - etcd0)) -v o="${ops:-0}" -v hz="$hz" 'BEGIN { printf (o ? "%.0f" : "-"), (o ? t * 1e6 / hz / o : 0) }')" \
    "$(awk -v t=$((lockd1 - lockd0)) -v o="${ops:-0}" -v hz="$hz" 'BEGIN { printf (o ? "%.0f" : "-"), (o ? t * 1e6 / hz / o : 0) }')"
}
hz=$(getconf CLK_TCK)

three="$(IFS=,; echo "${nodes[*]}")"
for w in W1 W2 W4; do
  case "$w" in W1) n=1 ;; W2) n=64 ;; W4) n=16 ;; esac
  echo "== $w ($n clients, ${secs}s each)"
  run "$w single server" $bin/examples/cluster_bench "$single" "$w" "$n" "$secs"
  run "$w one node" $bin/examples/cluster_bench "${nodes[0]}" "$w" "$n" "$secs"
  run "$w three nodes" $bin/examples/cluster_bench "$three" "$w" "$n" "$secs"
  run "$w etcd recipe" $bin/examples/etcd_recipe_bench "$endpoints" "$w" "$n" "$secs"
done

echo "== ratios to etcd's recipe, same run"
for w in W1 W2 W4; do
  for target in "one node" "three nodes" "single server"; do
    awk -v a="${rate[$w $target]:-0}" -v b="${rate[$w etcd recipe]:-0}" -v l="$w $target" \
      'BEGIN { printf "%-22s %sx\n", l, (b ? sprintf("%.1f", a / b) : "-") }'
  done
done
