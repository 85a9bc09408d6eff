#!/bin/sh
# Installs the rock into a temporary tree with LuaRocks (no rock server: --deps-mode=none)
# and checks that `require "ayla"` and both installed programs work from it.
set -eu
cd "$(dirname "$0")/.."
tree=$(mktemp -d)
trap 'rm -rf "$tree" "$tree.log"' EXIT
luarocks --lua-version=5.4 make --tree "$tree" --deps-mode=none rockspec/ayla-scm-1.rockspec >"$tree.log" 2>&1 ||
	{ tail -n 30 "$tree.log"; exit 1; }
eval "$(luarocks --lua-version=5.4 --tree "$tree" path)"
(cd / && lua5.4 -e 'local a = require "ayla"; assert(a.sim and a.stream and a.cloud and a.app); print("rock: require \"ayla\" works: " .. a._VERSION)')
AYLA_LUA_DIR="$tree/share/lua/5.4" TZ=UTC "$tree/bin/ayla-rules" --replay examples/replay/button_led.jsonl \
	examples/rules/button_led.lua | grep -q "replayed 4 events"
"$tree/bin/ayla-sim" --help | grep -q "usage: ayla-sim"
echo "rock: installed ayla-rules and ayla-sim work from the tree"
