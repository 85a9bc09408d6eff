-- Report a device that stays offline for more than five minutes, and when it is back.
local reported = {}

on("connectivity", { status = "Offline", ["for"] = 300, name = "offline-5min" }, function(ev)
  reported[ev.dsn] = true
  log("%s (%s) has been offline for 5 minutes", ev.dsn, ev.oem_model)
end)

on("connectivity", { to = "Online", name = "back-online" }, function(ev)
  if reported[ev.dsn] then
    reported[ev.dsn] = nil
    log("%s is back online", ev.dsn)
  end
end)
