-- Alarm when a thermostat stays above 30 °C for a minute; clear it below 28 °C (hysteresis).
local alarmed = {}

on("datapoint", { oem_model = "thermo", property = "temp", above = 30, ["for"] = 60,
                  name = "too-hot" }, function(ev)
  if not alarmed[ev.dsn] then
    alarmed[ev.dsn] = true
    log("ALARM %s: above 30 °C for 60 s (now %.1f °C)", ev.dsn, twin(ev.dsn, "temp"))
  end
end)

on("datapoint", { oem_model = "thermo", property = "temp", below = 28, name = "cooled" }, function(ev)
  if alarmed[ev.dsn] then
    alarmed[ev.dsn] = nil
    log("clear %s: back to %.1f °C", ev.dsn, ev.value)
  end
end)
