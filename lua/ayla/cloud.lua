-- ayla.cloud: the Ayla user, device and subscription services (PROTOCOL.md
-- sections 2-4). Calls block at the REPL and yield inside a scheduler task.
-- Outside failures return nil and a message that carries the HTTP status and
-- the server's words; misuse raises. Tokens and passwords never appear in a
-- message or in tostring.
local cjson = require "cjson.safe"
local core = require "ayla.core"
local event = require "ayla.event"
local http = require "ayla.http"
local regions = require "ayla.regions"
local scheduler = require "ayla.scheduler"

local M = {}

local Cloud = { __name = "ayla.Cloud" }
Cloud.__index = Cloud
M.Cloud = Cloud

-- cloud.stats stays a plain table of counters; this makes it print readably.
local STATS = event.counters("ayla.CloudStats",
  { "requests", "sign_ins", "refreshes", "replays", "retries" })

local REFRESH_EARLY = 600 -- refresh this many seconds before the token expires
local MAX_429 = 3         -- times one request honours Retry-After before giving up
local MAX_5XX = 3         -- retries of an idempotent request after a 5xx
local IDEMPOTENT = { GET = true, DELETE = true, PUT = true }

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

-- ---- errors --------------------------------------------------------------

-- The server's message from any of the documented error body shapes.
local function server_message(body)
  local t = cjson.decode(body or "")
  if type(t) == "table" then
    local e = t.error or t.errors
    if type(e) == "string" then return e end
    if type(e) == "table" then
      if type(e.message) == "string" then return e.message end
      -- {"value":["is invalid"]}, [{"field":"value","message":"is invalid"}], ...
      local parts = {}
      local function say(v)
        if type(v) ~= "table" then return v == cjson.null and "null" or tostring(v) end
        if type(v.message) == "string" then
          return (type(v.field) == "string" and (v.field .. " ") or "") .. v.message
        end
        local inner = {}
        for _, x in ipairs(v) do inner[#inner + 1] = say(x) end
        return table.concat(inner, ", ")
      end
      for k, v in pairs(e) do
        local text = say(v)
        parts[#parts + 1] = type(k) == "string" and (k .. " " .. text) or text
      end
      table.sort(parts)
      if #parts > 0 and table.concat(parts) ~= "" then return table.concat(parts, "; ") end
    end
  end
  body = tostring(body or ""):gsub("%s+", " ")
  if #body > 200 then body = body:sub(1, 197) .. "..." end
  return body ~= "" and body or "no message"
end
M.server_message = server_message

local function http_error(method, path, status, body)
  return ("HTTP %d from %s %s: %s"):format(status, method, path, server_message(body))
end

-- ---- construction --------------------------------------------------------

local OPTIONS = {
  region = "string", deployment = "string", hosts = "table", email = "string",
  password = "string", app_id = "string", app_secret = "string", access_token = "string",
  refresh_token = "string", expires_in = "number", timeout = "number", verify = "boolean",
  ca_file = "string", client_type = "string", refresh_early = "number",
}

-- ayla.cloud{ region = "us", deployment = "dev", email =, password =, app_id =,
--             app_secret = } (or AYLA_EMAIL, AYLA_PASSWORD, AYLA_APP_ID,
--             AYLA_APP_SECRET; or access_token/refresh_token)
function M.new(opts)
  opts = opts or {}
  check(type(opts) == "table", 2, "ayla.cloud expects a table of options")
  for k, v in pairs(opts) do
    check(OPTIONS[k], 2, "unknown option '%s' for ayla.cloud", tostring(k))
    check(type(v) == OPTIONS[k], 2, "option '%s' must be a %s", k, OPTIONS[k])
  end
  local hosts, err = regions.resolve(opts.region, opts.deployment, opts.hosts)
  if not hosts then return nil, err end
  local bases = {}
  for _, service in ipairs { "user", "ads", "stream" } do
    local h = hosts[service]
    if not h then return nil, ("no '%s' host; pass hosts = { %s = URL }"):format(service, service) end
    local base, berr = http.parse_base(h:find("://", 1, true) and h or ("https://" .. h))
    if not base then return nil, berr end
    bases[service] = base
  end
  if opts.verify == false then
    io.stderr:write("ayla: warning: TLS verification is off for the cloud services; use this only in tests\n")
  end
  local self = setmetatable({
    region = opts.region or "us", deployment = opts.deployment or "dev",
    _hosts = hosts, _bases = bases,
    _creds = {
      email = opts.email or os.getenv("AYLA_EMAIL"),
      password = opts.password or os.getenv("AYLA_PASSWORD"),
      app_id = opts.app_id or os.getenv("AYLA_APP_ID"),
      app_secret = opts.app_secret or os.getenv("AYLA_APP_SECRET"),
    },
    _token = opts.access_token, _refresh = opts.refresh_token,
    _expires_at = opts.access_token and core.monotime() + (opts.expires_in or 86400) or nil,
    _timeout = opts.timeout or 30, _verify = opts.verify, _ca_file = opts.ca_file,
    _client_type = opts.client_type or "cloud",
    _refresh_early = opts.refresh_early or REFRESH_EARLY,
    _props = {}, -- dsn -> name -> property, for set()'s checks
    stats = setmetatable({ requests = 0, sign_ins = 0, refreshes = 0, replays = 0, retries = 0 },
      STATS),
  }, Cloud)
  return self
end

function Cloud:__tostring()
  local state
  if self._token then
    state = ("signed in, token expires in %ds"):format(math.floor(self._expires_at - core.monotime()))
  else
    state = "not signed in"
  end
  return ("ayla.Cloud %s/%s %s (%s)"):format(self.region, self.deployment,
    self._creds.email or "(no user)", state)
end

-- ---- the wire --------------------------------------------------------------

-- One exchange with retries for 429 (any request) and 5xx (idempotent only).
function Cloud:_exchange(service, method, path, body, authorization)
  local base = self._bases[service]
  local attempt_429, attempt_5xx = 0, 0
  while true do
    self.stats.requests = self.stats.requests + 1
    local status, text, retry_after = http.request(base, {
      method = method, path = path, body = body, authorization = authorization,
      timeout = self._timeout, verify = self._verify, ca_file = self._ca_file,
    })
    if not status then return nil, ("%s %s failed: %s"):format(method, path, text) end
    if status == 429 and attempt_429 < MAX_429 then
      attempt_429 = attempt_429 + 1
      self.stats.retries = self.stats.retries + 1
      scheduler.sleep(math.min(retry_after or 1, 60))
    elseif status >= 500 and IDEMPOTENT[method] and attempt_5xx < MAX_5XX then
      attempt_5xx = attempt_5xx + 1
      self.stats.retries = self.stats.retries + 1
      scheduler.sleep(0.2 * 2 ^ attempt_5xx)
    else
      return status, text
    end
  end
end

local function encode(t) return (assert(cjson.encode(t))) end

function Cloud:_sign_in()
  local c = self._creds
  if not (c.email and c.password and c.app_id and c.app_secret) then
    return nil, "cannot sign in: email, password, app_id and app_secret are needed "
      .. "(options or AYLA_EMAIL, AYLA_PASSWORD, AYLA_APP_ID, AYLA_APP_SECRET)"
  end
  if self._sign_in_refused then
    -- Five failures lock the account for 30 minutes: never try again alone.
    return nil, "sign-in was refused before (" .. self._sign_in_refused .. "); not retrying"
  end
  self.stats.sign_ins = self.stats.sign_ins + 1
  local status, body = self:_exchange("user", "POST", "/users/sign_in.json", encode {
    user = { email = c.email, password = c.password,
             application = { app_id = c.app_id, app_secret = c.app_secret } } })
  if not status then return nil, body end
  local t = cjson.decode(body)
  if status ~= 200 or type(t) ~= "table" or type(t.access_token) ~= "string" then
    local msg = http_error("POST", "/users/sign_in.json", status, body)
    if status == 401 or status == 404 then self._sign_in_refused = msg end
    return nil, msg
  end
  self:_take_tokens(t)
  return true
end

function Cloud:_take_tokens(t)
  self._token, self._refresh = t.access_token, t.refresh_token or self._refresh
  self._expires_at = core.monotime() + (tonumber(t.expires_in) or 86400)
end

function Cloud:_refresh_token()
  if not self._refresh then return nil, "no refresh token" end
  self.stats.refreshes = self.stats.refreshes + 1
  local status, body = self:_exchange("user", "POST", "/users/refresh_token.json",
    encode { user = { refresh_token = self._refresh } })
  if not status then return nil, body end
  local t = cjson.decode(body)
  -- A refusal may come as 401 or 422, or as a 200 whose body has an error.
  if status ~= 200 or type(t) ~= "table" or type(t.access_token) ~= "string" then
    self._refresh = nil
    return nil, http_error("POST", "/users/refresh_token.json", status, body)
  end
  self:_take_tokens(t)
  return true
end

-- Makes sure a usable token is at hand; one refresh or sign-in at a time.
-- `stale`: a token the server refused; renew unless someone already did.
function Cloud:_ensure_token(stale)
  -- One renewal at a time; a renewal abandoned by its task (never resumed)
  -- stops counting after the time a request may take.
  while self._renewing and core.monotime() < self._renewing + self._timeout + 1 do
    scheduler.sleep(0.01)
  end
  -- Several tasks refused at once wait for one renewal and take its token.
  if stale and self._token and self._token ~= stale then return true end
  local fresh = self._token and not stale and core.monotime() < self._expires_at - self._refresh_early
  if fresh then return true end
  self._renewing = core.monotime()
  local ok, err = nil, nil
  if self._refresh then ok, err = self:_refresh_token() end
  if not ok then
    local why = err
    ok, err = self:_sign_in()
    if not ok and why then err = err .. " (after the refresh failed: " .. why .. ")" end
  end
  self._renewing = nil
  return ok, err
end

-- An authorized call: refresh early, and on a 401 renew once and replay.
function Cloud:_call(service, method, path, body)
  local ok, err = self:_ensure_token()
  if not ok then return nil, err end
  local token = self._token
  local status, text = self:_exchange(service, method, path, body, "auth_token " .. token)
  if status == 401 then
    self.stats.replays = self.stats.replays + 1
    ok, err = self:_ensure_token(token) -- renews, unless another task did meanwhile
    if not ok then return nil, err end
    status, text = self:_exchange(service, method, path, body, "auth_token " .. self._token)
  end
  if not status then return nil, text end
  if status < 200 or status > 299 then return nil, http_error(method, path, status, text), status end
  if status == 204 or text == "" then return true end
  local t, derr = cjson.decode(text)
  if t == nil then return nil, ("%s %s: bad JSON in the answer: %s"):format(method, path, derr) end
  return t
end

local function escape(s)
  return (tostring(s):gsub("[^%w%-_%.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

-- ---- objects shown at the REPL -------------------------------------------

local Device = { __name = "ayla.Device" }
Device.__index = Device
function Device:__tostring()
  local function text(v) -- a JSON null (or a missing field) as null
    if v == nil or v == cjson.null then return "null" end
    return tostring(v)
  end
  local name = self.product_name
  name = (name == nil or name == cjson.null) and "null" or ("%q"):format(tostring(name))
  return ("%s %s %s %s"):format(text(self.dsn), text(self.oem_model), name,
    text(self.connection_status))
end

local Property = { __name = "ayla.Property" }
Property.__index = Property
function Property:__tostring()
  local flags = {}
  if self.read_only then flags[#flags + 1] = "read-only" end
  if self.ack_enabled then flags[#flags + 1] = "ack" end
  local v = self.value
  if type(v) == "string" then v = event.quote(v) elseif v == cjson.null then v = "null" end
  return ("%s %s %s = %s%s"):format(self.name, self.base_type, self.direction, tostring(v),
    #flags > 0 and (" (" .. table.concat(flags, ", ") .. ")") or "")
end

local Datapoint = { __name = "ayla.Datapoint" }
Datapoint.__index = Datapoint
function Datapoint:__tostring()
  local ack = self.ack_status ~= nil and (" ack " .. tostring(self.ack_status)) or ""
  local v = self.value
  v = type(v) == "string" and event.quote(v) or tostring(v)
  return ("datapoint %s = %s at %s%s"):format(tostring(self.id), v, tostring(self.created_at), ack)
end

local Subscription = { __name = "ayla.Subscription" }
Subscription.__index = Subscription
function Subscription:__tostring()
  return ("subscription %s %s %s/%s/%s (%s) key %s"):format(tostring(self.id),
    tostring(self.subscription_type), tostring(self.oem_model), tostring(self.dsn),
    tostring(self.property_name), tostring(self.client_type),
    require("ayla.stream").redact(tostring(self.stream_key)))
end

-- Unwraps [{"device":{...}}, ...] into objects; ids and keys become integers.
-- The lists cloud:devices(), properties() and subscriptions() return stay
-- plain arrays; at the prompt they print one item a line.
local function list_type(name, one, many)
  return { __name = name, __tostring = function(list)
    local lines = { ("%d %s"):format(#list, #list == 1 and one or many) }
    for i, item in ipairs(list) do lines[i + 1] = "  " .. tostring(item) end
    return table.concat(lines, "\n")
  end }
end
local DEVICES = list_type("ayla.DeviceList", "device", "devices")
local PROPERTIES = list_type("ayla.PropertyList", "property", "properties")
local SUBSCRIPTIONS = list_type("ayla.SubscriptionList", "subscription", "subscriptions")

local function unwrap(list, key, mt)
  local out = {}
  for i, item in ipairs(list) do
    local o = item[key] or item
    for _, k in ipairs { "id", "key", "device_key", "batch_size" } do
      o[k] = math.tointeger(o[k]) or o[k]
    end
    out[i] = setmetatable(o, mt)
  end
  return out
end

-- ---- device service --------------------------------------------------------

function Cloud:devices()
  local list, err = self:_call("ads", "GET", "/apiv1/devices.json")
  if not list then return nil, err end
  return setmetatable(unwrap(list, "device", Device), DEVICES)
end

local function typed_property(p)
  p.value = event.typed_value(p.value, p.base_type)
  return setmetatable(p, Property)
end

function Cloud:properties(dsn)
  check(type(dsn) == "string", 2, "properties(dsn) expects a DSN string")
  local list, err = self:_call("ads", "GET", ("/apiv1/dsns/%s/properties.json"):format(escape(dsn)))
  if not list then return nil, err end
  local out, by_name = {}, {}
  for i, item in ipairs(list) do
    out[i] = typed_property(item.property or item)
    by_name[out[i].name] = out[i]
  end
  self._props[dsn] = by_name
  return setmetatable(out, PROPERTIES)
end

function Cloud:get(dsn, name)
  check(type(dsn) == "string" and type(name) == "string", 2, "get(dsn, name) expects two strings")
  local t, err = self:_call("ads", "GET",
    ("/apiv1/dsns/%s/properties/%s.json"):format(escape(dsn), escape(name)))
  if not t then return nil, err end
  local p = typed_property(t.property or t)
  self._props[dsn] = self._props[dsn] or {}
  self._props[dsn][name] = p
  return p
end

-- The value as the service wants it for this property, or nil and why not.
local function wire_value(p, value)
  local bt = p.base_type
  if bt == "boolean" then
    if value == true or value == 1 then return 1 end
    if value == false or value == 0 then return 0 end
    return nil, "a boolean property takes true, false, 1 or 0"
  elseif bt == "integer" then
    local n = math.tointeger(value)
    if not n or n < -2147483648 or n > 2147483647 then
      return nil, "an integer property takes a whole number from -2147483648 to 2147483647"
    end
    return n
  elseif bt == "decimal" or bt == "float" then
    if type(value) ~= "number" or value ~= value or math.abs(value) > 21474836.47 then
      return nil, "a decimal property takes a number from -21474836.47 to 21474836.47"
    end
    if math.abs(value * 100 - math.floor(value * 100 + 0.5)) > 1e-6 then
      return nil, "a decimal property takes at most 2 decimal places"
    end
    return value + 0.0
  elseif bt == "string" then
    if type(value) ~= "string" then return nil, "a string property takes a string" end
    if #value > 1024 then return nil, "a string property takes at most 1024 bytes" end
    return value
  end
  return nil, ("a %s property cannot be written here"):format(tostring(bt))
end
M.wire_value = wire_value

-- cloud:set(dsn, name, value [, { wait_ack = seconds, metadata = {...} }])
-- -> the created datapoint (with ack_status/ack_message when waited for)
function Cloud:set(dsn, name, value, opts)
  check(type(dsn) == "string" and type(name) == "string", 2,
    "set(dsn, name, value) expects two strings first")
  check(opts == nil or type(opts) == "table", 2, "set's options must be a table")
  opts = opts or {}
  check(opts.wait_ack == nil or (type(opts.wait_ack) == "number" and opts.wait_ack > 0), 2,
    "wait_ack must be a positive number of seconds")
  local p = self._props[dsn] and self._props[dsn][name]
  if not p then
    local err
    p, err = self:get(dsn, name)
    if not p then return nil, err end
  end
  local where = ("%s/%s"):format(dsn, name)
  if p.direction ~= "input" then
    return nil, ("cannot set %s: it is an %s property (device to cloud)"):format(where,
      tostring(p.direction))
  end
  if p.read_only then return nil, ("cannot set %s: it is read-only"):format(where) end
  if opts.wait_ack and p.ack_enabled == false then
    return nil, ("cannot wait for an ack from %s: the property is not ack-enabled"):format(where)
  end
  local v, why = wire_value(p, value)
  if v == nil then
    local shown = tostring(value)
    if type(value) == "string" then
      shown = ("%q"):format(#value > 40 and value:sub(1, 37) .. "..." or value)
    end
    return nil, ("cannot set %s to %s: %s"):format(where, shown, why)
  end
  if opts.metadata ~= nil then
    check(type(opts.metadata) == "table", 2, "metadata must be a table")
    local n = 0
    for _ in pairs(opts.metadata) do n = n + 1 end
    if n > 10 then return nil, ("cannot set %s: metadata takes at most 10 entries"):format(where) end
  end
  local path = ("/apiv1/dsns/%s/properties/%s/datapoints.json"):format(escape(dsn), escape(name))
  local t, err = self:_call("ads", "POST", path,
    encode { datapoint = { value = v, metadata = opts.metadata } })
  if not t then return nil, err end
  local dp = setmetatable(t.datapoint or t, Datapoint)
  dp.value = event.typed_value(dp.value, p.base_type)
  if opts.wait_ack then return self:_wait_ack(dsn, name, dp, opts.wait_ack) end
  return dp
end

-- Reads the datapoint back until the device's ack shows, or the time is up.
function Cloud:_wait_ack(dsn, name, dp, seconds)
  local path = ("/apiv1/dsns/%s/properties/%s/datapoints/%s.json"):format(escape(dsn), escape(name),
    escape(dp.id))
  local deadline, pause = core.monotime() + seconds, 0.05
  while true do
    local t, err = self:_call("ads", "GET", path)
    if not t then return nil, err end
    local now = t.datapoint or t
    if now.ack_status ~= nil and now.ack_status ~= cjson.null then
      dp.ack_status = math.tointeger(now.ack_status) or now.ack_status
      dp.ack_message = math.tointeger(now.ack_message) or now.ack_message
      dp.ack_id, dp.acked_at = now.ack_id, now.acked_at
      return dp
    end
    local left = deadline - core.monotime()
    if left <= 0 then
      return nil, ("no ack from %s/%s within %g s (datapoint %s)"):format(dsn, name, seconds, dp.id)
    end
    scheduler.sleep(math.min(pause, left))
    pause = math.min(pause * 2, 1)
  end
end

-- ---- subscriptions -----------------------------------------------------------

local SUB_FIELDS = { name = "string", description = "string", oem_model = "string",
                     dsn = "string", property_name = "string", client_type = "string",
                     subscription_type = "string", batch_size = "number" }

-- cloud:subscribe{ oem_model = "*", dsn = "*", property_name = "*",
--                  subscription_type = "datapoint", client_type = "cloud" }
function Cloud:subscribe(fields)
  check(type(fields) == "table", 2, "subscribe expects a table of fields")
  for k, v in pairs(fields) do
    check(SUB_FIELDS[k], 2, "unknown subscription field '%s'", tostring(k))
    check(type(v) == SUB_FIELDS[k], 2, "subscription field '%s' must be a %s", k, SUB_FIELDS[k])
  end
  local f = {}
  for k, v in pairs(fields) do f[k] = v end
  f.client_type = f.client_type or self._client_type
  check(f.client_type == "cloud" or f.client_type == "mobile", 2,
    "client_type must be \"cloud\" or \"mobile\"")
  check(f.oem_model and f.oem_model ~= "", 2, "oem_model is required (\"*\" or a comma list)")
  check(f.oem_model ~= "*" or (f.dsn and f.dsn ~= ""), 2, "dsn is required when oem_model is \"*\"")
  check(f.subscription_type, 2, "subscription_type is required")
  local types = 0
  for t in f.subscription_type:gmatch("[^,%s]+") do
    check(event.BODY[t], 2, "unknown subscription_type '%s'", t)
    types = types + 1
  end
  check(types == 1 or f.client_type == "mobile", 2, "a cloud subscription takes one subscription_type")
  f.property_name = f.property_name or "*" -- required by the service (PROTOCOL.md)
  f.name = f.name or ("ayla " .. f.subscription_type)
  local t, err = self:_call("stream", "POST", "/api/v1/subscriptions.json", encode(f))
  if not t then return nil, err end
  local sub = unwrap({ t }, "subscription", Subscription)[1]
  rawset(sub, "_cloud", self)
  return sub
end

function Cloud:subscriptions()
  local list, err = self:_call("stream", "GET", "/api/v1/subscriptions.json")
  if not list then return nil, err end
  local out = unwrap(list, "subscription", Subscription)
  for _, s in ipairs(out) do rawset(s, "_cloud", self) end
  return setmetatable(out, SUBSCRIPTIONS)
end

function Cloud:unsubscribe(id)
  if type(id) == "table" then id = id.id end
  check(math.tointeger(id), 2, "unsubscribe expects a subscription or its id")
  return self:_call("stream", "DELETE", ("/api/v1/subscriptions/%d.json"):format(math.tointeger(id)))
end

-- sub:stream(opts) -> an ayla.stream on this subscription's key
function Subscription:stream(opts)
  local cloud = rawget(self, "_cloud")
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  local service = self.client_type == "mobile" and "mstream" or "stream"
  local url = cloud and cloud._hosts[service] or nil
  if url and not url:find("://", 1, true) then url = "wss://" .. url .. "/stream" end
  if url then url = url:gsub("^http", "ws"):gsub("^(wss?://[^/]+)/?$", "%1/stream") end
  o.url = o.url or url
  o.key = self.stream_key
  if self.client_type == "mobile" and cloud and o.renew == nil then
    -- Mobile keys are single-use: every reconnect gets a fresh subscription
    -- with the same filters, and the spent one is deleted.
    local fields = { oem_model = self.oem_model, dsn = self.dsn, name = self.name,
                     property_name = self.property_name, client_type = "mobile",
                     subscription_type = self.subscription_type }
    local current = self
    o.renew = function()
      local fresh, err = cloud:subscribe(fields)
      if not fresh then return nil, err end
      cloud:unsubscribe(current.id) -- best effort: it is used up either way
      current = fresh
      return fresh.stream_key
    end
    if o.on_close == nil and self ~= nil then
      -- A renewed stream's last subscription is ours to delete; the first
      -- one stays the caller's to manage.
      o.on_close = function()
        if current ~= self then cloud:unsubscribe(current.id) end
      end
    end
  end
  if cloud and o.verify == nil then o.verify = cloud._verify end
  if cloud and o.ca_file == nil then o.ca_file = cloud._ca_file end
  return require("ayla.stream").new(o)
end

function Cloud:sign_out()
  if not self._token then return true end
  local status, body = self:_exchange("user", "POST", "/users/sign_out.json",
    encode { user = { access_token = self._token } })
  self._token, self._refresh, self._expires_at = nil, nil, nil
  if not status then return nil, body end
  if status ~= 200 then return nil, http_error("POST", "/users/sign_out.json", status, body) end
  return true
end

return M
