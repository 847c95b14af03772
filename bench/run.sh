#!/usr/bin/env bash
# bench/run.sh: ciwebhook against the reference server, on loopback.
#
# Builds both servers and the fixed-rate load generator (CGO_ENABLED=0),
# then, three rounds, alternating which goes first: each server is started
# fresh, warmed up for 2 s, and loaded by wrk for 10 s (32 connections, 2
# threads) with GitHub's real 21.9 KB workflow_run payload, each request
# with its own delivery ID. Prints the median throughput ratio
# (ciwebhook / reference), p50/p99 of each, and each server's peak RSS
# (VmHWM). Then, three rounds again, a 10 s run per server at a fixed 500
# req/s (bench/loadgen, open loop) for p99 at that rate.
#
# The machine may be shared: each line also shows how much of the machine's
# CPU time went to everything else during the run ("others", from
# /proc/stat less the server and the load generator; steal included) and
# how much everything else wrote to the ledger's disk (/proc/diskstats less
# the server's write_bytes; other writers' syncs slow the ledger's).
# Trust rounds where both are low; compare ratios within a round, not
# absolute figures across runs. The server's own CPU time per request
# ("cpu/req") is the figure that others disturb least.
#
# ciwebhook runs as shipped: the SQLite ledger (WAL, synchronous=FULL) in a
# temporary folder, log-only Slack (no SLACK_WEBHOOK_URL), LEDGER_LIMIT at
# its default (1000), and LOG_LEVEL=warn so that one info line per request
# does not dominate what is measured.
#
# Usage: bench/run.sh            (needs wrk: apt-get install -y wrk)
# Environment: ROUNDS (3), DURATION (10s), CONNS (32), THREADS (2),
#   RATE (500), BODY (the payload file), PORT_A/PORT_B (18080/18081).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
THREADS=${THREADS:-2}
RATE=${RATE:-500}
BODY=${BODY:-../shared/github-payloads/workflow_run/completed.payload.json}
PORT_A=${PORT_A:-18080}
PORT_B=${PORT_B:-18081}

command -v wrk >/dev/null || { echo "bench/run.sh: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
[ -r "$BODY" ] || { echo "bench/run.sh: cannot read $BODY" >&2; exit 1; }
BODY=$(realpath "$BODY")

work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== build (CGO_ENABLED=0, $(go version | cut -d' ' -f3))"
CGO_ENABLED=0 go build -o "$work/ciwebhook" ./cmd/ciwebhook
CGO_ENABLED=0 go build -o "$work/reference" ./bench/reference
CGO_ENABLED=0 go build -o "$work/loadgen" ./bench/loadgen

export GITHUB_WEBHOOK_SECRET="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
BENCH_SIGNATURE=$("$work/loadgen" -sign -body "$BODY")
export BENCH_BODY="$BODY" BENCH_SIGNATURE

# start NAME: starts the named server on a fresh ledger; sets pid and url.
start() {
  case $1 in
    ciwebhook)
      rm -rf "$work/data"
      ADDR=127.0.0.1:$PORT_A LEDGER_PATH="$work/data/ledger.db" LOG_LEVEL=warn \
        "$work/ciwebhook" serve 2>>"$work/ciwebhook.log" &
      pid=$!
      url=http://127.0.0.1:$PORT_A/webhooks/github
      port=$PORT_A ;;
    reference)
      "$work/reference" -addr 127.0.0.1:$PORT_B 2>>"$work/reference.log" &
      pid=$!
      url=http://127.0.0.1:$PORT_B/webhooks/github
      port=$PORT_B ;;
  esac
  for _ in $(seq 1 100); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "bench/run.sh: $1 did not start; its log:" >&2
  cat "$work/$1.log" >&2
  exit 1
}

# stop: sets peak to the server's peak RSS in KiB (VmHWM), then stops it.
stop() {
  peak=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
}

# field LINE KEY: the value of key=value in a BENCH/LOADGEN line.
field() { tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"; }

# check: a run with errors or non-2xx answers measures nothing useful.
check() {
  local line=$1 what=$2
  for k in non2xx connect read write timeout errors; do
    v=$(field "$line" "$k")
    if [ -n "$v" ] && [ "$v" != 0 ]; then
      echo "bench/run.sh: $what: $k=$v; the logs are in $work (kept)" >&2
      trap - EXIT
      [ -n "$pid" ] && kill "$pid" 2>/dev/null
      exit 1
    fi
  done
}

# CPU accounting, in clock ticks: the machine's busy time (steal included)
# and a process's user+system time.
busy() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9}' /proc/stat; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
DISK=$(basename "$(df --output=source "$work" | tail -n1)")
written() { awk -v d="$DISK" '$3 == d {print $10 * 512; f = 1} END {if (!f) print 0}' /proc/diskstats; }
wbytes() { awk '/^write_bytes:/ {print $2}' "/proc/$1/io" 2>/dev/null || echo 0; }
# measure CMD...: runs the load generator CMD, sets out to its output,
# others to the percentage of the machine's CPU time that neither it nor
# the server (pid) used meanwhile, otherio to what others wrote (MB), and
# srvcpu to the server's CPU seconds.
measure() {
  local b0 s0 t0 b1 s1 t1 load w0 w1 o0 o1
  b0=$(busy); s0=$(ticks "$pid"); t0=$(date +%s.%N); w0=$(written); o0=$(wbytes "$pid")
  out=$( { TIMEFORMAT="%U %S"; time "$@" 2>>"$work/load.log"; } 2>"$work/time"; ) || true
  b1=$(busy); s1=$(ticks "$pid"); t1=$(date +%s.%N); w1=$(written); o1=$(wbytes "$pid")
  otherio=$(awk "BEGIN { o = ($w1 - $w0 - ($o1 - $o0)) / 1048576; if (o < 0) o = 0; printf \"%.0f\", o }")
  load=$(awk '{print $1+$2}' "$work/time")
  srvcpu=$(awk "BEGIN { print ($s1 - $s0) / $HZ }")
  others=$(awk -v b=$((b1-b0)) -v s=$((s1-s0)) -v l="$load" -v hz="$HZ" -v n="$NCPU" -v dt="$(awk "BEGIN{print $t1-$t0}")" \
    'BEGIN { o = ((b - s) / hz - l) / (n * dt) * 100; if (o < 0) o = 0; printf "%.0f", o }')
}

# cpureq LINE: the server's CPU milliseconds per request of that run.
cpureq() { awk -v c="$srvcpu" -v n="$(field "$1" requests)" 'BEGIN { printf "%.3f", n ? c * 1000 / n : 0 }'; }

declare -A rps p50 p99 rss cpu
loaded() {
  local name=$1 round=$2
  start "$name"
  wrk -t"$THREADS" -c"$CONNS" -d2s -s bench/post.lua "$url" >/dev/null # warm-up
  measure wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/post.lua "$url"
  line=$(grep '^BENCH ' <<<"$out")
  check "$line" "$name round $round"
  rps[$name,$round]=$(field "$line" rps)
  p50[$name,$round]=$(field "$line" p50_ms)
  p99[$name,$round]=$(field "$line" p99_ms)
  cpu[$name,$round]=$(cpureq "$line")
  stop
  rss[$name,$round]=$peak
  printf '  %-9s %7s req/s  cpu/req %5s ms  p50 %7s ms  p99 %7s ms  peak RSS %5.1f MiB  (others: cpu %s%%, wrote %s MB)\n' "$name" "${rps[$name,$round]}" \
    "${cpu[$name,$round]}" "${p50[$name,$round]}" "${p99[$name,$round]}" "$(awk "BEGIN{print ${rss[$name,$round]}/1024}")" "$others" "$otherio"
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
max() { printf '%s\n' "$@" | sort -g | tail -n1; }

echo "== $ROUNDS rounds: wrk -t$THREADS -c$CONNS -d$DURATION, body $(stat -c %s "$BODY") bytes ($(basename "$(dirname "$BODY")")/$(basename "$BODY"))"
ratios=(); cpuratios=()
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  if (( round % 2 )); then order="ciwebhook reference"; else order="reference ciwebhook"; fi
  for name in $order; do loaded "$name" "$round"; done
  ratios+=("$(awk "BEGIN{printf \"%.3f\", ${rps[ciwebhook,$round]}/${rps[reference,$round]}}")")
  cpuratios+=("$(awk "BEGIN{printf \"%.3f\", ${cpu[reference,$round]}/${cpu[ciwebhook,$round]}}")")
  echo "  ratio ciwebhook/reference: throughput ${ratios[-1]}, requests per CPU second ${cpuratios[-1]}"
done

echo "== fixed rate: $RATE req/s for $DURATION, $CONNS workers (bench/loadgen, open loop), $ROUNDS rounds"
declare -A fixed
fixedrun() {
  local name=$1 round=$2
  start "$name"
  "$work/loadgen" -url "$url" -body "$BODY" -rate 50 -duration 2s -workers "$CONNS" >/dev/null # warm-up
  measure "$work/loadgen" -url "$url" -body "$BODY" -rate "$RATE" -duration "$DURATION" -workers "$CONNS"
  line=$(grep '^LOADGEN ' <<<"$out") || true
  check "$line" "$name at $RATE req/s"
  stop
  fixed[$name,$round]=$(field "$line" p99_ms)
  rss[$name,fixed$round]=$peak
  printf '  %-9s %6s req/s  cpu/req %5s ms  p50 %6s ms  p90 %6s ms  p99 %7s ms  max %7s ms  peak RSS %5.1f MiB  (others: cpu %s%%, wrote %s MB)\n' "$name" \
    "$(field "$line" rps)" "$(cpureq "$line")" "$(field "$line" p50_ms)" "$(field "$line" p90_ms)" "$(field "$line" p99_ms)" "$(field "$line" max_ms)" \
    "$(awk "BEGIN{print $peak/1024}")" "$others" "$otherio"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "round $round"
  if (( round % 2 )); then order="ciwebhook reference"; else order="reference ciwebhook"; fi
  for name in $order; do fixedrun "$name" "$round"; done
done

echo "== summary"
for name in ciwebhook reference; do
  r=(); a=(); b=(); m=(); f=(); c=()
  for round in $(seq 1 "$ROUNDS"); do
    r+=("${rps[$name,$round]}"); a+=("${p50[$name,$round]}"); b+=("${p99[$name,$round]}"); c+=("${cpu[$name,$round]}")
    m+=("${rss[$name,$round]}" "${rss[$name,fixed$round]}"); f+=("${fixed[$name,$round]}")
  done
  printf '%-9s median %7s req/s  cpu/req %5s ms  p50 %7s ms  p99 %7s ms  | at %s req/s: median p99 %7s ms (rounds: %s)  | peak RSS %5.1f MiB\n' \
    "$name" "$(median "${r[@]}")" "$(median "${c[@]}")" "$(median "${a[@]}")" "$(median "${b[@]}")" \
    "$RATE" "$(median "${f[@]}")" "${f[*]}" "$(awk "BEGIN{print $(max "${m[@]}")/1024}")"
done
echo "throughput ratio ciwebhook/reference: median $(median "${ratios[@]}") (rounds: ${ratios[*]})"
echo "requests per CPU second, ciwebhook/reference: median $(median "${cpuratios[@]}") (rounds: ${cpuratios[*]})"
