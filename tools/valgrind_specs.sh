#!/bin/sh
# Every busted spec under valgrind (memcheck), with the programs the specs
# start (ayla-rules, ayla-sim, lua5.4 -i) traced too: any invalid access, use
# of uninitialised memory or definite/indirect leak in any of those processes
# fails the spec file, as does a failing case. Each process writes its own
# valgrind log (BUILD/valgrind/NAME.PID.vg); clean ones are empty.
# --fair-sched: valgrind runs one thread at a time, and the specs that check
# heartbeats answered during a busy Lua loop need the I/O thread to get turns.
# Specs in TIMING_SPECS check real-time promises (heartbeats answered while
# a flood or an idle prompt runs, within a heartbeat interval); valgrind's
# slowdown (some 50 times, one thread at a time) breaks those promises, not
# our code. They run in full and their memory is checked like the others',
# but their failing cases are reported without failing the file; ./dev test
# and ./dev asan hold them to their promises.
# Last line: "valgrind: N passed, N failed" (spec files).
set -u
cd "$(dirname "$0")/.."
build=$(cd "${1:-build}" && pwd)
logs="$build/valgrind"
mkdir -p "$logs"
passed=0 failed=0
TIMING_SPECS=" overload_spec repl_spec "
# Tools the specs run that are not ours (the shell is traced: programs start through it).
not_traced='*/env,*/mktemp,*/rm,*/getent,*/openssl,*/sleep,*/kill,*/cat,*/tmux,*/timeout,*/date'
not_traced="$not_traced,*/grep,*/sed,*/mkdir,*/cp,*/touch,*/mv,*/ls,*/awk,*/head,*/tail,*/stty"
not_traced="$not_traced,*/python3*,*/stat"
for spec in spec/*_spec.lua; do
	name=$(basename "$spec" .lua)
	log="$logs/$name.log"
	rm -f "$logs/$name".*.vg
	AYLA_BUILD_DIR="$build" PATH="$build:$PATH" AYLA_UNDER_VALGRIND=1 \
		valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full \
		--errors-for-leak-kinds=definite,indirect --log-file="$logs/$name.%p.vg" \
		--trace-children=yes --trace-children-skip="$not_traced" \
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
	echo "valgrind: $name: $cases_ok cases ok, $cases_failed failed: $verdict"
	case "$verdict" in
	clean*) passed=$((passed + 1)) ;;
	*)
		failed=$((failed + 1))
		grep -E "^==[0-9]+==|^not ok" "$log" | head -n 40
		;;
	esac
done
echo "valgrind: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
