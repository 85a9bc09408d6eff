/*
 * libFuzzer target: from a raw DSS message to the events the user gets.
 *
 * It runs the part of that path that needs no socket, as stream.c, lstream.c
 * and stream.lua run it: the frame parser, the seq and event-type scan of the
 * I/O thread, the payload queue, the copy into a Lua string, then
 * ayla.event.decode (lua-cjson) and tostring(ev). A message with no event in
 * it goes to ayla.decode whole, as a user may call it on any text.
 *
 * The contract: bad input gives nil and a message, it never raises. An error
 * raised anywhere, or an event that breaks an invariant (fuzz_event.lua
 * below), aborts so that libFuzzer reports it.
 *
 * The Lua modules come from the source tree (AYLA_SOURCE_DIR, or the
 * variable of that name at run time), cjson.so from the system cpath.
 */
#include "frame.h"
#include "queue.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifndef AYLA_SOURCE_DIR
#define AYLA_SOURCE_DIR "."
#endif

/* Called once per payload with (payload, c_seq or nil, c_event_type or nil);
 * returns true for an event, false for nil + message; raises otherwise. */
static const char harness[] =
	"local event = require 'ayla.event'\n"
	"local Event = event.Event\n"
	"local function fail(fmt, ...) error('invariant broken: ' .. fmt:format(...), 0) end\n"
	"local KNOWN = { connectivity = 1, datapoint = 1, datapointack = 1, location = 1,\n"
	"                registration = 1 }\n"
	"local function once(s, key) local _, n = s:gsub(key, '') return n == 1 end\n"
	"return function(payload, c_seq, c_type)\n"
	"  local ev, err = event.decode(payload)\n"
	"  if ev == nil then\n"
	"    if type(err) ~= 'string' or not err:find('^bad_json: ') then\n"
	"      fail('decode gave nil and %s', tostring(err))\n"
	"    end\n"
	"    return false\n"
	"  end\n"
	"  if err ~= nil then fail('decode gave an event and %s', tostring(err)) end\n"
	"  if getmetatable(ev) ~= Event then fail('the event is not an ayla.Event') end\n"
	"  for _, k in ipairs { 'type', 'dsn', 'oem_model', 'property' } do\n"
	"    if ev[k] ~= nil and type(ev[k]) ~= 'string' then\n"
	"      fail('ev.%s is a %s', k, type(ev[k]))\n"
	"    end\n"
	"  end\n"
	"  local line = tostring(ev)\n"
	"  if type(line) ~= 'string' or not line:find('^#') then fail('tostring(ev) is %q', line) end\n"
	/* The I/O thread's scan and lua-cjson agree, where JSON says what a
	 * duplicate key or an escaped key means (it does not). */
	"  local plain = not payload:find('\\\\u')\n"
	"  if c_seq and c_seq < 2^53 and plain and once(payload, '\"seq\"') then\n"
	"    if ev.seq ~= c_seq then fail('seq %s in C, %s in Lua', c_seq, tostring(ev.seq)) end\n"
	"  end\n"
	"  if c_type and KNOWN[c_type] and plain and once(payload, '\"metadata\"')\n"
	"     and once(payload, '\"event_type\"') and ev.type ~= c_type then\n"
	"    fail('event type %s in C, %s in Lua', c_type, tostring(ev.type))\n"
	"  end\n"
	"  return true\n"
	"end\n";

static lua_State *L;
static int harness_ref = LUA_NOREF;
static struct ayla_queue queue;

#ifdef AYLA_FUZZ_LUA_COVERAGE
/* Lua line coverage as libFuzzer extra counters: liblua and cjson.so are not
 * instrumented, so without this the fuzzer is blind to event.lua's branches. */
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[1 << 12];

static void line_hook(lua_State *l, lua_Debug *ar)
{
	static unsigned prev;
	(void)l;
	unsigned here = (unsigned)ar->currentline * 2654435761u;
	lua_cov[(here ^ prev) % sizeof lua_cov]++;
	prev = here >> 1;
}
#endif

static void die(const char *what, const char *detail)
{
	fprintf(stderr, "fuzz_event: %s: %s\n", what, detail ? detail : "?");
	abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	const char *src = getenv("AYLA_SOURCE_DIR");
	if (!src || !*src)
		src = AYLA_SOURCE_DIR;

	L = luaL_newstate();
	if (!L)
		die("luaL_newstate", "out of memory");
	luaL_openlibs(L);
	/* package.path: the source tree only, so the tree under test is what runs. */
	lua_getglobal(L, "package");
	lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua", src, src);
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	if (luaL_loadbuffer(L, harness, sizeof harness - 1, "=fuzz_event.lua") != LUA_OK ||
	    lua_pcall(L, 0, 1, 0) != LUA_OK)
		die("loading the harness", lua_tostring(L, -1));
	harness_ref = luaL_ref(L, LUA_REGISTRYINDEX);

	/* Big enough that no input is dropped by policy: drops are not under test. */
	ayla_queue_init(&queue, 1u << 16, (size_t)1 << 30, AYLA_DROP_NEWEST);
#ifdef AYLA_FUZZ_LUA_COVERAGE
	lua_sethook(L, line_hook, LUA_MASKLINE, 0);
#endif
	return 0;
}

struct scan {
	size_t events;
	int lost; /* ENOMEM from the queue: not a finding */
};

/* The per-event work of stream.c's on_record, minus stats and sockets. */
static void on_record(const struct dss_record *rec, void *ud)
{
	struct scan *sc = ud;
	if (rec->kind != DSS_EVENT)
		return;
	sc->events++;
	if (ayla_queue_push(&queue, rec->json, rec->json_len) != 1)
		sc->lost = 1;
}

/* Calls the harness on one payload; aborts on a raised error. */
static void check_payload(const char *payload, size_t len)
{
	static const char *const type_path[] = {"metadata", "event_type"};
	int top = lua_gettop(L);
	lua_rawgeti(L, LUA_REGISTRYINDEX, harness_ref);
	lua_pushlstring(L, payload, len); /* as lstream.c's push_payload */

	uint64_t seq;
	if (dss_json_seq(payload, len, &seq) && seq <= (uint64_t)INT64_MAX)
		lua_pushinteger(L, (lua_Integer)seq);
	else
		lua_pushnil(L);
	const char *t;
	size_t tlen;
	if (dss_json_lookup(payload, len, type_path, 2, &t, &tlen))
		lua_pushlstring(L, t, tlen);
	else
		lua_pushnil(L);

	if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
		fprintf(stderr, "fuzz_event: payload (%zu bytes): %.*s\n", len,
			len > 400 ? 400 : (int)len, payload);
		die("raised", lua_tostring(L, -1));
	}
	lua_settop(L, top);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static unsigned long runs;
	if (!L)
		LLVMFuzzerInitialize(NULL, NULL);

	char *msg = malloc(size ? size : 1); /* exact size, for ASan */
	if (!msg)
		return 0;
	if (size)
		memcpy(msg, data, size);

	struct scan sc = {0};
	dss_frame_parse(msg, size, on_record, &sc);
	free(msg); /* the queue holds copies, as it does across threads */

	size_t popped = 0;
	struct ayla_msg *m;
	while ((m = ayla_queue_pop(&queue))) {
		if (m->data[m->len] != '\0')
			die("queue", "payload not NUL-terminated");
		check_payload(m->data, m->len);
		free(m);
		popped++;
	}
	if (!sc.lost && popped != sc.events)
		die("queue", "events lost or invented");
	if (sc.events == 0)
		check_payload((const char *)data, size); /* ayla.decode on any text */

	if (++runs % 4096 == 0)
		lua_gc(L, LUA_GCCOLLECT); /* bounded memory over millions of runs */
	return 0;
}
