-- Ayla regional hosts, transcribed from the Ayla Developer Guide "Regions" section.
local M = {}

M.hosts = {
  cn = {
    dev = {
      application = "application.ayla.com.cn", dashboard = "dashboard-dev.ayla.com.cn",
      stream = "stream.ayla.com.cn", mstream = "mstream-dev.ayla.com.cn",
      mdss = "mdss-dev.ayla.com.cn", developer = "developer.ayla.com.cn",
      ads = "ads-dev.ayla.com.cn", factory_proxy = "api-dev.ayla.com.cn",
      image = "ais.ayla.com.cn", log = "log.ayla.com.cn", notification = "ans.ayla.com.cn",
      user = "user-dev.ayla.com.cn", zigbee = "zigbee.ayla.com.cn",
    },
    field = {
      application = "app-field.ayla.com.cn", dashboard = "dashboard.ayla.com.cn",
      stream = "stream-field.ayla.com.cn", mstream = "mstream-field.ayla.com.cn",
      mdss = "mdss-field.ayla.com.cn",
      ads = "ads-field.ayla.com.cn", factory_proxy = "api-field.ayla.com.cn",
      image = "ais-field.ayla.com.cn", log = "log-field.ayla.com.cn",
      notification = "ans-field.ayla.com.cn",
      user = "user-field.ayla.com.cn", zigbee = "zigbee-field.ayla.com.cn",
    },
  },
  eu = {
    field = {
      application = "app-field-eu.aylanetworks.com",
      dashboard = "dashboard-field-eu.aylanetworks.com",
      stream = "stream-field-eu.aylanetworks.com", mstream = "mstream-field-eu.aylanetworks.com",
      mdss = "mdss-field-eu.aylanetworks.com",
      ads = "ads-field-eu.aylanetworks.com", factory_proxy = "api-field-eu.aylanetworks.com",
      image = "ais-field-eu.aylanetworks.com", log = "log-field-eu.aylanetworks.com",
      notification = "ans-field-eu.aylanetworks.com",
      user = "user-field-eu.aylanetworks.com", zigbee = "zigbee-field-eu.aylanetworks.com",
    },
  },
  us = {
    dev = {
      application = "application.aylanetworks.com", dashboard = "dashboard-dev.aylanetworks.com",
      stream = "stream.aylanetworks.com", mstream = "mstream-dev.aylanetworks.com",
      mdss = "mdss-dev.aylanetworks.com", developer = "developer.aylanetworks.com",
      ads = "ads-dev.aylanetworks.com", factory_proxy = "api-dev.aylanetworks.com",
      image = "ais.aylanetworks.com", log = "log.aylanetworks.com",
      notification = "ans.aylanetworks.com", rules = "rulesservice-dev.aylanetworks.com",
      user = "user-dev.aylanetworks.com", zigbee = "zigbee.aylanetworks.com",
    },
    field = {
      application = "app-field.aylanetworks.com", dashboard = "dashboard.aylanetworks.com",
      stream = "stream-field.aylanetworks.com", mstream = "mstream-field.aylanetworks.com",
      mdss = "mdss-field.aylanetworks.com",
      ads = "ads-field.aylanetworks.com", factory_proxy = "api-field.aylanetworks.com",
      image = "ais-field.aylanetworks.com", log = "log-field.aylanetworks.com",
      notification = "ans-field.aylanetworks.com",
      user = "user-field.aylanetworks.com", zigbee = "zigbee-field.aylanetworks.com",
    },
  },
}

local function known()
  local list = {}
  for region, deployments in pairs(M.hosts) do
    for deployment in pairs(deployments) do list[#list + 1] = region .. "/" .. deployment end
  end
  table.sort(list)
  return table.concat(list, ", ")
end

local function resolve(region, deployment, overrides, level)
  region, deployment = region or "us", deployment or "dev"
  if type(region) ~= "string" then error("region must be a string", level) end
  if type(deployment) ~= "string" then error("deployment must be a string", level) end
  if overrides ~= nil and type(overrides) ~= "table" then
    error("overrides must be a table of service = hostname or URL", level)
  end
  local base = M.hosts[region] and M.hosts[region][deployment]
  if not base then
    return nil, ("unknown Ayla region/deployment '%s/%s' (known: %s)"):format(region, deployment, known())
  end
  local out = {}
  for service, host in pairs(base) do out[service] = host end
  for service, host in pairs(overrides or {}) do
    if type(service) ~= "string" or type(host) ~= "string" then
      error("overrides must map service names to hostname or URL strings", level)
    end
    out[service] = host
  end
  return out
end

-- Copy of the hosts for region/deployment (default us/dev) with overrides applied on top.
function M.resolve(region, deployment, overrides)
  local hosts, err = resolve(region, deployment, overrides, 3) -- not a tail call: keeps level 3
  return hosts, err
end

local STREAMS = { stream = true, mstream = true }

-- URL for one service: wss://host/stream for stream/mstream, https://host otherwise.
function M.url(service, region, deployment, overrides, scheme)
  if type(service) ~= "string" then error("service must be a string", 2) end
  if scheme ~= nil and type(scheme) ~= "string" then error("scheme must be a string", 2) end
  local hosts, err = resolve(region, deployment, overrides, 3)
  if not hosts then return nil, err end
  local value = hosts[service]
  if not value then
    return nil, ("no '%s' host for %s/%s; pass hosts = { %s = URL }"):format(
      service, region or "us", deployment or "dev", service)
  end
  if value:find("://", 1, true) then return value end
  scheme = scheme or (STREAMS[service] and "wss" or "https")
  local path = (STREAMS[service] and (scheme == "wss" or scheme == "ws")) and "/stream" or ""
  return scheme .. "://" .. value .. path
end

return M
