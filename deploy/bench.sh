#!/usr/bin/env bash
# Side-by-side benchmark: Keelson against the CNCF distribution registry
# (/usr/bin/docker-registry, Debian's 2.8.2), both on 127.0.0.1, same workloads, runs
# interleaved (A B A B ...), plus this machine's limits: SHA-256 speed, fsync'd disk
# write speed, and a bare hyper server as the ceiling for small GETs. With --cluster, a
# local 3-node Keelson cluster (deploy/cluster.sh: three fault domains, `keelson lb`
# round-robin in front) joins the same rounds: pushes through the leader, a follower and
# the load balancer (compared with single-node Keelson), manifest GETs by tag on a
# follower and through the load balancer, blob GETs from a node that holds the blob and
# from one that does not (compared with distribution). Every run starts after `sync`, so
# no target pays for the deferred writeback of the one before. A second single node with
# pull counting off runs the manifest GET by tag row too (what counting costs), and
# `keelson-bench retention` measures the retention pass over a synthetic catalog of
# 1,000,000 images (20,000 with --quick). A third node with encryption at rest runs the big
# push and pull rows (what sealing costs). A fourth with the vulnerability scanner off runs the
# manifest PUT row (a push's latency with scanning on and off), and a real layer (this machine's
# Python library and package databases, gzip'd) pushed to the first node measures the scanner's
# inventory time per GiB of layers from its own metrics.
#
# Usage: deploy/bench.sh [options]
#   --quick             smoke run: tiny sizes, 2 s runs, 2 rounds (CI can run it);
#                       the cluster rows (--cluster) run in the first round only
#   --rounds N          runs per workload and target (default 2); see --pick
#   --pick best|median  which run of each target to show (default best)
#   --only REGEX        run only the workloads whose name matches (grep -E)
#   --keelson-url URL   benchmark a Keelson that is already running on 127.0.0.1
#                       (e.g. one node of a 3-node cluster) instead of starting one;
#                       also KEELSON_BENCH_KEELSON_URL
#   --keelson-pid PIDS  with --keelson-url: sample these processes' RSS (comma-
#                       separated, summed: e.g. the three nodes of a local cluster)
#   --keelson-auth off|enforce
#                       Keelson's --auth (default off, like the baseline, which runs
#                       without auth); enforce benchmarks its token flow as the
#                       bootstrap admin. With --keelson-url, credentials come from
#                       KEELSON_BENCH_KEELSON_USER / KEELSON_BENCH_KEELSON_PASSWORD
#   --cluster           also start a local 3-node cluster and run the cluster rows
#   --cluster-replicas N
#                       copies of every blob in that cluster (default 2: two fault
#                       domains, so every blob has a node that does not hold it)
#   --no-baseline       do not start docker-registry (Keelson only)
#   --no-limits         skip the openssl / dd measurements
#   --no-build          use the binaries already in the target dir
#   --out DIR           keep the JSON reports and server logs in DIR (default: removed)
#   -h, --help
# Environment: CARGO_TARGET_DIR (where the binaries are built),
#   KEELSON_BENCH_TMP (parent of the scratch dir holding both registries' data and
#   the dd test file; default ${TMPDIR:-/tmp}), RUST_LOG (Keelson's log filter, default warn).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

quick=0 rounds=2 pick=best only='' keelson_url=${KEELSON_BENCH_KEELSON_URL:-} keelson_pid=''
keelson_auth=off keelson_user=${KEELSON_BENCH_KEELSON_USER:-} keelson_password=${KEELSON_BENCH_KEELSON_PASSWORD:-}
baseline=1 limits=1 build=1 out='' cluster=0 cluster_replicas=2
die() { echo "bench.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --rounds) rounds=${2:?}; shift ;;
    --pick) pick=${2:?}; shift ;;
    --only) only=${2:?}; shift ;;
    --keelson-url) keelson_url=${2:?}; shift ;;
    --keelson-pid) keelson_pid=${2:?}; shift ;;
    --keelson-auth) keelson_auth=${2:?}; shift ;;
    --cluster) cluster=1 ;;
    --cluster-replicas) cluster_replicas=${2:?}; shift ;;
    --no-baseline) baseline=0 ;;
    --no-limits) limits=0 ;;
    --no-build) build=0 ;;
    --out) out=${2:?}; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "--rounds wants a positive number"
[[ $pick == best || $pick == median ]] || die "--pick is best or median"
[[ $keelson_auth == off || $keelson_auth == enforce ]] || die "--keelson-auth is off or enforce"
[[ $cluster_replicas =~ ^[1-3]$ ]] || die "--cluster-replicas is 1, 2 or 3"

# Only loopback targets: this script must never send load anywhere else.
loopback_url() {
  [[ $1 =~ ^http://(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\])(:[0-9]+)?/?$ ]]
}
if [ -n "$keelson_url" ]; then
  loopback_url "$keelson_url" || die "--keelson-url must be http://127.x.x.x:PORT, localhost or [::1]"
fi

target_dir=${CARGO_TARGET_DIR:-$root/target}
case $target_dir in /*) ;; *) target_dir=$root/$target_dir ;; esac
bench=$target_dir/release/keelson-bench
keelson=$target_dir/release/keelson
distribution=/usr/bin/docker-registry

if [ "$build" = 1 ]; then
  pkgs=(-p keelson-bench)
  { [ -z "$keelson_url" ] || [ "$cluster" = 1 ]; } && pkgs+=(-p keelson)
  echo "== building (${pkgs[*]})"
  (cd "$root" && cargo build --release "${pkgs[@]}")
fi
[ -x "$bench" ] || die "$bench is missing (run without --no-build)"
{ [ -n "$keelson_url" ] && [ "$cluster" = 0 ]; } || [ -x "$keelson" ] || die "$keelson is missing"
if [ "$baseline" = 1 ] && [ ! -x "$distribution" ]; then
  echo "bench.sh: $distribution not found (apt-get install docker-registry); running Keelson only" >&2
  baseline=0
fi

scratch_parent=${KEELSON_BENCH_TMP:-${TMPDIR:-/tmp}}
scratch=$(mktemp -d "$scratch_parent/keelson-bench.XXXXXX")
keep_out=1
if [ -z "$out" ]; then out=$scratch/results; keep_out=0; fi
mkdir -p "$out/runs" "$out/logs"
rm -f "$out"/runs/*.json "$out"/runs/*.err
logs=$out/logs

pids=()
cleanup() {
  local st=$?
  # cluster.sh stops its nodes and load balancer when it gets SIGTERM.
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -d "${scratch:-}/c" ] && "$here/cluster.sh" stop "$scratch/c" >/dev/null 2>&1
  rm -rf "$scratch"
  exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sizes, counts and durations. Push workloads use request counts (so disk use is
# bounded), GET workloads durations.
if [ "$quick" = 1 ]; then
  big=8MiB mid=2MiB chunk=512KiB pushes_big=6 pushes_mid=8 dur=2s warm=0s
  dd_count=64 ossl_secs=1 retention_repos=20 cipher_size=32MiB
  need_gib=1
else
  big=1GiB mid=64MiB chunk=8MiB pushes_big=3 pushes_mid=8 dur=10s warm=1s
  dd_count=1024 ossl_secs=3 retention_repos=1000 cipher_size=512MiB
  # Per round and target: 3 + 1 (pull) GiB + 2 x 512 MiB, plus slack.
  need_gib=$(( rounds * 2 * 5 + 2 ))
fi
# Cluster pushes: one big push per run (each is stored --cluster-replicas times on the one
# disk of this machine), the same mid-size pushes as single-node Keelson.
cluster_pushes_big=1
if [ "$cluster" = 1 ] && [ "$quick" = 0 ]; then
  # Per round: 3 targets x (1 GiB + 512 MiB) pushes, plus the pulled blob once; x copies.
  need_gib=$(( need_gib + cluster_replicas * (rounds * 9 + 2) / 2 ))
fi
avail_gib=$(( $(df -Pk "$scratch" | awk 'NR==2 {print $4}') / 1024 / 1024 ))
if [ "$avail_gib" -lt "$need_gib" ]; then
  die "$scratch has ${avail_gib} GiB free, this run needs about ${need_gib} GiB (try --quick or KEELSON_BENCH_TMP)"
fi

# Numbers taken while a compiler runs on this 2-core machine measure the compiler.
busy_warning() {
  if pgrep -x rustc >/dev/null 2>&1 || pgrep -x cc1 >/dev/null 2>&1 || pgrep -x cc1plus >/dev/null 2>&1; then
    echo "WARNING: a compiler is running on this machine $1; the numbers are noisy" >&2
  fi
}
busy_warning "at start"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
free_port() {
  local p
  for _ in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 40000 ))
    port_open 127.0.0.1 "$p" || { echo "$p"; return 0; }
  done
  die "no free port found"
}
# wait_for PID HOST PORT NAME: until the port accepts connections or the process dies.
wait_for() {
  for _ in $(seq 1 300); do
    kill -0 "$1" 2>/dev/null || die "$4 exited during startup (log: $5)"
    port_open "$2" "$3" && return 0
    sleep 0.1
  done
  die "$4 did not listen on $2:$3 within 30 s (log: $5)"
}

# start_variant NAME WHAT ARGS...: a single Keelson node like the main one (same bootstrap
# token) started with ARGS, for what one feature costs.
start_variant() {
  local name=$1 what=$2 port
  shift 2
  port=$(free_port)
  mkdir -p "$scratch/$name"
  KEELSON_BOOTSTRAP_TOKEN=$keelson_password RUST_LOG=${RUST_LOG:-warn} "$keelson" serve \
    --data-dir "$scratch/$name" --listen "127.0.0.1:$port" --auth "$keelson_auth" "$@" \
    >"$logs/$name.log" 2>&1 &
  pid[$name]=$!; pids+=("${pid[$name]}")
  wait_for "${pid[$name]}" 127.0.0.1 "$port" "$name" "$logs/$name.log"
  url[$name]=http://127.0.0.1:$port
  echo "== keelson $what pid ${pid[$name]} at ${url[$name]}"
}

targets=()
declare -A url pid
if [ -n "$keelson_url" ]; then
  url[keelson]=${keelson_url%/}
  pid[keelson]=$keelson_pid
  echo "== using Keelson at ${url[keelson]}"
else
  kport=$(free_port)
  mkdir -p "$scratch/k"
  RUST_LOG=${RUST_LOG:-warn} "$keelson" serve --data-dir "$scratch/k" --listen "127.0.0.1:$kport" \
    --auth "$keelson_auth" \
    >"$logs/keelson.log" 2>&1 &
  pid[keelson]=$!; pids+=("${pid[keelson]}")
  wait_for "${pid[keelson]}" 127.0.0.1 "$kport" keelson "$logs/keelson.log"
  for _ in $(seq 1 100); do [ -s "$scratch/k/keelson.addr" ] && break; sleep 0.1; done
  url[keelson]=http://127.0.0.1:$kport
  if [ "$keelson_auth" = enforce ]; then
    # Keelson prints the bootstrap administrator and its token once, on first start.
    admin=$(sed -n 's/.*cluster administrator \([^ ,]*\), auth token (shown once): *\([^ ]*\).*/\1 \2/p' \
      "$logs/keelson.log" | head -1)
    [ -n "$admin" ] || die "--keelson-auth enforce: no administrator token in $logs/keelson.log"
    keelson_user=${admin%% *} keelson_password=${admin#* }
  fi
  echo "== keelson pid ${pid[keelson]} at ${url[keelson]} (auth $keelson_auth), data $scratch/k"
  # The same node with one feature changed, for what that feature costs.
  openssl rand -hex 32 >"$scratch/master.key"
  start_variant keelson-nocount "without pull counting (manifest GET cost)" --count-pulls false
  start_variant keelson-sealed "with encryption at rest (push and pull cost)" \
    --encryption-key-file "$scratch/master.key"
  start_variant keelson-sealed-cold "with encryption at rest and no decrypted cache (every pull decrypts)" \
    --encryption-key-file "$scratch/master.key" --decrypted-cache-mib 0
  start_variant keelson-noscan "without the scanner (manifest PUT latency)" --scanner false
fi
targets+=(keelson)

if [ "$baseline" = 1 ]; then
  dport=$(free_port)
  mkdir -p "$scratch/d/data"
  cat >"$scratch/d/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $scratch/d/data
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$dport
  secret: keelson-bench-local-only
EOF
  "$distribution" serve "$scratch/d/config.yml" >"$logs/distribution.log" 2>&1 &
  pid[distribution]=$!; pids+=("${pid[distribution]}")
  wait_for "${pid[distribution]}" 127.0.0.1 "$dport" distribution "$logs/distribution.log"
  url[distribution]=http://127.0.0.1:$dport
  echo "== distribution ($("$distribution" --version 2>/dev/null | awk '{print $NF}')) pid ${pid[distribution]} at ${url[distribution]}, data $scratch/d/data"
  targets+=(distribution)
fi

declare -A cluster_url
cluster_pids='' cluster_user='' cluster_password=''
if [ "$cluster" = 1 ]; then
  cdir=$scratch/c
  mkdir -p "$cdir"
  cports=()
  for _ in 1 2 3 4 5 6 7; do
    p=$(free_port)
    while [[ " ${cports[*]} " == *" $p "* ]]; do p=$(free_port); done
    cports+=("$p")
  done
  cluster_env=(env KEELSON_BIN="$keelson" KEELSON_HOST=127.0.0.1 KEELSON_LB_PORT="${cports[0]}"
    KEELSON_API_PORTS="${cports[1]} ${cports[2]} ${cports[3]}"
    KEELSON_PEER_PORTS="${cports[4]} ${cports[5]} ${cports[6]}"
    KEELSON_REPLICAS="$cluster_replicas" KEELSON_AUTH="$keelson_auth" RUST_LOG="${RUST_LOG:-warn}")
  if [ "$keelson_auth" = enforce ]; then
    cluster_user=keelson/admin
    cluster_password=$(head -c 24 /dev/urandom | base64 | tr -d '/+=\n')
    cluster_env+=(KEELSON_BOOTSTRAP_TOKEN="$cluster_password")
  fi
  "${cluster_env[@]}" "$here/cluster.sh" start "$cdir" >"$logs/cluster.log" 2>&1 &
  cluster_script=$!; pids+=("$cluster_script")
  for _ in $(seq 1 900); do
    kill -0 "$cluster_script" 2>/dev/null || die "the cluster did not start (log: $logs/cluster.log, $cdir/node*/keelson.log)"
    [ -f "$cdir/formed" ] && port_open 127.0.0.1 "${cports[0]}" && break
    sleep 0.1
  done
  port_open 127.0.0.1 "${cports[0]}" || die "the cluster did not start within 90 s (log: $logs/cluster.log)"
  cluster_status() {
    env KEELSON_TOKEN="$cluster_password" KEELSON_USER="$cluster_user" \
      "$keelson" cluster --node "127.0.0.1:${cports[1]}" status --json
  }
  leader=$(cluster_status | tr -d ' \n' | sed -n 's/.*"leader":\([0-9]*\).*/\1/p')
  [[ $leader =~ ^[1-3]$ ]] || die "no cluster leader (log: $logs/cluster.log)"
  follower=$(( leader % 3 + 1 ))
  node_url() { echo "http://127.0.0.1:${cports[$1]}"; }
  cluster_url[leader]=$(node_url "$leader")
  cluster_url[follower]=$(node_url "$follower")
  cluster_url[lb]=http://127.0.0.1:${cports[0]}
  cluster_pids=$(head -3 "$cdir/pids" | paste -sd, -)
  echo "== 3-node cluster (replicas $cluster_replicas, auth $keelson_auth): leader node $leader ${cluster_url[leader]}, follower node $follower ${cluster_url[follower]}, lb ${cluster_url[lb]}, node pids $cluster_pids, data $cdir"
fi

"$bench" bare-server --listen 127.0.0.1:0 --size 4KiB --addr-file "$scratch/bare.addr" \
  >"$logs/bare.log" 2>&1 &
pid[bare-hyper]=$!; pids+=("${pid[bare-hyper]}")
for _ in $(seq 1 100); do [ -s "$scratch/bare.addr" ] && break; sleep 0.1; done
[ -s "$scratch/bare.addr" ] || die "bare-server did not start (log: $logs/bare.log)"
url[bare-hyper]=http://$(head -1 "$scratch/bare.addr")
echo "== bare hyper server pid ${pid[bare-hyper]} at ${url[bare-hyper]}"

# name | bare-hyper ceiling? (1/0) | keelson-bench arguments | cluster targets | compared with |
# extra single-node targets (keelson-nocount: Keelson with pull counting off; keelson-sealed:
# Keelson with encryption at rest; keelson-sealed-cold: the same without its decrypted-window
# cache; keelson-noscan: Keelson with the scanner off)
# Cluster targets: leader, follower, lb (the load balancer), holder / non-holder (a follower
# that holds the pulled blob / one that does not: the blob is pushed through the leader).
workloads=(
  "blob push $big mono c1|0|blob-push --size $big -c 1 -n $pushes_big|leader follower lb|keelson|keelson-sealed"
  "blob push $mid x$pushes_mid c4|0|blob-push --size $mid -c 4 -n $pushes_mid|leader follower lb|keelson"
  "blob push $mid chunked $chunk x$pushes_mid c4|0|blob-push-chunked --size $mid --chunk $chunk -c 4 -n $pushes_mid"
  "blob pull $big c1|0|blob-pull --size $big -c 1 -d $dur|holder non-holder|distribution|keelson-sealed keelson-sealed-cold"
  "blob GET 4KiB c32|1|blob-pull --size 4KiB -c 32 -d $dur --warmup $warm|holder non-holder|distribution"
  "manifest GET tag c32|1|manifest-get-tag -c 32 -d $dur --warmup $warm|follower lb|distribution|keelson-nocount"
  "manifest GET digest c32|1|manifest-get-digest -c 32 -d $dur --warmup $warm"
  "manifest PUT c4|0|manifest-put -c 4 -d $dur|||keelson-noscan"
  "manifest PUT c32|0|manifest-put -c 32 -d $dur|leader follower|distribution"
  "tags list (100 tags) c4|0|tags-list --tags 100 -c 4 -d $dur --warmup $warm"
)

failures=()
# run_one SEQ ROUND LABEL NAME ARGS...: one run of one workload against one target. Cluster
# targets (label cluster-*) get their URL and options in ARGS.
run_one() {
  local seq=$1 round=$2 label=$3 name=$4; shift 4
  local slug f
  slug=$(echo "$name" | tr -c 'A-Za-z0-9\n' '-')
  f="$out/runs/$seq-$slug-$label-r$round.json"
  local pidarg=() urlarg=()
  [ -n "${pid[$label]:-}" ] && pidarg=(--server-pid "${pid[$label]}")
  [ -n "${url[$label]:-}" ] && urlarg=(--url "${url[$label]}")
  # Credentials go to Keelson's runs only, through the environment (not argv).
  local creds=(env -u KEELSON_BENCH_USER -u KEELSON_BENCH_PASSWORD)
  if [[ $label == keelson* ]] && [ -n "$keelson_user" ]; then
    creds=(env "KEELSON_BENCH_USER=$keelson_user" "KEELSON_BENCH_PASSWORD=$keelson_password")
  elif [[ $label == cluster-* ]] && [ -n "$cluster_user" ]; then
    creds=(env "KEELSON_BENCH_USER=$cluster_user" "KEELSON_BENCH_PASSWORD=$cluster_password")
  fi
  # Start every run with no dirty pages: distribution 2.8.2 does not fsync its blobs, and the
  # kernel's deferred writeback of one target's pushes must not land on the next one's clock.
  sync
  printf '  '
  local rc=0
  "${creds[@]}" "$bench" "$@" "${urlarg[@]}" --label "$label" --name "$name" \
    --repo "bench/r$round-$seq" "${pidarg[@]}" --json "$f" --output line \
    2>"$f.err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED (exit $rc): $(head -c 600 "$f.err")"
    failures+=("$name / $label: $(head -1 "$f.err")")
    [ "$rc" -eq 3 ] || rm -f "$f"
  elif grep -qE '"errors": [1-9]' "$f"; then
    failures+=("$name / $label: $(grep -oE '"errors": [0-9]+' "$f" | head -1 | tr -d '"') (first: $(grep -A1 '"error_samples"' "$f" | tail -1 | head -c 300))")
  fi
  [ -s "$f.err" ] || rm -f "$f.err"
}

# holders_of DIGEST: the cluster nodes (1-3) with a copy of the blob in their local store.
holders_of() {
  local hex=${1#sha256:} n
  for n in 1 2 3; do
    [ -f "$cdir/node$n/blobs/sha256/${hex:0:2}/$hex" ] && echo "$n"
  done
  return 0
}

# run_cluster SEQ ROUND NAME VERSUS TARGETS ARGS...: the workload against each cluster target.
run_cluster() {
  local seq=$1 round=$2 name=$3 versus=$4 targets=$5; shift 5
  local t extra
  for t in $targets; do
    extra=()
    case $t in
      leader|follower|lb) extra=(--url "${cluster_url[$t]}") ;;
      holder|non-holder)
        # A seeded blob pushed through the leader: find the follower that got a replica and
        # the one that did not, then pull there (the setup push through the leader finds the
        # blob stored and only links it).
        local seed=$(( 1000 + 10#$seq )) prime="$out/runs/prime-$seq-r$round.json" digest holders n pick=''
        local size
        size=$(grep -oE -- '--size [^ ]+' <<<"$*" | awk '{print $2}')
        "$bench" blob-pull --size "$size" -n 1 --seed "$seed" --url "${cluster_url[leader]}" --repo "bench/r$round-$seq-prime" \
          --json "$prime" --output none 2>"$prime.err" || { echo "  cluster prime failed: $(head -c 300 "$prime.err")"; failures+=("$name / cluster prime"); return; }
        digest=$(grep -oE '"blob_digest": "sha256:[0-9a-f]{64}"' "$prime" | grep -oE 'sha256:[0-9a-f]{64}')
        rm -f "$prime" "$prime.err"
        holders=" $(holders_of "$digest" | tr '\n' ' ')"
        for n in 1 2 3; do
          [ "$n" = "$leader" ] && continue
          if [ "$t" = holder ] && [[ $holders == *" $n "* ]]; then pick=$n; fi
          if [ "$t" = non-holder ] && [[ $holders != *" $n "* ]]; then pick=$n; fi
        done
        if [ -z "$pick" ]; then
          echo "  cluster-$t: skipped (copies of the blob on nodes:$holders)"
          continue
        fi
        extra=(--url "$(node_url "$pick")" --setup-url "${cluster_url[leader]}" --seed "$seed")
        ;;
    esac
    run_one "$seq" "$round" "cluster-$t" "$name" "$@" "${extra[@]}" --server-pid "$cluster_pids" \
      --versus-label "$versus"
  done
}

seq=0
for w in "${workloads[@]}"; do
  IFS='|' read -r name ceiling args ctargets versus extra <<<"$w"
  seq=$(( seq + 1 ))
  sq=$(printf '%02d' "$seq")
  if [ -n "$only" ] && ! grep -qE -- "$only" <<<"$name"; then continue; fi
  echo "== $name"
  for round in $(seq 1 "$rounds"); do
    echo " round $round"
    for t in "${targets[@]}"; do
      # shellcheck disable=SC2086 # args is a word list on purpose
      run_one "$sq" "$round" "$t" "$name" $args
    done
    for t in $extra; do
      # shellcheck disable=SC2086 # args is a word list on purpose
      [ -n "${url[$t]:-}" ] && run_one "$sq" "$round" "$t" "$name" $args
    done
    if [ "$cluster" = 1 ] && [ -n "$ctargets" ] && { [ "$quick" = 0 ] || [ "$round" = 1 ]; }; then
      cargs=$args
      # Fewer big pushes per cluster run: each is stored once per copy on this machine's disk.
      [[ $name == "blob push $big mono"* ]] && cargs=${args/-n $pushes_big/-n $cluster_pushes_big}
      # shellcheck disable=SC2086 # cargs is a word list on purpose
      run_cluster "$sq" "$round" "$name" "$versus" "$ctargets" $cargs
    fi
    if [ "$ceiling" = 1 ]; then
      # The same client, concurrency and duration against a server that does nothing.
      conc=$(grep -oE -- '-c [0-9]+' <<<"$args" | awk '{print $2}')
      run_one "$sq" "$round" bare-hyper "$name" get --path /v2/bench/bare/blobs/any \
        -c "$conc" -d "$dur" --warmup "$warm"
    fi
  done
  busy_warning "during \"$name\""
done

# The load run: many clients at once through the balancer (cluster only). Overload may only
# be answered 429, the nodes' memory is sampled, and every acknowledged push is read back.
if [ "$cluster" = 1 ] && { [ -z "$only" ] || grep -qE -- "$only" <<<"load"; }; then
  load_clients=1000 load_dur=60s
  [ "$quick" = 1 ] && load_dur=5s
  echo "== load: $load_clients clients pulling and pushing 64KiB blobs for $load_dur through the balancer"
  run_one 99 1 cluster-lb "load $load_clients clients" run --workload load -c "$load_clients" -d "$load_dur" \
    --size 64KiB --max-errors 1 --url "${cluster_url[lb]}" --server-pid "$cluster_pids"
  grep -h '^load:' "$out"/runs/99-*.err 2>/dev/null | sed 's/^/  /' || true
fi

# The console's repository page: the first page of 50 of an image list, newest first, over a
# repository holding many images (the list is read and sorted per request). Keelson only.
if [ -z "$only" ] || grep -qE -- "$only" <<<"images page"; then
  page_images=10000
  [ "$quick" = 1 ] && page_images=1000
  echo "== images page: the first 50 of $page_images images, as the console's repository view asks"
  run_one 98 1 keelson "images page ($page_images images) c4" images-page --tags "$page_images" \
    --size 4KiB -c 4 -d "$dur" --warmup "$warm"
fi

# The scanner's inventory rate: one image whose layer is this machine's Python library and
# package databases (real files, gzip'd); the node's own metrics say how many layer bytes its
# scanner read and how long that took. Keelson only. It goes to the node without pull counting,
# whose scan queue is otherwise empty: the main node's holds every image the manifest PUT rows
# made (tens of thousands), which its scanner works through first.
scan_line=''
if { [ -z "$only" ] || grep -qE -- "$only" <<<"scanning"; } && [ -z "$keelson_url" ]; then
  echo "== scanning: inventory of a real layer"
  scan_dir=$scratch/scan
  scan_url=${url[keelson-nocount]:-${url[keelson]}}
  mkdir -p "$scan_dir"
  scan_src=(usr/lib/python3 var/lib/dpkg)
  [ "$quick" = 0 ] && scan_src+=(usr/share/doc)
  tar -C / -cf - "${scan_src[@]}" 2>/dev/null | gzip -1 >"$scan_dir/layer.tar.gz" || true
  unpacked=$(tar -C / -cf - "${scan_src[@]}" 2>/dev/null | wc -c)
  scan_creds=()
  [ -n "$keelson_user" ] && scan_creds=(-u "$keelson_user:$keelson_password")
  kcurl() { curl -sf "${scan_creds[@]}" "$@"; }
  push_blob() { # push_blob FILE: uploads FILE to bench/scan; prints its digest
    local digest location
    digest=sha256:$(sha256sum "$1" | cut -d' ' -f1)
    location=$(kcurl -X POST -D - -o /dev/null "$scan_url/v2/bench/scan/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
    [[ $location == /* ]] && location=$scan_url$location
    kcurl -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$1" \
      "$location$( [[ $location == *\?* ]] && echo '&' || echo '?')digest=$digest" -o /dev/null && echo "$digest"
  }
  metric() { kcurl "$scan_url/metrics" | awk -v m="$1" '$1 == m {print $2}' | tail -1; }
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$scan_dir/config.json"
  layer_digest=$(push_blob "$scan_dir/layer.tar.gz") config_digest=$(push_blob "$scan_dir/config.json")
  if [ -n "$layer_digest" ] && [ -n "$config_digest" ]; then
    bytes0=$(metric keelson_scanned_layer_bytes_total) secs0=$(metric keelson_inventory_seconds_total)
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}' \
      "$config_digest" "$(stat -c %s "$scan_dir/config.json")" "$layer_digest" "$(stat -c %s "$scan_dir/layer.tar.gz")" >"$scan_dir/manifest.json"
    image=sha256:$(sha256sum "$scan_dir/manifest.json" | cut -d' ' -f1)
    kcurl -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$scan_dir/manifest.json" \
      "$scan_url/v2/bench/scan/manifests/v1" -o /dev/null
    scanned=0
    for _ in $(seq 1 1200); do
      if kcurl "$scan_url/api/v1/repos/bench/scan/images/$image/vulnerabilities" | grep -q '"state":"scanned"'; then
        scanned=1; break
      fi
      sleep 0.25
    done
    if [ "$scanned" = 1 ]; then
      bytes1=$(metric keelson_scanned_layer_bytes_total) secs1=$(metric keelson_inventory_seconds_total)
      scan_line=$(awk -v b0="${bytes0:-0}" -v b1="$bytes1" -v s0="${secs0:-0}" -v s1="$secs1" -v u="$unpacked" 'BEGIN {
        b = b1 - b0; s = s1 - s0
        if (b <= 0 || s <= 0) exit
        printf "Scanning: inventory of %.0f MB of layers (%.0f MB unpacked) in %.2f s: %.1f s per GiB of layers (%.0f MB/s)", b / 1e6, u / 1e6, s, s * 1073741824 / b, b / 1e6 / s }')
      echo "  ${scan_line:-no inventory measured (metrics: $bytes0 -> $bytes1 bytes)}"
    else
      failures+=("scanning: the pushed image was not inventoried within 300 s")
    fi
  else
    failures+=("scanning: could not push the layer")
  fi
fi

busy_warning "at the end"
echo
echo "== machine"
echo "cpus: $(nproc), memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel: $(uname -r)"
echo "scratch filesystem: $(df -PhT "$scratch" | awk 'NR==2 {print $1" ("$2"), "$5" free"}')"
if [ "$limits" = 1 ]; then
  sha=$(openssl speed -seconds "$ossl_secs" -evp sha256 2>/dev/null | awk '/^sha256/ {v=$NF} END {sub(/k$/, "", v); printf "%.0f", v/1000}')
  echo "openssl speed -evp sha256, 16384-byte blocks: ${sha} MB/s (one core)"
  # What decrypting costs one core through the store's own reader (encryption at rest's limit).
  "$bench" cipher --size "$cipher_size" --dir "$scratch"
  # Three in a row: a virtual disk may allow bursts above the rate it sustains (a token
  # bucket), and a benchmark that writes GiBs back to back mostly sees the sustained rate.
  dd_rates=()
  for _ in 1 2 3; do
    ddline=$(dd if=/dev/zero of="$scratch/ddtest" bs=1M count="$dd_count" conv=fsync 2>&1 | tail -1)
    rm -f "$scratch/ddtest"
    dd_rates+=("$(awk '{v=$1; if ($2 ~ /^GB/) v*=1000; if ($2 ~ /^kB/) v/=1000; printf "%.0f", v}' <<<"${ddline##*, }")")
  done
  echo "dd bs=1M count=$dd_count conv=fsync to the data filesystem, three in a row: ${dd_rates[0]}, ${dd_rates[1]}, ${dd_rates[2]} MB/s"
  dd_mbps=${dd_rates[0]}
  dd_sustained=${dd_rates[2]}
fi
echo "bare hyper GET ceiling: the bare-hyper column (a 4 KiB body to every request, same client)"

if [ -z "$only" ] || grep -qE -- "$only" <<<"retention"; then
  echo
  echo "== retention over a synthetic catalog ($retention_repos repositories x 1000 images, in-process)"
  "$bench" retention --repos "$retention_repos" --images-per-repo 1000 --dir "$scratch" \
    || failures+=("retention: keelson-bench retention failed")
fi

echo
labels=keelson
labels+=,distribution
labels+=,bare-hyper
[ -n "${url[keelson-nocount]:-}" ] && labels+=,keelson-nocount
[ -n "${url[keelson-sealed]:-}" ] && labels+=,keelson-sealed
[ -n "${url[keelson-sealed-cold]:-}" ] && labels+=,keelson-sealed-cold
[ -n "${url[keelson-noscan]:-}" ] && labels+=,keelson-noscan
shopt -s nullglob
reports=("$out"/runs/*.json)
if [ ${#reports[@]} -eq 0 ]; then
  echo "no successful runs" >&2
  exit 1
fi
"$bench" compare --labels "$labels" --pick "$pick" --json "$out/compare.json" "${reports[@]}"

# best_mbps SEQ LABEL: the best MB/s of workload SEQ's runs on target LABEL (empty if none).
best_mbps() {
  local f
  for f in "$out"/runs/"$1"-*-"$2"-r*.json; do
    grep -oE '"mb_per_s": [0-9.]+' "$f" | awk '{print $2}'
  done | sort -g | tail -1
}
if [ -n "${dd_mbps:-}" ] && [ "${dd_mbps:-0}" -gt 0 ]; then
  echo
  echo "Push ceiling: a push ends with an fsync, so no registry pushes faster than this disk"
  echo "takes fsync'd writes (dd conv=fsync above: $dd_mbps MB/s after a pause, $dd_sustained MB/s"
  echo "sustained; the percentages below are of the first)."
  k=$(best_mbps 01 keelson) d=$(best_mbps 01 distribution)
  if [ -n "$k" ]; then
    awk -v k="$k" -v dd="$dd_mbps" -v d="${d:-0}" 'BEGIN {
      printf "  blob push 1 big blob: keelson %.0f MB/s = %.0f%% of the disk", k, 100 * k / dd
      if (d > 0) printf "; distribution %.0f MB/s; 4x distribution would be %.0f MB/s = %.0f%% of the disk", d, 4 * d, 400 * d / dd
      printf "\n" }'
  fi
  if [ "$cluster" = 1 ]; then
    awk -v dd="$dd_mbps" -v r="$cluster_replicas" -v k="${k:-0}" 'BEGIN {
      printf "  cluster: the three nodes share this one disk and a push is stored on %d of them before\n", r
      printf "  its 201, so a cluster push cannot exceed %.0f MB/s", dd / r
      if (k > 0) printf " = %.2fx single-node Keelson in this run", dd / r / k
      printf "\n" }'
  fi
fi
# best_rps SEQ LABEL: the best req/s of workload SEQ's runs on target LABEL (empty if none).
best_rps() {
  local f
  for f in "$out"/runs/"$1"-*-"$2"-r*.json; do
    grep -oE '"req_per_s": [0-9.]+' "$f" | awk '{print $2}'
  done | sort -g | tail -1
}
with=$(best_rps 06 keelson) without=$(best_rps 06 keelson-nocount)
if [ -n "$with" ] && [ -n "$without" ]; then
  echo
  awk -v w="$with" -v n="$without" 'BEGIN {
    printf "Pull counting: manifest GET by tag c32 %.0f req/s counting, %.0f req/s not counting: %+.1f%% (target: within 5%%)\n", w, n, 100 * (w - n) / n }'
fi
plain_push=$(best_mbps 01 keelson) sealed_push=$(best_mbps 01 keelson-sealed)
plain_pull=$(best_mbps 04 keelson) sealed_pull=$(best_mbps 04 keelson-sealed)
cold_pull=$(best_mbps 04 keelson-sealed-cold)
if [ -n "$plain_pull" ] && [ -n "$sealed_pull" ] && [ -n "$plain_push" ] && [ -n "$sealed_push" ]; then
  echo
  awk -v pp="$plain_push" -v sp="$sealed_push" -v pl="$plain_pull" -v sl="$sealed_pull" 'BEGIN {
    printf "Encryption at rest (AES-256-GCM): push %.0f MB/s sealed, %.0f MB/s plain: %+.1f%%; pull %.0f MB/s sealed, %.0f MB/s plain: %+.1f%% (target: within 15%%)\n", sp, pp, 100 * (sp - pp) / pp, sl, pl, 100 * (sl - pl) / pl }'
  # The same pull with no decrypted windows kept: every byte decrypted on every pull (a blob
  # read once, or a node whose cache is off or too small for its hot layers).
  [ -n "$cold_pull" ] && awk -v pl="$plain_pull" -v cl="$cold_pull" 'BEGIN {
    printf "  pull decrypting every byte (decrypted cache off): %.0f MB/s: %+.1f%%\n", cl, 100 * (cl - pl) / pl }'
fi
# p_ms SEQ LABEL QUANTILE: the latency quantile (p50 or p99, ms) of the best run by req/s.
p_ms() {
  local f best='' rps top=-1
  for f in "$out"/runs/"$1"-*-"$2"-r*.json; do
    rps=$(grep -oE '"req_per_s": [0-9.]+' "$f" | awk '{print $2}')
    if awk -v a="$rps" -v b="$top" 'BEGIN {exit !(a > b)}'; then top=$rps best=$f; fi
  done
  [ -n "$best" ] && grep -oE "\"$3_ms\": [0-9.]+" "$best" | awk '{print $2}'
}
on50=$(p_ms 08 keelson p50) on99=$(p_ms 08 keelson p99) off50=$(p_ms 08 keelson-noscan p50) off99=$(p_ms 08 keelson-noscan p99)
if [ -n "$on99" ] && [ -n "$off99" ] || [ -n "$scan_line" ]; then
  echo
  [ -n "$scan_line" ] && echo "$scan_line"
  [ -n "$on99" ] && [ -n "$off99" ] && awk -v a="$on50" -v b="$on99" -v c="$off50" -v d="$off99" 'BEGIN {
    printf "Scanning: manifest PUT c4 (each one queues an image for its inventory) p50 %.2f ms / p99 %.2f ms scanner on, %.2f / %.2f ms off (target: unchanged)\n", a, b, c, d }'
fi
[ "$keep_out" = 1 ] && echo && echo "reports: $out"
if [ ${#failures[@]} -gt 0 ]; then
  echo
  echo "failed runs or runs with errors:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
