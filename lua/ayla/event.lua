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
M.BODY = BODY -- its keys are the event types
M.TYPE_NAMES = "datapoint, datapointack, connectivity, location, registration"

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

local tointeger, mtype, byte = math.tointeger, math.type, string.byte

local function text(v)
  if type(v) == "string" then return v end
end

-- Decodes one event payload; returns the event, or nil and a message.
-- This runs once per event on the stream's hot path: keep it lean.
function M.decode(json)
  local t, err = cjson.decode(json)
  if t == nil then return nil, "bad_json: " .. tostring(err) end
  if type(t) ~= "table" or (byte(json, 1) ~= 123 and not json:find("^%s*{")) then
    return nil, "bad_json: not a JSON object"
  end
  local meta = t.metadata
  if type(meta) ~= "table" then meta = {} end
  -- Routing shortcuts are strings or nil: a rule indexes by them, and a
  -- NaN or a table from a broken event must not reach a table key.
  local kind = text(meta.event_type)
  t.type = kind
  t.dsn = text(meta.dsn)
  t.oem_model = text(meta.oem_model)
  t.property = text(meta.property_name)
  local v
  local seq = t.seq
  if seq ~= nil then t.seq = integer_of(seq) or seq end

  local body = t[BODY[kind] or ""]
  if type(body) ~= "table" then return setmetatable(t, Event) end
  if kind == "datapoint" or kind == "datapointack" then
    local value, base_type = body.value, meta.base_type
    if mtype(value) == "float" and (base_type == "boolean" or base_type == "integer") then
      value = tointeger(value) or value -- the common case, without a call
    else
      value = M.typed_value(value, base_type)
    end
    body.value = value
    t.value = value
    v = body.updated_at
    if v == nil or v == null then v = body.created_at end
    if v ~= null then t.time = v end
    if kind == "datapointack" then -- documented as integers (0/1 or HTTP-like codes)
      if mtype(body.ack_status) == "float" then body.ack_status = integer_of(body.ack_status) end
      if mtype(body.ack_message) == "float" then body.ack_message = integer_of(body.ack_message) end
    end
  elseif kind == "connectivity" then
    v = body.status
    if v ~= null then t.status = v end
    v = body.event_time
    if v ~= null then t.time = v end
  else
    if kind == "registration" then
      v = body.registered and body.registered_at or body.unregistered_at
    else
      v = body.created_at
    end
    if v ~= null then t.time = v end
  end
  if t.dsn == nil then t.dsn = text(body.dsn) end
  return setmetatable(t, Event)
end

-- Control characters as escapes ("\n", "\t", "\027"), so that text stays
-- on its line; with `quote`, '"' and '\' as well (inside a quoted value).
local ESCAPES = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
local function escape_char(c)
  return ESCAPES[c] or (c == '"' or c == "\\") and "\\" .. c or ("\\%03d"):format(c:byte())
end

function M.escape(s, quote)
  return (s:gsub(quote and '[%c"\\]' or "%c", escape_char))
end

-- A string cut to `max` characters, on a UTF-8 boundary when it is UTF-8.
function M.cut(s, max)
  local n = utf8.len(s)
  if n then
    if n <= max then return s end
    return s:sub(1, utf8.offset(s, max - 2) - 1) .. "..."
  end
  return #s <= max and s or s:sub(1, max - 3) .. "..."
end

-- A string value on one line: quoted, escaped, cut to `max` characters.
function M.quote(v, max)
  return '"' .. M.escape(M.cut(v, max or 60), true) .. '"'
end

local function show(v)
  if type(v) == "string" then return M.quote(v) end
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
                  tostring(ev.oem_model or "?") .. "/" .. tostring(ev.dsn or "?") }
  local body = ev[BODY[ev.type] or ""]
  local describe = DESCRIBE[ev.type]
  if describe and type(body) == "table" then parts[#parts + 1] = describe(ev, body) end
  if ev.time then parts[#parts + 1] = "at " .. tostring(ev.time) end -- any JSON value
  return M.escape(table.concat(parts, " ")) -- one line, whatever the server sent
end

-- ---- counter tables -----------------------------------------------------------

-- s:stats(), sim:stats() and cloud.stats stay plain tables (index them, pairs
-- over them: only the counters are there); this only makes them print
-- readably at the prompt instead of as "table: 0x...".
local WRAP = 100

local function counter_text(k, v)
  if type(v) == "table" then -- a group such as events_by_type: its non-zero entries
    local names = {}
    for name, n in pairs(v) do
      if type(n) == "number" and n ~= 0 then names[#names + 1] = name end
    end
    if #names == 0 then return nil end
    table.sort(names)
    for i, name in ipairs(names) do names[i] = ("%s=%s"):format(name, v[name]) end
    return ("%s={%s}"):format(k, table.concat(names, " "))
  elseif type(v) == "string" then
    return ("%s=%s"):format(k, v:find("[%s=]") and ("%q"):format(v) or v)
  elseif mtype(v) == "float" then
    -- plain digits (no exponent), at most 3 decimals: 123456, 1234.5, 0.012
    local plain = ("%.3f"):format(v):gsub("0+$", ""):gsub("%.$", "")
    return ("%s=%s"):format(k, plain)
  end
  return ("%s=%s"):format(k, tostring(v))
end

-- counters(name, first) -> a metatable for such tables: `first` are shown
-- always, in that order; then the other counters that are not 0, sorted;
-- times (*_at, seconds since the epoch) are left out.
function M.counters(name, first)
  local mt = { __name = name }
  function mt.__tostring(st)
    local shown, parts = {}, {}
    for _, k in ipairs(first) do
      shown[k] = true
      if st[k] ~= nil then parts[#parts + 1] = counter_text(k, st[k]) end
    end
    local rest = {}
    for k, v in pairs(st) do
      if not shown[k] and type(k) == "string" and not k:find("_at$") and v ~= 0 then
        rest[#rest + 1] = k
      end
    end
    table.sort(rest)
    for _, k in ipairs(rest) do parts[#parts + 1] = counter_text(k, st[k]) end
    local lines, line, fresh = {}, name .. ":", true
    for _, p in ipairs(parts) do
      if #line + 1 + #p > WRAP and not fresh then -- a few lines rather than one long one
        lines[#lines + 1] = line
        line = " "
      end
      line, fresh = line .. " " .. p, false
    end
    if fresh then line = line .. " all 0" end
    lines[#lines + 1] = line
    return table.concat(lines, "\n")
  end
  return mt
end

return M
