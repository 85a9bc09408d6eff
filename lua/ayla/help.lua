-- ayla.help([topic]): a short tour of the module, printed at the prompt.
-- Each topic is a few lines with one-line examples; the manual is in docs/.
local TOPICS = {}
local ORDER = { "overview", "explore", "stream", "events", "cloud", "app", "scheduler", "sim" }

TOPICS.overview = [[
ayla: a live connection to the Ayla Datastream Service (DSS), from Lua.
  x = ayla.explore()              start here: the built-in simulator, a cloud and a stream
  s = ayla.stream{ region = "us", key = KEY }   a DSS stream; s:next(5) gives one event
  cloud = ayla.cloud{ region = "us", email = E, password = P, app_id = A, app_secret = S }
  app = ayla.app{ cloud = cloud, stream = s }   rules: app:on("datapoint", {...}, fn)
  sim = ayla.sim()                a local Ayla cloud (REST + DSS) with ten demo devices
  ev = ayla.decode(json)          one DSS event from its JSON text
  sched = ayla.scheduler()        tasks whose cloud calls run side by side
  ayla.regions.url("stream", "eu", "field")   Ayla's hosts by region and deployment
More: ayla.help("explore"), and "stream", "events", "cloud", "app", "scheduler", "sim".
Manual: docs/ (docs/api.md, docs/stream.md, docs/cloud.md, docs/rules.md).]]

TOPICS.explore = [[
ayla.explore([opts]): look around at the prompt.
  x = ayla.explore()              the built-in simulator (demo fleet, an event a second)
  x = ayla.explore{ region = "us", email = E, password = P, app_id = A, app_secret = S }
  x:devices()                     a table of the devices; returns the list
  x:twin("AC000W000000001")       the device's properties and values; returns them
  x:set("AC000W000000001", "Blue_LED", 1)   writes a property (like cloud:set)
  x:tail()                        prints every event for 10 s; returns how many
  x:tail("Blue_LED", 30)          a string: a dsn, property, model or event type
  x:tail{ type = "datapoint", dsn = "TH000W000000001", above = 22 }   an app:on filter
  x:tail{ type = "*", to = 1 }    from/to: a change seen during the tail
  x:stats()   x:close()   x.cloud   x.stream   x.sim
Ctrl-C stops a tail and ends the line (a loop of tails too).]]

TOPICS.stream = [[
ayla.stream{...}: a DSS connection kept alive by a C thread (heartbeats, reconnects).
  s = ayla.stream{ region = "us", deployment = "field", key = KEY }
  s = ayla.stream{ url = "wss://stream.aylanetworks.com/stream", key = KEY }
  ev, err = s:next(5)             an event, or nil and "timeout" / "closed" / why
  for ev in s:events(5) do print(ev) end   until 5 s pass without one
  s:status()   s:stats()   s:fd()   s:close()
Keys come from subscriptions: cloud:subscribe{...}:stream() (see "cloud").]]

TOPICS.events = [[
Events: the DSS JSON as documented, plus shortcuts; tostring(ev) is one line.
  ev.type                         "datapoint", "datapointack", "connectivity", ...
  ev.dsn  ev.oem_model  ev.property  ev.value (typed)  ev.status  ev.seq  ev.time
  ev.metadata.base_type  ev.datapoint.echo  ev.connection.status
  ev = ayla.decode('{"metadata":{"event_type":"datapoint",...},"datapoint":{...}}')
  ev.value == ayla.null           a JSON null]]

TOPICS.cloud = [[
ayla.cloud{...}: the user, device and subscription services (signs in on first use).
  cloud = ayla.cloud{ region = "us", email = E, password = P, app_id = A, app_secret = S }
  cloud:devices()   cloud:properties(dsn)   cloud:get(dsn, "Blue_LED")
  cloud:set(dsn, "Blue_LED", 1, { wait_ack = 10 })   nil and a message when refused
  sub = cloud:subscribe{ oem_model = "*", dsn = "*", subscription_type = "datapoint" }
  s = sub:stream()   cloud:subscriptions()   cloud:unsubscribe(sub)   cloud:sign_out()
  cloud.stats                     requests, sign_ins, refreshes, replays, retries
  ayla.regions.resolve("eu", "field")   the hosts a region/deployment uses]]

TOPICS.app = [[
ayla.app{...}: rules that react to events and timers and write back through the cloud.
  app = ayla.app{ cloud = cloud, stream = s }
  app:on("datapoint", { property = "Blue_LED", to = 1 }, function(ev, ctx)
    ctx:set(ev.dsn, "Green_LED", 1) end)
  app:every(60, function(ctx) ... end)   app:after(5, fn)   app:at("07:30", fn)
  app:cancel(timer)   app:remove(rule)
  app:run()   app:step(0.5)   app:stop()   app:stats()
Rule files for the ayla-rules program: docs/rules.md.]]

TOPICS.sim = [[
ayla.sim{...}: a local Ayla cloud (REST + DSS) on its own thread, for tests and demos.
  sim = ayla.sim{ behaviour_interval = 1 }   ten demo devices, an event a second
  cloud = ayla.cloud(sim:cloud_options())    signed in as the demo user
  s = sim:stream()                the simulator's own key: every event
  sim:emit{ metadata = { event_type = "datapoint", ... }, datapoint = { ... } }
  sim:behave(10)   sim:fault("drop")   sim:flood(1000)   sim:stats()   sim:stop()
  sim:rest_fault("5xx", 2)        the next two REST answers are 503
  sim:expire_tokens()   sim:url()   sim:key()   sim:http_url()]]

TOPICS.scheduler = [[
ayla.scheduler([opts]): tasks (coroutines) whose cloud calls yield, so many run at once.
  sched = ayla.scheduler()
  sched:spawn(function() print(cloud:set(dsn, "Blue_LED", 1)) end)   starts a task
  sched:start({ name = "t", budget = 1e6 }, fn)   with options
  sched:run(10)                   until every task ends (true) or 10 s pass (false)
  sched:step(0.5)   sched:next_wake()   sched.tasks
Rule callbacks of ayla.app already run in one (app.scheduler).]]

local function topics()
  return "Topics: " .. table.concat(ORDER, ", ") .. ' (ayla.help("stream"), ...)'
end

-- help([topic]) prints; it returns nothing, so the prompt shows only the text.
return function(topic)
  if topic ~= nil and type(topic) ~= "string" then
    error("ayla.help expects a topic name such as \"stream\", or nothing", 2)
  end
  if topic == nil then
    print(TOPICS.overview)
    return
  end
  local text = TOPICS[topic:lower()]
  if text then
    print(text)
  else
    print(("No help on %q. %s"):format(topic, topics()))
  end
end
