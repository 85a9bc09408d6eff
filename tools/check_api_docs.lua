-- tools/check_api_docs.lua: everything public is documented in docs/api.md, and everything
-- docs/api.md documents still exists.
--
--   AYLA_BUILD_DIR=build lua5.4 tools/check_api_docs.lua     (from the repository root;
--                                                              ctest runs it as docs.api)
--
-- What counts as public, found by loading the built module and making real objects against
-- the in-process simulator (never by reading the sources):
--   * every key of require "ayla" (tables such as ayla.regions: their keys too);
--   * the methods of every object type the API returns, from the object's metatable:
--     stream, event, cloud, subscription, sim, app, ctx, rule, scheduler, and the explorer of
--     ayla.explore when the module has it;
--   * the fields of those objects that the module sets itself (s.url, cloud.stats,
--     app.counters, ..., the event shortcuts): not the fields that come from the server (a
--     device's, property's or datapoint's JSON), which docs/cloud.md lists;
--   * the globals a rule file of ayla-rules sees (lua/ayla/runner.lua's sandbox), and the
--     members of its restricted `os`;
--   * the C module ayla.core. It is internal to the Lua wrappers, and documented as such in
--     the "ayla.core (internal)" section of docs/api.md: its functions, and the methods of
--     every userdata type it registers (metatables named ayla.core.*, found in the registry).
-- Names starting with "_" are private and skipped (except ayla._VERSION, documented anyway).
--
-- The convention in docs/api.md: an entry is a heading, or a list item, whose text starts
-- with a code span that starts with the qualified name:
--   ### `ayla.stream(opts)`          ### `s:next([timeout])`        - `s.url`: ...
-- Receivers: ayla. (the module), ev (event), s (stream), cloud, sub (subscription), sim,
-- app, ctx, rule, sched (scheduler), x (explorer). In the section whose "## " heading
-- mentions "sandbox", entries are the bare global names of a rule file (`on(...)`, `os.time`);
-- in the section whose heading mentions "ayla.core", they are `core.NAME` and
-- `ayla.core.Type:method`.
--
-- Output: one line per missing or stale item, then "api: N passed, N failed" (passed: names
-- found documented). Exit status 1 on any failure.

local build = os.getenv("AYLA_BUILD_DIR") or "build"
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = build .. "/?.so;" .. package.cpath

local DOC = "docs/api.md"
local failed, passed, report = 0, 0, {}
local function fail(msg)
  failed = failed + 1
  report[#report + 1] = "api: " .. msg
end

-- ---- what docs/api.md documents --------------------------------------------------------

local documented = { api = {}, sandbox = {}, core = {} } -- kind -> name -> line number
do
  local f = assert(io.open(DOC, "r"), "cannot open " .. DOC)
  local kind, lineno, fence = "api", 0, false
  for line in f:lines() do
    lineno = lineno + 1
    if line:match("^```") then fence = not fence end
    if not fence then
      local h2 = line:match("^##%s+(.*)")
      if h2 and not line:match("^###") then
        kind = (h2:find("sandbox", 1, true) and "sandbox")
          or (h2:find("ayla.core", 1, true) and "core") or "api"
      end
      -- A heading's first code span; a list item's leading code spans ("- `a`, `b`: ...").
      local spans = {}
      local head = line:match("^#+%s+`([^`]+)`")
      if head then spans[1] = head end
      local rest = line:match("^%s*[-*]%s+(`.*)")
      while rest do
        local span, comma, after = rest:match("^`([^`]+)`(,?)%s*(.*)")
        if not span then break end
        spans[#spans + 1] = span
        rest = comma == "," and after or nil
      end
      for _, span in ipairs(spans) do
        local name = span:match("^([%a_][%w_]*[%.:]?[%w_%.:]*)")
        if name then
          name = name:gsub("[%.:]$", "")
          documented[kind][name] = documented[kind][name] or lineno
        end
      end
    end
  end
  f:close()
end

local found = { api = {}, sandbox = {}, core = {} } -- kind -> name -> true

local function expect(kind, name)
  if found[kind][name] then return end
  found[kind][name] = true
  if documented[kind][name] then
    passed = passed + 1
  else
    fail(("%s is not documented in %s%s"):format(name, DOC,
      kind == "sandbox" and " (rule file sandbox section)"
        or kind == "core" and " (ayla.core section)" or ""))
  end
end

local function public(k) return type(k) == "string" and k:sub(1, 1) ~= "_" end

-- Methods: the functions reachable through the metatable's __index table (and the
-- metatable itself for classes that are their own __index).
local function methods_of(obj, receiver, kind)
  local mt = getmetatable(obj)
  if type(mt) ~= "table" then return end
  local index = rawget(mt, "__index")
  if type(index) ~= "table" then return end
  for k, v in pairs(index) do
    if public(k) and type(v) == "function" then expect(kind or "api", receiver .. ":" .. k) end
  end
end

-- Fields the module set on the instance itself.
local function fields_of(obj, receiver, skip)
  for k in pairs(obj) do
    if public(k) and not (skip and skip[k]) then
      expect("api", receiver .. "." .. k) -- a function in a field is still a field
    end
  end
end

-- ---- the module and its objects --------------------------------------------------------

local ayla = require "ayla"

for k, v in pairs(ayla) do
  if public(k) then
    expect("api", "ayla." .. k)
    if type(v) == "table" and k ~= "null" then
      for kk in pairs(v) do
        if public(kk) then expect("api", "ayla." .. k .. "." .. kk) end
      end
    end
  end
end

-- Events: the decoded JSON's top level and the shortcuts, over one sample of each type.
local cjson = require "cjson"
local function sample(seq, meta, body_key, body)
  meta.dsn, meta.oem_model = "D", "m"
  return cjson.encode { seq = tostring(seq), metadata = meta, [body_key] = body }
end
local T = "2026-01-01T00:00:00Z"
local SAMPLES = {
  sample(1, { event_type = "datapoint", property_name = "p", base_type = "integer" },
    "datapoint", { value = 1, updated_at = T }),
  sample(2, { event_type = "datapointack", property_name = "p", base_type = "boolean" },
    "datapoint", { value = 1, ack_status = 200, ack_message = 0 }),
  sample(3, { event_type = "connectivity" }, "connection", { status = "Online", event_time = T }),
  sample(4, { event_type = "location" }, "location_event", { lat = "1", long = "2", created_at = T }),
  sample(5, { event_type = "registration" }, "registration_event",
    { registered = false, unregistered_at = T }),
}
for _, json in ipairs(SAMPLES) do
  local ev = assert(ayla.decode(json))
  fields_of(ev, "ev")
  methods_of(ev, "ev")
end

local sim = assert(ayla.sim { seed = 1, ack_delay = 0.05 })
methods_of(sim, "sim")
fields_of(sim, "sim")

local s = assert(sim:stream())
methods_of(s, "s")
fields_of(s, "s")

local cloud = assert(ayla.cloud(sim:cloud_options()))
methods_of(cloud, "cloud")
fields_of(cloud, "cloud")

local sub = assert(cloud:subscribe { oem_model = "*", dsn = "*", subscription_type = "datapoint" })
methods_of(sub, "sub") -- its fields are the server's JSON (docs/cloud.md)
for _, obj in ipairs { assert(cloud:devices())[1], assert(cloud:properties("AC000W000000001"))[1] } do
  local mt = getmetatable(obj) -- devices and properties: data, and no methods so far
  for k, v in pairs(type(mt) == "table" and type(mt.__index) == "table" and mt.__index or {}) do
    if public(k) and type(v) == "function" then
      fail(("%s:%s: a method on %s; give it a receiver in this check and document it")
        :format(tostring(mt.__name), k, tostring(mt.__name)))
    end
  end
end

local app = assert(ayla.app { cloud = cloud, stream = s })
methods_of(app, "app")
local got_ctx, timer_ctx
local rule = app:on("datapoint", { property = "p" }, function(_, ctx) got_ctx = ctx end)
methods_of(rule, "rule")
fields_of(rule, "rule")
app:after(0, function(ctx) timer_ctx = ctx end)
app:dispatch(assert(ayla.decode(SAMPLES[1])))
for _ = 1, 20 do
  app:step(0.01)
  if got_ctx and timer_ctx then break end
end
assert(got_ctx and timer_ctx, "no ctx from a rule or a timer")
methods_of(got_ctx, "ctx")
fields_of(got_ctx, "ctx") -- a rule's ctx: app and rule (a timer's has no rule)
fields_of(app, "app")     -- after a rule and a timer, as a user would see it

local sched = ayla.scheduler()
methods_of(sched, "sched")
fields_of(sched, "sched")

if ayla.explore then
  -- The explorer prints as it works: keep its output out of the report.
  local real_print, real_write = print, io.write
  -- luacheck: push ignore 121 122
  print, io.write = function() end, function() end
  local ok, x = pcall(ayla.explore)
  print, io.write = real_print, real_write
  -- luacheck: pop
  if ok and x then
    methods_of(x, "x")
    fields_of(x, "x")
    if x.close then pcall(x.close, x) end
  else
    fail("ayla.explore() did not give an explorer: " .. tostring(x))
  end
end

s:close()
sim:stop()

-- ---- ayla.core, the C module -----------------------------------------------------------

local core = require "ayla.core"
for k in pairs(core) do
  if public(k) then expect("core", "core." .. k) end
end
for name, mt in pairs(debug.getregistry()) do
  if type(name) == "string" and name:match("^ayla%.core%.") and type(mt) == "table" then
    local index = rawget(mt, "__index")
    for k, v in pairs(type(index) == "table" and index or {}) do
      if public(k) and type(v) == "function" then expect("core", name .. ":" .. k) end
    end
  end
end

-- ---- the rule-file sandbox of ayla-rules -----------------------------------------------
-- Last: building a sandbox guards the patterns of every string method in this process.

do
  local runner = require "ayla.runner"
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write([[
local names = {}
for k in pairs(_G) do names[#names + 1] = k end
for k in pairs(os) do names[#names + 1] = "os." .. k end
log(table.concat(names, " "))
]])
  f:close()
  local lines = {}
  local r = { opts = { files = { path } }, files = {}, clock = { now = os.clock, wall = os.time },
              log = function(_, msg) lines[#lines + 1] = msg end }
  r.app = ayla.app { clock = r.clock, log = r.log }
  local ok, err = runner.load(r, path)
  os.remove(path)
  if not ok then
    fail("could not list the sandbox globals: " .. tostring(err))
  else
    local listed = lines[1]:match("^[^:]+: (.*)$") or ""
    for name in listed:gmatch("%S+") do
      if public(name:match("[^.]+$")) or name == "_G" then expect("sandbox", name) end
    end
  end
end

-- ---- entries that document nothing that exists -----------------------------------------

-- Fields that exist only once something happened (a rule disabled, an own write, a dry run,
-- an events() loop): documented, but this check cannot make them all appear.
local CONDITIONAL = { ["rule.disabled"] = true, ["rule.last_error"] = true,
                      ["rule.removed"] = true, ["app.dry_run"] = true, ["app.own_hits"] = true,
                      ["app.dry_writes"] = true, ["app.journal"] = true,
                      ["s.last_stop"] = true }
local KNOWN = { ayla = true, ev = true, s = true, cloud = true, sub = true, sim = true,
                app = true, ctx = true, rule = true, sched = true, x = true }
for kind, names in pairs(documented) do
  for name, lineno in pairs(names) do
    local head = name:match("^([%a_][%w_]*)")
    local checked = (kind == "api" and KNOWN[head] and name ~= head)
      or (kind == "core" and (head == "core" or name:match("^ayla%.core%.")) and name ~= head)
      or kind == "sandbox"
    if checked and not found[kind][name] and name ~= "ayla._VERSION" and not CONDITIONAL[name] then
      fail(("%s:%d: %s is documented but does not exist"):format(DOC, lineno, name))
    end
  end
end

table.sort(report)
for _, line in ipairs(report) do print(line) end
print(("api: %d passed, %d failed"):format(passed, failed))
os.exit(failed == 0 and 0 or 1)
