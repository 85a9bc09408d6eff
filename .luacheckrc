-- luacheck settings: luacheck . (see README)
std = "lua54"
max_line_length = 110
exclude_files = { "build*/**", "bench/node/**", ".bench/**" }
files["spec/**/*_spec.lua"] = { std = "+busted", read_globals = { "H" } }
files["spec/helper.lua"] = { globals = { "H" } }
files["examples/rules/*.lua"] = {
  read_globals = { "on", "every", "after", "at", "set", "get", "sleep", "twin", "log", "null" },
}
