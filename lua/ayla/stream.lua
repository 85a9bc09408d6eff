-- ayla.stream: a live DSS connection kept by the C I/O thread, read from Lua.
local core = require "ayla.core"
local event = require "ayla.event"
local regions = require "ayla.regions"

local M = {}

local Stream = { __name = "ayla.Stream" }
Stream.__index = Stream
M.Stream = Stream

-- How long one blocking wait lasts before Lua runs again, so that Ctrl-C at
-- the REPL (a Lua hook) is seen while next() waits.
local WAIT_SLICE = 0.25

local function redact(key)
  if #key <= 8 then return ("…(%d)"):format(#key) end
  return ("%s…(%d)"):format(key:sub(1, 4), #key)
end
M.redact = redact

local function check(cond, level, fmt, ...)
  if not cond then error(fmt:format(...), level + 1) end
end

-- "wss://host:port/path?stream_key=K" -> parts; the key in the URL is allowed.
local function parse_url(url)
  local scheme, rest = url:match("^(wss?)://(.+)$")
  if not scheme then return nil, "url must start with ws:// or wss://" end
  local authority, path = rest:match("^([^/?#]+)(.*)$")
  if not authority then return nil, "url has no host" end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil, "url has a bad host or port" end
  local query
  path, query = path:match("^([^?#]*)%??([^#]*)")
  local key
  for k, v in (query or ""):gmatch("([^&=]+)=([^&]*)") do
    if k == "stream_key" then -- as it stands in a URL: decode it once
      key = v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    end
  end
  port = tonumber(port) or (scheme == "wss" and 443 or 80)
  if port < 1 or port > 65535 then return nil, "url has a port outside 1..65535" end
  return {
    tls = scheme == "wss",
    host = host,
    port = port,
    path = path ~= "" and path or "/stream",
    key = key,
  }
end
M.parse_url = parse_url

local OPTIONS = {
  url = "string", key = "string", region = "string", deployment = "string",
  hosts = "table", client_type = "string", heartbeat_reply = "string",
  seq_start = "number", verify = "boolean", ca_file = "string",
  idle_timeout = "number", connect_timeout = "number", backoff = "table", resume = "boolean",
  queue_max = "number", queue_max_bytes = "number", drop_policy = "string",
  max_message = "number", reconnect = "boolean", renew = "function", on_close = "function",
  raw = "boolean",
}

-- ayla.stream{ url = URL | region = R, deployment = D, key = KEY, ... }
function M.new(opts)
  check(type(opts) == "table", 2, "ayla.stream expects a table of options")
  for k, v in pairs(opts) do
    check(OPTIONS[k], 2, "unknown option '%s' for ayla.stream", tostring(k))
    check(type(v) == OPTIONS[k], 2, "option '%s' must be a %s", k, OPTIONS[k])
  end
  local url = opts.url
  if not url then
    local service = opts.client_type == "mobile" and "mstream" or "stream"
    local err
    url, err = regions.url(service, opts.region, opts.deployment, opts.hosts)
    if not url then return nil, err end
  end
  local parts, perr = parse_url(url)
  check(parts, 2, "bad url: %s", perr or "")
  local key = opts.key or parts.key
  check(type(key) == "string" and key ~= "", 2,
    "a stream key is required: key = subscription.stream_key")
  check(#key <= 256, 2, "a stream key has at most 256 characters")
  for _, name in ipairs { "idle_timeout", "connect_timeout" } do
    local v = opts[name]
    check(v == nil or (v == v and v < math.huge), 2, "option '%s' must be a finite number", name)
  end
  check(opts.heartbeat_reply == nil or opts.heartbeat_reply ~= "", 2,
    "heartbeat_reply must not be empty")
  check(opts.drop_policy == nil or opts.drop_policy == "oldest" or opts.drop_policy == "newest",
    2, "drop_policy must be \"oldest\" or \"newest\"")
  local backoff = opts.backoff or {}
  for _, name in ipairs { "min", "max" } do
    local v = backoff[name]
    check(v == nil or (type(v) == "number" and v > 0 and v < math.huge), 2,
      "backoff.%s must be a positive, finite number of seconds", name)
  end
  for name, least in pairs { seq_start = 0, queue_max = 1, queue_max_bytes = 0,
                             max_message = 1024 } do
    local v = opts[name]
    check(v == nil or (math.tointeger(v) and v >= least), 2,
      "option '%s' must be an integer of at least %d", name, least)
  end
  if opts.ca_file then -- lws would only fail later, at every connect, less clearly
    local f, ferr = io.open(opts.ca_file, "r")
    if not f then return nil, "cannot read ca_file: " .. tostring(ferr) end
    f:close()
  end
  local verify = opts.verify ~= false
  if parts.tls and not verify then
    io.stderr:write(("ayla: warning: TLS verification is off for %s; use this only in tests\n")
      :format(parts.host))
  end

  local core_opts = {
    host = parts.host, port = parts.port, path = parts.path, tls = parts.tls, key = key,
    heartbeat_reply = opts.heartbeat_reply, verify = verify, ca_file = opts.ca_file,
    idle_timeout = opts.idle_timeout, connect_timeout = opts.connect_timeout,
    backoff_min = backoff.min, backoff_max = backoff.max,
    resume = opts.resume, seq_start = opts.seq_start and math.tointeger(opts.seq_start),
    queue_max = opts.queue_max, queue_max_bytes = opts.queue_max_bytes,
    drop_policy = opts.drop_policy, max_message = opts.max_message,
    -- With renew, a lost connection ends this key; next() asks for a new one.
    reconnect = opts.reconnect ~= false and not opts.renew,
  }
  local c, err = core.stream(core_opts)
  core_opts.key = nil -- the C side has its copy; a renewal brings a new one
  if not c then return nil, err end
  local shown = ("%s://%s:%d%s"):format(parts.tls and "wss" or "ws", parts.host, parts.port,
    parts.path)
  return setmetatable({ _core = c, url = shown, _key = redact(key), _bad_json = 0,
                        _closed = false, _renew = opts.renew, _core_opts = core_opts,
                        _on_close = opts.on_close, _raw = opts.raw,
                        _renewals = 0, _renew_at = 0, _renew_failures = 0, _carry = nil },
                      Stream)
end

-- Counters that add up across the connections of a renewed stream.
local CARRIED = { "messages", "bytes", "events", "heartbeats", "heartbeats_answered",
                  "keepalives", "len_mismatch", "connects", "disconnects", "connect_failures",
                  "idle_timeouts", "seq_gaps", "seq_missing", "seq_repeats", "duplicates",
                  "seq_resets", "dropped" }

local function add_counts(into, from)
  for _, k in ipairs(CARRIED) do into[k] = (into[k] or 0) + (from[k] or 0) end
  for _, group in ipairs { "events_by_type", "malformed" } do
    into[group] = into[group] or {}
    for k, v in pairs(from[group] or {}) do
      if type(v) == "number" then into[group][k] = (into[group][k] or 0) + v end
    end
  end
end

-- The connection of a stream with `renew` ended or its key was refused:
-- get a fresh key and connect again (Ayla's mobile streams are single-use).
-- Returns true, or nil and why (then it tries again after a backoff).
function Stream:_renew_now()
  if core.monotime() < self._renew_at then return nil, self._renew_error end
  local key, err = self._renew()
  if type(key) ~= "string" or key == "" then
    self._renew_failures = self._renew_failures + 1
    self._renew_at = core.monotime() + math.min(60, 2 ^ self._renew_failures)
    self._renew_error = "renewing the stream failed: " .. tostring(err or "no key")
    return nil, self._renew_error
  end
  local o = {}
  for k, v in pairs(self._core_opts) do o[k] = v end
  o.key, o.seq_start = key, nil -- a new subscription numbers from its own start
  local c, cerr = core.stream(o)
  if not c then -- do not ask for yet another key at once
    self._renew_failures = self._renew_failures + 1
    self._renew_at = core.monotime() + math.min(60, 2 ^ self._renew_failures)
    self._renew_error = "renewing the stream failed: " .. tostring(cerr)
    return nil, self._renew_error
  end
  self._carry = self._carry or {}
  add_counts(self._carry, self._core:stats())
  self._core:close()
  self._core, self._key = c, redact(key)
  self._renewals, self._renew_failures = self._renewals + 1, 0
  return true
end

local function check_self(self)
  if getmetatable(self) ~= Stream then error("expected an ayla.Stream (use s:method())", 3) end
end

-- s:next([timeout]) -> event | nil, "timeout" | "closed" | error text
function Stream:next(timeout)
  check_self(self)
  check(timeout == nil or (type(timeout) == "number" and timeout >= 0), 2,
    "timeout must be a non-negative number of seconds")
  local c = self._core
  local deadline = timeout and core.monotime() + timeout
  while true do
    local payload = c:pop()
    if payload then
      local ev, err = event.decode(payload)
      if ev then
        if self._raw then ev._raw = payload end -- as received, for recordings
        return ev
      end
      -- Counted and reported; the stream goes on.
      self._bad_json = self._bad_json + 1
      self._last_bad = err
    else
      local state, err = c:state()
      if self._renew and (state == "ended" or state == "refused") then
        local ok, rerr = self:_renew_now()
        if ok then c = self._core else state, err = "backoff", rerr end
      elseif state == "refused" then
        return nil, err
      elseif state == "closed" then
        return nil, "closed"
      elseif state == "ended" then
        return nil, "ended: " .. tostring(err)
      end
      local left = deadline and deadline - core.monotime()
      if left and left <= 0 then
        -- Silence while connected is just silence; otherwise say why.
        if state ~= "open" and err then return nil, "timeout", "not connected: " .. err end
        return nil, "timeout"
      end
      if state == "backoff" and self._renew then -- waiting to renew: nothing to wait on
        core.sleep(math.min(left or WAIT_SLICE, WAIT_SLICE))
      else
        c:wait(left and math.min(left, WAIT_SLICE) or WAIT_SLICE)
      end
    end
  end
end

-- for ev in s:events([timeout]) do ... end  -- ends at a timeout, a close or a refusal
function Stream:events(timeout)
  check_self(self)
  return function()
    local ev, err = self:next(timeout)
    self.last_stop = ev == nil and err or nil
    return ev
  end
end

-- What a stats table shows first when printed (it stays a plain table).
local STATS = event.counters("ayla.StreamStats", {
  "state", "events", "events_by_type", "messages", "bytes", "heartbeats", "heartbeats_answered",
  "connects", "reconnects", "dropped", "queued", "last_seq", "last_error" })
local BY_TYPE = event.counters("ayla.StreamStats.events_by_type", {})
local MALFORMED = event.counters("ayla.StreamStats.malformed", {})

function Stream:stats()
  check_self(self)
  local st = self._core:stats()
  if self._carry then
    add_counts(st, self._carry)
    st.reconnects = math.max(st.connects - 1, 0)
  end
  st.renewals = self._renewals
  st.malformed.bad_json = self._bad_json
  if self._last_bad and not st.last_error then st.last_error = self._last_bad end
  setmetatable(st.events_by_type, BY_TYPE)
  setmetatable(st.malformed, MALFORMED)
  return setmetatable(st, STATS)
end

-- s:status() -> state ("connecting", "open", "backoff", "refused", "closed"), and
-- while not open, the last error (stats().last_error keeps it after recovery)
function Stream:status()
  check_self(self)
  local state, err = self._core:state()
  if state == "open" then return state end
  return state, err
end

function Stream:fd()
  check_self(self)
  return self._core:fd()
end

-- Stops the connection; events already received stay readable with next().
function Stream:close()
  check_self(self)
  if not self._closed then
    self._closed = true
    self._core:close()
    if self._on_close then self._on_close() end
  end
end
Stream.__close = Stream.close

function Stream:__tostring()
  return ("ayla.Stream (%s) %s key %s"):format((self._core:state()), self.url, self._key)
end

return M
