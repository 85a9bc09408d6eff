/* ayla.core.Stream: the Lua face of csrc/stream.c. */
#include "lcommon.h"

#include "stream.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define STREAM_MT "ayla.core.Stream"

typedef struct {
	struct ayla_stream *s; /* NULL once collected */
} LStream;

static struct ayla_stream *check_stream(lua_State *L)
{
	LStream *ls = luaL_checkudata(L, 1, STREAM_MT);
	if (!ls->s)
		luaL_error(L, "attempt to use a freed stream");
	return ls->s;
}

static size_t opt_size(lua_State *L, int t, const char *name, lua_Integer def)
{
	lua_Integer v = ayla_opt_integer(L, t, name, def);
	if (v < 0)
		luaL_error(L, "option '%s' must not be negative", name);
	return (size_t)v;
}

/* core.stream{ host=, port=, path=, tls=, key=, ... } -> stream | nil, message */
static int stream_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct ayla_stream_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.host = ayla_opt_string(L, 1, "host", NULL);
	cfg.port = (int)ayla_opt_integer(L, 1, "port", 0);
	cfg.path = ayla_opt_string(L, 1, "path", "/stream");
	cfg.tls = ayla_opt_boolean(L, 1, "tls", 0);
	cfg.key = ayla_opt_string(L, 1, "key", NULL);
	cfg.heartbeat_reply = ayla_opt_string(L, 1, "heartbeat_reply", "Z");
	cfg.verify = ayla_opt_boolean(L, 1, "verify", 1);
	cfg.ca_file = ayla_opt_string(L, 1, "ca_file", NULL);
	cfg.idle_timeout = ayla_opt_number(L, 1, "idle_timeout", 90);
	cfg.connect_timeout = ayla_opt_number(L, 1, "connect_timeout", 30);
	cfg.backoff_min = ayla_opt_number(L, 1, "backoff_min", 1);
	cfg.backoff_max = ayla_opt_number(L, 1, "backoff_max", 60);
	cfg.resume = ayla_opt_boolean(L, 1, "resume", 1);
	cfg.reconnect = ayla_opt_boolean(L, 1, "reconnect", 1);
	cfg.seq_start = (uint64_t)ayla_opt_integer(L, 1, "seq_start", 0);
	cfg.queue_max = opt_size(L, 1, "queue_max", 100000);
	cfg.queue_max_bytes = opt_size(L, 1, "queue_max_bytes", 64 << 20);
	cfg.max_message = opt_size(L, 1, "max_message", 1 << 20);
	const char *policy = ayla_opt_string(L, 1, "drop_policy", "oldest");
	if (strcmp(policy, "oldest") == 0)
		cfg.drop_policy = AYLA_DROP_OLDEST;
	else if (strcmp(policy, "newest") == 0)
		cfg.drop_policy = AYLA_DROP_NEWEST;
	else
		return luaL_error(L, "option 'drop_policy' must be \"oldest\" or \"newest\"");
	if (!cfg.host || !cfg.key)
		return luaL_error(L, "options 'host' and 'key' are required");
	if (cfg.port <= 0 || cfg.port > 65535)
		return luaL_error(L, "option 'port' must be 1..65535");

	struct ayla_io *io = ayla_push_io(L);
	if (!io) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	LStream *ls = lua_newuserdatauv(L, sizeof *ls, 1);
	ls->s = NULL; /* consistent before anything can fail */
	luaL_setmetatable(L, STREAM_MT);
	lua_insert(L, -2);
	lua_setiuservalue(L, -2, 1); /* the stream keeps the hub alive */
	char err[256];
	ls->s = ayla_stream_open(io, &cfg, err, sizeof err);
	if (!ls->s) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

static int push_payload(lua_State *L)
{
	const struct ayla_msg *m = lua_touserdata(L, 1);
	lua_pushlstring(L, m->data, m->len);
	return 1;
}

/* s:pop() -> payload string | nil */
static int stream_pop(lua_State *L)
{
	struct ayla_stream *s = check_stream(L);
	struct ayla_msg *m = ayla_stream_pop(s);
	if (!m) {
		lua_pushnil(L);
		return 1;
	}
	/* Copy under a protected call so that a memory error cannot leak m. */
	lua_pushcfunction(L, push_payload);
	lua_pushlightuserdata(L, m);
	int rc = lua_pcall(L, 1, 1, 0);
	free(m);
	if (rc != LUA_OK)
		return lua_error(L);
	return 1;
}

/* s:wait(seconds) -> true if an event is queued */
static int stream_wait(lua_State *L)
{
	struct ayla_stream *s = check_stream(L);
	double seconds = luaL_checknumber(L, 2);
	lua_pushboolean(L, ayla_stream_wait(s, seconds));
	return 1;
}

/* s:state() -> "open" | "connecting" | ..., last error text or nil */
static int stream_state(lua_State *L)
{
	struct ayla_stream *s = check_stream(L);
	char err[256];
	enum ayla_stream_state st = ayla_stream_snapshot(s, NULL, err, sizeof err);
	lua_pushstring(L, ayla_stream_state_name(st));
	if (err[0])
		lua_pushstring(L, err);
	else
		lua_pushnil(L);
	return 2;
}

static void set_time(lua_State *L, const char *name, double t)
{
	if (t > 0)
		ayla_set_number(L, name, t);
}

/* s:stats() -> a fresh table of counters */
static int stream_stats(lua_State *L)
{
	struct ayla_stream *s = check_stream(L);
	struct ayla_stream_stats st;
	char err[256];
	enum ayla_stream_state state = ayla_stream_snapshot(s, &st, err, sizeof err);

	lua_createtable(L, 0, 40);
	ayla_set_string(L, "state", ayla_stream_state_name(state));
	if (err[0])
		ayla_set_string(L, "last_error", err);
	ayla_set_integer(L, "messages", (lua_Integer)st.messages);
	ayla_set_integer(L, "bytes", (lua_Integer)st.bytes);
	ayla_set_integer(L, "events", (lua_Integer)st.events);
	lua_createtable(L, 0, AYLA_EV_COUNT);
	for (int t = 0; t < AYLA_EV_COUNT; t++)
		ayla_set_integer(L, ayla_event_type_name((enum ayla_event_type)t),
				 (lua_Integer)st.by_type[t]);
	lua_setfield(L, -2, "events_by_type");
	ayla_set_integer(L, "heartbeats", (lua_Integer)st.heartbeats);
	ayla_set_integer(L, "heartbeats_answered", (lua_Integer)st.heartbeats_answered);
	ayla_set_integer(L, "keepalives", (lua_Integer)st.keepalives);
	lua_createtable(L, 0, DSS_BAD_COUNT + 2);
	for (int r = 1; r < DSS_BAD_COUNT; r++)
		ayla_set_integer(L, dss_malformed_name((enum dss_malformed)r),
				 (lua_Integer)st.malformed[r]);
	ayla_set_integer(L, "oversize", (lua_Integer)st.oversize);
	ayla_set_integer(L, "binary", (lua_Integer)st.binary);
	lua_setfield(L, -2, "malformed");
	ayla_set_integer(L, "len_mismatch", (lua_Integer)st.len_mismatch);
	ayla_set_integer(L, "connects", (lua_Integer)st.connects);
	ayla_set_integer(L, "reconnects", (lua_Integer)(st.connects ? st.connects - 1 : 0));
	ayla_set_integer(L, "disconnects", (lua_Integer)st.disconnects);
	ayla_set_integer(L, "connect_failures", (lua_Integer)st.connect_failures);
	ayla_set_integer(L, "idle_timeouts", (lua_Integer)st.idle_timeouts);
	if (st.have_seq)
		ayla_set_integer(L, "last_seq", (lua_Integer)st.last_seq);
	ayla_set_integer(L, "seq_gaps", (lua_Integer)st.seq_gaps);
	ayla_set_integer(L, "seq_missing", (lua_Integer)st.seq_missing);
	ayla_set_integer(L, "seq_repeats", (lua_Integer)st.seq_repeats);
	ayla_set_integer(L, "duplicates", (lua_Integer)st.duplicates);
	ayla_set_integer(L, "seq_resets", (lua_Integer)st.seq_resets);
	ayla_set_integer(L, "dropped", (lua_Integer)st.dropped);
	ayla_set_integer(L, "queued", (lua_Integer)st.queued);
	ayla_set_integer(L, "queued_bytes", (lua_Integer)st.queued_bytes);
	ayla_set_integer(L, "queue_peak", (lua_Integer)st.queue_peak);
	ayla_set_integer(L, "attempts", (lua_Integer)st.attempts);
	if (state == AYLA_BACKOFF)
		ayla_set_number(L, "next_attempt_in", st.next_attempt_in);
	set_time(L, "started_at", st.started_at);
	set_time(L, "connected_at", st.connected_at);
	set_time(L, "last_message_at", st.last_message_at);
	set_time(L, "last_event_at", st.last_event_at);
	set_time(L, "last_heartbeat_at", st.last_heartbeat_at);
	if (st.heartbeats_answered) {
		ayla_set_number(L, "heartbeat_reply_ms_last", st.heartbeat_reply_last * 1e3);
		ayla_set_number(L, "heartbeat_reply_ms_max", st.heartbeat_reply_max * 1e3);
	}
	return 1;
}

static int stream_fd(lua_State *L)
{
	lua_pushinteger(L, ayla_stream_fd(check_stream(L)));
	return 1;
}

/* s:close(): stops the I/O thread; queued events stay poppable. Idempotent. */
static int stream_close(lua_State *L)
{
	ayla_stream_close(check_stream(L));
	return 0;
}

static int stream_gc(lua_State *L)
{
	LStream *ls = luaL_checkudata(L, 1, STREAM_MT);
	ayla_stream_free(ls->s);
	ls->s = NULL;
	return 0;
}

static int stream_tostring(lua_State *L)
{
	LStream *ls = luaL_checkudata(L, 1, STREAM_MT);
	if (!ls->s) {
		lua_pushliteral(L, STREAM_MT " (freed)");
		return 1;
	}
	enum ayla_stream_state st = ayla_stream_snapshot(ls->s, NULL, NULL, 0);
	lua_pushfstring(L, STREAM_MT " (%s)", ayla_stream_state_name(st));
	return 1;
}

int ayla_open_stream(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"pop", stream_pop},
		{"wait", stream_wait},
		{"state", stream_state},
		{"stats", stream_stats},
		{"fd", stream_fd},
		{"close", stream_close},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", stream_gc},
		{"__close", stream_gc},
		{"__tostring", stream_tostring},
		{NULL, NULL},
	};
	ayla_new_type(L, STREAM_MT, meta, methods);
	lua_pushcfunction(L, stream_new);
	return 1;
}
