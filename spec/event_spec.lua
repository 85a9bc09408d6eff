-- Decoding DSS events: the seed's five documented shapes, field by field.
local ayla = require "ayla"
local event = require "ayla.event"

local null = ayla.null

describe("event decoding", function()
  local seed = H.seed_events()
  local ev = {}
  setup(function()
    for i, json in ipairs(seed) do ev[i] = assert(ayla.decode(json)) end
  end)

  it("has the five documented shapes", function()
    assert.equal(5, #seed)
  end)

  it("decodes a connectivity event", function()
    local e = ev[1]
    assert.equal(1, e.seq)
    assert.equal("integer", math.type(e.seq))
    assert.same({ oem_id = "0dfc7900", oem_model = "ledevb", dsn = "AC000W000340649",
                  resource_tags = {}, event_type = "connectivity" }, e.metadata)
    assert.same({ event_time = "2018-09-24T10:26:37Z",
                  user_uuid = "00000000-0000-0000-0000-000000000000",
                  status = "Online" }, e.connection)
    assert.equal("connectivity", e.type)
    assert.equal("AC000W000340649", e.dsn)
    assert.equal("ledevb", e.oem_model)
    assert.equal("Online", e.status)
    assert.is_nil(e.property)
    assert.is_nil(e.value)
    assert.equal("2018-09-24T10:26:37Z", e.time)
  end)

  it("decodes a datapoint event", function()
    local e = ev[2]
    assert.equal(13, e.seq)
    assert.same({ oem_id = "0dfc7900", oem_model = "linuxevb", dsn = "AC000W005606115",
                  property_name = "Blue_LED", display_name = "Blue_LED", base_type = "boolean",
                  resource_tags = {}, event_type = "datapoint" }, e.metadata)
    local d = e.datapoint
    assert.equal("1ff9b91c-bfe4-11e8-1261-67d251d3ec96", d.id)
    assert.equal(null, d.created_at_from_device)
    assert.equal("2018-09-24T10:25:14Z", d.updated_at)
    assert.equal("2018-09-24T10:25:14Z", d.created_at)
    assert.equal("00000000-0000-0000-0000-000000000000", d.user_uuid)
    assert.is_true(d.echo)
    assert.is_false(d.closed)
    assert.equal(0, d.value)
    assert.equal("integer", math.type(d.value))
    assert.same({}, d.metadata)
    assert.equal("datapoint", e.type)
    assert.equal("Blue_LED", e.property)
    assert.equal(0, e.value)
    assert.equal("integer", math.type(e.value))
    assert.equal("AC000W005606115", e.dsn)
    assert.equal("linuxevb", e.oem_model)
  end)

  it("decodes a datapointack event, whose body key is datapoint", function()
    local e = ev[3]
    assert.equal(2, e.seq)
    assert.equal("datapointack", e.type)
    assert.equal("datapointack", e.metadata.event_type)
    assert.is_nil(e.datapointack)
    local d = e.datapoint
    assert.equal("15af3cfc-bfe4-11e8-f2f0-9aab1d61f636", d.id)
    assert.equal(null, d.created_at_from_device)
    assert.equal("2018-09-24T10:24:57Z", d.updated_at)
    assert.equal("2018-09-24T10:24:57Z", d.created_at)
    assert.is_false(d.echo)
    assert.is_false(d.closed)
    assert.equal(1, d.value)
    assert.equal(0, d.ack_message)
    assert.equal(200, d.ack_status)
    assert.equal("160c8c90-bfe4-11e8-87f4-8d732085e587", d.ack_id)
    assert.equal("2018-09-24T10:24:57Z", d.acked_at)
    assert.equal(1, e.value)
    assert.equal("integer", math.type(e.value))
    assert.equal("Blue_LED", e.property)
  end)

  it("decodes a location event, keeping lat/long strings as sent", function()
    local e = ev[4]
    assert.equal(1, e.seq)
    assert.equal("location", e.type)
    assert.equal("AC000W000340779", e.dsn)
    assert.same({ dsn = "AC000W000340779", ip = "67.255.234.73", lat = " 44.769500",
                  long = "-69.428300", provider = "ip-based",
                  user_uuid = "00000000-0000-0000-0000-000000000000",
                  created_at = "2018-09-24T11:04:07Z" }, e.location_event)
    assert.equal("2018-09-24T11:04:07Z", e.time)
  end)

  it("decodes a registration event with a null user", function()
    local e = ev[5]
    assert.equal("registration", e.type)
    local r = e.registration_event
    assert.equal("AC000W000340649", r.dsn)
    assert.equal(null, r.user_uuid)
    assert.is_false(r.registered)
    assert.equal("AP-Mode", r.registration_type)
    assert.equal("2018-09-24T10:29:50Z", r.unregistered_at)
    assert.equal("2018-09-24T10:29:50Z", e.time)
  end)

  it("prints every event as one readable line", function()
    local want = {
      "#1 connectivity ledevb/AC000W000340649 Online at 2018-09-24T10:26:37Z",
      "#13 datapoint linuxevb/AC000W005606115 Blue_LED = 0 (boolean) echo at 2018-09-24T10:25:14Z",
      "#2 datapointack linuxevb/AC000W005606115 Blue_LED = 1 ack 200 0 at 2018-09-24T10:24:57Z",
      "#1 location ledevb/AC000W000340779 44.769500,-69.428300 (ip-based) at 2018-09-24T11:04:07Z",
      "#1 registration ledevb/AC000W000340649 unregistered (AP-Mode) at 2018-09-24T10:29:50Z",
    }
    for i, e in ipairs(ev) do
      assert.equal(want[i], tostring(e))
      assert.is_nil(tostring(e):find("\n"))
    end
    assert.equal("ayla.Event", getmetatable(ev[1]).__name)
  end)
end)

describe("value typing by base_type", function()
  local function dp(base_type, value_json, seq)
    return assert(ayla.decode(('{"seq":%s,"metadata":{"event_type":"datapoint","base_type":"%s"},'
      .. '"datapoint":{"value":%s}}'):format(seq or '"7"', base_type, value_json)))
  end

  it("restores integers that lua-cjson decodes as floats", function()
    local e = dp("integer", "2147483647")
    assert.equal(2147483647, e.value)
    assert.equal("integer", math.type(e.value))
    assert.equal("integer", math.type(e.datapoint.value))
  end)

  it("coerces values sent as strings", function()
    assert.equal(42, dp("integer", '"42"').value)
    assert.equal("integer", math.type(dp("integer", '"42"').value))
    assert.equal(1, dp("boolean", '"1"').value)
    assert.equal(0, dp("boolean", "false").value)
    assert.equal(1, dp("boolean", '"true"').value)
    assert.equal(21.5, dp("decimal", '"21.5"').value)
    assert.equal("float", math.type(dp("decimal", "20").value))
  end)

  it("leaves strings and unparseable values alone", function()
    assert.equal("42", dp("string", '"42"').value)
    assert.equal("n/a", dp("integer", '"n/a"').value)
    assert.equal(null, dp("integer", "null").value)
  end)

  it("accepts a numeric seq as well as the documented string", function()
    assert.equal(9, dp("integer", "1", "9").seq)
    assert.equal("integer", math.type(dp("integer", "1", "9").seq))
  end)

  it("exposes typed_value for other layers", function()
    assert.equal(1, event.typed_value(true, "boolean"))
    assert.equal(3, event.typed_value(3.0, "integer"))
  end)
end)

describe("unknown and odd events", function()
  it("passes an unknown event type through untouched", function()
    local json = '{"seq":"5","metadata":{"event_type":"firmware","dsn":"D1","oem_model":"m"},'
      .. '"firmware_event":{"version":"1.2.3","nested":{"a":[1,2]}}}'
    local e = assert(ayla.decode(json))
    assert.equal("firmware", e.type)
    assert.equal("D1", e.dsn)
    assert.same({ version = "1.2.3", nested = { a = { 1, 2 } } }, e.firmware_event)
    assert.equal("#5 firmware m/D1", tostring(e))
  end)

  it("decodes an event with no metadata without failing", function()
    local e = assert(ayla.decode('{"seq":"3","something":true}'))
    assert.is_nil(e.type)
    assert.equal(3, e.seq)
    assert.equal("#3 event ?/?", tostring(e))
  end)

  -- Found by fuzzing (fuzz/regressions/event/): tostring raised on a table
  -- time, and routing shortcuts took numbers, NaN and tables.
  it("keeps routing shortcuts strings and tostring total on odd field types", function()
    local e = assert(ayla.decode('{"seq":"1","time":{},"metadata":{"event_type":5,"dsn":nan,'
      .. '"oem_model":{},"property_name":[1]},"connection":{"status":[]}}'))
    assert.is_nil(e.type)
    assert.is_nil(e.dsn)
    assert.is_nil(e.oem_model)
    assert.is_nil(e.property)
    assert.matches("^#1 event %?/%? at table: ", tostring(e))
    e = assert(ayla.decode('{"metadata":{"event_type":"connectivity","dsn":1},'
      .. '"connection":{"status":"Online","event_time":{"t":1}}}'))
    assert.is_nil(e.dsn)
    assert.matches("^#%? connectivity %?/%? Online at table: ", tostring(e))
  end)

  it("returns nil and a reason for bad JSON", function()
    local e, err = ayla.decode('{"a":tru}')
    assert.is_nil(e)
    assert.matches("^bad_json", err)
    e, err = ayla.decode('[1,2]')
    assert.is_nil(e)
    assert.matches("not a JSON object", err)
  end)
end)

describe("an event's line", function()
  it("keeps string values on one line and cuts long ones on a UTF-8 character", function()
    local e = assert(ayla.decode(('{"metadata":{"event_type":"datapoint","dsn":"D","property_name":"p",'
      .. '"base_type":"string"},"datapoint":{"value":"a\\nb\\t\\"c\\"%s"}}'):format(("é"):rep(80))))
    local line = tostring(e)
    assert.is_nil(line:find("\n", 1, true))
    assert.matches('p = "a\\nb\\t\\"c\\"ééé', line, 1, true)
    assert.is_truthy(utf8.len(line), "valid UTF-8")
    assert.matches('é..." %(string%)', line)
  end)
end)
