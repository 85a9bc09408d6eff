-- The example rule files, replayed over their recorded streams: each run
-- must print exactly the expected output, twice in a row (determinism).
local EXAMPLES = { "button_led", "over_temperature", "offline_alert", "nightly_schedule", "fleet_report" }

local function replay(name)
  local p = io.popen(("TZ=UTC %s/ayla-rules --replay examples/replay/%s.jsonl examples/rules/%s.lua 2>&1")
    :format(H.build, name, name))
  local out = p:read("a")
  local ok = p:close()
  return out, ok
end

describe("examples", function()
  for _, name in ipairs(EXAMPLES) do
    it(name .. ".lua does what examples/replay/" .. name .. ".out says, every time", function()
      local expected = H.read_file("examples/replay/" .. name .. ".out")
      local first, ok = replay(name)
      assert.is_true(ok)
      assert.equal(expected, first)
      assert.equal(first, (replay(name)))
    end)
  end

  it("each starts with a one-line purpose", function()
    for _, name in ipairs(EXAMPLES) do
      local first_line = H.read_file("examples/rules/" .. name .. ".lua"):match("^[^\n]*")
      assert.matches("^%-%- %u", first_line)
    end
  end)
end)
