-- Measures the ceiling for ayla's stream: lua-cjson decoding the same N
-- datapoint payloads that `ayla-sim --flood N` sends, in a plain loop with no
-- network, no queue and no event shortcuts. The payloads (the JSON after
-- "LEN|", built like flood_event() in csrc/sim.c) are all built before the
-- clock starts. Prints one result line:
--   bench=ceiling events=N seconds=S evps=R rss_mb=M base_rss_mb=B bytes=L ...
-- (bytes: the mean payload size).
-- rss_mb is VmHWM (peak RSS) and includes the N prebuilt strings, which
-- base_rss_mb (VmRSS before decoding) shows on their own.
--
-- usage: lua5.4 bench/cjson_ceiling.lua [N]
local root = arg[0]:match("^(.*)/bench/[^/]*$") or "."
package.cpath = root .. "/build/?.so;" .. package.cpath
local cjson = require "cjson"
local monotime = require("ayla.core").monotime -- the clock stream_ayla.lua uses

local n = math.tointeger(tonumber(arg[1] or "200000"))
if not (n and n > 0) then
  io.stderr:write("usage: lua5.4 bench/cjson_ceiling.lua [N]\n")
  os.exit(2)
end

local function status_mb(field)
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^" .. field .. ":%s*(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

-- seq counts up from 1 while k (the sim's flood_left) counts down from n.
local FORMAT = '{"seq":"%d","metadata":{"oem_id":"0dfc7900","oem_model":'
  .. '"linuxevb","dsn":"AC000W%09d","property_name":"Blue_LED",'
  .. '"display_name":"Blue_LED","base_type":"boolean",'
  .. '"resource_tags":[],"event_type":"datapoint"},"datapoint":{'
  .. '"id":"1ff9b91c-bfe4-11e8-%04x-%012x","created_at_from_device":'
  .. 'null,"updated_at":"2018-09-24T10:25:14Z","created_at":'
  .. '"2018-09-24T10:25:14Z","user_uuid":"00000000-0000-0000-0000-'
  .. '000000000000","echo":false,"closed":false,"value":%d,'
  .. '"metadata":{}}}'

local payloads, bytes = {}, 0
for seq = 1, n do
  local k = n - seq + 1
  payloads[seq] = FORMAT:format(seq, k % 1000, k & 0xffff, k, k & 1)
  bytes = bytes + #payloads[seq]
end
collectgarbage()
local base_rss = status_mb("VmRSS")

local decode = cjson.decode
local t0 = monotime()
local last_seq
for i = 1, n do
  last_seq = decode(payloads[i]).seq
end
local seconds = monotime() - t0

print(("bench=ceiling events=%d seconds=%.4f evps=%.0f rss_mb=%.1f base_rss_mb=%.1f bytes=%.1f "
  .. "last_seq=%s"):format(n, seconds, n / seconds, status_mb("VmHWM"), base_rss,
  bytes / n, last_seq))
os.exit(tonumber(last_seq) == n and 0 or 1)
