-- Measures the rules engine's dispatch: events per second through ayla.app
-- with 1, 100, 1,000 and 10,000 rules registered, to show whether the cost of
-- an event stays flat as rules that cannot match it are added.
--
-- The fleet: 1,000 devices (AC000W000000000 ..) with 4 properties that report
-- (temp, humidity, power, mode). The events: a pool of 8,000 datapoint events,
-- every (device, property) pair twice, each round in a random order (fixed
-- seed), with integer values; built with cjson and decoded with ayla.decode
-- before the clock starts, so what is timed is the app, not JSON. A run hands
-- the pool out again and again, up to N events (default 250,000), giving each
-- pass over the pool an updated_at one second after the pass before, so the
-- twin cache takes every event, and new datapoint ids (the app drops a
-- datapoint id it has seen, as a server's resend). Runs are long so that the collector completes
-- many cycles in each (its cycles come further apart as the heap of rules
-- grows; a short run would leave the 10,000-rule cells' garbage uncollected).
-- A run that has not done a tenth of its events after 0.5 s (the slow cells)
-- stops there, and every run stops after 3 s (the stub checks the time every
-- 16 events).
--
-- Rules are one app:on("datapoint", filter, fn) each, with a trivial fn (it
-- counts). Of R rules, max(1, R/100) "can match": each is keyed to its own
-- reporting (device, property) pair and fires on every event for that pair.
-- "1% of 1" is taken as 1, so 1 and 100 rules both have one rule that can
-- match (it fires on 1 event in 4,000), 1,000 rules have 10 and 10,000 rules
-- 100 (which fire on 1 event in 40). The other rules are keyed to a device of
-- the fleet and a property that never reports in this stream (setting1,
-- setting2, ..., spread over the devices round-robin: 100 rules cover 100
-- devices, 1,000 rules 99% of them, 10,000 rules put 10 on every device), so
-- they cannot match. Three series:
--
--   indexed      filters { dsn = "...", property = "..." }: the case the
--                app's index (type, dsn, property) is built for.
--   indexed_none the same without the rules that can match: R rules, none
--                can match, no callback ever runs.
--   predicate    the same rules as "indexed", written with predicates
--                { dsn = function(d) return d == X end, property = ... }.
--                A predicate (or a filter on value, status or oem_model
--                alone) cannot be indexed, so every such rule is a candidate
--                for every event: the worst case.
--
-- Events reach the app the way a DSS stream's do: app:step(0) in a loop, with
-- a Lua stub in place of the stream, whose next(0) hands out the prebuilt
-- events (at most 1,000 per step, as the app takes them). A step is dispatch
-- for each event (twin cache update, candidate lookup, trigger checks, a
-- coroutine task per fired rule), then one scheduler step that reaps the
-- finished tasks. The app runs on a virtual clock with a no-op log. Before
-- the clock starts, the twin cache gets a value for every (device, property),
-- so that it is warm, and the heap is collected; the collector then runs as
-- usual (incremental, the defaults) while the events are dispatched, and a
-- finalizer that re-arms itself counts its cycles. The run fails if the
-- callbacks did not fire exactly once per event for a matching pair, or if
-- the app did not count every event.
--
-- Rates come from the process's CPU time (os.clock), less disturbed than
-- wall-clock time by other processes on a shared machine; the wall-clock rate
-- is printed too. The process has one thread (no cloud, no stream).
--
-- Each (series, rules) cell runs in its own process (this script with
-- --one), RUNS times, in alternating order, so that peak RSS (VmHWM) is the
-- cell's own; it includes the prebuilt events and the Lua state (base_rss_mb:
-- VmRSS before the app exists). Prints one key=value line per run, then a
-- markdown table: median events/s and µs/event, the ratio to 1 rule, min and
-- max events/s, callbacks per 1,000 events, events and collector cycles per
-- run, the Lua heap the rules take, and median peak RSS.
--
-- usage: lua5.4 bench/dispatch.lua [N] [RUNS]   (from the repository root;
--          defaults 250000 and 3, about 60 s; `lua5.4 bench/dispatch.lua
--          5000 1` is a quick run)
--        lua5.4 bench/dispatch.lua --one SERIES RULES N [FLAGS]   one run
--          FLAGS, comma-separated: nolimit (no time limits), nogc (the
--          collector stopped while timing), for profiling
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local SERIES = { "indexed", "indexed_none", "predicate" }
local LEVELS = { 1, 100, 1000, 10000 }
local DEVICES, PROPS = 1000, { "temp", "humidity", "power", "mode" }
-- A run stops early after SLOW_CUT s if it has not done a tenth of its
-- events by then (the slow cells), and after TIME_LIMIT s in any case.
local SLOW_CUT, TIME_LIMIT = 0.5, 3
local POOL_ROUNDS = 2   -- prebuilt events: each (device, property) this many times

local function die(fmt, ...)
  io.stderr:write("dispatch: " .. fmt:format(...) .. "\n")
  os.exit(1)
end

local function status_mb(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

-- ---- one run (a child process) -------------------------------------------

local function one(series, rules, n, flags)
  local ayla = require "ayla"
  local cjson = require "cjson"
  local monotime = require("ayla.core").monotime

  local function dsn_of(d) return ("AC000W%09d"):format(d) end
  local npairs = DEVICES * #PROPS
  local function pair(k) -- k = 0 .. npairs-1 -> dsn, property
    return dsn_of(k // #PROPS), PROPS[k % #PROPS + 1]
  end

  local T0 = os.time { year = 2026, month = 11, day = 22, hour = 0 }
  local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%SZ", t) end
  local function event(seq, dsn, prop, value)
    return assert(ayla.decode(cjson.encode {
      seq = tostring(seq),
      metadata = { oem_id = "0dfc7900", oem_model = "bench", dsn = dsn, property_name = prop,
                   display_name = prop, base_type = "integer", event_type = "datapoint" },
      datapoint = { id = ("id-%d"):format(seq), value = value, metadata = {}, echo = false,
                    updated_at = iso(T0), created_at = iso(T0) },
    }))
  end

  -- A pool of events, the same in every run (a fixed seed): every (device,
  -- property) pair POOL_ROUNDS times, each round in a random order; handed
  -- out again and again until n have been dispatched.
  math.randomseed(20261122)
  local pool, keys = {}, {}
  for _ = 1, POOL_ROUNDS do
    local order = {}
    for k = 0, npairs - 1 do order[k + 1] = k end
    for i = npairs, 2, -1 do
      local j = math.random(i)
      order[i], order[j] = order[j], order[i]
    end
    for _, k in ipairs(order) do
      local dsn, prop = pair(k)
      pool[#pool + 1] = event(#pool + 1, dsn, prop, math.random(0, 100))
      keys[#keys + 1] = k
    end
  end
  local POOL = #pool

  -- The rules: `can` keyed to reporting pairs spread over the fleet, the
  -- rest to properties that never report.
  local can = series == "indexed_none" and 0 or math.max(1, rules // 100)
  local matching = {} -- pair index -> true
  local specs = {}
  for j = 0, can - 1 do
    local k = j * (npairs // can) + j % #PROPS + 7
    local dsn, prop = pair(k)
    matching[k] = true
    specs[#specs + 1] = { dsn, prop }
  end
  for j = 0, rules - can - 1 do
    specs[#specs + 1] = { dsn_of(j % DEVICES), "setting" .. (j // DEVICES + 1) }
  end

  collectgarbage()
  collectgarbage()
  local base_rss = status_mb("VmRSS")

  local T = 0
  local app = assert(ayla.app {
    clock = { now = function() return T end, wall = function() return T0 + T end },
    log = function() end,
  })
  local hits = 0
  local function fn() hits = hits + 1 end
  local heap0 = collectgarbage("count")
  for _, s in ipairs(specs) do
    local dsn, prop = s[1], s[2]
    if series == "predicate" then
      app:on("datapoint", { dsn = function(d) return d == dsn end,
                            property = function(p) return p == prop end }, fn)
    else
      app:on("datapoint", { dsn = dsn, property = prop }, fn)
    end
  end
  collectgarbage()
  local rules_kb = collectgarbage("count") - heap0

  -- A stand-in for a stream: next(0) hands out the pool's events, with one
  -- updated_at per pass over the pool, one second after the pass before it.
  local stub = { i = 0, n = n, deadline = math.huge, pass = 0, at = nil }
  function stub:next()
    local i = self.i + 1
    if i > self.n then return nil end
    if i & 15 == 0 and monotime() > self.deadline then
      if self.last_cut or i < self.n // 10 then
        self.n = i - 1
        return nil
      end
      self.deadline, self.last_cut = self.t0 + TIME_LIMIT, true
    end
    self.i = i
    local j = (i - 1) % POOL + 1
    if j == 1 then
      self.pass = self.pass + 1
      self.at = iso(T0 + self.pass)
    end
    local ev = pool[j]
    ev.time = self.at
    ev.datapoint.id = self.pass .. "-" .. j
    return ev
  end
  app.streams = { stub }

  -- Warm the twin cache: a value for every (device, property), dated before
  -- the events (straight into the cache: dispatching 4,000 events would take
  -- minutes in the slowest case).
  for k = 0, npairs - 1 do
    local dsn, prop = pair(k)
    app.twin:update(dsn, prop, 0, iso(T0))
  end
  collectgarbage()
  collectgarbage()

  -- Counts the collector's cycles while timing: a finalizer that re-arms itself.
  local cycles, gc_done = 0, false
  local sentinel = {}
  sentinel.__gc = function()
    if gc_done then return end
    cycles = cycles + 1
    setmetatable({}, sentinel)
  end
  setmetatable({}, sentinel)
  if flags.nogc then collectgarbage("stop") end
  local t0, c0 = monotime(), os.clock()
  stub.t0, stub.deadline = t0, flags.nolimit and math.huge or t0 + SLOW_CUT
  while stub.i < stub.n do app:step(0) end
  local cpu, seconds = os.clock() - c0, monotime() - t0
  gc_done = true
  app:step(0) -- reap the last tasks

  local done = stub.i
  local want = 0
  for i = 1, done do if matching[keys[(i - 1) % POOL + 1]] then want = want + 1 end end
  local fired = hits
  if fired ~= want then die("%s %d: %d callbacks for %d matching events", series, rules, fired, want) end
  if app.counters.events ~= done then die("%s %d: the app counted %d events, not %d",
    series, rules, app.counters.events, done) end
  if app.counters.failures ~= 0 or #app.scheduler.tasks ~= 0 then die("%s %d: %d failures, %d tasks left",
    series, rules, app.counters.failures, #app.scheduler.tasks) end

  print(("bench=dispatch series=%s rules=%d can_match=%d events=%d cpu_seconds=%.4f evps=%.0f "
    .. "us_per_event=%.3f wall_seconds=%.4f wall_evps=%.0f fired=%d gc_cycles=%d rules_kb=%.0f "
    .. "rss_mb=%.1f base_rss_mb=%.1f")
    :format(series, rules, can, done, cpu, done / cpu, cpu / done * 1e6, seconds, done / seconds, fired,
      cycles, rules_kb, status_mb("VmHWM"), base_rss))
end

if arg[1] == "--one" then
  local n = math.tointeger(tonumber(arg[4]))
  local rules = math.tointeger(tonumber(arg[3]))
  local flags = {}
  for f in (arg[5] or ""):gmatch("[^,]+") do flags[f] = true end
  if not (n and n > 0 and rules and rules > 0) then die("usage: --one SERIES RULES N [nolimit,nogc]") end
  one(arg[2], rules, n, flags)
  os.exit(0)
end

-- ---- the driver ------------------------------------------------------------

local n = math.tointeger(tonumber(arg[1] or "250000"))
local runs = math.tointeger(tonumber(arg[2] or "3"))
if not (n and n > 0 and runs and runs > 0) then
  io.stderr:write("usage: lua5.4 bench/dispatch.lua [N] [RUNS]\n")
  os.exit(2)
end

local lua = arg[-1] or "lua5.4"
local results = {} -- "series rules" -> list of parsed lines
local cells = {}
for _, s in ipairs(SERIES) do
  for _, r in ipairs(LEVELS) do cells[#cells + 1] = { s, r } end
end

for run = 1, runs do
  -- alternate the order: forwards on odd runs, backwards on even ones
  for c = 1, #cells do
    local cell = cells[run % 2 == 1 and c or #cells + 1 - c]
    local cmd = ("%q %q --one %s %d %d"):format(lua, arg[0], cell[1], cell[2], n)
    local p = assert(io.popen(cmd))
    local line = p:read("a")
    local ok = p:close()
    if not ok or not line:match("^bench=dispatch") then die("run failed: %s\n%s", cmd, line) end
    io.write(line)
    io.flush()
    local t = {}
    for k, v in line:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
    local key = cell[1] .. " " .. cell[2]
    results[key] = results[key] or {}
    table.insert(results[key], t)
  end
end

local function median(list, field)
  local v = {}
  for _, t in ipairs(list) do v[#v + 1] = t[field] end
  table.sort(v)
  local m = #v // 2
  if #v % 2 == 1 then return v[m + 1], v[1], v[#v] end
  return (v[m] + v[m + 1]) / 2, v[1], v[#v]
end

print()
print(("up to %d events per run (cut after %g s below a tenth of them, after %g s in any case), "
  .. "%d runs per cell; rates from CPU time"):format(n, SLOW_CUT, TIME_LIMIT, runs))
print()
print("| series | rules | can match | events/s | µs/event | × 1 rule | min–max events/s "
  .. "| wall-clock events/s | callbacks per 1,000 events | events per run | GC cycles per run "
  .. "| rules' Lua heap (MB) | peak RSS (MB) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for _, cell in ipairs(cells) do
  local list = results[cell[1] .. " " .. cell[2]]
  local evps, lo, hi = median(list, "evps")
  local one_rule = median(results[cell[1] .. " " .. LEVELS[1]], "evps")
  local fired, events = 0, 0
  for _, t in ipairs(list) do fired, events = fired + t.fired, events + t.events end
  local row = "| %s | %d | %d | %.0f | %.2f | %.2f | %.0f–%.0f | %.0f | %.1f | %.0f | %.0f | %.1f | %.1f |"
  print(row:format(cell[1], cell[2], list[1].can_match, evps, 1e6 / evps, one_rule / evps, lo, hi,
    (median(list, "wall_evps")), fired / events * 1000, (median(list, "events")),
    (median(list, "gc_cycles")), median(list, "rules_kb") / 1024, (median(list, "rss_mb"))))
end
local base = median(results["indexed 1"], "base_rss_mb")
print()
print(("Peak RSS includes the prebuilt events and the Lua state: %.1f MB of VmRSS before the app "
  .. "exists."):format(base))
