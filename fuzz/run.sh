#!/bin/sh
# Builds the fuzz targets with clang's libFuzzer (+ASan +UBSan) and runs each
# for SECONDS (default 30) over a scratch copy of its corpus; exits non-zero if
# any target crashes or breaks an invariant. Called by ./dev fuzz.
#   fuzz/run.sh [SECONDS]
# Environment: FUZZ_CC (default clang), FUZZ_OUT (default build-fuzz-clang),
# FUZZ_TARGETS (default "frame event http"), FUZZ_CORPUS_DIR (a directory holding
# frame/, event/ and http/ to start from instead of fuzz/corpus, e.g. to show that a
# planted bug is found from the seeds alone).
set -eu
cd "$(dirname "$0")/.."
seconds=${1:-30}
cc=${FUZZ_CC:-clang}
out=${FUZZ_OUT:-build-fuzz-clang}
targets=${FUZZ_TARGETS:-frame event http}
corpus_from=${FUZZ_CORPUS_DIR:-fuzz/corpus}
src=$(pwd)

mkdir -p "$out"
flags="-std=c11 -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
	-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Werror -Icsrc"
# shellcheck disable=SC2086 # flags are words
$cc $flags -o "$out/fuzz_frame" fuzz/fuzz_frame.c csrc/frame.c
# shellcheck disable=SC2086,SC2046 # pkg-config gives words
$cc $flags $(pkg-config --cflags lua5.4) -DAYLA_FUZZ_LUA_COVERAGE \
	-DAYLA_SOURCE_DIR="\"$src\"" -o "$out/fuzz_event" \
	fuzz/fuzz_event.c csrc/frame.c csrc/queue.c $(pkg-config --libs lua5.4)
# shellcheck disable=SC2086
$cc $flags -o "$out/fuzz_http" fuzz/fuzz_http.c csrc/http_parse.c -lm

total_runs=0
crashes=0
for t in $targets; do
	case $t in
	frame) max_len=4096 ;;
	event) max_len=8192 ;; # room for nesting past lua-cjson's depth limit
	http) max_len=20000 ;; # room for a head past HTTP_HEAD_MAX (16384)
	*) echo "fuzz: unknown target $t" >&2 && exit 2 ;;
	esac
	# A scratch copy: what a run discovers never lands in the committed corpus.
	work="$out/corpus-$t"
	rm -rf "$work" "$out/crashes-$t"
	mkdir -p "$work" "$out/crashes-$t"
	cp "$corpus_from/$t"/* "$work"/ 2>/dev/null || true
	dirs="$work"
	[ -d "fuzz/regressions/$t" ] && dirs="$dirs fuzz/regressions/$t"
	log="$out/fuzz-$t.log"
	echo "fuzz: $t for ${seconds}s (log $log)"
	status=0
	# shellcheck disable=SC2086
	ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		"$out/fuzz_$t" -max_total_time="$seconds" -max_len="$max_len" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/crashes-$t/" \
		$dirs >"$log" 2>&1 || status=$?
	runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
	[ -n "$runs" ] || runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	runs=${runs:-0}
	total_runs=$((total_runs + runs))
	cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*\(cov: [0-9]* ft: [0-9]*\).*/\1/p')
	speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
	echo "fuzz: $t: $runs runs, ${speed:-?} exec/s, ${cov:-cov: ?}"
	found=$(find "$out/crashes-$t" -type f | sort)
	if [ "$status" -ne 0 ] || [ -n "$found" ]; then
		crashes=$((crashes + 1))
		grep -E 'ERROR|invariant broken|raised|SUMMARY|fuzz_event:|fuzz_frame:|fuzz_http:' "$log" | head -n 10 >&2
		for f in $found; do
			echo "fuzz: $t: crash input: $f" >&2
		done
		[ -n "$found" ] || echo "fuzz: $t: exit status $status, see $log" >&2
		echo "fuzz: fix the bug, then add the input as fuzz/regressions/$t/<what-it-found>" >&2
		echo "      (see fuzz/regressions/README.md); ctest replays it from then on." >&2
	fi
done
# shellcheck disable=SC2086 # the list of names, split
set -- $targets
echo "fuzz: $# targets, $total_runs runs, $crashes crashes"
[ "$crashes" -eq 0 ]
