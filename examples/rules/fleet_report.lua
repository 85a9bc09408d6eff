-- Every ten minutes, report the thermostats of the fleet: how many are online and their mean temperature.
local online = {}

on("connectivity", { oem_model = "thermo", name = "thermo-online" }, function(ev)
  online[ev.dsn] = ev.status == "Online"
end)
on("datapoint", { oem_model = "thermo", name = "thermo-seen" }, function(ev)
  if online[ev.dsn] == nil then online[ev.dsn] = true end
end)

every(600, function()
  local n, up, sum, temps = 0, 0, 0, 0
  for dsn, is_up in pairs(online) do
    n = n + 1
    if is_up then up = up + 1 end
    local t = twin(dsn, "temp")
    if t then sum, temps = sum + t, temps + 1 end
  end
  log("thermostats: %d seen, %d online, mean %s °C", n, up,
    temps > 0 and ("%.1f"):format(sum / temps) or "n/a")
end)
