#!/bin/sh
# Every option that a program's --help lists appears in its man page.
# usage: check_options.sh PATH/TO/ayla-rules PATH/TO/ayla-sim   (run from man/)
# Prints one line per option missing from a page, then "man: N passed, N failed".
set -u
progs=""
for prog in "$@"; do # absolute, before the cd
	case $prog in /*) ;; *) prog=$(pwd)/$prog ;; esac
	progs="$progs $prog"
done
cd "$(dirname "$0")"
passed=0
failed=0
for prog in $progs; do
	name=$(basename "$prog")
	page=$name.1
	if [ ! -f "$page" ]; then
		echo "man: no page $page for $name"
		failed=$((failed + 1))
		continue
	fi
	help=$("$prog" --help 2>&1) || { echo "man: $name --help failed"; failed=$((failed + 1)); continue; }
	# The page's text with roff escapes undone: "\-" is "-", font changes go.
	text=$(sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' -e 's/\\(em//g' "$page")
	opts=$(printf '%s\n' "$help" | grep -oE '(^|[[:space:],])--?[A-Za-z][A-Za-z0-9-]*' |
		sed 's/^[[:space:],]*//' | sort -u)
	if [ -z "$opts" ]; then
		echo "man: found no options in $name --help"
		failed=$((failed + 1))
		continue
	fi
	for opt in $opts; do
		# as a whole word: --key must not be satisfied by --tls-key
		if printf '%s\n' "$text" | grep -qE "(^|[^A-Za-z0-9-])$opt([^A-Za-z0-9-]|\$)"; then
			passed=$((passed + 1))
		else
			echo "man: $name option $opt is missing from man/$page"
			failed=$((failed + 1))
		fi
	done
done
echo "man: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
