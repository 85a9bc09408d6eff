-- Loaded by busted before the specs: finds the built C module and offers
-- small helpers for waiting on the asynchronous I/O threads.
local build = os.getenv("AYLA_BUILD_DIR") or "build"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local core = require "ayla.core"

local H = {}
H.build = build
H.sleep = core.sleep
H.now = core.monotime

-- Polls fn until it returns a true value or `timeout` seconds pass; returns
-- what fn returned last. Tests assert on that value, never on elapsed time.
function H.wait_until(fn, timeout)
  local deadline = core.monotime() + (timeout or 5)
  repeat
    local v = fn()
    if v then return v end
    core.sleep(0.01)
  until core.monotime() > deadline
  return fn()
end

function H.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- The seed's five events, one JSON text each.
function H.seed_events()
  local out = {}
  for line in io.lines("examples/scenarios/seed.jsonl") do
    if line:match("^%s*{") then out[#out + 1] = line end
  end
  return out
end

-- A stream connected to sim, once it is open.
function H.open_stream(sim, opts)
  local s = assert(sim:stream(opts))
  assert(H.wait_until(function() return s:status() == "open" end, 5), "stream did not open")
  return s
end

-- Does this machine have a name for localhost? (A bare chroot may not.)
function H.localhost_resolves()
  local p = io.popen("getent hosts localhost 2>/dev/null")
  local out = p:read("a")
  p:close()
  return out:find("127%.0%.0%.1") ~= nil
end

-- Runs a shell command and returns its exit status (true on success).
function H.sh(cmd)
  local ok = os.execute(cmd)
  return ok == true
end

-- A fresh temporary directory, removed with H.rmdir.
function H.tmpdir()
  local p = io.popen("mktemp -d")
  local dir = p:read("l")
  p:close()
  return dir
end

function H.rmdir(dir)
  if dir and dir:match("^/tmp/") then os.execute("rm -rf '" .. dir .. "'") end
end

-- Starts a small Python server for protocol corner cases: writes `script`
-- to DIR/toy.py and runs `python3 DIR/toy.py DIR/port ARGS...`; the script
-- writes the port it listens on to that file. Returns the port. H.stop_toy
-- ends it (call it in a finally).
function H.start_toy(dir, script, args)
  local f = assert(io.open(dir .. "/toy.py", "w"))
  f:write(script)
  f:close()
  assert(H.sh(("python3 '%s/toy.py' '%s/port' %s >/dev/null 2>&1 & echo $! > '%s/pid'")
    :format(dir, dir, args or "", dir)))
  local port = H.wait_until(function()
    local p = io.open(dir .. "/port")
    local n = p and p:read("n")
    if p then p:close() end
    return n
  end, 10)
  assert(port, "the toy server did not start")
  return math.tointeger(port)
end

function H.stop_toy(dir)
  local f = io.open(dir .. "/pid")
  if f then
    local pid = f:read("n")
    f:close()
    if pid then os.execute("kill " .. math.tointeger(pid) .. " 2>/dev/null") end
  end
  H.rmdir(dir)
end

_G.H = H
return H
