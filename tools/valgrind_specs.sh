#!/bin/sh
# Every busted spec under valgrind (memcheck), with the programs the specs
# start (ayla-rules, ayla-sim, lua5.4 -i) traced too: any invalid access, use
# of uninitialised memory or definite/indirect leak in any of those processes
# fails the spec file, as does a failing case. Each process writes its own
# valgrind log (BUILD/valgrind/NAME.PID.vg); clean ones are empty. Two spec
# files run at a time (valgrind runs each process on one CPU).
# --fair-sched: valgrind runs one thread at a time, and the specs that check
# heartbeats answered during a busy Lua loop need the I/O thread to get turns.
# Specs in TIMING_SPECS check real-time promises (heartbeats answered within
# an interval while an idle prompt waits); valgrind's slowdown (some 50
# times, one thread at a time) breaks those promises, not our code. They run
# in full and their memory is checked like the others', but their failing
# cases are reported without failing the file. NOT_RUN: overload_spec floods
# until queues overflow, which under valgrind takes minutes and only times
# out; its paths (queue limits, drops) run under valgrind in stream_spec.
# ./dev test and ./dev asan hold all of them to their promises.
# Last line: "valgrind: N passed, N failed" (spec files).
set -u
cd "$(dirname "$0")/.."
TIMING_SPECS=" repl_spec "
NOT_RUN=" overload_spec "

# One spec file: runs it, writes BUILD/valgrind/NAME.verdict.
if [ "${1:-}" = "--one" ]; then
	build=$2 spec=$3
	logs="$build/valgrind"
	name=$(basename "$spec" .lua)
	log="$logs/$name.log"
	rm -f "$logs/$name".*.vg
	# Tools the specs run that are not ours (the shell is traced: programs start through it).
	skip='*/env,*/mktemp,*/rm,*/getent,*/openssl,*/sleep,*/kill,*/cat,*/tmux,*/timeout,*/date'
	skip="$skip,*/grep,*/sed,*/mkdir,*/cp,*/touch,*/mv,*/ls,*/awk,*/head,*/tail,*/stty"
	skip="$skip,*/python3*,*/stat"
	AYLA_BUILD_DIR="$build" PATH="$build:$PATH" AYLA_UNDER_VALGRIND=1 \
		valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite,indirect --log-file="$logs/$name.%p.vg" \
		--trace-children=yes --trace-children-skip="$skip" \
		lua5.4 /usr/bin/busted -o TAP --config-file=.busted "$spec" >"$log" 2>&1
	rc=$?
	cat "$logs/$name".*.vg >>"$log" 2>/dev/null
	cases_failed=$(grep -c '^not ok' "$log")
	cases_ok=$(grep -c '^ok' "$log")
	if [ "$rc" -eq 99 ] || grep -q "^==[0-9]*==" "$log"; then
		verdict="FAILED (memory errors)"
	elif [ "$rc" -ne 0 ] && [ "$cases_failed" -eq 0 ]; then
		verdict="FAILED (exit $rc)"
	elif [ "$cases_failed" -gt 0 ] && [ "${TIMING_SPECS#* $name }" != "$TIMING_SPECS" ]; then
		verdict="clean ($cases_failed timing cases failed under valgrind's slowdown, not counted)"
	elif [ "$cases_failed" -gt 0 ]; then
		verdict="FAILED ($cases_failed cases)"
	else
		verdict="clean"
	fi
	echo "valgrind: $name: $cases_ok cases ok, $cases_failed failed: $verdict" >"$logs/$name.verdict"
	exit 0
fi

build=$(cd "${1:-build}" && pwd)
logs="$build/valgrind"
rm -rf "$logs"
mkdir -p "$logs"
for spec in spec/*_spec.lua; do
	name=$(basename "$spec" .lua)
	[ "${NOT_RUN#* $name }" != "$NOT_RUN" ] || printf '%s\n' "$spec"
done | xargs -P 2 -n 1 sh "$0" --one "$build"
passed=0 failed=0
for spec in spec/*_spec.lua; do
	name=$(basename "$spec" .lua)
	if [ "${NOT_RUN#* $name }" != "$NOT_RUN" ]; then
		echo "valgrind: $name: not run (see the top of $0)"
		continue
	fi
	cat "$logs/$name.verdict" 2>/dev/null || echo "valgrind: $name: FAILED (no verdict)"
	if grep -q ": clean" "$logs/$name.verdict" 2>/dev/null; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		grep -E "^==[0-9]+==|^not ok|^# " "$logs/$name.log" 2>/dev/null | head -n 40
	fi
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
