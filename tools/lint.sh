#!/bin/sh
# The linters, on a configured build directory (for compile_commands.json):
# luacheck (.luacheckrc), clang-format (.clang-format, nothing to change),
# cppcheck (tools/cppcheck.cfg) and clang-tidy (.clang-tidy).
# Last line: "lint: N passed, N failed" (one per linter).
set -u
cd "$(dirname "$0")/.."
build=${1:-build}
passed=0 failed=0
check() { # name command...
	name=$1
	shift
	if out=$("$@" 2>&1); then
		passed=$((passed + 1))
		echo "lint: $name clean"
	else
		failed=$((failed + 1))
		printf '%s\n' "$out" | head -n 60
		echo "lint: $name FAILED"
	fi
}
c_sources=$(ls csrc/*.c csrc/*.h csrc/lua/*.c csrc/lua/*.h spec/c/*.c spec/c/*.h fuzz/*.c 2>/dev/null)
translation_units=$(ls csrc/*.c csrc/lua/*.c)

check luacheck luacheck --no-color -q .
check clang-format clang-format --dry-run --Werror $c_sources
check cppcheck cppcheck --project="$build/compile_commands.json" --std=c11 --quiet --error-exitcode=1 \
	--library=posix --library=tools/cppcheck.cfg --enable=warning,style,performance,portability \
	--inline-suppr --suppress=missingIncludeSystem -i "$build"
# One file a run: the analyzer's findings can depend on what it read before in the same run.
tidy() { printf '%s\n' $translation_units | xargs -P "$(nproc)" -n 1 clang-tidy -p "$build" --quiet; }
check clang-tidy tidy
echo "lint: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
