-- Mirror each dev kit's blue button to its blue LED, and wait for the device's ack.
on("datapoint", { oem_model = "ledevb", property = "Blue_button", name = "button-to-led" }, function(ev)
  local dp, err = set(ev.dsn, "Blue_LED", ev.value, { wait_ack = 10 })
  if not dp then
    log("%s: the LED did not follow: %s", ev.dsn, err)
  elseif dp.dry_run then
    log("%s: LED %d (dry run: no ack in a replay)", ev.dsn, ev.value)
  else
    log("%s: LED %d, acked with status %s", ev.dsn, ev.value, tostring(dp.ack_status))
  end
end)
