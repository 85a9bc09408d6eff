-- ayla.sim: the local DSS stand-in (csrc/sim.c) started in-process, on its own
-- thread and an ephemeral port, for tests, demos and benchmarks.
local cjson = require "cjson"
local core = require "ayla.core"

local M = {}

local Sim = { __name = "ayla.Sim" }
Sim.__index = Sim
M.Sim = Sim

for _, name in ipairs { "port", "key", "tls", "send_raw", "garble", "fault", "flood", "rest_fault",
                        "expire_tokens", "credentials", "behave" } do
  Sim[name] = function(self, ...) return self._core[name](self._core, ...) end
end

-- ayla.sim{ port = 0, key = K, heartbeat_interval = 30, heartbeat_misses = 2,
--           cert_file = F, key_file = F, scenario = FILE, event_interval = 1,
--           loop = false, history = 10000 }
local OPTIONS = {
  host = "string", port = "number", key = "string", heartbeat_interval = "number",
  heartbeat_misses = "number", cert_file = "string", key_file = "string",
  scenario = "string", event_interval = "number", loop = "boolean", history = "number",
  fleet = "string", token_lifetime = "number", ack_delay = "number",
  behaviour_interval = "number", seed = "number",
}

function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then error("ayla.sim expects a table of options", 2) end
  for k, v in pairs(opts or {}) do
    if not OPTIONS[k] then error(("unknown option '%s' for ayla.sim"):format(tostring(k)), 2) end
    if type(v) ~= OPTIONS[k] then error(("option '%s' must be a %s"):format(k, OPTIONS[k]), 2) end
  end
  local c, err = core.sim(opts or {})
  if not c then return nil, err end
  return setmetatable({ _core = c, _host = opts and opts.host or "127.0.0.1" }, Sim)
end

local STATS = require("ayla.event").counters("ayla.SimStats", {
  "clients", "connections", "events_emitted", "events_sent", "rest_requests", "heartbeats_sent",
  "heartbeat_replies", "last_seq" })

-- The counters, as a plain table that prints readably.
function Sim:stats()
  return setmetatable(self._core:stats(), STATS)
end

function Sim:url()
  return ("%s://%s:%d/stream"):format(self:tls() and "wss" or "ws", self._host, self:port())
end

-- The REST services' base URL (user, device and subscription services share it).
function Sim:http_url()
  return ("%s://%s:%d"):format(self:tls() and "https" or "http", self._host, self:port())
end

-- Options for ayla.cloud that point every service at this sim and sign in
-- as its demo user; extra options are merged in.
function Sim:cloud_options(extra)
  local o = self:credentials()
  local base = self:http_url()
  o.hosts = { user = base, ads = base, stream = base, mstream = base }
  for k, v in pairs(extra or {}) do o[k] = v end
  return o
end

-- Broadcasts an event (a table or a JSON object text); the sim sets its seq.
function Sim:emit(ev)
  if type(ev) == "table" then ev = cjson.encode(ev) end
  return self._core:emit(ev)
end

-- A stream connected to this sim; opts are passed on to ayla.stream.
function Sim:stream(opts)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.url, o.key = self:url(), o.key or self:key()
  return require("ayla.stream").new(o)
end

function Sim:stop()
  self._core:stop()
  self._stopped = true
end
Sim.__close = Sim.stop

function Sim:__tostring()
  return self._stopped and "ayla.Sim (stopped)" or "ayla.Sim " .. self:url()
end

return M
