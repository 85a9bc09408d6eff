#!/bin/sh
# The stream benchmark: events per second and peak RSS for N datapoint events
# (~480 bytes each) from `ayla-sim --flood N` over loopback, three ways, each
# run RUNS times in alternating order:
#   ayla     bench/stream_ayla.lua   ayla.stream + s:next()
#   ceiling  bench/cjson_ceiling.lua lua-cjson decoding the same payloads, no network
#   node     bench/node/client.js    the Ayla docs' JavaScript client on Node.js + ws
# Prints a markdown table (medians, min/max) and the ratios. Exits non-zero if a
# run fails, ayla drops an event, or a client gets fewer than N events.
#
# usage: bench/run.sh            (after ./dev build; N=200000 RUNS=5 by default)
#        bench/run.sh soak [quick] the soak section below instead
set -eu
cd "$(dirname "$0")/.."

# ---- soak ----------------------------------------------------------------------
# bench/run.sh soak: bench/soak_events.lua (1,000,000 events through a stream and
# two rules) then bench/soak_heartbeats.lua (10,000 heartbeats at 5 ms), each
# with the simulator in a process of its own; about 2 minutes. `soak quick`:
# 200,000 events and 2,000 heartbeats (SOAK_EVENTS and SOAK_HEARTBEATS set by
# hand win). Prints each script's key=value lines and a markdown table, and
# exits non-zero if either fails (RSS growth of 5% or more after warm-up, an
# event lost without being counted, a heartbeat drop by the server).
# AYLA_BUILD_DIR picks the build (default build/).
if [ "${1:-}" = soak ]; then
	AYLA_BUILD_DIR=${AYLA_BUILD_DIR:-build}
	export AYLA_BUILD_DIR
	[ -f "$AYLA_BUILD_DIR/ayla/core.so" ] || {
		echo "bench: $AYLA_BUILD_DIR/ayla/core.so is missing; run ./dev build" >&2
		exit 1
	}
	if [ "${2:-}" = quick ]; then
		SOAK_EVENTS=${SOAK_EVENTS:-200000}
		SOAK_HEARTBEATS=${SOAK_HEARTBEATS:-2000}
		export SOAK_EVENTS SOAK_HEARTBEATS
	fi
	soak_out=$(mktemp -d)
	trap 'rm -rf "$soak_out"' EXIT
	load_before=$(cut -d' ' -f1-3 /proc/loadavg)
	status=0
	for script in soak_events soak_heartbeats; do
		echo "bench: $script" >&2
		timeout 900 lua5.4 "bench/$script.lua" >"$soak_out/$script" || status=1
		sed 's/^/  /' "$soak_out/$script" >&2
	done
	load_after=$(cut -d' ' -f1-3 /proc/loadavg)
	# v FILE KEY: the value of KEY= in the script's output.
	v() { tr ' ' '\n' <"$soak_out/$1" | sed -n "s/^$2=//p" | head -n 1; }
	echo
	echo "| soak | count | rate | peak RSS (MB) | RSS after warm-up → end (MB) | growth | drops | heartbeat RTT p50 / p99 / max (ms) |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|"
	printf '| events through a stream and 2 rules | %s events | %s ev/s (%s µs CPU/event) | %s | %s → %s | %s%% | %s queue, %s heartbeat | %s / %s / %s |\n' \
		"$(v soak_events events)" "$(v soak_events evps)" "$(v soak_events us_cpu_per_event)" \
		"$(v soak_events peak_rss_mb)" "$(v soak_events rss_warm_mb)" "$(v soak_events rss_last_mb)" \
		"$(v soak_events growth_pct)" "$(v soak_events dropped)" "$(v soak_events heartbeat_drops)" \
		"$(v soak_events hb_rtt_ms_p50)" "$(v soak_events hb_rtt_ms_p99)" "$(v soak_events hb_rtt_ms_max)"
	printf '| heartbeats every %s s | %s answered | %s s | %s | %s → %s | %s%% | %s heartbeat | %s / %s / %s |\n' \
		"$(v soak_heartbeats interval_s)" "$(v soak_heartbeats sim_replies)" "$(v soak_heartbeats seconds)" \
		"$(v soak_heartbeats peak_rss_mb)" "$(v soak_heartbeats rss_warm_mb)" \
		"$(v soak_heartbeats rss_last_mb)" "$(v soak_heartbeats growth_pct)" \
		"$(v soak_heartbeats heartbeat_drops)" "$(v soak_heartbeats rtt_ms_p50)" \
		"$(v soak_heartbeats rtt_ms_p99)" "$(v soak_heartbeats rtt_ms_max)"
	echo
	echo "Load average (1, 5, 15 min): $load_before before, $load_after after;" \
		"$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
	[ "$status" -eq 0 ] || echo "bench: a soak run failed (see FAIL above)" >&2
	exit "$status"
fi

N=${N:-200000}
RUNS=${RUNS:-5}
SIM=build/ayla-sim

for f in "$SIM" build/ayla/core.so; do
	[ -x "$f" ] || [ -f "$f" ] || { echo "bench: $f is missing; run ./dev build" >&2; exit 1; }
done
if [ ! -d bench/node/node_modules/ws ]; then
	echo "bench: installing the Node.js client's dependencies (npm install)" >&2
	npm install --prefix bench/node --no-audit --no-fund --loglevel=error >&2
fi

work=$(mktemp -d)
sim_pid=""
stop_sim() {
	if [ -n "$sim_pid" ]; then
		kill -TERM "$sim_pid" 2>/dev/null || true
		tries=0
		while kill -0 "$sim_pid" 2>/dev/null && [ "$tries" -lt 40 ]; do
			sleep 0.05
			tries=$((tries + 1))
		done
		kill -KILL "$sim_pid" 2>/dev/null || true # it did not stop within 2 s
		wait "$sim_pid" 2>/dev/null || true
		sim_pid=""
	fi
}
trap 'stop_sim; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# Starts one ayla-sim for one measured run and sets URL and KEY.
start_sim() {
	"$SIM" --port 0 --flood "$N" --heartbeat 30 </dev/null >"$work/sim.out" 2>"$work/sim.err" &
	sim_pid=$!
	tries=0
	until grep -q "^ayla-sim: key " "$work/sim.out"; do
		tries=$((tries + 1))
		if [ "$tries" -gt 100 ] || ! kill -0 "$sim_pid" 2>/dev/null; then
			echo "bench: ayla-sim did not start:" >&2
			cat "$work/sim.err" >&2
			exit 1
		fi
		sleep 0.05
	done
	URL=$(sed -n 's/^ayla-sim: url //p' "$work/sim.out")
	KEY=$(sed -n 's/^ayla-sim: key //p' "$work/sim.out")
}

# run_one NAME: one measured run; appends its result line to $work/results.
run_one() {
	case $1 in
	ayla)
		start_sim
		status=0
		timeout 120 lua5.4 bench/stream_ayla.lua "$URL" "$KEY" "$N" >"$work/line" || status=$?
		stop_sim ;;
	ceiling)
		status=0
		timeout 120 lua5.4 bench/cjson_ceiling.lua "$N" >"$work/line" || status=$? ;;
	node)
		start_sim
		status=0
		timeout 120 node bench/node/client.js "$URL" "$KEY" "$N" >"$work/line" || status=$?
		stop_sim ;;
	esac
	line=$(cat "$work/line")
	echo "  run $i $1: ${line:-no result}" >&2
	if [ "$status" -ne 0 ]; then
		echo "bench: the $1 run failed (exit $status)" >&2
		exit 1
	fi
	# The scripts check these too; a second look costs nothing.
	case " $line " in
	*" events=$N "*) ;;
	*) echo "bench: the $1 run did not get $N events" >&2; exit 1 ;;
	esac
	case " $line " in
	*" dropped="[1-9]*) echo "bench: ayla dropped events" >&2; exit 1 ;;
	esac
	echo "$line" >>"$work/results"
}

echo "bench: $RUNS runs of each, $N events" >&2
i=1
while [ "$i" -le "$RUNS" ]; do
	case $((i % 3)) in
	1) order="ayla ceiling node" ;;
	2) order="node ayla ceiling" ;;
	0) order="ceiling node ayla" ;;
	esac
	for b in $order; do run_one "$b"; done
	i=$((i + 1))
done

# field NAME KEY: the KEY= values of NAME's runs, one a line, sorted.
field() {
	grep "^bench=$1 " "$work/results" | tr ' ' '\n' | sed -n "s/^$2=//p" | sort -g
}
median() { awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

cjson_version=$(lua5.4 -e 'print(require("cjson")._VERSION)')
ws_version=$(node -p 'require("./bench/node/node_modules/ws/package.json").version')
lws_version=$(pkg-config --modversion libwebsockets 2>/dev/null | sed "s/-$//" || echo "?")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)

printf '\n%s events of %s bytes of JSON on average (plus "LEN|"), %s runs each, %s\n\n' \
	"$N" "$(sed -n 's/.* bytes=\([0-9.]*\).*/\1/p' "$work/results" | head -n 1)" "$RUNS" \
	"$(date -u +%Y-%m-%d)"
# row NAME LABEL: one table line from NAME's runs.
row() {
	total=$(field "$1" total_seconds | median)
	[ -z "$total" ] || total=$(printf '%.3f' "$total")
	printf '| %s | %.0f | %.0f | %.0f | %.1f | %s |\n' "$2" "$(field "$1" evps | median)" \
		"$(field "$1" evps | head -n 1)" "$(field "$1" evps | tail -n 1)" \
		"$(field "$1" rss_mb | median)" "${total:-–}"
}
echo "| client | median ev/s | min ev/s | max ev/s | median peak RSS (MB) | median total incl. connect (s) |"
echo "|---|---:|---:|---:|---:|---:|"
# shellcheck disable=SC2016 # the backquotes are markdown
row ayla 'ayla: `s:next()` over loopback'
# shellcheck disable=SC2016
row ceiling 'ceiling: lua-cjson `decode` loop, no network'
# shellcheck disable=SC2016
row node 'Node.js: docs client + `ws` over loopback'
echo
awk -v a="$(field ayla evps | median)" -v c="$(field ceiling evps | median)" \
	-v n="$(field node evps | median)" 'BEGIN {
	printf "- ayla / ceiling: %.2fx (target: at least 0.80x)\n", a / c
	printf "- ayla / Node.js: %.2fx (target: above 1.00x)\n", a / n
}'
echo
echo "Machine: $(nproc) CPUs, $cpu; Linux $(uname -r)"
echo "Versions: $(lua5.4 -v 2>&1 | cut -d' ' -f1-2), lua-cjson $cjson_version," \
	"libwebsockets $lws_version, Node.js $(node --version), ws $ws_version"
