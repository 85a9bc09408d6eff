-- Switch every smart plug off at 23:00 and back on at 06:30 (local time).
local plugs = { "PL000W000000001", "PL000W000000002", "PL000W000000003" }

local function switch(value)
  for _, dsn in ipairs(plugs) do
    local dp, err = set(dsn, "power", value)
    if not dp then log("%s: %s", dsn, err) end
  end
end

at("23:00", function() log("night: plugs off") switch(0) end)
at("06:30", function() log("morning: plugs on") switch(1) end)
