-- The soak benchmarks' server: ayla.sim in a process of its own, so that the
-- client's RSS is the client's alone, and the driver the benchmarks use to
-- start and talk to it (`local server = dofile("bench/soak_sim.lua")`).
--
-- `lua5.4 bench/soak_sim.lua serve [HEARTBEAT_INTERVAL [HEARTBEAT_MISSES]]` serves,
-- driven by lines on standard input, each answered by one line on standard output:
--   flood N   send N datapoint events to each connected client   (no answer)
--   stats     sim:stats() and this process's RSS                 -> "stats k=v k=v ..."
--   quit (or the end of input)                                     stops the sim and exits
-- It prints "url URL" and "key KEY" first.
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local build = os.getenv("AYLA_BUILD_DIR") or (root .. "/build")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local ayla = require "ayla"
local core = require "ayla.core"

local M = {}

local function status_kb(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+)")
    if kb then return math.tointeger(tonumber(kb)) end
  end
end

M.status_kb = status_kb

-- ---- the driver (in the benchmark's process) ----------------------------------

local Server = {}
Server.__index = Server

-- The next whole line the server printed, or nil after `timeout` seconds.
function Server:line(timeout)
  local deadline = core.monotime() + (timeout or 10)
  repeat
    local f = io.open(self.out, "rb")
    if f then
      f:seek("set", self.pos)
      local l = f:read("L")
      f:close()
      if l and l:sub(-1) == "\n" then
        self.pos = self.pos + #l
        return l:sub(1, -2)
      end
    end
    core.sleep(0.01)
  until core.monotime() > deadline
end

-- Sends one command; returns at once.
function Server:send(cmd)
  self.pipe:write(cmd, "\n")
  self.pipe:flush()
end

-- Sends one command and returns its answer line (nil after 10 s).
function Server:call(cmd)
  self:send(cmd)
  return self:line(10)
end

-- The server's sim:stats(), plus rss_kb and hwm_kb of its process.
function Server:stats()
  local l = assert(self:call("stats"), "the soak server did not answer")
  local st = {}
  for k, v in l:gmatch("(%S+)=(%S+)") do st[k] = tonumber(v) or v end
  return st
end

function Server:close()
  if not self.pipe then return end
  self.pipe:write("quit\n")
  self.pipe:close()
  self.pipe = nil
  os.remove(self.out)
end

-- Starts a server process (dir: the repository's root); returns it with .url and .key.
function M.start(dir, heartbeat_interval, heartbeat_misses)
  local self = setmetatable({ out = os.tmpname(), pos = 0 }, Server)
  self.pipe = assert(io.popen(("exec lua5.4 '%s/bench/soak_sim.lua' serve %s %s > '%s'")
    :format(dir, heartbeat_interval, heartbeat_misses, self.out), "w"))
  self.url = assert(self:line(10), "the soak server did not start"):match("^url (%S+)")
  self.key = assert(self:line(10)):match("^key (%S+)")
  assert(self.url and self.key, "the soak server printed no url and key")
  return self
end

-- ---- the server ----------------------------------------------------------------

local function serve(interval, misses)
  io.stdout:setvbuf("line")
  local sim = assert(ayla.sim { heartbeat_interval = tonumber(interval or "30"),
                                heartbeat_misses = math.tointeger(tonumber(misses or "2")),
                                history = 0 })
  print("url " .. sim:url())
  print("key " .. sim:key())

  for line in io.lines() do
    local cmd, n = line:match("^(%a+)%s*(%d*)$")
    if cmd == "flood" and tonumber(n) then
      assert(sim:flood(math.tointeger(tonumber(n))))
    elseif cmd == "stats" then
      local st = sim:stats()
      st.rss_kb, st.hwm_kb = status_kb("VmRSS"), status_kb("VmHWM")
      local out = {}
      for k, v in pairs(st) do out[#out + 1] = k .. "=" .. tostring(v) end
      table.sort(out)
      print("stats " .. table.concat(out, " "))
    elseif cmd == "quit" then
      break
    else
      print("error unknown command: " .. line)
    end
  end
  sim:stop()
end

if ... == "serve" then
  serve(select(2, ...))
else
  return M
end
