-- Measures ayla.cloud writes end to end against ayla-sim over loopback:
-- writes per second, and the latency of each cloud:set() from its start to
-- its return and to its datapoint event on a DSS stream, with 1, 16 and 64
-- writes in flight (C scheduler tasks, each doing one set() after another).
--
-- One subscription to the datapoints of AC000W000000001/input (an integer
-- input property without acks) and one stream on it. Each write sends a
-- unique value; the event's value says which write it echoes. Every write's
-- event must arrive exactly once, or the script fails. Latencies are
-- measured on the monotonic clock, from just before set() is called to the
-- moment this script sees its return or pops its event with s:next(0).
--
-- The main loop steps the scheduler and drains the stream after every step.
-- A step that finds no task ready waits in core.wait_any, which wakes both
-- when a request finishes and when the stream's queue becomes non-empty, so
-- events are seen as soon as the Lua thread is free, without polling.
--
-- Prints one key=value line per level, then a markdown table of the results
-- and one of CPU time per write in each thread (from /proc schedstat).
--
-- With --tls, the in-process simulator serves HTTPS and WSS with a
-- certificate made for the run (openssl), trusted through ca_file.
--
-- HTTP keep-alive: the REST requests share the hub's pool of kept-alive
-- connections (csrc/http.c); each level also reports how many connections
-- (TCP, and TLS handshakes with --tls) it opened, from ayla.http.stats().
-- A build without the pool has no such counter: every request opened one.
--
-- usage: lua5.4 bench/cloud_writes.lua [--tls] [N] [REST_URL]   (from the repository root)
--   --tls     HTTPS/WSS to the in-process simulator
--   N         writes per level (default 20000)
--   REST_URL  an ayla-sim started apart (build/ayla-sim prints its URL), signed
--             in with AYLA_EMAIL, AYLA_PASSWORD, AYLA_APP_ID, AYLA_APP_SECRET;
--             without it the script starts ayla.sim{} in this process.
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("AYLA_BUILD_DIR") or (root .. "/build")) .. "/?.so;" .. package.cpath

local ayla = require "ayla"
local core = require "ayla.core"
local monotime = core.monotime

-- Connections the pool opened so far (nil: a build without the pool).
local function connections()
  return core._http_stats and core._http_stats().connections or nil
end

local DSN, PROP = "AC000W000000001", "input"
local LEVELS = { 1, 16, 64 }
local WARMUP = 200 -- writes before the first measured level (16 in flight)

local args = { table.unpack(arg) }
local tls = args[1] == "--tls"
if tls then table.remove(args, 1) end
local n = math.tointeger(tonumber(args[1] or "20000"))
local rest_url = args[2]
if not (n and n > 0) or (tls and rest_url) then
  io.stderr:write("usage: lua5.4 bench/cloud_writes.lua [--tls] [N] [REST_URL]\n")
  os.exit(2)
end

local function die(fmt, ...)
  io.stderr:write("cloud_writes: " .. fmt:format(...) .. "\n")
  os.exit(1)
end

-- ---- CPU time per thread -------------------------------------------------

local stat = assert(io.open("/proc/self/stat"))
local pid = stat:read("l"):match("^(%d+)")
stat:close()

local function thread_ids()
  local ids = {}
  local ls = assert(io.popen("ls /proc/" .. pid .. "/task"))
  for tid in ls:lines() do ids[#ids + 1] = tid end
  ls:close()
  return ids
end

-- Seconds each thread has run on a CPU, by thread id.
local function cpu_by_thread()
  local t = {}
  for _, tid in ipairs(thread_ids()) do
    local f = io.open(("/proc/%s/task/%s/schedstat"):format(pid, tid))
    if f then
      t[tid] = tonumber(f:read("l"):match("^(%d+)")) / 1e9
      f:close()
    end
  end
  return t
end

-- Names each thread by what was started when it appeared.
local role = {}
local function name_new_threads(name)
  for _, tid in ipairs(thread_ids()) do role[tid] = role[tid] or name end
end
name_new_threads("lua")

-- ---- set-up ----------------------------------------------------------------

local sim, cloud, err, certdir
if rest_url then
  cloud, err = ayla.cloud { hosts = { user = rest_url, ads = rest_url, stream = rest_url,
                                      mstream = rest_url } }
elseif tls then
  local dir = io.popen("mktemp -d"):read("l")
  certdir = dir
  assert(os.execute(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj '/CN=127.0.0.1' "
    .. "-addext 'subjectAltName=IP:127.0.0.1' -keyout '%s/k.pem' -out '%s/c.pem' 2>/dev/null")
    :format(dir, dir)), "openssl could not make a certificate")
  sim = assert(ayla.sim { cert_file = dir .. "/c.pem", key_file = dir .. "/k.pem" })
  name_new_threads("sim")
  cloud, err = ayla.cloud(sim:cloud_options { ca_file = dir .. "/c.pem" })
else
  sim = assert(ayla.sim {})
  name_new_threads("sim")
  cloud, err = ayla.cloud(sim:cloud_options())
end
if not cloud then die("%s", err) end

-- Sign in and learn the properties, so that no set() below asks for them.
local ok
ok, err = cloud:properties(DSN)
if not ok then die("%s", err) end
local sub
sub, err = cloud:subscribe { oem_model = "ledevb", dsn = DSN, property_name = PROP,
                             subscription_type = "datapoint" }
if not sub then die("%s", err) end
local s
s, err = sub:stream()
if not s then die("%s", err) end
name_new_threads("io")
local t_open = monotime() + 10
while s:status() ~= "open" do
  if monotime() > t_open then die("the stream did not open: %s", select(2, s:status())) end
  s:next(0.01)
end

-- ---- one level -------------------------------------------------------------

local function percentile(sorted, p)
  return sorted[math.max(1, math.ceil(p / 100 * #sorted))]
end

-- N writes of the values base+1 .. base+N, `inflight` at a time.
local function run_level(inflight, count, base)
  local t_set, t_ret, t_ev = {}, {}, {}
  local next_i, got = 1, 0
  local failures = {}
  local sched = ayla.scheduler { on_error = function(_, e) failures[#failures + 1] = e end }

  local function worker()
    while next_i <= count do
      local v = base + next_i
      next_i = next_i + 1
      t_set[v] = monotime()
      local dp, why = cloud:set(DSN, PROP, v)
      t_ret[v] = monotime()
      if not dp then error(("set %d failed: %s"):format(v, why)) end
      if dp.value ~= v then error(("set %d returned the value %s"):format(v, tostring(dp.value))) end
    end
  end

  local function take(ev)
    local now, v = monotime(), ev.value
    if ev.type ~= "datapoint" or ev.dsn ~= DSN or ev.property ~= PROP or not t_set[v] then
      die("an event that no write of this level made: %s %s/%s = %s", tostring(ev.type),
        tostring(ev.dsn), tostring(ev.property), tostring(v))
    end
    if t_ev[v] then die("the event of write %d arrived twice", v) end
    t_ev[v], got = now, got + 1
  end

  local function drain()
    while true do
      local ev, why, detail = s:next(0)
      if not ev then
        if why ~= "timeout" or detail then die("stream: %s %s", tostring(why), tostring(detail)) end
        return
      end
      take(ev)
    end
  end

  local conn0, cpu0, t0 = connections(), cpu_by_thread(), monotime()
  for _ = 1, inflight do sched:spawn(worker) end
  drain()
  while sched:step(0.25) > 0 do drain() end
  local t_done = monotime()
  if #failures > 0 then die("%d writes failed; the first: %s", #failures, failures[1]) end
  -- The last events may still be on their way.
  local deadline = t_done + 10
  while got < count do
    local ev, why = s:next(math.max(0, deadline - monotime()))
    if not ev then die("%d of %d events arrived (%s)", got, count, tostring(why)) end
    take(ev)
  end
  local cpu1 = cpu_by_thread()
  local conn1 = connections()

  local set_ms, ev_ms, early = {}, {}, 0
  for v = base + 1, base + count do
    set_ms[#set_ms + 1] = (t_ret[v] - t_set[v]) * 1000
    ev_ms[#ev_ms + 1] = (t_ev[v] - t_set[v]) * 1000
    if t_ev[v] <= t_ret[v] then early = early + 1 end
  end
  table.sort(set_ms)
  table.sort(ev_ms)
  local cpu = {}
  for tid, sec in pairs(cpu1) do
    local r = role[tid] or "other"
    cpu[r] = (cpu[r] or 0) + (sec - (cpu0[tid] or 0))
  end
  local seconds = t_done - t0
  return {
    inflight = inflight, writes = count, seconds = seconds, wps = count / seconds,
    set_p50 = percentile(set_ms, 50), set_p99 = percentile(set_ms, 99), set_max = set_ms[#set_ms],
    ev_p50 = percentile(ev_ms, 50), ev_p99 = percentile(ev_ms, 99), ev_max = ev_ms[#ev_ms],
    early = early / count * 100, cpu = cpu,
    connections = conn0 and conn1 - conn0 or nil,
  }
end

-- ---- the run ---------------------------------------------------------------

run_level(16, WARMUP, 0)
local results = {}
for i, c in ipairs(LEVELS) do
  results[i] = run_level(c, n, i * 1000000)
  collectgarbage()
end
local st = s:stats()
s:close()
if st.dropped ~= 0 or st.malformed.bad_json ~= 0 then
  die("the stream dropped %d events and saw %d bad ones", st.dropped, st.malformed.bad_json)
end
cloud:unsubscribe(sub)
if sim then sim:stop() end
if certdir then os.execute("rm -rf '" .. certdir .. "'") end

local function us_per_write(r, name) return (r.cpu[name] or 0) / r.writes * 1e6 end

for _, r in ipairs(results) do
  print(("bench=cloud_writes inflight=%d writes=%d seconds=%.3f wps=%.0f set_p50_ms=%.3f "
    .. "set_p99_ms=%.3f event_p50_ms=%.3f event_p99_ms=%.3f event_max_ms=%.3f "
    .. "event_first_pct=%.1f cpu_us_lua=%.1f cpu_us_io=%.1f cpu_us_sim=%s tls=%s connections=%s")
    :format(r.inflight, r.writes, r.seconds, r.wps, r.set_p50, r.set_p99, r.ev_p50, r.ev_p99,
      r.ev_max, r.early, us_per_write(r, "lua"), us_per_write(r, "io"),
      sim and ("%.1f"):format(us_per_write(r, "sim")) or "-", tls and "yes" or "no",
      r.connections and tostring(r.connections) or "per-request"))
end
print()
print("| writes in flight | writes/s | set() p50 (ms) | set() p99 (ms) | "
  .. "set → event p50 (ms) | set → event p99 (ms) | set → event max (ms) | event seen first | "
  .. "connections opened |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, r in ipairs(results) do
  print(("| %d | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f%% | %s |"):format(r.inflight, r.wps,
    r.set_p50, r.set_p99, r.ev_p50, r.ev_p99, r.ev_max, r.early,
    r.connections and tostring(r.connections) or ("%d (one per write)"):format(r.writes)))
end
print()
print("| writes in flight | CPU µs/write: Lua thread | ayla I/O thread | ayla-sim thread | total |")
print("|---:|---:|---:|---:|---:|")
for _, r in ipairs(results) do
  local lua, io_, simt = us_per_write(r, "lua"), us_per_write(r, "io"), us_per_write(r, "sim")
  if sim then
    print(("| %d | %.0f | %.0f | %.0f | %.0f |"):format(r.inflight, lua, io_, simt, lua + io_ + simt))
  else -- an ayla-sim process of its own: its CPU time is not seen from here
    print(("| %d | %.0f | %.0f | – | – |"):format(r.inflight, lua, io_))
  end
end
