-- Soak: SOAK_EVENTS datapoint events (default 1,000,000) from the simulator
-- through an ayla.stream and two ayla.app rules, watching this process's
-- memory. The simulator runs in a process of its own (bench/soak_sim.lua), so
-- the RSS measured here is the client's: the C I/O thread, the queue, the Lua
-- state, the app and its twin cache.
--
-- The producer is paced: the flood goes out in chunks of SOAK_CHUNK events,
-- and the next chunk is asked for once the rules have taken all but one chunk,
-- so the queue holds at most two chunks and the run measures what the rules
-- keep up with, not how fast a queue fills (spec/overload_spec.lua covers an
-- unpaced producer). RSS (VmRSS) and the Lua heap are sampled every
-- SOAK_SAMPLE events. Warm-up is the first 10% of the events, or the first
-- 150,000 if that is more (RSS was seen to rise for that long, from 23.7 to
-- 25.3 MB, then stay), but at most half the run; "RSS after warm-up" is the
-- median of the samples of the next 10% of the events, "RSS at the end" the
-- median of the last 10% (medians, because RSS rises and falls by a few
-- percent with the queue's fill and the collector's cycles). Prints
-- key=value lines and exits non-zero if RSS at the end is 5% or more above
-- RSS after warm-up, if an event was lost without being counted as dropped,
-- if the rules saw events out of order, or if the server dropped the client
-- for unanswered heartbeats.
--
-- usage: lua5.4 bench/soak_events.lua          (from the root, after a build)
--   SOAK_EVENTS=100000 for a quick run; AYLA_BUILD_DIR picks the build (default build/)
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local build = os.getenv("AYLA_BUILD_DIR") or (root .. "/build")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local ayla = require "ayla"
local core = require "ayla.core"
local server = dofile(root .. "/bench/soak_sim.lua")

local function env_int(name, default)
  local v = math.tointeger(tonumber(os.getenv(name) or default))
  assert(v and v > 0, name .. " must be a positive integer")
  return v
end

local N = env_int("SOAK_EVENTS", 1000000)
local CHUNK = env_int("SOAK_CHUNK", 2000)
local SAMPLE = env_int("SOAK_SAMPLE", math.max(1000, N // 100))
local HEARTBEAT = tonumber(os.getenv("SOAK_HEARTBEAT_INTERVAL") or "0.05")
local WARMUP = math.min(math.max(N // 10, 150000), N // 2)
local MAX_GROWTH = 5 -- percent

local rss_kb = function() return server.status_kb("VmRSS") end

local srv = server.start(root, HEARTBEAT, 2)
local s = assert(ayla.stream { url = srv.url, key = srv.key })
local app = assert(ayla.app { stream = s, log = function() end })

-- Rule 1 sees every flood event: a counter per device, the order of seq, the
-- twin cache (updated by the app before the rule runs) against the event.
local seen, ones, last_seq, out_of_order, twin_mismatch = 0, 0, 0, 0, 0
local per_device = {}
app:on("datapoint", { property = "Blue_LED", name = "count" }, function(ev, ctx)
  seen = seen + 1
  if ev.seq <= last_seq then out_of_order = out_of_order + 1 end
  last_seq = ev.seq
  per_device[ev.dsn] = (per_device[ev.dsn] or 0) + 1
  if ev.value == 1 then ones = ones + 1 end
  if ctx:twin(ev.dsn, "Blue_LED") ~= ev.value then twin_mismatch = twin_mismatch + 1 end
end)
-- Rule 2: a filter on the value; it must fire exactly for the ones rule 1 saw.
local fired_on_one = 0
app:on("datapoint", { property = "Blue_LED", value = 1, name = "ones" }, function()
  fired_on_one = fired_on_one + 1
end)

local t0 = core.monotime()
while s:status() ~= "open" do
  app:step(0.05)
  assert(core.monotime() - t0 < 10, "the stream did not open")
end
while srv:stats().clients < 1 do core.sleep(0.01) end -- the server has registered the client

local requested = 0
local function request_more()
  -- Keep at most two chunks between the server and the rules.
  while requested < N and requested - seen < CHUNK do
    local n = math.min(CHUNK, N - requested)
    srv:send("flood " .. n)
    requested = requested + n
  end
end

local samples = {} -- { events, rss_kb, lua_kb }
local next_sample = SAMPLE
local cpu0, t_first, t_last = os.clock(), nil, nil
local stalled_since = core.monotime()
request_more()
while seen + s:stats().dropped < N do
  local before = seen
  app:step(0.05)
  if seen > before then
    t_first = t_first or core.monotime()
    t_last = core.monotime()
    stalled_since = t_last
  elseif core.monotime() - stalled_since > 10 then
    io.stderr:write(("soak_events: no event for 10 s after %d of %d (stream: %d received, %d queued)\n")
      :format(seen, N, s:stats().events, s:stats().queued))
    break
  end
  request_more()
  while seen >= next_sample do
    local r = rss_kb()
    samples[#samples + 1] = { next_sample, r, collectgarbage("count") }
    next_sample = next_sample + SAMPLE
  end
end
local cpu = os.clock() - cpu0
for _ = 1, 20 do app:step(0.01) end -- let the last tasks finish and the counters settle
local rss_end, lua_end = rss_kb(), collectgarbage("count")
local st, sst = s:stats(), srv:stats()
s:close()
srv:close()

-- The median RSS and Lua heap of the samples taken from event `from` to `to`.
local function median_of(from, to)
  local r, l = {}, {}
  for _, smp in ipairs(samples) do
    if smp[1] > from and smp[1] <= to then r[#r + 1], l[#l + 1] = smp[2], smp[3] end
  end
  if #r == 0 then return rss_end, lua_end end
  table.sort(r)
  table.sort(l)
  return r[(#r + 1) // 2], l[(#l + 1) // 2]
end
local rss_max_after, peak = 0, server.status_kb("VmHWM")
for _, smp in ipairs(samples) do
  if smp[1] > WARMUP and smp[2] > rss_max_after then rss_max_after = smp[2] end
  if smp[2] > peak then peak = smp[2] end -- VmHWM can lag the last VmRSS sample
end
local rss_warm, lua_warm = median_of(WARMUP, WARMUP + N // 10)
local rss_last, lua_last = median_of(N - N // 10, N)
local growth = (rss_last - rss_warm) * 100 / rss_warm
local malformed = 0
for _, v in pairs(st.malformed) do malformed = malformed + v end
local devices = 0
for _ in pairs(per_device) do devices = devices + 1 end
local seconds = (t_first and t_last and t_last > t_first) and (t_last - t_first) or 0

local function kv(t)
  local out = {}
  for _, p in ipairs(t) do out[#out + 1] = p[1] .. "=" .. tostring(p[2]) end
  print(table.concat(out, " "))
end
kv { { "bench", "soak_events" }, { "events", N }, { "chunk", CHUNK }, { "sample_every", SAMPLE },
  { "warmup_events", WARMUP },
  { "seconds", ("%.2f"):format(seconds) }, { "evps", ("%.0f"):format(seconds > 0 and seen / seconds or 0) },
  { "cpu_seconds", ("%.2f"):format(cpu) }, { "us_cpu_per_event", ("%.2f"):format(cpu * 1e6 / N) } }
local function mb(kb) return ("%.1f"):format(kb / 1024) end
kv { { "rss_warm_mb", mb(rss_warm) }, { "rss_last_mb", mb(rss_last) }, { "rss_end_mb", mb(rss_end) },
  { "rss_max_after_warmup_mb", mb(rss_max_after) }, { "peak_rss_mb", mb(peak) },
  { "growth_pct", ("%.2f"):format(growth) },
  { "max_growth_pct", ("%.2f"):format((rss_max_after - rss_warm) * 100 / rss_warm) },
  { "lua_warm_mb", mb(lua_warm) }, { "lua_last_mb", mb(lua_last) }, { "lua_end_mb", mb(lua_end) },
  { "sim_peak_rss_mb", mb(sst.hwm_kb) } }
kv { { "sim_flood_sent", sst.flood_sent }, { "stream_events", st.events }, { "rule_seen", seen },
  { "rule_ones", ones }, { "filter_fired", fired_on_one }, { "devices", devices },
  { "dropped", st.dropped }, { "malformed", malformed }, { "seq_gaps", st.seq_gaps },
  { "out_of_order", out_of_order }, { "twin_mismatch", twin_mismatch }, { "queue_peak", st.queue_peak },
  { "app_events", app:stats().events }, { "app_fired", app:stats().fired },
  { "app_failures", app:stats().failures }, { "app_duplicates", app:stats().duplicates or 0 } }
kv { { "heartbeats_sent", sst.heartbeats_sent }, { "heartbeats_answered", st.heartbeats_answered },
  { "heartbeat_drops", sst.heartbeat_drops }, { "reconnects", st.reconnects },
  { "hb_rtt_ms_p50", sst.heartbeat_rtt_ms_p50 }, { "hb_rtt_ms_p99", sst.heartbeat_rtt_ms_p99 },
  { "hb_rtt_ms_max", sst.heartbeat_rtt_ms_max } }
print("rss_samples_mb " .. (function()
  local out = {}
  for i = 1, #samples, math.max(1, #samples // 20) do
    out[#out + 1] = ("%d:%.1f"):format(samples[i][1], samples[i][2] / 1024)
  end
  return table.concat(out, " ")
end)())

local failures = {}
local function check(ok, why) if not ok then failures[#failures + 1] = why end end
check(sst.flood_sent == N, ("the server sent %d events of %d"):format(sst.flood_sent, N))
check(seen + st.dropped == sst.flood_sent,
  ("events lost without being counted: sent %d, rule saw %d, dropped %d")
    :format(sst.flood_sent, seen, st.dropped))
check(st.events == sst.flood_sent, ("the stream counted %d events of %d sent"):format(st.events, N))
check(malformed == 0, ("%d malformed messages"):format(malformed))
check(out_of_order == 0, ("%d events out of order"):format(out_of_order))
check(twin_mismatch == 0, ("%d twin reads disagreed with the event"):format(twin_mismatch))
check(fired_on_one == ones, ("the value filter fired %d times for %d ones"):format(fired_on_one, ones))
check(app:stats().failures == 0, "a rule failed")
check((app:stats().duplicates or 0) == 0, ("the app skipped %d events as duplicates")
  :format(app:stats().duplicates or 0))
check(sst.heartbeat_drops == 0 and st.reconnects == 0, "the server dropped the client")
check(growth < MAX_GROWTH, ("RSS grew %.2f%% after warm-up (limit %d%%)"):format(growth, MAX_GROWTH))
for _, why in ipairs(failures) do io.stderr:write("soak_events: FAIL: ", why, "\n") end
os.exit(#failures == 0 and 0 or 1)
