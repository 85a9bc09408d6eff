-- ayla: a live connection to the Ayla Datastream Service from Lua.
local app = require "ayla.app"
local cloud = require "ayla.cloud"
local event = require "ayla.event"
local explore = require "ayla.explore"
local help = require "ayla.help"
local regions = require "ayla.regions"
local scheduler = require "ayla.scheduler"
local sim = require "ayla.sim"
local stream = require "ayla.stream"

-- The module table prints as what it is, pointing to the tour.
local Module = { __name = "ayla" }
function Module.__tostring(m) return m._VERSION .. " (ayla.help() for a tour)" end

return setmetatable({
  _VERSION = "ayla 0.1.0",
  stream = stream.new,
  cloud = cloud.new,
  app = app.new,
  scheduler = scheduler.new,
  sim = sim.new,
  decode = event.decode,
  null = event.null,
  regions = regions,
  help = help,
  explore = explore.new,
}, Module)
