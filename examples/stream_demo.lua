-- The stream layer alone: the built-in simulator plays the documented DSS
-- events, a stream receives them, the server drops the socket halfway and the
-- stream resumes where it left off. Run with lua5.4 examples/stream_demo.lua
-- after ./dev build. AYLA_DEMO_SECONDS sets how long it runs (default 12).
local build = os.getenv("AYLA_BUILD_DIR") or "build"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local ayla = require "ayla"
local core = require "ayla.core"

local seconds = tonumber(os.getenv("AYLA_DEMO_SECONDS")) or 12

local sim = assert(ayla.sim {
  scenario = "examples/scenarios/seed.jsonl", loop = true, event_interval = 0.4,
  heartbeat_interval = 1, heartbeat_misses = 2,
})
print(("ayla demo: simulator serving %s (heartbeat every 1 s, silent clients dropped)")
  :format(sim:url()))
local s <close> = assert(sim:stream { idle_timeout = 3, backoff = { min = 0.2, max = 1 } })
print(tostring(s))

local started = core.monotime()
local dropped = false
while core.monotime() - started < seconds do
  local ev = s:next(0.5)
  if ev then print("  " .. tostring(ev)) end
  if not dropped and core.monotime() - started > seconds / 2 then
    dropped = true
    print("-- the server drops the socket; the stream reconnects with seq_start")
    sim:fault("drop")
  end
end

local st = s:stats()
print(("-- %d events (%d datapoint), heartbeats answered %d of %d (slowest %.2f ms), "
  .. "reconnects %d, seq gaps %d, duplicates dropped %d, malformed %d")
  :format(st.events, st.events_by_type.datapoint, st.heartbeats_answered, st.heartbeats,
    st.heartbeat_reply_ms_max or 0, st.reconnects, st.seq_gaps, st.duplicates,
    st.malformed.bad_json))
sim:stop()
