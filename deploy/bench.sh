#!/usr/bin/env bash
# Side-by-side benchmark: Keelson against the CNCF distribution registry
# (/usr/bin/docker-registry, Debian's 2.8.2), both on 127.0.0.1, same workloads, runs
# interleaved (A B A B ...), plus this machine's limits: SHA-256 speed, fsync'd disk
# write speed, and a bare hyper server as the ceiling for small GETs.
#
# Usage: deploy/bench.sh [options]
#   --quick             smoke run: tiny sizes, 2 s runs, 2 rounds (CI can run it)
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
baseline=1 limits=1 build=1 out=''
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
  [ -z "$keelson_url" ] && pkgs+=(-p keelson)
  echo "== building (${pkgs[*]})"
  (cd "$root" && cargo build --release "${pkgs[@]}")
fi
[ -x "$bench" ] || die "$bench is missing (run without --no-build)"
[ -n "$keelson_url" ] || [ -x "$keelson" ] || die "$keelson is missing"
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
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$scratch"
  exit "$st"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sizes, counts and durations. Push workloads use request counts (so disk use is
# bounded), GET workloads durations.
if [ "$quick" = 1 ]; then
  big=8MiB mid=2MiB chunk=512KiB pushes_big=2 pushes_mid=8 dur=2s warm=0s
  dd_count=64 ossl_secs=1
  need_gib=1
else
  big=1GiB mid=64MiB chunk=8MiB pushes_big=3 pushes_mid=8 dur=10s warm=1s
  dd_count=1024 ossl_secs=3
  # Per round and target: 3 + 1 (pull) GiB + 2 x 512 MiB, plus slack.
  need_gib=$(( rounds * 2 * 6 + 2 ))
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

"$bench" bare-server --listen 127.0.0.1:0 --size 4KiB --addr-file "$scratch/bare.addr" \
  >"$logs/bare.log" 2>&1 &
pid[bare-hyper]=$!; pids+=("${pid[bare-hyper]}")
for _ in $(seq 1 100); do [ -s "$scratch/bare.addr" ] && break; sleep 0.1; done
[ -s "$scratch/bare.addr" ] || die "bare-server did not start (log: $logs/bare.log)"
url[bare-hyper]=http://$(head -1 "$scratch/bare.addr")
echo "== bare hyper server pid ${pid[bare-hyper]} at ${url[bare-hyper]}"

# name | bare-hyper ceiling? (1/0) | keelson-bench arguments
workloads=(
  "blob push $big mono c1|0|blob-push --size $big -c 1 -n $pushes_big"
  "blob push $mid x$pushes_mid c4|0|blob-push --size $mid -c 4 -n $pushes_mid"
  "blob push $mid chunked $chunk x$pushes_mid c4|0|blob-push-chunked --size $mid --chunk $chunk -c 4 -n $pushes_mid"
  "blob pull $big c1|0|blob-pull --size $big -c 1 -d $dur"
  "blob GET 4KiB c32|1|blob-pull --size 4KiB -c 32 -d $dur --warmup $warm"
  "manifest GET tag c32|1|manifest-get-tag -c 32 -d $dur --warmup $warm"
  "manifest GET digest c32|1|manifest-get-digest -c 32 -d $dur --warmup $warm"
  "manifest PUT c4|0|manifest-put -c 4 -d $dur"
  "tags list (100 tags) c4|0|tags-list --tags 100 -c 4 -d $dur --warmup $warm"
)

failures=()
# run_one SEQ ROUND LABEL NAME ARGS...: one run of one workload against one target.
run_one() {
  local seq=$1 round=$2 label=$3 name=$4; shift 4
  local slug f
  slug=$(echo "$name" | tr -c 'A-Za-z0-9\n' '-')
  f="$out/runs/$seq-$slug-$label-r$round.json"
  local pidarg=()
  [ -n "${pid[$label]:-}" ] && pidarg=(--server-pid "${pid[$label]}")
  # Credentials go to Keelson's runs only, through the environment (not argv).
  local creds=(env -u KEELSON_BENCH_USER -u KEELSON_BENCH_PASSWORD)
  if [ "$label" = keelson ] && [ -n "$keelson_user" ]; then
    creds=(env "KEELSON_BENCH_USER=$keelson_user" "KEELSON_BENCH_PASSWORD=$keelson_password")
  fi
  printf '  '
  local rc=0
  "${creds[@]}" "$bench" "$@" --url "${url[$label]}" --label "$label" --name "$name" \
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

seq=0
for w in "${workloads[@]}"; do
  IFS='|' read -r name ceiling args <<<"$w"
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
    if [ "$ceiling" = 1 ]; then
      # The same client, concurrency and duration against a server that does nothing.
      conc=$(grep -oE -- '-c [0-9]+' <<<"$args" | awk '{print $2}')
      run_one "$sq" "$round" bare-hyper "$name" get --path /v2/bench/bare/blobs/any \
        -c "$conc" -d "$dur" --warmup "$warm"
    fi
  done
  busy_warning "during \"$name\""
done

busy_warning "at the end"
echo
echo "== machine"
echo "cpus: $(nproc), memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), kernel: $(uname -r)"
echo "scratch filesystem: $(df -PhT "$scratch" | awk 'NR==2 {print $1" ("$2"), "$5" free"}')"
if [ "$limits" = 1 ]; then
  sha=$(openssl speed -seconds "$ossl_secs" -evp sha256 2>/dev/null | awk '/^sha256/ {v=$NF} END {sub(/k$/, "", v); printf "%.0f", v/1000}')
  echo "openssl speed -evp sha256, 16384-byte blocks: ${sha} MB/s (one core)"
  ddline=$(dd if=/dev/zero of="$scratch/ddtest" bs=1M count="$dd_count" conv=fsync 2>&1 | tail -1)
  rm -f "$scratch/ddtest"
  echo "dd bs=1M count=$dd_count conv=fsync to the data filesystem: ${ddline##*, }"
fi
echo "bare hyper GET ceiling: the bare-hyper column (a 4 KiB body to every request, same client)"

echo
labels=keelson
labels+=,distribution
labels+=,bare-hyper
shopt -s nullglob
reports=("$out"/runs/*.json)
if [ ${#reports[@]} -eq 0 ]; then
  echo "no successful runs" >&2
  exit 1
fi
"$bench" compare --labels "$labels" --pick "$pick" --json "$out/compare.json" "${reports[@]}"
[ "$keep_out" = 1 ] && echo && echo "reports: $out"
if [ ${#failures[@]} -gt 0 ]; then
  echo
  echo "failed runs or runs with errors:"
  printf '  %s\n' "${failures[@]}"
  exit 1
fi
