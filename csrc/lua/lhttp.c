/* ayla.core.Request: one HTTP request on the module's I/O thread (csrc/http.c). */
#include "lcommon.h"

#include "http.h"

#include <string.h>

#define REQUEST_MT "ayla.core.Request"

/* Keeping the hub while it has pooled connections. Each request holds the
 * hub (its user value), but between two requests nothing may: the collector
 * would then end the hub and close its kept-alive connections. So while the
 * pool has connections open, the registry holds the hub (ANCHOR_KEY), and a
 * sentinel object, collected at each cycle, looks again: it renews itself
 * while connections are open and drops the anchor once they are all gone
 * (idle ones close after 30 s), so the hub ends as it did before. */
#define ANCHOR_KEY   "ayla.http.anchor"
#define SENTINEL_KEY "ayla.http.sentinel"
#define SENTINEL_MT  "ayla.http.Sentinel"

typedef struct {
	struct ayla_io *io; /* alive: the sentinel's user value is the hub */
} LSentinel;

static int sentinel_gc(lua_State *L);

/* Anchors the hub userdata at index hub (its C hub is io) and starts a
 * sentinel unless one is under way. */
static void anchor_hub(lua_State *L, int hub, struct ayla_io *io)
{
	hub = lua_absindex(L, hub);
	lua_pushvalue(L, hub);
	lua_setfield(L, LUA_REGISTRYINDEX, ANCHOR_KEY);
	if (lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY) == LUA_TBOOLEAN) {
		lua_pop(L, 1);
		return;
	}
	lua_pop(L, 1);
	LSentinel *s = lua_newuserdatauv(L, sizeof *s, 1);
	s->io = io;
	if (luaL_newmetatable(L, SENTINEL_MT)) {
		lua_pushcfunction(L, sentinel_gc);
		lua_setfield(L, -2, "__gc");
	}
	lua_setmetatable(L, -2);
	lua_pushvalue(L, hub);
	lua_setiuservalue(L, -2, 1);
	lua_pop(L, 1); /* garbage at once: collected at the next cycle */
	lua_pushboolean(L, 1);
	lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
}

static int sentinel_gc(lua_State *L)
{
	LSentinel *s = lua_touserdata(L, 1);
	struct ayla_http_stats st;
	ayla_http_stats(s->io, &st);
	lua_pushnil(L);
	lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
	if (st.open > 0) {
		lua_getiuservalue(L, 1, 1);
		anchor_hub(L, -1, s->io);
		lua_pop(L, 1);
	} else {
		lua_pushnil(L);
		lua_setfield(L, LUA_REGISTRYINDEX, ANCHOR_KEY);
	}
	return 0;
}

typedef struct {
	struct ayla_http *h; /* NULL once freed */
} LRequest;

static struct ayla_http *check_request(lua_State *L)
{
	LRequest *lr = luaL_checkudata(L, 1, REQUEST_MT);
	if (!lr->h)
		luaL_error(L, "attempt to use a freed request");
	return lr->h;
}

/* core.request{ method=, host=, port=, tls=, verify=, ca_file=, path=,
 *               authorization=, content_type=, body=, timeout=, max_response= }
 * -> request | nil, message. The request runs at once. */
static int request_new(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	struct ayla_http_request req;
	memset(&req, 0, sizeof req);
	req.method = ayla_opt_string(L, 1, "method", "GET");
	req.host = ayla_opt_string(L, 1, "host", NULL);
	req.port = (int)ayla_opt_integer(L, 1, "port", 0);
	req.tls = ayla_opt_boolean(L, 1, "tls", 1);
	req.verify = ayla_opt_boolean(L, 1, "verify", 1);
	req.ca_file = ayla_opt_string(L, 1, "ca_file", NULL);
	req.path = ayla_opt_string(L, 1, "path", "/");
	req.authorization = ayla_opt_string(L, 1, "authorization", NULL);
	req.content_type = ayla_opt_string(L, 1, "content_type", NULL);
	req.timeout = ayla_opt_number(L, 1, "timeout", 30);
	req.max_response = (size_t)ayla_opt_integer(L, 1, "max_response", 16 << 20);
	if (lua_getfield(L, 1, "body") == LUA_TSTRING)
		req.body = lua_tolstring(L, -1, &req.body_len);
	else if (!lua_isnil(L, -1))
		return luaL_error(L, "option 'body' must be a string");
	lua_pop(L, 1); /* still referenced by the options table */
	if (!req.host)
		return luaL_error(L, "option 'host' is required");
	if (req.port <= 0 || req.port > 65535)
		return luaL_error(L, "option 'port' must be 1..65535");

	struct ayla_io *io = ayla_push_io(L);
	if (!io) {
		luaL_pushfail(L);
		lua_insert(L, -2);
		return 2;
	}
	LRequest *lr = lua_newuserdatauv(L, sizeof *lr, 1);
	lr->h = NULL;
	luaL_setmetatable(L, REQUEST_MT);
	lua_insert(L, -2);
	lua_setiuservalue(L, -2, 1); /* the request keeps the hub alive */
	char err[256];
	lr->h = ayla_http_start(io, &req, err, sizeof err);
	if (!lr->h) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

/* req:wait(seconds) -> true once finished */
static int request_wait(lua_State *L)
{
	struct ayla_http *h = check_request(L);
	lua_pushboolean(L, ayla_http_wait(h, luaL_checknumber(L, 2)));
	return 1;
}

/* req:result() -> "pending" | status, body, retry_after | nil, message */
static int request_result(lua_State *L)
{
	struct ayla_http_result r;
	ayla_http_result(check_request(L), &r);
	switch (r.state) {
	case AYLA_HTTP_PENDING:
		lua_pushliteral(L, "pending");
		return 1;
	case AYLA_HTTP_FAILED:
		luaL_pushfail(L);
		lua_pushstring(L, r.error);
		return 2;
	case AYLA_HTTP_DONE:
		break;
	}
	lua_pushinteger(L, (lua_Integer)r.status);
	lua_pushlstring(L, r.body ? r.body : "", r.body_len);
	if (r.retry_after >= 0)
		lua_pushnumber(L, r.retry_after);
	else
		lua_pushnil(L);
	return 3;
}

/* core._http_stats() -> { requests, connections, reused, retries, open, idle }:
 * the counters of this Lua state's pool of kept-alive connections
 * (csrc/http.c); starts the hub if there is none yet. Private ("_"): the
 * public face is ayla.http.stats() */
static int http_stats(lua_State *L)
{
	struct ayla_io *io = ayla_push_io(L);
	if (!io)
		return lua_error(L);
	struct ayla_http_stats st;
	ayla_http_stats(io, &st);
	lua_createtable(L, 0, 6);
	ayla_set_integer(L, "requests", (lua_Integer)st.requests);
	ayla_set_integer(L, "connections", (lua_Integer)st.connections);
	ayla_set_integer(L, "reused", (lua_Integer)st.reused);
	ayla_set_integer(L, "retries", (lua_Integer)st.retries);
	ayla_set_integer(L, "open", (lua_Integer)st.open);
	ayla_set_integer(L, "idle", (lua_Integer)st.idle);
	return 1;
}

/* req:cancel(): stops it if running and frees it; also __close */
static int request_cancel(lua_State *L)
{
	LRequest *lr = luaL_checkudata(L, 1, REQUEST_MT);
	if (!lr->h)
		return 0;
	struct ayla_io *io = ayla_http_io(lr->h);
	ayla_http_free(lr->h);
	lr->h = NULL;
	struct ayla_http_stats st;
	ayla_http_stats(io, &st); /* io lives on: our user value holds its hub */
	if (st.open > 0) {
		lua_getiuservalue(L, 1, 1);
		anchor_hub(L, -1, io);
	}
	return 0;
}

/* __gc: frees it; nothing else (its hub may be going too) */
static int request_gc(lua_State *L)
{
	LRequest *lr = luaL_checkudata(L, 1, REQUEST_MT);
	ayla_http_free(lr->h);
	lr->h = NULL;
	return 0;
}

static int request_tostring(lua_State *L)
{
	LRequest *lr = luaL_checkudata(L, 1, REQUEST_MT);
	if (!lr->h) {
		lua_pushliteral(L, REQUEST_MT " (freed)");
		return 1;
	}
	struct ayla_http_result r;
	ayla_http_result(lr->h, &r);
	if (r.state == AYLA_HTTP_DONE)
		lua_pushfstring(L, REQUEST_MT " (HTTP %d)", (int)r.status);
	else
		lua_pushstring(L, r.state == AYLA_HTTP_PENDING ? REQUEST_MT " (pending)"
							       : REQUEST_MT " (failed)");
	return 1;
}

int ayla_open_request(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"wait", request_wait},
		{"result", request_result},
		{"cancel", request_cancel},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", request_gc},
		{"__close", request_cancel},
		{"__tostring", request_tostring},
		{NULL, NULL},
	};
	ayla_new_type(L, REQUEST_MT, meta, methods);
	/* luaopen_ayla_core calls this with the module table on top: the pool's
	 * counters go there too, as core._http_stats. */
	if (lua_istable(L, -1)) {
		lua_pushcfunction(L, http_stats);
		lua_setfield(L, -2, "_http_stats");
	}
	lua_pushcfunction(L, request_new);
	return 1;
}
