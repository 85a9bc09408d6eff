local regions = require "ayla.regions"

-- Expected hosts, one "service region deployment host" per line, in the seed's order;
-- "-" marks a blank (&nbsp;) cell. Kept apart from the module's table so a typo in either fails.
local EXPECTED = [[
application   cn dev   application.ayla.com.cn
application   cn field app-field.ayla.com.cn
application   eu field app-field-eu.aylanetworks.com
application   us dev   application.aylanetworks.com
application   us field app-field.aylanetworks.com
dashboard     cn dev   dashboard-dev.ayla.com.cn
dashboard     cn field dashboard.ayla.com.cn
dashboard     eu field dashboard-field-eu.aylanetworks.com
dashboard     us dev   dashboard-dev.aylanetworks.com
dashboard     us field dashboard.aylanetworks.com
stream        cn dev   stream.ayla.com.cn
stream        cn field stream-field.ayla.com.cn
stream        eu field stream-field-eu.aylanetworks.com
stream        us dev   stream.aylanetworks.com
stream        us field stream-field.aylanetworks.com
mdss          cn dev   mdss-dev.ayla.com.cn
mstream       cn dev   mstream-dev.ayla.com.cn
mdss          cn field mdss-field.ayla.com.cn
mstream       cn field mstream-field.ayla.com.cn
mdss          eu field mdss-field-eu.aylanetworks.com
mstream       eu field mstream-field-eu.aylanetworks.com
mdss          us dev   mdss-dev.aylanetworks.com
mstream       us dev   mstream-dev.aylanetworks.com
mdss          us field mdss-field.aylanetworks.com
mstream       us field mstream-field.aylanetworks.com
developer     cn dev   developer.ayla.com.cn
developer     cn field -
developer     eu field -
developer     us dev   developer.aylanetworks.com
developer     us field -
ads           cn dev   ads-dev.ayla.com.cn
ads           cn field ads-field.ayla.com.cn
ads           eu field ads-field-eu.aylanetworks.com
ads           us dev   ads-dev.aylanetworks.com
ads           us field ads-field.aylanetworks.com
factory_proxy cn dev   api-dev.ayla.com.cn
factory_proxy cn field api-field.ayla.com.cn
factory_proxy eu field api-field-eu.aylanetworks.com
factory_proxy us dev   api-dev.aylanetworks.com
factory_proxy us field api-field.aylanetworks.com
image         cn dev   ais.ayla.com.cn
image         cn field ais-field.ayla.com.cn
image         eu field ais-field-eu.aylanetworks.com
image         us dev   ais.aylanetworks.com
image         us field ais-field.aylanetworks.com
log           cn dev   log.ayla.com.cn
log           cn field log-field.ayla.com.cn
log           eu field log-field-eu.aylanetworks.com
log           us dev   log.aylanetworks.com
log           us field log-field.aylanetworks.com
notification  cn dev   ans.ayla.com.cn
notification  cn field ans-field.ayla.com.cn
notification  eu field ans-field-eu.aylanetworks.com
notification  us dev   ans.aylanetworks.com
notification  us field ans-field.aylanetworks.com
rules         cn dev   -
rules         cn field -
rules         eu field -
rules         us dev   rulesservice-dev.aylanetworks.com
rules         us field -
user          cn dev   user-dev.ayla.com.cn
user          cn field user-field.ayla.com.cn
user          eu field user-field-eu.aylanetworks.com
user          us dev   user-dev.aylanetworks.com
user          us field user-field.aylanetworks.com
zigbee        cn dev   zigbee.ayla.com.cn
zigbee        cn field zigbee-field.ayla.com.cn
zigbee        eu field zigbee-field-eu.aylanetworks.com
zigbee        us dev   zigbee.aylanetworks.com
zigbee        us field zigbee-field.aylanetworks.com
]]

local rows = {}
for service, region, deployment, host in EXPECTED:gmatch("(%S+)%s+(%S+)%s+(%S+)%s+(%S+)") do
  rows[#rows + 1] = { service = service, region = region, deployment = deployment,
                      host = host ~= "-" and host or nil }
end

local PAIRS = { "cn/dev", "cn/field", "eu/field", "us/dev", "us/field" }
local KNOWN = "(known: cn/dev, cn/field, eu/field, us/dev, us/field)"

describe("ayla.regions", function()
  it("transcribes 14 services x 5 region/deployment pairs", function()
    assert.equal(70, #rows)
  end)

  it("holds every seed host, and blank cells are absent", function()
    for _, r in ipairs(rows) do
      local where = r.service .. " " .. r.region .. "/" .. r.deployment
      assert.equal(r.host, regions.hosts[r.region][r.deployment][r.service], where)
      assert.equal(r.host, (regions.resolve(r.region, r.deployment))[r.service], where)
    end
  end)

  it("holds nothing the seed does not have", function()
    local expected, seen = {}, 0
    for _, r in ipairs(rows) do
      if r.host then expected[r.service .. " " .. r.region .. " " .. r.deployment] = r.host end
    end
    local pairs_seen = {}
    for region, deployments in pairs(regions.hosts) do
      for deployment, hosts in pairs(deployments) do
        pairs_seen[#pairs_seen + 1] = region .. "/" .. deployment
        for service, host in pairs(hosts) do
          assert.equal(expected[service .. " " .. region .. " " .. deployment], host)
          seen = seen + 1
        end
      end
    end
    table.sort(pairs_seen)
    assert.same(PAIRS, pairs_seen)
    assert.equal(63, seen)
  end)

  describe("resolve", function()
    it("defaults to us/dev", function()
      assert.same(regions.hosts.us.dev, regions.resolve())
      assert.same(regions.hosts.us.field, regions.resolve(nil, "field"))
      assert.same(regions.hosts.cn.dev, regions.resolve("cn"))
    end)

    it("returns a new table each time", function()
      local a = regions.resolve("us", "dev")
      assert.are_not.equal(regions.hosts.us.dev, a)
      a.user = "changed"
      assert.equal("user-dev.aylanetworks.com", regions.hosts.us.dev.user)
      assert.equal("user-dev.aylanetworks.com", regions.resolve("us", "dev").user)
    end)

    it("applies overrides on top, leaving the table alone", function()
      local h = regions.resolve("eu", "field", { ads = "ads-eu.aylanetworks.com",
                                                 rules = "https://rules.example.com" })
      assert.equal("ads-eu.aylanetworks.com", h.ads)
      assert.equal("https://rules.example.com", h.rules)
      assert.equal("user-field-eu.aylanetworks.com", h.user)
      assert.equal("ads-field-eu.aylanetworks.com", regions.hosts.eu.field.ads)
      assert.is_nil(regions.hosts.eu.field.rules)
    end)

    it("reports an unknown region or deployment", function()
      local h, err = regions.resolve("eu", "dev")
      assert.is_nil(h)
      assert.equal("unknown Ayla region/deployment 'eu/dev' " .. KNOWN, err)
      h, err = regions.resolve("mars")
      assert.is_nil(h)
      assert.equal("unknown Ayla region/deployment 'mars/dev' " .. KNOWN, err)
      assert.is_nil(regions.hosts.eu.dev)
    end)

    it("raises on misuse", function()
      assert.has_error(function() regions.resolve(1) end, "region must be a string")
      assert.has_error(function() regions.resolve("us", true) end, "deployment must be a string")
      assert.has_error(function() regions.resolve("us", "dev", "x") end)
      assert.has_error(function() regions.resolve("us", "dev", { user = 1 }) end)
    end)

    it("blames the caller's line", function()
      local ok, err = pcall(regions.resolve, {})
      assert.is_false(ok)
      assert.equal("region must be a string", err) -- pcall'd directly: no position to add
      local line = debug.getinfo(1, "l").currentline + 1
      ok, err = pcall(function() regions.resolve(1) end)
      assert.is_false(ok)
      assert.matches("regions_spec.lua:" .. line .. ":", err, 1, true)
    end)
  end)

  describe("url", function()
    it("builds wss stream URLs and https service URLs", function()
      assert.equal("wss://stream.aylanetworks.com/stream", regions.url("stream", "us", "dev"))
      assert.equal("wss://stream.aylanetworks.com/stream", regions.url("stream"))
      assert.equal("wss://mstream-field-eu.aylanetworks.com/stream",
                   regions.url("mstream", "eu", "field"))
      assert.equal("https://user-field.aylanetworks.com", regions.url("user", "us", "field"))
      assert.equal("https://mdss-dev.ayla.com.cn", regions.url("mdss", "cn", "dev"))
      assert.equal("https://ads-dev.aylanetworks.com", regions.url("ads"))
    end)

    it("builds a URL for every seed host", function()
      for _, r in ipairs(rows) do
        if r.host then
          local stream = r.service == "stream" or r.service == "mstream"
          local want = stream and ("wss://" .. r.host .. "/stream") or ("https://" .. r.host)
          assert.equal(want, regions.url(r.service, r.region, r.deployment))
        end
      end
    end)

    it("takes an explicit scheme", function()
      assert.equal("https://stream.aylanetworks.com",
                   regions.url("stream", "us", "dev", nil, "https"))
      assert.equal("http://user-dev.aylanetworks.com",
                   regions.url("user", "us", "dev", nil, "http"))
    end)

    it("uses overrides: hostnames get a scheme, URLs pass unchanged", function()
      assert.equal("wss://dss.example.com/stream",
                   regions.url("stream", "us", "dev", { stream = "dss.example.com" }))
      assert.equal("ws://127.0.0.1:9000/stream",
                   regions.url("stream", "us", "dev", { stream = "ws://127.0.0.1:9000/stream" }))
      assert.equal("http://127.0.0.1:9000",
                   regions.url("user", "eu", "field", { user = "http://127.0.0.1:9000" }, "https"))
      assert.equal("https://rules.example.com",
                   regions.url("rules", "eu", "field", { rules = "rules.example.com" }))
    end)

    it("reports a missing host", function()
      local u, err = regions.url("rules", "eu", "field")
      assert.is_nil(u)
      assert.equal("no 'rules' host for eu/field; pass hosts = { rules = URL }", err)
      u, err = regions.url("developer", "us", "field")
      assert.is_nil(u)
      assert.equal("no 'developer' host for us/field; pass hosts = { developer = URL }", err)
      u, err = regions.url("nosuch")
      assert.is_nil(u)
      assert.equal("no 'nosuch' host for us/dev; pass hosts = { nosuch = URL }", err)
    end)

    it("reports an unknown region or deployment", function()
      local u, err = regions.url("user", "eu", "dev")
      assert.is_nil(u)
      assert.equal("unknown Ayla region/deployment 'eu/dev' " .. KNOWN, err)
    end)

    it("raises on misuse", function()
      assert.has_error(function() regions.url(nil, "us", "dev") end, "service must be a string")
      assert.has_error(function() regions.url("user", 42) end, "region must be a string")
      assert.has_error(function() regions.url("user", "us", "dev", "x") end)
      assert.has_error(function() regions.url("user", "us", "dev", nil, 443) end)
    end)
  end)
end)
