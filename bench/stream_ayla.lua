-- Measures ayla end to end: N datapoint events from `ayla-sim --flood N`
-- over loopback, read one by one with s:next() (C I/O thread, C queue,
-- cjson decode and the Lua event shortcuts). Prints one result line:
--   bench=ayla events=N seconds=S evps=R total_seconds=T rss_mb=M dropped=D ...
-- seconds runs from the first event returned to the Nth; total_seconds also
-- counts creating the stream and connecting. rss_mb is VmHWM (peak RSS).
--
-- usage: lua5.4 bench/stream_ayla.lua URL KEY [N]   (from the repository root)
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/?.so;" .. package.cpath

local ayla = require "ayla"
local monotime = require("ayla.core").monotime

local url, key = arg[1], arg[2]
local n = math.tointeger(tonumber(arg[3] or "200000"))
if not (url and key and n and n > 0) then
  io.stderr:write("usage: lua5.4 bench/stream_ayla.lua URL KEY [N]\n")
  os.exit(2)
end

local function peak_rss_mb()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmHWM:%s*(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

local t_start = monotime()
-- queue_max and queue_max_bytes hold the whole flood: the I/O thread may
-- outrun Lua, and the default drop-oldest policy would then drop events.
local s = assert(ayla.stream { url = url, key = key, queue_max = n + 100000,
                               queue_max_bytes = 1 << 30 })
local got, last_seq, t_first = 0, nil, nil
while got < n do
  local ev, err = s:next(10)
  if not ev then
    io.stderr:write(("stream_ayla: stopped after %d events: %s\n"):format(got, tostring(err)))
    break
  end
  if got == 0 then t_first = monotime() end
  got = got + 1
  last_seq = ev.seq
end
local t_end = monotime()
local st = s:stats()
s:close()

local seconds = t_first and (t_end - t_first) or 0
-- Events after the first, over the time between the first and the last.
local evps = seconds > 0 and (got - 1) / seconds or 0
print(("bench=ayla events=%d seconds=%.4f evps=%.0f total_seconds=%.4f rss_mb=%.1f "
  .. "dropped=%d queue_peak=%d bad_json=%d last_seq=%s")
  :format(got, seconds, evps, t_end - t_start, peak_rss_mb(), st.dropped, st.queue_peak,
    st.malformed.bad_json, tostring(last_seq)))
os.exit(got == n and st.dropped == 0 and last_seq == n and 0 or 1)
