-- Print every event of a DSS stream, one line each, with a stats line every
-- minute.   lua5.4 examples/tail.lua URL KEY      (or AYLA_STREAM_URL, AYLA_STREAM_KEY)
-- URL is e.g. wss://stream.aylanetworks.com/stream; KEY a subscription's stream_key.
local ayla = require "ayla"

local url = arg[1] or os.getenv("AYLA_STREAM_URL")
local key = arg[2] or os.getenv("AYLA_STREAM_KEY")
if not url or not key then
  io.stderr:write("usage: lua5.4 examples/tail.lua URL STREAM_KEY\n")
  os.exit(2)
end

local s <close> = assert(ayla.stream { url = url, key = key })
local last_report = os.time()
while true do
  local ev, err = s:next(5)
  if ev then
    print(os.date("!%H:%M:%S ") .. tostring(ev))
  elseif err ~= "timeout" then
    io.stderr:write("stream ended: ", err, "\n")
    os.exit(1)
  end
  if os.time() - last_report >= 60 then
    last_report = os.time()
    local st = s:stats()
    io.stderr:write(("[%s] events %d, heartbeats %d, reconnects %d, dropped %d%s\n"):format(
      st.state, st.events, st.heartbeats_answered, st.reconnects, st.dropped,
      st.last_error and (", last error: " .. st.last_error) or ""))
  end
end
