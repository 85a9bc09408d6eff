/* ayla.core.Sim: the simulator (csrc/sim.c) started in-process from Lua. */
#include "lcommon.h"

#include "sim.h"
#include "sim_cloud.h"

#include <string.h>

#define SIM_MT "ayla.core.Sim"

typedef struct {
	struct ayla_sim *sim; /* NULL once stopped */
} LSim;

static struct ayla_sim *check_sim(lua_State *L)
{
	LSim *ls = luaL_checkudata(L, 1, SIM_MT);
	if (!ls->sim)
		luaL_error(L, "attempt to use a stopped simulator");
	return ls->sim;
}

/* core.sim{ port=0, key=, heartbeat_interval=, heartbeat_misses=, cert_file=,
 *           key_file=, scenario=, event_interval=, loop=, history= } */
static int sim_new(lua_State *L)
{
	if (lua_isnoneornil(L, 1))
		lua_newtable(L);
	luaL_checktype(L, 1, LUA_TTABLE);
	struct ayla_sim_config cfg;
	memset(&cfg, 0, sizeof cfg);
	cfg.host = ayla_opt_string(L, 1, "host", "127.0.0.1");
	cfg.port = (int)ayla_opt_integer(L, 1, "port", 0);
	cfg.key = ayla_opt_string(L, 1, "key", NULL);
	cfg.heartbeat_interval = ayla_opt_number(L, 1, "heartbeat_interval", 30);
	cfg.heartbeat_misses = (int)ayla_opt_integer(L, 1, "heartbeat_misses", 2);
	cfg.cert_file = ayla_opt_string(L, 1, "cert_file", NULL);
	cfg.key_file = ayla_opt_string(L, 1, "key_file", NULL);
	cfg.scenario = ayla_opt_string(L, 1, "scenario", NULL);
	cfg.event_interval = ayla_opt_number(L, 1, "event_interval", 1);
	cfg.loop = ayla_opt_boolean(L, 1, "loop", 0);
	cfg.history = (size_t)ayla_opt_integer(L, 1, "history", 10000);
	cfg.fleet = ayla_opt_string(L, 1, "fleet", NULL);
	cfg.token_lifetime = ayla_opt_number(L, 1, "token_lifetime", 86400);
	cfg.ack_delay = ayla_opt_number(L, 1, "ack_delay", 0.2);
	cfg.behaviour_interval = ayla_opt_number(L, 1, "behaviour_interval", 0);
	cfg.seed = (unsigned long)ayla_opt_integer(L, 1, "seed", 1);
	if (cfg.port < 0 || cfg.port > 65535)
		return luaL_error(L, "option 'port' must be 0..65535");
	if (!cfg.cert_file != !cfg.key_file)
		return luaL_error(L, "options 'cert_file' and 'key_file' go together");

	LSim *ls = lua_newuserdatauv(L, sizeof *ls, 0);
	ls->sim = NULL;
	luaL_setmetatable(L, SIM_MT);
	char err[256];
	ls->sim = ayla_sim_start(&cfg, err, sizeof err);
	if (!ls->sim) {
		luaL_pushfail(L);
		lua_pushstring(L, err);
		return 2;
	}
	return 1;
}

static int sim_port(lua_State *L)
{
	lua_pushinteger(L, ayla_sim_port(check_sim(L)));
	return 1;
}

static int sim_key(lua_State *L)
{
	lua_pushstring(L, ayla_sim_key(check_sim(L)));
	return 1;
}

static int sim_tls(lua_State *L)
{
	lua_pushboolean(L, ayla_sim_tls(check_sim(L)));
	return 1;
}

static int done(lua_State *L, int rc, const char *what)
{
	if (rc == 0) {
		lua_pushboolean(L, 1);
		return 1;
	}
	luaL_pushfail(L);
	lua_pushstring(L, what);
	return 2;
}

/* sim:emit(json) broadcasts one event object (the sim sets its seq) */
static int sim_emit(lua_State *L)
{
	size_t len;
	const char *json = luaL_checklstring(L, 2, &len);
	luaL_argcheck(L, memchr(json, '{', len) != NULL, 2, "expected a JSON object");
	return done(L, ayla_sim_emit(check_sim(L), json, len), "out of memory");
}

/* sim:send_raw(text [, binary]) sends one message exactly as given */
static int sim_send_raw(lua_State *L)
{
	size_t len;
	const char *msg = luaL_checklstring(L, 2, &len);
	int binary = lua_toboolean(L, 3);
	return done(L, ayla_sim_send_raw(check_sim(L), msg, len, binary), "out of memory");
}

/* sim:garble(kind) sends a malformed message of a named class */
static int sim_garble(lua_State *L)
{
	struct ayla_sim *sim = check_sim(L);
	int k = luaL_checkoption(L, 2, NULL, ayla_sim_garble_kinds);
	return done(L, ayla_sim_garble(sim, ayla_sim_garble_kinds[k]), "out of memory");
}

/* sim:fault("drop" | "stall" | "withhold" | "fragment", arg) */
static int sim_fault(lua_State *L)
{
	static const char *const names[] = {"drop", "stall", "withhold", "fragment", NULL};
	static const enum ayla_sim_fault faults[] = {AYLA_FAULT_DROP, AYLA_FAULT_STALL,
						     AYLA_FAULT_WITHHOLD, AYLA_FAULT_FRAGMENT};
	struct ayla_sim *sim = check_sim(L);
	int k = luaL_checkoption(L, 2, NULL, names);
	double arg = luaL_optnumber(L, 3, 0);
	if (faults[k] != AYLA_FAULT_DROP)
		luaL_argcheck(L, arg > 0, 3, "expected a positive number");
	return done(L, ayla_sim_fault(sim, faults[k], arg), "out of memory");
}

/* sim:flood(n) sends n datapoint events to every client, as fast as possible */
static int sim_flood(lua_State *L)
{
	struct ayla_sim *sim = check_sim(L);
	lua_Integer n = luaL_checkinteger(L, 2);
	luaL_argcheck(L, n > 0, 2, "expected a positive count");
	return done(L, ayla_sim_flood(sim, (uint64_t)n), "out of memory");
}

/* sim:rest_fault("5xx" | "429" | "slow", count [, seconds]) */
static int sim_rest_fault(lua_State *L)
{
	static const char *const kinds[] = {"5xx", "429", "slow", "refresh_200", NULL};
	struct ayla_sim *sim = check_sim(L);
	int k = luaL_checkoption(L, 2, NULL, kinds);
	lua_Integer count = luaL_checkinteger(L, 3);
	double arg = luaL_optnumber(L, 4, 1);
	luaL_argcheck(L, count >= 0, 3, "expected a count of requests");
	return done(L, ayla_sim_rest_fault(sim, kinds[k], (unsigned)count, arg), "out of memory");
}

/* sim:expire_tokens(): every access token expires now */
static int sim_expire_tokens(lua_State *L)
{
	return done(L, ayla_sim_expire_tokens(check_sim(L)), "out of memory");
}

/* sim:behave(n): n steps of scripted device behaviour, now */
static int sim_behave(lua_State *L)
{
	struct ayla_sim *sim = check_sim(L);
	lua_Integer n = luaL_optinteger(L, 2, 1);
	luaL_argcheck(L, n > 0, 2, "expected a positive count");
	return done(L, ayla_sim_behave(sim, (unsigned)n), "out of memory");
}

/* sim:credentials() -> the demo user's sign-in (nothing secret: a local sim) */
static int sim_credentials(lua_State *L)
{
	check_sim(L);
	lua_createtable(L, 0, 4);
	ayla_set_string(L, "email", SIM_DEMO_EMAIL);
	ayla_set_string(L, "password", SIM_DEMO_PASSWORD);
	ayla_set_string(L, "app_id", SIM_DEMO_APP_ID);
	ayla_set_string(L, "app_secret", SIM_DEMO_APP_SECRET);
	return 1;
}

static int sim_stats(lua_State *L)
{
	struct ayla_sim_stats st;
	ayla_sim_stats(check_sim(L), &st);
	lua_createtable(L, 0, 21);
	ayla_set_integer(L, "connections", (lua_Integer)st.connections);
	ayla_set_integer(L, "rejected", (lua_Integer)st.rejected);
	ayla_set_integer(L, "clients", (lua_Integer)st.clients);
	ayla_set_integer(L, "heartbeats_sent", (lua_Integer)st.heartbeats_sent);
	ayla_set_integer(L, "heartbeat_replies", (lua_Integer)st.heartbeat_replies);
	ayla_set_integer(L, "heartbeat_drops", (lua_Integer)st.heartbeat_drops);
	ayla_set_integer(L, "events_emitted", (lua_Integer)st.events_emitted);
	ayla_set_integer(L, "events_sent", (lua_Integer)st.events_sent);
	ayla_set_integer(L, "raw_sent", (lua_Integer)st.raw_sent);
	ayla_set_integer(L, "flood_sent", (lua_Integer)st.flood_sent);
	ayla_set_integer(L, "faults", (lua_Integer)st.faults);
	ayla_set_integer(L, "client_messages_other", (lua_Integer)st.client_messages_other);
	ayla_set_integer(L, "last_seq", (lua_Integer)st.last_seq);
	ayla_set_integer(L, "rest_requests", (lua_Integer)st.rest_requests);
	const struct ayla_sim_rtt *h = &st.heartbeat_rtt;
	if (h->count) { /* heartbeat round trips, when any reply was timed */
		static const struct {
			const char *name;
			double p;
		} pct[] = {{"heartbeat_rtt_ms_p50", 50},
			   {"heartbeat_rtt_ms_p90", 90},
			   {"heartbeat_rtt_ms_p99", 99},
			   {"heartbeat_rtt_ms_p999", 99.9}};
		ayla_set_integer(L, "heartbeat_rtt_count", (lua_Integer)h->count);
		for (size_t k = 0; k < sizeof pct / sizeof pct[0]; k++)
			ayla_set_number(L, pct[k].name,
					(double)ayla_sim_rtt_percentile(h, pct[k].p) / 1e3);
		ayla_set_number(L, "heartbeat_rtt_ms_max", (double)h->max_us / 1e3);
		ayla_set_number(L, "heartbeat_rtt_ms_mean",
				(double)h->sum_us / (double)h->count / 1e3);
	}
	return 1;
}

/* sim:stop(): idempotent; also the __gc and __close metamethod */
static int sim_stop(lua_State *L)
{
	LSim *ls = luaL_checkudata(L, 1, SIM_MT);
	ayla_sim_stop(ls->sim);
	ls->sim = NULL;
	return 0;
}

static int sim_tostring(lua_State *L)
{
	LSim *ls = luaL_checkudata(L, 1, SIM_MT);
	if (!ls->sim)
		lua_pushliteral(L, SIM_MT " (stopped)");
	else
		lua_pushfstring(L, SIM_MT " (%s://127.0.0.1:%d/stream)",
				ayla_sim_tls(ls->sim) ? "wss" : "ws", ayla_sim_port(ls->sim));
	return 1;
}

int ayla_open_sim(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{"port", sim_port},
		{"key", sim_key},
		{"tls", sim_tls},
		{"emit", sim_emit},
		{"send_raw", sim_send_raw},
		{"garble", sim_garble},
		{"fault", sim_fault},
		{"flood", sim_flood},
		{"stats", sim_stats},
		{"rest_fault", sim_rest_fault},
		{"expire_tokens", sim_expire_tokens},
		{"credentials", sim_credentials},
		{"behave", sim_behave},
		{"stop", sim_stop},
		{NULL, NULL},
	};
	static const luaL_Reg meta[] = {
		{"__gc", sim_stop},
		{"__close", sim_stop},
		{"__tostring", sim_tostring},
		{NULL, NULL},
	};
	ayla_new_type(L, SIM_MT, meta, methods);
	lua_pushcfunction(L, sim_new);
	return 1;
}
