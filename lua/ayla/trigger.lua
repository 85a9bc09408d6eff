-- ayla.trigger: turns a rule's filter table into the tests the app runs on
-- each event. A filter may name:
--   dsn, oem_model, property   a string, a list of strings, or a predicate
--   value, status              a value, a list of values, or a predicate
--   online                     true/false: shorthand for status "Online"/"Offline"
--   from, to                   the state before and after; fires only on a change
--   above, below               fires when a number crosses into the range
--   own                        false: ignore events caused by this app's writes;
--                              true: only those
--   ["for"]                    seconds the condition must hold before firing
--   rate = { max =, per = }    at most `max` firings per `per` seconds per device
--   debounce                   fires once the device has been quiet this long
--   name                       the rule's name in reports and own-write tags
-- The state of an event is its value (datapoint, datapointack) or its status
-- (connectivity); from/to/above/below need one.
local M = {}

local KEYS = {
  dsn = true, oem_model = true, property = true, value = true, status = true, online = true,
  from = true, to = true, above = true, below = true, own = true, ["for"] = true, rate = true,
  debounce = true, name = true,
}

local STATEFUL = { datapoint = true, datapointack = true, connectivity = true }
M.STATEFUL = STATEFUL -- the event types that carry a state (from/to, above/below)

local function fail(fmt, ...) error(fmt:format(...), 4) end

-- A test for one field: nil (anything), a predicate, a list (any of), or a value.
local function matcher(spec)
  if spec == nil then return function() return true end end
  if type(spec) == "function" then return function(v) return spec(v) and true or false end end
  if type(spec) == "table" then
    local set = {}
    for _, v in ipairs(spec) do set[v] = true end
    return function(v) return v ~= nil and set[v] == true end
  end
  return function(v) return v == spec end
end

-- The keys the app indexes a field by: a list, or nil for "any".
local function index_keys(spec, name)
  if spec == nil or type(spec) == "function" then return nil end
  if type(spec) == "string" then return { spec } end
  if type(spec) == "table" then
    for _, v in ipairs(spec) do
      if type(v) ~= "string" then fail("filter '%s' lists strings only", name) end
    end
    return spec
  end
  fail("filter '%s' must be a string, a list of strings or a function", name)
end

function M.state_of(ev)
  if ev.type == "connectivity" then return ev.status end
  return ev.value
end

-- compile("datapoint", { property = "temp", above = 30, ["for"] = 60 })
function M.compile(event_type, filter)
  filter = filter or {}
  for k in pairs(filter) do
    if not KEYS[k] then fail("unknown filter '%s'", tostring(k)) end
  end
  local edge = filter.from ~= nil or filter.to ~= nil or filter.above ~= nil or filter.below ~= nil
  if edge and not STATEFUL[event_type] then
    fail("from/to/above/below need a datapoint, datapointack or connectivity rule, not '%s'",
      tostring(event_type))
  end
  for _, k in ipairs { "above", "below", "for", "debounce" } do
    if filter[k] ~= nil and type(filter[k]) ~= "number" then fail("filter '%s' must be a number", k) end
  end
  if filter["for"] and filter["for"] <= 0 then fail("filter 'for' must be positive") end
  local rate = filter.rate
  if rate ~= nil and (type(rate) ~= "table" or not math.tointeger(rate.max) or rate.max < 1
      or type(rate.per) ~= "number" or rate.per <= 0) then
    fail("filter 'rate' must be { max = count, per = seconds }")
  end
  local status = filter.status
  if filter.online ~= nil then status = filter.online and "Online" or "Offline" end

  local m_dsn, m_model, m_prop = matcher(filter.dsn), matcher(filter.oem_model), matcher(filter.property)
  local m_value, m_status = matcher(filter.value), matcher(status)
  local m_from, m_to = matcher(filter.from), matcher(filter.to)
  local above, below, own = filter.above, filter.below, filter.own

  local function in_range(v)
    if type(v) ~= "number" then return false end
    return (above == nil or v > above) and (below == nil or v < below)
  end

  local t = {
    event_type = event_type,
    -- a condition on the state (not just on the event): it can stop holding
    is_conditional = filter.to ~= nil or above ~= nil or below ~= nil or filter.value ~= nil
      or status ~= nil,
    hold = filter["for"],
    rate = rate,
    debounce = filter.debounce,
    stateful = STATEFUL[event_type] or false,
    index = { dsn = index_keys(filter.dsn, "dsn"), property = index_keys(filter.property, "property") },
  }

  -- Does the event itself qualify (ignoring how the state changed)?
  function t.static(ev)
    if own ~= nil and (ev.own == true) ~= own then return false end
    return m_dsn(ev.dsn) and m_model(ev.oem_model) and m_prop(ev.property) and m_value(ev.value)
      and m_status(ev.status)
  end

  -- Is the state one the rule waits for (for holds: does it still hold)?
  function t.holds(state)
    if filter.to ~= nil and not m_to(state) then return false end
    if (above ~= nil or below ~= nil) and not in_range(state) then return false end
    if filter.value ~= nil and not m_value(state) then return false end
    if status ~= nil and not m_status(state) then return false end
    return true
  end

  -- Did this event change the state the way the rule asks? `known` says
  -- whether there was a previous state at all.
  function t.edge(state, prev, known)
    if filter.from ~= nil and not (known and m_from(prev)) then return false end
    if (filter.from ~= nil or filter.to ~= nil) and known and prev == state then return false end
    if filter.to ~= nil and not m_to(state) then return false end
    if above ~= nil or below ~= nil then
      if not in_range(state) then return false end
      if known and in_range(prev) then return false end -- already inside: no crossing
    end
    return true
  end

  return t
end

return M
