-- ayla-sim as a local Ayla cloud: what the simulator itself promises,
-- checked through ayla.cloud and raw requests.
local ayla = require "ayla"
local core = require "ayla.core"
local cjson = require "cjson"

local function raw(sim, method, path, body, token)
  local req = assert(core.request { method = method, host = "127.0.0.1", port = sim:port(),
                                    tls = false, path = path, body = body,
                                    content_type = body and "application/json" or nil,
                                    authorization = token and ("auth_token " .. token) or nil })
  assert(req:wait(5))
  return req:result()
end

local function sign_in_body(sim, password)
  local c = sim:credentials()
  return cjson.encode { user = { email = c.email, password = password or c.password,
                                 application = { app_id = c.app_id, app_secret = c.app_secret } } }
end

-- The events a fresh subscription-less stream sees for n behaviour steps.
local function story(seed, n)
  local sim <close> = assert(ayla.sim { seed = seed })
  local s <close> = assert(sim:stream())
  assert(H.wait_until(function() return s:status() == "open" end))
  sim:behave(n)
  local out = {}
  for i = 1, n do out[i] = tostring(assert(s:next(5))):gsub(" at %S+$", "") end
  return out
end

describe("ayla-sim as a cloud", function()
  it("locks the account after five failed sign-ins, as the real service does", function()
    local sim <close> = assert(ayla.sim())
    for _ = 1, 5 do
      local status, body = raw(sim, "POST", "/users/sign_in.json", sign_in_body(sim, "wrong"))
      assert.equal(401, status)
      assert.matches("Invalid email or password", body)
    end
    local status, body = raw(sim, "POST", "/users/sign_in.json", sign_in_body(sim))
    assert.equal(401, status)
    assert.matches("locked", body)
  end)

  it("refuses a wrong application with 404 and a body it can read", function()
    local sim <close> = assert(ayla.sim())
    local body = cjson.encode { user = { email = "a", password = "b",
                                         application = { app_id = "x", app_secret = "y" } } }
    local status, text = raw(sim, "POST", "/users/sign_in.json", body)
    assert.equal(404, status)
    assert.equal("Could not find application", cjson.decode(text).error)
  end)

  it("expires tokens after their lifetime", function()
    local sim <close> = assert(ayla.sim { token_lifetime = 0.3 })
    local _, text = raw(sim, "POST", "/users/sign_in.json", sign_in_body(sim))
    local t = cjson.decode(text)
    assert.equal(0, t.expires_in) -- whole seconds, as the service sends them
    assert.equal(200, (raw(sim, "GET", "/apiv1/devices.json", nil, t.access_token)))
    core.sleep(0.4)
    assert.equal(401, (raw(sim, "GET", "/apiv1/devices.json", nil, t.access_token)))
    local status, again = raw(sim, "POST", "/users/refresh_token.json",
      cjson.encode { user = { refresh_token = t.refresh_token } })
    assert.equal(200, status)
    assert.are_not.equal(t.access_token, cjson.decode(again).access_token)
  end)

  it("serves one subscription by id, and the flat create body wrapped in the answer", function()
    local sim <close> = assert(ayla.sim())
    local _, text = raw(sim, "POST", "/users/sign_in.json", sign_in_body(sim))
    local token = cjson.decode(text).access_token
    local status, created = raw(sim, "POST", "/api/v1/subscriptions.json",
      cjson.encode { oem_model = "plug", dsn = "*", subscription_type = "connectivity" }, token)
    assert.equal(201, status)
    local sub = cjson.decode(created).subscription
    assert.equal("plug", sub.oem_model)
    local got_status, got = raw(sim, "GET", ("/api/v1/subscriptions/%d.json"):format(sub.id), nil, token)
    assert.equal(200, got_status)
    assert.equal(sub.stream_key, cjson.decode(got).subscription.stream_key)
    assert.equal(204, (raw(sim, "DELETE", ("/api/v1/subscriptions/%d.json"):format(sub.id), nil, token)))
    assert.equal(404, (raw(sim, "GET", ("/api/v1/subscriptions/%d.json"):format(sub.id), nil, token)))
    local bad_status, bad = raw(sim, "POST", "/api/v1/subscriptions.json",
      cjson.encode { oem_model = "*", subscription_type = "datapoint" }, token)
    assert.equal(422, bad_status)
    assert.matches("dsn is required", cjson.decode(bad).errors)
  end)

  it("answers malformed bodies and unknown paths like a service", function()
    local sim <close> = assert(ayla.sim())
    assert.equal(400, (raw(sim, "POST", "/users/sign_in.json", "{not json")))
    assert.equal(404, (raw(sim, "POST", "/users/nope.json", "{}")))
    assert.equal(401, (raw(sim, "GET", "/apiv1/devices.json")))
  end)

  it("loads a fleet from JSON and explains a bad one", function()
    local dir = H.tmpdir()
    local good = dir .. "/fleet.json"
    local f = assert(io.open(good, "w"))
    f:write([[{"oem_id":"abcd1234","devices":[{"dsn":"D1","oem_model":"m1","properties":[
      {"name":"p","base_type":"integer","direction":"input","value":3}]}]}]])
    f:close()
    local sim = assert(ayla.sim { fleet = good })
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    local devices = assert(cloud:devices())
    assert.equal(1, #devices)
    assert.equal("Online", devices[1].connection_status)
    assert.equal(3, assert(cloud:get("D1", "p")).value)
    sim:stop()
    f = assert(io.open(dir .. "/bad.json", "w"))
    f:write([[{"devices":[{"dsn":"D1"}]}]])
    f:close()
    local none, err = ayla.sim { fleet = dir .. "/bad.json" }
    assert.is_nil(none)
    assert.matches("needs \"dsn\" and \"oem_model\"", err)
    none, err = ayla.sim { fleet = dir .. "/missing.json" }
    assert.is_nil(none)
    assert.matches("^fleet .*missing.json: unable to open", err)
    f = assert(io.open(dir .. "/dir.json", "w"))
    f:write([[{"devices":[{"dsn":"X","oem_model":"m","properties":[
      {"name":"p","base_type":"integer","direction":1}]}]}]])
    f:close()
    none, err = ayla.sim { fleet = dir .. "/dir.json" }
    assert.is_nil(none)
    assert.matches('"direction" must be "input" or "output"', err)
    H.rmdir(dir)
  end)

  it("tells the same story for the same seed, and another for another seed", function()
    local a, b, c = story(7, 20), story(7, 20), story(8, 20)
    assert.same(a, b)
    assert.are_not.same(a, c)
    local kinds = {}
    for _, line in ipairs(story(3, 60)) do kinds[line:match("^#%d+ (%S+)")] = true end
    assert.is_true(kinds.datapoint and kinds.connectivity and kinds.location and true)
  end)

  it("plays scripted behaviour on its own when asked to", function()
    local sim <close> = assert(ayla.sim { behaviour_interval = 0.05 })
    local s <close> = assert(sim:stream())
    local ev = assert(s:next(5))
    assert.is_string(ev.type)
    assert.is_string(ev.dsn)
  end)

  it("keeps a subscription's stream to its own events, numbered from 1", function()
    local sim <close> = assert(ayla.sim())
    local cloud = assert(ayla.cloud(sim:cloud_options()))
    local sub = assert(cloud:subscribe { oem_model = "thermo", dsn = "*",
                                         subscription_type = "connectivity" })
    local s <close> = assert(sub:stream())
    assert(H.wait_until(function() return s:status() == "open" end))
    sim:behave(200)
    local ev = assert(s:next(5))
    assert.equal(1, ev.seq)
    assert.equal("thermo", ev.oem_model)
    assert.equal("connectivity", ev.type)
    while true do
      local more = s:next(0.3)
      if not more then break end
      assert.equal("thermo", more.oem_model)
      assert.equal("connectivity", more.type)
    end
  end)
end)
