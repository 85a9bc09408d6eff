-- DSS events: the documented JSON decoded with lua-cjson, plus shortcuts.
--
-- lua-cjson 2.1 gives every JSON number as a float, and some pipelines send
-- values as strings; the shortcuts restore what the schema says: seq is an
-- integer, integer and boolean values are integers (booleans stay 0/1, as on
-- the wire), decimals are numbers.
local cjson = require "cjson.safe"

local M = {}

local Event = { __name = "ayla.Event" }
Event.__index = Event
M.Event = Event

-- The body key of each documented event type (datapointack reuses datapoint).
local BODY = {
  connectivity = "connection",
  datapoint = "datapoint",
  datapointack = "datapoint",
  location = "location_event",
  registration = "registration_event",
}
M.BODY = BODY

local null = cjson.null
M.null = null

local function integer_of(v)
  local n = tonumber(v)
  if n == nil then return nil end
  return math.tointeger(n) or n
end

local BOOL_WORDS = { ["true"] = 1, ["false"] = 0 }

-- The value coerced by base_type; anything unexpected is left as it came.
function M.typed_value(value, base_type)
  if value == nil or value == null then return value end
  if base_type == "boolean" then
    if value == true then return 1 elseif value == false then return 0 end
    return BOOL_WORDS[value] or integer_of(value) or value
  elseif base_type == "integer" then
    return integer_of(value) or value
  elseif base_type == "decimal" or base_type == "float" then
    return tonumber(value) or value
  end
  return value
end

local function str(v)
  if v == nil or v == null then return nil end
  return v
end

-- Decodes one event payload; returns the event, or nil and a message.
function M.decode(json)
  local t, err = cjson.decode(json)
  if t == nil then return nil, "bad_json: " .. tostring(err) end
  if type(t) ~= "table" or not json:find("^%s*{") then
    return nil, "bad_json: not a JSON object"
  end
  local meta = type(t.metadata) == "table" and t.metadata or {}
  local kind = str(meta.event_type)
  t.type = kind
  t.dsn = str(meta.dsn)
  t.oem_model = str(meta.oem_model)
  t.property = str(meta.property_name)
  t.seq = integer_of(t.seq) or t.seq
  local body = t[BODY[kind] or ""]
  if type(body) == "table" then
    if kind == "datapoint" or kind == "datapointack" then
      body.value = M.typed_value(body.value, meta.base_type)
      if kind == "datapointack" then -- documented as integers (0/1 or HTTP-like codes)
        if type(body.ack_status) == "number" then body.ack_status = integer_of(body.ack_status) end
        if type(body.ack_message) == "number" then body.ack_message = integer_of(body.ack_message) end
      end
      t.value = body.value
      t.time = str(body.updated_at) or str(body.created_at)
    elseif kind == "connectivity" then
      t.status = str(body.status)
      t.time = str(body.event_time)
    elseif kind == "registration" then
      t.time = str(body.registered and body.registered_at or body.unregistered_at)
    else
      t.time = str(body.created_at)
    end
    t.dsn = t.dsn or str(body.dsn)
  end
  return setmetatable(t, Event)
end

local function show(v)
  if type(v) == "string" then
    if #v > 60 then v = v:sub(1, 57) .. "..." end
    return ("%q"):format(v)
  end
  if v == null then return "null" end
  return tostring(v)
end

local function trim(s) return type(s) == "string" and s:match("^%s*(.-)%s*$") or s end

local DESCRIBE = {
  datapoint = function(ev, b)
    local echo = b.echo == true and " echo" or ""
    return ("%s = %s (%s)%s"):format(ev.property or "?", show(ev.value),
      ev.metadata.base_type or "?", echo)
  end,
  datapointack = function(ev, b)
    return ("%s = %s ack %s%s"):format(ev.property or "?", show(ev.value),
      show(b.ack_status), b.ack_message ~= nil and (" " .. show(b.ack_message)) or "")
  end,
  connectivity = function(ev) return tostring(ev.status) end,
  location = function(_, b)
    return ("%s,%s (%s)"):format(trim(b.lat), trim(b.long), tostring(b.provider))
  end,
  registration = function(_, b)
    return ("%s (%s)"):format(b.registered and "registered" or "unregistered",
      tostring(b.registration_type))
  end,
}

-- One readable line: "#13 datapoint linuxevb/AC000W005606115 Blue_LED = 0 (boolean) at ..."
function Event.__tostring(ev)
  local parts = { "#" .. tostring(ev.seq or "?"), tostring(ev.type or "event"),
                  (ev.oem_model or "?") .. "/" .. (ev.dsn or "?") }
  local body = ev[BODY[ev.type] or ""]
  local describe = DESCRIBE[ev.type]
  if describe and type(body) == "table" then parts[#parts + 1] = describe(ev, body) end
  if ev.time then parts[#parts + 1] = "at " .. ev.time end
  return table.concat(parts, " ")
end

return M
