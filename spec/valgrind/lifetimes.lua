-- Run under valgrind by ctest: every way a stream and a simulator can end
-- (close, <close>, garbage collection, interpreter exit) with connections
-- live must free everything. Prints "lifetimes: N passed, N failed".
local build = os.getenv("AYLA_BUILD_DIR") or "build"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath
local ayla = require "ayla"
local core = require "ayla.core"

local passed, failed = 0, 0
local function check(cond, what)
  if cond then passed = passed + 1 else failed = failed + 1; io.stderr:write("FAIL: ", what, "\n") end
end
local function wait_until(fn, t)
  local deadline = core.monotime() + (t or 20)
  while not fn() and core.monotime() < deadline do core.sleep(0.02) end
  return fn()
end

local sim = assert(ayla.sim { heartbeat_interval = 0.2, heartbeat_misses = 5 })
local ev = '{"metadata":{"event_type":"datapoint","base_type":"integer"},"datapoint":{"value":1}}'

-- 1. explicit close with events still queued, then drained
local s = assert(sim:stream())
check(wait_until(function() return s:status() == "open" end), "open 1")
sim:emit(ev); sim:emit(ev)
check(wait_until(function() return s:stats().queued == 2 end), "queued 2")
s:close(); s:close()
check(s:next(1) ~= nil, "drain after close")

-- 2. <close> on scope exit, mid-fragment
do
  local scoped <close> = assert(sim:stream())
  check(wait_until(function() return scoped:status() == "open" end), "open 2")
  sim:fault("fragment", 4)
  sim:emit(ev:gsub("}}$", ',"pad":"' .. string.rep("p", 50000) .. '"}}'))
  core.sleep(0.05)
end

-- 3. garbage collected while connected, with a reassembly buffer in use
local live = assert(sim:stream { max_message = 4096 })
check(wait_until(function() return live:status() == "open" end), "open 3")
live = nil -- luacheck: ignore
collectgarbage(); collectgarbage()
check(wait_until(function() return sim:stats().clients == 0 end), "gc closed the socket")

-- 4. REST: a cloud session, a write acked later, a request abandoned in
--    flight, a subscription deleted under its live stream
do
  local cloud = assert(ayla.cloud(sim:cloud_options()))
  check(cloud:set("AC000W000000001", "Blue_LED", 1, { wait_ack = 10 }) ~= nil, "acked write")
  local sub = assert(cloud:subscribe { oem_model = "ledevb", dsn = "*", subscription_type = "datapoint" })
  local on_sub = assert(sub:stream())
  check(wait_until(function() return on_sub:status() == "open" end), "subscription stream")
  check(cloud:unsubscribe(sub) == true, "unsubscribe")
  check(wait_until(function() return on_sub:status() == "refused" end), "deleted key refused")
  sim:rest_fault("slow", 1, 5)
  local abandoned = core.request { host = "127.0.0.1", port = sim:port(), tls = false,
                                   path = "/apiv1/devices.json" }
  check(abandoned ~= nil, "request started")
  abandoned = nil -- luacheck: ignore
  collectgarbage(); collectgarbage()
  cloud:set("AC000W000000003", "input", 5) -- no ack, and nobody waits for one
end

-- 5. the server goes away under a stream that keeps reconnecting
local orphan = assert(sim:stream { backoff = { min = 0.05, max = 0.1 } })
check(wait_until(function() return orphan:status() == "open" end), "open 4")
local refused = assert(ayla.stream { url = sim:url(), key = "wrong" })
check(select(2, refused:next(10)):find("401") ~= nil, "refused")
sim:stop(); sim:stop()
check(wait_until(function() return orphan:stats().connect_failures > 0 end), "reconnecting")

-- 6. left open for lua_close to collect at exit: orphan, refused
print(("lifetimes: %d passed, %d failed"):format(passed, failed))
if failed > 0 then os.exit(1) end
