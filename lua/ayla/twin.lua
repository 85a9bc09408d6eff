-- ayla.twin: the last known value of every device property, fed by
-- datapoint events and REST reads, never overwritten by an older value.
local event = require "ayla.event"

local M = {}

local Twin = { __name = "ayla.Twin" }
Twin.__index = Twin

function M.new()
  return setmetatable({ devices = {}, online = {} }, Twin)
end

-- Records a value; returns the previous entry ({ value =, at = }) and
-- whether the new one was taken (false when it is older than what we have).
-- `at` is an ISO 8601 UTC time, which compares correctly as text.
--
-- A provisional entry is a REST value read while a resumed stream still had
-- older events to deliver (its backlog). Such an older event is taken (its
-- rules run) but the entry keeps the newer REST value; the event's previous
-- value is the backlog's own last one for that property (none at first).
function Twin:update(dsn, prop, value, at, provisional)
  local props = self.devices[dsn]
  if not props then
    props = {}
    self.devices[dsn] = props
  end
  local old = props[prop]
  -- (An event as old as a provisional value may be the one that set it.)
  if old and at and old.at and (at < old.at or (old.provisional and at == old.at)) then
    if not old.provisional then return old, false end
    local before = old.backlog
    old.backlog = { value = value, at = at }
    return before, true
  end
  props[prop] = { value = value, at = at or (old and old.at), provisional = provisional }
  return old, true
end

function Twin:get(dsn, prop)
  local e = self.devices[dsn] and self.devices[dsn][prop]
  if e then return e.value, e.at end
end

-- The properties of one device as { name = value }.
function Twin:device(dsn)
  local out = {}
  for name, e in pairs(self.devices[dsn] or {}) do out[name] = e.value end
  return out
end

-- Reads every property of the given devices from the cloud (blocks or
-- yields like every cloud call). Returns the number of values read, or nil
-- and the first error. Provisional values give way to the first event for
-- their property, however old (a resumed stream's backlog).
function Twin:seed(cloud, dsns, provisional)
  local n = 0
  for _, dsn in ipairs(dsns) do
    local props, err = cloud:properties(dsn)
    if not props then return nil, err end
    for _, p in ipairs(props) do
      self:update(dsn, p.name, event.typed_value(p.value, p.base_type), p.data_updated_at, provisional)
      n = n + 1
    end
  end
  return n
end

return M
