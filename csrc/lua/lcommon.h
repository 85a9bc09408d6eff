/* Helpers shared by the Lua bindings of the C core (csrc/lua/). */
#ifndef AYLA_LCOMMON_H
#define AYLA_LCOMMON_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

/* Typed reads of optional fields of the options table at index t; a field of
 * the wrong type raises an argument error that names the field. */
const char *ayla_opt_string(lua_State *L, int t, const char *name, const char *def);
double ayla_opt_number(lua_State *L, int t, const char *name, double def);
lua_Integer ayla_opt_integer(lua_State *L, int t, const char *name, lua_Integer def);
int ayla_opt_boolean(lua_State *L, int t, const char *name, int def);

/* Sets t[name] = value for the table on top of the stack. */
void ayla_set_number(lua_State *L, const char *name, double value);
void ayla_set_integer(lua_State *L, const char *name, lua_Integer value);
void ayla_set_string(lua_State *L, const char *name, const char *value);

/* Registers a userdata type: metatable `name` with metamethods `meta` and
 * `methods` as its __index table (the shape of liolib's createmeta). */
void ayla_new_type(lua_State *L, const char *name, const luaL_Reg *meta, const luaL_Reg *methods);

struct ayla_io;
/* Pushes this Lua state's I/O hub userdata (starting the hub if needed) and
 * returns the hub; on failure pushes a message instead and returns NULL. */
struct ayla_io *ayla_push_io(lua_State *L);

int ayla_open_stream(lua_State *L);  /* registers ayla.core.Stream, pushes its constructor */
int ayla_open_request(lua_State *L); /* registers ayla.core.Request, pushes its constructor */
int ayla_open_sim(lua_State *L);     /* registers ayla.core.Sim, pushes its constructor */

#endif
