#!/bin/sh
# Installs the rock into a temporary tree with LuaRocks (no rock server: --deps-mode=none)
# and checks that `require "ayla"`, both installed programs and their man pages work from it.
# Then packs a source rock (`luarocks pack`) and installs that into a second tree the same way.
set -eu
cd "$(dirname "$0")/.."
here=$(pwd)
tree=$(mktemp -d)
tree2=$(mktemp -d)
src=$(mktemp -d)
trap 'rm -rf "$tree" "$tree.log" "$tree2" "$src"' EXIT

# check TREE WHAT: the module, both programs and the man pages, from an installed tree.
check() {
	t=$1 what=$2
	(
		eval "$(luarocks --lua-version=5.4 --tree "$t" path)"
		cd / && lua5.4 -e 'local a = require "ayla"; assert(a.sim and a.stream and a.cloud and a.app)
			print("rock: require \"ayla\" works: " .. a._VERSION)'
	)
	# No AYLA_LUA_DIR, no LUA_PATH: the program finds its Lua files by itself (for the packed
	# rock, whose build directory is gone, in share/lua/5.4 beside its bin/).
	(cd / && env -u LUA_PATH -u LUA_PATH_5_4 -u AYLA_LUA_DIR TZ=UTC "$t/bin/ayla-rules" \
		--replay "$here/examples/replay/button_led.jsonl" "$here/examples/rules/button_led.lua") |
		grep -q "replayed 4 events"
	"$t/bin/ayla-sim" --help | grep -q "usage: ayla-sim"
	echo "rock: installed ayla-rules and ayla-sim work from the $what tree"
	mandir=$(find "$t/lib/luarocks" -type d -path "*/ayla/*/share/man/man1")
	for page in ayla-rules ayla-sim; do
		[ -f "$mandir/$page.1" ] || { echo "rock: no man page $page.1 in the $what tree"; exit 1; }
		if command -v man >/dev/null; then
			MANWIDTH=80 man -l "$mandir/$page.1" 2>/dev/null | grep -q "^NAME" ||
				{ echo "rock: man -l does not render $page.1"; exit 1; }
		fi
	done
	echo "rock: man pages in ${mandir#"$t"/} render"
}

# 1. luarocks make: the work tree as it is.
luarocks --lua-version=5.4 make --tree "$tree" --deps-mode=none rockspec/ayla-scm-1.rockspec \
	>"$tree.log" 2>&1 || { tail -n 30 "$tree.log"; exit 1; }
check "$tree" "make"

# 2. luarocks pack: a source rock needs sources LuaRocks can fetch, and no server is reachable
# here. So the sources are the work tree's files that git tracks or would track (new files
# included, ignored ones such as build directories not), as a tarball behind a file:// URL in
# a copy of the rockspec. The .src.rock holds that rockspec and the tarball.
git ls-files -z --cached --others --exclude-standard |
	(cd "$here" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\n" "$f"; done' sh) |
	tar -czf "$src/ayla-scm.tar.gz" --transform 's,^,ayla/,' -T -
sed -e "s|^\( *\)url = \".*\",|\1url = \"file://$src/ayla-scm.tar.gz\",\n\1dir = \"ayla\",|" \
	rockspec/ayla-scm-1.rockspec >"$src/ayla-scm-1.rockspec"
grep -q "file://$src/ayla-scm.tar.gz" "$src/ayla-scm-1.rockspec" ||
	{ echo "rock: could not point the rockspec at the sources"; exit 1; }
(cd "$src" && luarocks --lua-version=5.4 pack ayla-scm-1.rockspec) >"$tree.log" 2>&1 ||
	{ tail -n 30 "$tree.log"; exit 1; }
rock=$src/ayla-scm-1.src.rock
[ -f "$rock" ] || { tail -n 30 "$tree.log"; echo "rock: luarocks pack made no $rock"; exit 1; }
echo "rock: packed $(basename "$rock") ($(wc -c <"$rock") bytes)"
# Installed with the tarball gone and from a directory holding nothing else: only what is in
# the .src.rock is used.
rm "$src/ayla-scm.tar.gz"
mkdir "$src/only" && mv "$rock" "$src/only/"
(cd "$src/only" && luarocks --lua-version=5.4 install --tree "$tree2" --deps-mode=none \
	ayla-scm-1.src.rock) >"$tree.log" 2>&1 || { tail -n 30 "$tree.log"; exit 1; }
check "$tree2" "packed source rock"
