/* The simulator's cloud model: users, tokens, twins, subscriptions; see sim_cloud.h. */
#include "sim_cloud.h"

#include "frame.h"
#include "util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TOKENS       64
#define MAX_DATAPOINTS   1024 /* kept for GET by id (ack status) */
#define LOCKOUT_FAILURES 5
#define LOCKOUT_SECONDS  1800

struct token {
	char access[33], refresh[33];
	double expires; /* monotonic */
	int live;
};

struct subscription {
	long id;
	json_t *fields; /* as created, plus id, stream_key, timestamps */
	char key[33];
};

struct datapoint {
	char id[37];
	json_t *json; /* the datapoint object, ack fields added when acked */
};

struct sim_cloud {
	struct sim_cloud_config cfg; /* strings owned */
	struct sim_cloud_hooks hooks;
	json_t *fleet; /* {"oem_id":..., "devices":[{..., "properties":[...]}]} */
	unsigned failures;
	double locked_until;
	struct token tokens[MAX_TOKENS];
	unsigned next_token;
	struct subscription *subs;
	size_t nsubs;
	long next_sub_id;
	struct datapoint dps[MAX_DATAPOINTS];
	unsigned next_dp;
	uint64_t rng;
	uint64_t behave_rng; /* seeded: the same seed gives the same story */
	unsigned fault_count[SIM_FAULT_COUNT];
	double fault_arg[SIM_FAULT_COUNT];
	double pending_delay;
};

/* ---- small helpers ---- */

static void iso_now(char out[32])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void random_hex(struct sim_cloud *c, char *out, size_t n)
{
	for (size_t k = 0; k < n; k++)
		out[k] = "0123456789abcdef"[(int)(ayla_random(&c->rng) * 16)];
	out[n] = '\0';
}

static void uuid(struct sim_cloud *c, char out[37])
{
	random_hex(c, out, 36);
	out[8] = out[13] = out[18] = out[23] = '-';
}

static void reply(struct sim_response *out, unsigned status, json_t *body)
{
	out->status = status;
	out->body = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
}

/* The real service's error bodies come in several shapes; so do these. */
enum err_shape {
	ERR_STRING,
	ERR_OBJECT,
	ERR_ERRORS
};

static void fail(struct sim_response *out, unsigned status, enum err_shape shape, const char *msg)
{
	json_t *body;
	if (shape == ERR_OBJECT)
		body = json_pack("{s:{s:s}}", "error", "message", msg);
	else
		body = json_pack("{s:s}", shape == ERR_ERRORS ? "errors" : "error", msg);
	reply(out, status, body);
}

static int csv_has(const char *list, const char *value)
{
	if (!list || !strcmp(list, "*"))
		return 1;
	if (!value)
		return 0;
	size_t n = strlen(value);
	for (const char *p = list; *p;) {
		while (*p == ' ')
			p++;
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len && p[len - 1] == ' ')
			len--;
		if (len == n && !strncmp(p, value, n))
			return 1;
		if (!end)
			break;
		p = end + 1;
	}
	return 0;
}

/* Percent-decodes a path segment in place. */
static void url_decode(char *s)
{
	char *o = s;
	for (; *s; s++) {
		if (s[0] == '%' && s[1] && s[2]) {
			char hex[3] = {s[1], s[2], 0};
			*o++ = (char)strtol(hex, NULL, 16);
			s += 2;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* ---- the fleet ---- */

static const char demo_fleet[] =
	"{\"oem_id\":\"0dfc7900\",\"devices\":["
	"{\"dsn\":\"AC000W000000001\",\"oem_model\":\"ledevb\",\"product_name\":\"Dev kit 1\","
	" \"properties\":\"ledevb\"},"
	"{\"dsn\":\"AC000W000000002\",\"oem_model\":\"ledevb\",\"product_name\":\"Dev kit 2\","
	" \"properties\":\"ledevb\"},"
	"{\"dsn\":\"AC000W000000003\",\"oem_model\":\"ledevb\",\"product_name\":\"Dev kit 3\","
	" \"properties\":\"ledevb\", \"connection_status\":\"Offline\"},"
	"{\"dsn\":\"AC000W000000004\",\"oem_model\":\"ledevb\",\"product_name\":\"Dev kit 4\","
	" \"properties\":\"ledevb\"},"
	"{\"dsn\":\"TH000W000000001\",\"oem_model\":\"thermo\",\"product_name\":\"Hall\","
	" \"properties\":\"thermo\"},"
	"{\"dsn\":\"TH000W000000002\",\"oem_model\":\"thermo\",\"product_name\":\"Kitchen\","
	" \"properties\":\"thermo\"},"
	"{\"dsn\":\"TH000W000000003\",\"oem_model\":\"thermo\",\"product_name\":\"Office\","
	" \"properties\":\"thermo\"},"
	"{\"dsn\":\"PL000W000000001\",\"oem_model\":\"plug\",\"product_name\":\"Heater plug\","
	" \"properties\":\"plug\"},"
	"{\"dsn\":\"PL000W000000002\",\"oem_model\":\"plug\",\"product_name\":\"Lamp plug\","
	" \"properties\":\"plug\"},"
	"{\"dsn\":\"PL000W000000003\",\"oem_model\":\"plug\",\"product_name\":\"Fan plug\","
	" \"properties\":\"plug\", \"connection_status\":\"Offline\"}],"
	"\"templates\":{"
	"\"ledevb\":["
	" {\"name\":\"Blue_LED\",\"base_type\":\"boolean\",\"direction\":\"input\",\"ack_enabled\":true,\"value\":0},"
	" {\"name\":\"Green_LED\",\"base_type\":\"boolean\",\"direction\":\"input\",\"value\":0},"
	" {\"name\":\"Blue_button\",\"base_type\":\"boolean\",\"direction\":\"output\",\"value\":0},"
	" {\"name\":\"input\",\"base_type\":\"integer\",\"direction\":\"input\",\"value\":0},"
	" {\"name\":\"output\",\"base_type\":\"integer\",\"direction\":\"output\",\"value\":0},"
	" {\"name\":\"decimal_in\",\"base_type\":\"decimal\",\"direction\":\"input\",\"value\":0.0},"
	" {\"name\":\"decimal_out\",\"base_type\":\"decimal\",\"direction\":\"output\",\"value\":0.0},"
	" {\"name\":\"cmd\",\"base_type\":\"string\",\"direction\":\"input\",\"value\":\"\"},"
	" {\"name\":\"log\",\"base_type\":\"string\",\"direction\":\"output\",\"value\":\"\"},"
	" {\"name\":\"version\",\"base_type\":\"string\",\"direction\":\"output\",\"read_only\":true,"
	"  \"value\":\"demo 1.0\"}],"
	"\"thermo\":["
	" {\"name\":\"temp\",\"base_type\":\"decimal\",\"direction\":\"output\",\"value\":21.5},"
	" {\"name\":\"humidity\",\"base_type\":\"integer\",\"direction\":\"output\",\"value\":45},"
	" {\"name\":\"setpoint\",\"base_type\":\"decimal\",\"direction\":\"input\",\"ack_enabled\":true,"
	"  \"value\":20.0},"
	" {\"name\":\"mode\",\"base_type\":\"string\",\"direction\":\"input\",\"value\":\"auto\"},"
	" {\"name\":\"heating\",\"base_type\":\"boolean\",\"direction\":\"output\",\"value\":0}],"
	"\"plug\":["
	" {\"name\":\"power\",\"base_type\":\"boolean\",\"direction\":\"input\",\"ack_enabled\":true,\"value\":0},"
	" {\"name\":\"watts\",\"base_type\":\"integer\",\"direction\":\"output\",\"value\":0},"
	" {\"name\":\"energy_kwh\",\"base_type\":\"decimal\",\"direction\":\"output\",\"value\":0.0},"
	" {\"name\":\"fw_version\",\"base_type\":\"string\",\"direction\":\"output\",\"read_only\":true,"
	"  \"value\":\"2.3.1\"}]}}";

/* Fills in every device's and property's fields the service reports. A
 * device's "properties" may name a template instead of listing them. */
static int normalise_fleet(json_t *fleet, char *err, size_t errlen)
{
	json_t *devices = json_object_get(fleet, "devices");
	json_t *templates = json_object_get(fleet, "templates");
	if (!json_is_array(devices)) {
		snprintf(err, errlen, "fleet: \"devices\" must be an array");
		return -1;
	}
	if (!json_object_get(fleet, "oem_id"))
		json_object_set_new(fleet, "oem_id", json_string("0dfc7900"));
	char now[32];
	iso_now(now);
	size_t k;
	json_t *dev;
	json_array_foreach(devices, k, dev)
	{
		const char *dsn = json_string_value(json_object_get(dev, "dsn"));
		const char *model = json_string_value(json_object_get(dev, "oem_model"));
		if (!dsn || !model) {
			snprintf(err, errlen, "fleet: device %zu needs \"dsn\" and \"oem_model\"",
				 k);
			return -1;
		}
		json_t *props = json_object_get(dev, "properties");
		if (json_is_string(props)) {
			json_t *tmpl = json_object_get(templates, json_string_value(props));
			if (!json_is_array(tmpl)) {
				snprintf(err, errlen, "fleet: %s: no template \"%s\"", dsn,
					 json_string_value(props));
				return -1;
			}
			json_object_set_new(dev, "properties", json_deep_copy(tmpl));
			props = json_object_get(dev, "properties");
		}
		if (!json_is_array(props)) {
			snprintf(err, errlen, "fleet: %s: \"properties\" must be an array", dsn);
			return -1;
		}
		if (!json_object_get(dev, "connection_status"))
			json_object_set_new(dev, "connection_status", json_string("Online"));
		if (!json_is_string(json_object_get(dev, "connection_status"))) {
			snprintf(err, errlen, "fleet: %s: \"connection_status\" must be a string",
				 dsn);
			return -1;
		}
		if (!json_object_get(dev, "product_name"))
			json_object_set_new(dev, "product_name", json_string(dsn));
		json_object_set_new(dev, "key", json_integer((json_int_t)k + 1));
		size_t j;
		json_t *p;
		json_array_foreach(props, j, p)
		{
			if (!json_string_value(json_object_get(p, "name")) ||
			    !json_string_value(json_object_get(p, "base_type"))) {
				snprintf(err, errlen,
					 "fleet: %s: property %zu needs \"name\" and "
					 "\"base_type\"",
					 dsn, j);
				return -1;
			}
			if (!json_object_get(p, "direction"))
				json_object_set_new(p, "direction", json_string("output"));
			const char *dir = json_string_value(json_object_get(p, "direction"));
			if (!dir || (strcmp(dir, "input") && strcmp(dir, "output"))) {
				snprintf(err, errlen,
					 "fleet: %s: property %zu: \"direction\" must be "
					 "\"input\" or \"output\"",
					 dsn, j);
				return -1;
			}
			if (!json_object_get(p, "read_only"))
				json_object_set_new(p, "read_only", json_false());
			if (!json_object_get(p, "ack_enabled"))
				json_object_set_new(p, "ack_enabled", json_false());
			if (!json_object_get(p, "display_name"))
				json_object_set(p, "display_name", json_object_get(p, "name"));
			if (!json_object_get(p, "value"))
				json_object_set_new(p, "value", json_null());
			json_object_set_new(p, "data_updated_at", json_string(now));
		}
	}
	return 0;
}

static json_t *find_device(struct sim_cloud *c, const char *dsn)
{
	size_t k;
	json_t *dev;
	json_array_foreach(json_object_get(c->fleet, "devices"), k, dev)
	{
		if (!strcmp(json_string_value(json_object_get(dev, "dsn")), dsn))
			return dev;
	}
	return NULL;
}

static json_t *find_property(json_t *dev, const char *name)
{
	size_t k;
	json_t *p;
	json_array_foreach(json_object_get(dev, "properties"), k, p)
	{
		if (!strcmp(json_string_value(json_object_get(p, "name")), name))
			return p;
	}
	return NULL;
}

/* The service's view of a property, with its device's dsn. */
static json_t *property_view(json_t *dev, json_t *p)
{
	json_t *v = json_deep_copy(p);
	json_object_set(v, "device_key", json_object_get(dev, "key"));
	json_object_set(v, "dsn", json_object_get(dev, "dsn"));
	json_object_set_new(v, "type", json_string("Property"));
	return v;
}

/* ---- events ---- */

static void publish(struct sim_cloud *c, json_t *event)
{
	char *text = json_dumps(event, JSON_COMPACT);
	if (text) {
		c->hooks.emit(c->hooks.ud, text, strlen(text));
		free(text);
	}
	json_decref(event);
}

static json_t *event_metadata(struct sim_cloud *c, json_t *dev, json_t *p, const char *type)
{
	json_t *m = json_pack("{s:O, s:O, s:O, s:[], s:s}", "oem_id",
			      json_object_get(c->fleet, "oem_id"), "oem_model",
			      json_object_get(dev, "oem_model"), "dsn", json_object_get(dev, "dsn"),
			      "resource_tags", "event_type", type);
	if (p) {
		json_object_set(m, "property_name", json_object_get(p, "name"));
		json_object_set(m, "display_name", json_object_get(p, "display_name"));
		json_object_set(m, "base_type", json_object_get(p, "base_type"));
	}
	return m;
}

struct pending_ack {
	char dsn[64], prop[64], id[37];
};

static void device_acks(struct sim_cloud *c, void *arg)
{
	struct pending_ack *a = arg;
	json_t *dev = find_device(c, a->dsn), *p = dev ? find_property(dev, a->prop) : NULL;
	for (unsigned k = 0; p && k < MAX_DATAPOINTS; k++) {
		struct datapoint *d = &c->dps[k];
		if (!d->json || strcmp(d->id, a->id))
			continue;
		char now[32], ack_id[37];
		iso_now(now);
		uuid(c, ack_id);
		/* The seed's datapointack: ack_status 200, ack_message 0. */
		json_object_set_new(d->json, "ack_status", json_integer(200));
		json_object_set_new(d->json, "ack_message", json_integer(0));
		json_object_set_new(d->json, "ack_id", json_string(ack_id));
		json_object_set_new(d->json, "acked_at", json_string(now));
		json_t *body = json_deep_copy(d->json);
		json_object_set_new(body, "echo", json_false());
		publish(c, json_pack("{s:o, s:o}", "metadata",
				     event_metadata(c, dev, p, "datapointack"), "datapoint", body));
		break;
	}
	free(a);
}

/* ---- value rules (PROTOCOL.md section 4) ---- */

static const char *check_value(json_t *p, json_t *value, json_t **typed)
{
	const char *type = json_string_value(json_object_get(p, "base_type"));
	if (!strcmp(type, "boolean")) {
		if (json_is_boolean(value)) {
			*typed = json_integer(json_is_true(value));
			return NULL;
		}
		if (json_is_number(value) &&
		    (json_number_value(value) == 0 || json_number_value(value) == 1)) {
			*typed = json_integer((json_int_t)json_number_value(value));
			return NULL;
		}
		return "value must be 0 or 1 for a boolean property";
	}
	if (!strcmp(type, "integer")) {
		double v = json_number_value(value);
		if (!json_is_number(value) || v != floor(v) || v < -2147483648.0 ||
		    v > 2147483647.0)
			return "value must be an integer between -2147483648 and 2147483647";
		*typed = json_integer((json_int_t)v);
		return NULL;
	}
	if (!strcmp(type, "decimal")) {
		double v = json_number_value(value);
		if (!json_is_number(value) || fabs(v) > 21474836.47)
			return "value must be a number between -21474836.47 and 21474836.47";
		if (fabs(v * 100 - round(v * 100)) > 1e-6)
			return "value may have at most 2 decimal places";
		*typed = json_real(v);
		return NULL;
	}
	if (!strcmp(type, "string")) {
		if (!json_is_string(value) || json_string_length(value) > 1024)
			return "value must be a string of at most 1024 bytes";
		*typed = json_incref(value);
		return NULL;
	}
	return "this property's base_type cannot be written through the API";
}

/* ---- endpoints ---- */

static struct token *token_for(struct sim_cloud *c, const char *authorization)
{
	static const char prefix[] = "auth_token ";
	if (!authorization || strncmp(authorization, prefix, sizeof prefix - 1))
		return NULL;
	const char *t = authorization + sizeof prefix - 1;
	for (unsigned k = 0; k < MAX_TOKENS; k++)
		if (c->tokens[k].live && !strcmp(c->tokens[k].access, t) &&
		    ayla_monotime() < c->tokens[k].expires)
			return &c->tokens[k];
	return NULL;
}

static void issue_tokens(struct sim_cloud *c, struct sim_response *out)
{
	struct token *t = &c->tokens[c->next_token++ % MAX_TOKENS];
	random_hex(c, t->access, 32);
	random_hex(c, t->refresh, 32);
	t->expires = ayla_monotime() + c->cfg.token_lifetime;
	t->live = 1;
	reply(out, 200,
	      json_pack("{s:s, s:s, s:i, s:s, s:[]}", "access_token", t->access, "refresh_token",
			t->refresh, "expires_in", (json_int_t)c->cfg.token_lifetime, "role",
			"EndUser", "role_tags"));
}

static void sign_in(struct sim_cloud *c, json_t *req, struct sim_response *out)
{
	const char *email = NULL, *password = NULL, *app_id = NULL, *app_secret = NULL;
	json_unpack(req, "{s:{s?s, s?s, s?{s?s, s?s}}}", "user", "email", &email, "password",
		    &password, "application", "app_id", &app_id, "app_secret", &app_secret);
	if (ayla_monotime() < c->locked_until) {
		fail(out, 401, ERR_STRING, "Your account is locked.");
		return;
	}
	if (!app_id || !app_secret || strcmp(app_id, c->cfg.app_id) ||
	    strcmp(app_secret, c->cfg.app_secret)) {
		fail(out, 404, ERR_STRING, "Could not find application");
		return;
	}
	if (!email || !password || strcmp(email, c->cfg.email) ||
	    strcmp(password, c->cfg.password)) {
		if (++c->failures >= LOCKOUT_FAILURES)
			c->locked_until = ayla_monotime() + LOCKOUT_SECONDS;
		fail(out, 401, ERR_STRING, "Invalid email or password.");
		return;
	}
	c->failures = 0;
	issue_tokens(c, out);
}

static void refresh(struct sim_cloud *c, json_t *req, struct sim_response *out)
{
	const char *r = NULL;
	json_unpack(req, "{s:{s?s}}", "user", "refresh_token", &r);
	if (c->fault_count[SIM_FAULT_REFRESH_200]) {
		c->fault_count[SIM_FAULT_REFRESH_200]--;
		reply(out, 200, json_pack("{s:s}", "error", "Your refresh token is invalid"));
		return;
	}
	for (unsigned k = 0; r && k < MAX_TOKENS; k++)
		if (c->tokens[k].live && !strcmp(c->tokens[k].refresh, r)) {
			c->tokens[k].live = 0; /* both tokens are replaced */
			issue_tokens(c, out);
			return;
		}
	fail(out, 422, ERR_STRING, "Your refresh token is invalid");
}

static void sign_out(struct sim_cloud *c, json_t *req, struct sim_response *out)
{
	const char *a = NULL;
	json_unpack(req, "{s:{s?s}}", "user", "access_token", &a);
	for (unsigned k = 0; a && k < MAX_TOKENS; k++)
		if (c->tokens[k].live && !strcmp(c->tokens[k].access, a))
			c->tokens[k].live = 0;
	reply(out, 200, json_object());
}

static void list_devices(struct sim_cloud *c, struct sim_response *out)
{
	json_t *list = json_array();
	size_t k;
	json_t *dev;
	json_array_foreach(json_object_get(c->fleet, "devices"), k, dev)
	{
		json_t *d = json_deep_copy(dev);
		json_object_del(d, "properties");
		json_array_append_new(list, json_pack("{s:o}", "device", d));
	}
	reply(out, 200, list);
}

static void write_datapoint(struct sim_cloud *c, json_t *dev, json_t *p, json_t *req,
			    struct sim_response *out)
{
	json_t *value = json_object_get(json_object_get(req, "datapoint"), "value");
	if (!value) {
		fail(out, 422, ERR_ERRORS, "datapoint.value is missing");
		return;
	}
	if (strcmp(json_string_value(json_object_get(p, "direction")), "input") ||
	    json_is_true(json_object_get(p, "read_only"))) {
		fail(out, 403, ERR_OBJECT,
		     "property is not writable from the cloud (an output "
		     "or read-only property)");
		return;
	}
	json_t *typed = NULL;
	const char *why = check_value(p, value, &typed);
	if (why) {
		fail(out, 422, ERR_ERRORS, why);
		return;
	}
	char now[32];
	iso_now(now);
	json_object_set_new(p, "value", typed);
	json_object_set_new(p, "data_updated_at", json_string(now));

	struct datapoint *d = &c->dps[c->next_dp++ % MAX_DATAPOINTS];
	json_decref(d->json);
	uuid(c, d->id);
	json_t *meta = json_object_get(json_object_get(req, "datapoint"), "metadata");
	d->json = json_pack("{s:s, s:n, s:s, s:s, s:s, s:b, s:b, s:O, s:O}", "id", d->id,
			    "created_at_from_device", "updated_at", now, "created_at", now,
			    "user_uuid", "00000000-0000-0000-0000-000000000000", "echo", 0,
			    "closed", 0, "value", typed, "metadata",
			    json_is_object(meta) ? meta : json_object());
	if (!json_is_object(meta))
		json_decref(json_object_get(d->json, "metadata")); /* the temporary {} above */

	/* The stream sees the cloud's write echoed. */
	json_t *body = json_deep_copy(d->json);
	json_object_set_new(body, "echo", json_true());
	publish(c, json_pack("{s:o, s:o}", "metadata", event_metadata(c, dev, p, "datapoint"),
			     "datapoint", body));
	if (json_is_true(json_object_get(p, "ack_enabled")) &&
	    !strcmp(json_string_value(json_object_get(dev, "connection_status")), "Online")) {
		struct pending_ack *a = calloc(1, sizeof *a);
		if (a) {
			snprintf(a->dsn, sizeof a->dsn, "%s",
				 json_string_value(json_object_get(dev, "dsn")));
			snprintf(a->prop, sizeof a->prop, "%s",
				 json_string_value(json_object_get(p, "name")));
			snprintf(a->id, sizeof a->id, "%s", d->id);
			c->hooks.later(c->hooks.ud, c->cfg.ack_delay, device_acks, a);
		}
	}
	reply(out, 201, json_pack("{s:O}", "datapoint", d->json));
}

static void get_datapoint(struct sim_cloud *c, const char *id, struct sim_response *out)
{
	for (unsigned k = 0; k < MAX_DATAPOINTS; k++)
		if (c->dps[k].json && !strcmp(c->dps[k].id, id)) {
			reply(out, 200, json_pack("{s:O}", "datapoint", c->dps[k].json));
			return;
		}
	fail(out, 404, ERR_STRING, "Datapoint not found");
}

static const char *const event_types[] = {"connectivity", "datapoint", "datapointack", "location",
					  "registration"};

static const char *check_subscription(json_t *req)
{
	const char *model = json_string_value(json_object_get(req, "oem_model"));
	const char *dsn = json_string_value(json_object_get(req, "dsn"));
	const char *type = json_string_value(json_object_get(req, "subscription_type"));
	const char *client = json_string_value(json_object_get(req, "client_type"));
	if (!model || !*model)
		return "oem_model is required ('*' or a comma list)";
	if (!strcmp(model, "*") && (!dsn || !*dsn))
		return "dsn is required when oem_model is '*'";
	if (client && strcmp(client, "cloud") && strcmp(client, "mobile"))
		return "client_type must be cloud or mobile";
	if (!type || !*type)
		return "subscription_type is required";
	int mobile = client && !strcmp(client, "mobile");
	if (!mobile && strchr(type, ','))
		return "a cloud subscription takes one subscription_type";
	char copy[128];
	snprintf(copy, sizeof copy, "%s", type);
	for (char *save = NULL, *t = strtok_r(copy, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		while (*t == ' ')
			t++;
		int known = 0;
		for (size_t k = 0; k < sizeof event_types / sizeof *event_types; k++)
			known |= !strcmp(t, event_types[k]);
		if (!known)
			return "subscription_type must be connectivity, datapoint, datapointack, "
			       "location or registration";
	}
	return NULL;
}

static void create_subscription(struct sim_cloud *c, json_t *req, struct sim_response *out)
{
	const char *why = json_is_object(req) ? check_subscription(req) : "expected a JSON object";
	if (why) {
		fail(out, 422, ERR_ERRORS, why);
		return;
	}
	struct subscription *grown = realloc(c->subs, (c->nsubs + 1) * sizeof *grown);
	if (!grown) {
		fail(out, 500, ERR_STRING, "out of memory");
		return;
	}
	c->subs = grown;
	struct subscription *s = &c->subs[c->nsubs++];
	s->id = ++c->next_sub_id;
	random_hex(c, s->key, 32);
	char now[32];
	iso_now(now);
	s->fields = json_deep_copy(req);
	json_object_set_new(s->fields, "id", json_integer(s->id));
	json_object_set(s->fields, "oem", json_object_get(c->fleet, "oem_id"));
	json_object_set_new(s->fields, "stream_key", json_string(s->key));
	if (!json_object_get(s->fields, "client_type"))
		json_object_set_new(s->fields, "client_type", json_string("cloud"));
	if (!json_object_get(s->fields, "property_name"))
		json_object_set_new(s->fields, "property_name", json_string("*"));
	if (!json_object_get(s->fields, "dsn") || json_is_null(json_object_get(s->fields, "dsn")))
		json_object_set_new(s->fields, "dsn", json_string("*"));
	if (!json_object_get(s->fields, "batch_size"))
		json_object_set_new(s->fields, "batch_size", json_integer(1));
	json_object_set_new(s->fields, "connection_status", json_string("Offline"));
	json_object_set_new(s->fields, "is_suspended", json_false());
	json_object_set_new(s->fields, "created_at", json_string(now));
	json_object_set_new(s->fields, "updated_at", json_string(now));
	reply(out, 201, json_pack("{s:O}", "subscription", s->fields));
}

static struct subscription *find_subscription(struct sim_cloud *c, const char *id)
{
	char *end;
	long n = strtol(id, &end, 10);
	for (size_t k = 0; *end == '\0' && k < c->nsubs; k++)
		if (c->subs[k].id == n)
			return &c->subs[k];
	return NULL;
}

static void delete_subscription(struct sim_cloud *c, struct subscription *s,
				struct sim_response *out)
{
	char key[33];
	snprintf(key, sizeof key, "%s", s->key);
	json_decref(s->fields);
	size_t at = (size_t)(s - c->subs);
	memmove(s, s + 1, (c->nsubs - at - 1) * sizeof *s);
	c->nsubs--;
	c->hooks.revoked(c->hooks.ud, key);
	reply(out, 204, NULL);
}

/* Splits "/a/b/c.json" into at most 8 decoded segments; drops ".json". */
static size_t split_path(const char *path, char *buf, size_t buflen, char **seg)
{
	snprintf(buf, buflen, "%s", path);
	size_t n = 0, len = strlen(buf);
	if (len > 5 && !strcmp(buf + len - 5, ".json"))
		buf[len - 5] = '\0';
	for (char *save = NULL, *t = strtok_r(buf, "/", &save); t && n < 8;
	     t = strtok_r(NULL, "/", &save)) {
		url_decode(t);
		seg[n++] = t;
	}
	return n;
}

static int is(const char *a, const char *b)
{
	return a && !strcmp(a, b);
}

void sim_cloud_handle(struct sim_cloud *c, const char *method, const char *path,
		      const char *authorization, const char *body, size_t body_len,
		      struct sim_response *out)
{
	memset(out, 0, sizeof *out);
	if (c->fault_count[SIM_FAULT_SLOW]) {
		c->fault_count[SIM_FAULT_SLOW]--;
		c->pending_delay = c->fault_arg[SIM_FAULT_SLOW];
	}
	if (c->fault_count[SIM_FAULT_5XX]) {
		c->fault_count[SIM_FAULT_5XX]--;
		fail(out, 503, ERR_STRING, "Service Unavailable (injected)");
		return;
	}
	if (c->fault_count[SIM_FAULT_429]) {
		c->fault_count[SIM_FAULT_429]--;
		fail(out, 429, ERR_STRING, "Too Many Requests (injected)");
		out->retry_after = (unsigned)ceil(c->fault_arg[SIM_FAULT_429]);
		return;
	}

	char buf[1024], *seg[8] = {0};
	size_t n = split_path(path, buf, sizeof buf, seg);
	json_t *req = NULL;
	if (body_len) {
		req = json_loadb(body, body_len, 0, NULL);
		if (!req) {
			fail(out, 400, ERR_STRING, "The request body is not valid JSON");
			return;
		}
	}
	int post = is(method, "POST"), get = is(method, "GET"), del = is(method, "DELETE");

	/* User service: no token needed. */
	if (n == 2 && is(seg[0], "users") && post) {
		if (is(seg[1], "sign_in"))
			sign_in(c, req, out);
		else if (is(seg[1], "refresh_token"))
			refresh(c, req, out);
		else if (is(seg[1], "sign_out"))
			sign_out(c, req, out);
		else
			fail(out, 404, ERR_STRING, "Not found");
		json_decref(req);
		return;
	}

	if (!token_for(c, authorization)) {
		fail(out, 401, ERR_STRING, "Your access token is invalid or has expired");
		json_decref(req);
		return;
	}

	if (n >= 2 && is(seg[0], "apiv1")) {
		if (n == 2 && is(seg[1], "devices") && get) {
			list_devices(c, out);
		} else if (n >= 4 && is(seg[1], "dsns") && is(seg[3], "properties")) {
			json_t *dev = find_device(c, seg[2]);
			json_t *p = dev && n >= 5 ? find_property(dev, seg[4]) : NULL;
			if (!dev) {
				fail(out, 404, ERR_STRING, "Device not found");
			} else if (n == 4 && get) {
				json_t *list = json_array();
				size_t k;
				json_t *each;
				json_array_foreach(json_object_get(dev, "properties"), k, each)
					json_array_append_new(list,
							      json_pack("{s:o}", "property",
									property_view(dev, each)));
				reply(out, 200, list);
			} else if (n >= 5 && !p) {
				fail(out, 404, ERR_OBJECT, "Property not found");
			} else if (n == 5 && get) {
				reply(out, 200,
				      json_pack("{s:o}", "property", property_view(dev, p)));
			} else if (n == 6 && is(seg[5], "datapoints") && post) {
				write_datapoint(c, dev, p, req, out);
			} else if (n == 7 && is(seg[5], "datapoints") && get) {
				get_datapoint(c, seg[6], out);
			} else {
				fail(out, 404, ERR_STRING, "Not found");
			}
		} else {
			fail(out, 404, ERR_STRING, "Not found");
		}
	} else if (n >= 3 && is(seg[0], "api") && is(seg[1], "v1") && is(seg[2], "subscriptions")) {
		if (n == 3 && post) {
			create_subscription(c, req, out);
		} else if (n == 3 && get) {
			json_t *list = json_array();
			for (size_t k = 0; k < c->nsubs; k++)
				json_array_append_new(list, json_pack("{s:O}", "subscription",
								      c->subs[k].fields));
			reply(out, 200, list);
		} else if (n == 4) {
			struct subscription *s = find_subscription(c, seg[3]);
			if (!s)
				fail(out, 404, ERR_STRING, "Subscription not found");
			else if (get)
				reply(out, 200, json_pack("{s:O}", "subscription", s->fields));
			else if (del)
				delete_subscription(c, s, out);
			else
				fail(out, 405, ERR_STRING, "Method not allowed");
		} else {
			fail(out, 404, ERR_STRING, "Not found");
		}
	} else {
		fail(out, 404, ERR_STRING, "Not found");
	}
	json_decref(req);
}

/* ---- scripted device behaviour ---- */

static size_t pick(struct sim_cloud *c, size_t n)
{
	size_t k = (size_t)(ayla_random(&c->behave_rng) * (double)n);
	return k < n ? k : n - 1;
}

/* A device's output property changes: drift for numbers, a press for buttons. */
static const char *device_reports(struct sim_cloud *c, json_t *dev)
{
	json_t *props = json_object_get(dev, "properties"), *cands[64];
	size_t n = 0, k;
	json_t *p;
	json_array_foreach(props, k, p)
	{
		const char *bt = json_string_value(json_object_get(p, "base_type"));
		if (n < 64 &&
		    !strcmp(json_string_value(json_object_get(p, "direction")), "output") &&
		    !json_is_true(json_object_get(p, "read_only")) &&
		    (!strcmp(bt, "decimal") || !strcmp(bt, "integer") || !strcmp(bt, "boolean")))
			cands[n++] = p;
	}
	if (!n)
		return NULL;
	p = cands[pick(c, n)];
	const char *bt = json_string_value(json_object_get(p, "base_type"));
	double v = json_number_value(json_object_get(p, "value"));
	double step = (ayla_random(&c->behave_rng) - 0.5) * 2; /* -1 .. 1 */
	json_t *nv;
	if (!strcmp(bt, "boolean"))
		nv = json_integer(v == 0);
	else if (!strcmp(bt, "integer"))
		nv = json_integer((json_int_t)v + (step < 0 ? -1 : 1));
	else
		nv = json_real(round((v + step * 0.5) * 100) / 100);
	char now[32], id[37];
	iso_now(now);
	uuid(c, id);
	json_object_set_new(p, "value", nv);
	json_object_set_new(p, "data_updated_at", json_string(now));
	publish(c, json_pack("{s:o, s:{s:s, s:n, s:s, s:s, s:s, s:b, s:b, s:O, s:{}}}", "metadata",
			     event_metadata(c, dev, p, "datapoint"), "datapoint", "id", id,
			     "created_at_from_device", "updated_at", now, "created_at", now,
			     "user_uuid", "00000000-0000-0000-0000-000000000000", "echo", 0,
			     "closed", 0, "value", nv, "metadata"));
	return !strcmp(bt, "boolean") ? "button" : "drift";
}

static const char *connectivity_churn(struct sim_cloud *c, json_t *dev)
{
	const char *now_status = json_string_value(json_object_get(dev, "connection_status"));
	const char *next = strcmp(now_status, "Online") ? "Online" : "Offline";
	char now[32];
	iso_now(now);
	json_object_set_new(dev, "connection_status", json_string(next));
	publish(c, json_pack("{s:o, s:{s:s, s:s, s:s}}", "metadata",
			     event_metadata(c, dev, NULL, "connectivity"), "connection",
			     "event_time", now, "user_uuid", "00000000-0000-0000-0000-000000000000",
			     "status", next));
	return "churn";
}

static const char *location_update(struct sim_cloud *c, json_t *dev)
{
	char now[32], lat[24], lng[24];
	iso_now(now);
	/* Strings, the latitude with the leading space the seed shows. */
	snprintf(lat, sizeof lat, " %.6f", 44.0 + ayla_random(&c->behave_rng));
	snprintf(lng, sizeof lng, "%.6f", -69.0 - ayla_random(&c->behave_rng));
	publish(c, json_pack("{s:o, s:{s:O, s:s, s:s, s:s, s:s, s:s, s:s}}", "metadata",
			     event_metadata(c, dev, NULL, "location"), "location_event", "dsn",
			     json_object_get(dev, "dsn"), "ip", "192.0.2.10", "lat", lat, "long",
			     lng, "provider", "ip-based", "user_uuid",
			     "00000000-0000-0000-0000-000000000000", "created_at", now));
	return "location";
}

static const char *registration_change(struct sim_cloud *c, json_t *dev)
{
	int registered = !json_is_false(json_object_get(dev, "registered"));
	char now[32];
	iso_now(now);
	json_object_set_new(dev, "registered", json_boolean(!registered));
	json_t *body =
		json_pack("{s:O, s:n, s:b, s:s}", "dsn", json_object_get(dev, "dsn"), "user_uuid",
			  "registered", !registered, "registration_type", "AP-Mode");
	json_object_set_new(body, registered ? "unregistered_at" : "registered_at",
			    json_string(now));
	publish(c, json_pack("{s:o, s:o}", "metadata", event_metadata(c, dev, NULL, "registration"),
			     "registration_event", body));
	return registered ? "unregistration" : "registration";
}

const char *sim_cloud_behave(struct sim_cloud *c)
{
	json_t *devices = json_object_get(c->fleet, "devices");
	size_t n = json_array_size(devices);
	if (!n)
		return NULL;
	json_t *dev = json_array_get(devices, pick(c, n));
	double roll = ayla_random(&c->behave_rng);
	int online =
		!strcmp(json_string_value(json_object_get(dev, "connection_status")), "Online");
	if (roll < 0.70 && online) { /* offline devices report nothing */
		const char *did = device_reports(c, dev);
		if (did)
			return did;
	}
	if (roll < 0.85)
		return connectivity_churn(c, dev);
	if (roll < 0.95)
		return location_update(c, dev);
	return registration_change(c, dev);
}

/* ---- subscriptions as seen by the streams ---- */

static struct subscription *by_key(struct sim_cloud *c, const char *key)
{
	for (size_t k = 0; k < c->nsubs; k++)
		if (!strcmp(c->subs[k].key, key))
			return &c->subs[k];
	return NULL;
}

int sim_cloud_key_valid(struct sim_cloud *c, const char *key)
{
	return by_key(c, key) != NULL;
}

static int meta_is(const char *json, size_t len, const char *field, const char *list)
{
	const char *path[] = {"metadata", field}, *v;
	size_t vlen;
	char value[128] = "";
	if (dss_json_lookup(json, len, path, 2, &v, &vlen) && vlen < sizeof value)
		memcpy(value, v, vlen), value[vlen] = '\0';
	return csv_has(list, value[0] ? value : NULL);
}

int sim_cloud_key_matches(struct sim_cloud *c, const char *key, const char *json, size_t len)
{
	struct subscription *s = by_key(c, key);
	if (!s)
		return 0;
	json_t *f = s->fields;
	const char *type = json_string_value(json_object_get(f, "subscription_type"));
	if (!meta_is(json, len, "event_type", type) ||
	    !meta_is(json, len, "oem_model", json_string_value(json_object_get(f, "oem_model"))) ||
	    !meta_is(json, len, "dsn", json_string_value(json_object_get(f, "dsn"))))
		return 0;
	/* property_name filters the events that carry one. */
	const char *path[] = {"metadata", "property_name"}, *v;
	size_t vlen;
	if (dss_json_lookup(json, len, path, 2, &v, &vlen))
		return meta_is(json, len, "property_name",
			       json_string_value(json_object_get(f, "property_name")));
	return 1;
}

void sim_cloud_each_key(struct sim_cloud *c, void (*fn)(void *ud, const char *key), void *ud)
{
	for (size_t k = 0; k < c->nsubs; k++)
		fn(ud, c->subs[k].key);
}

/* ---- faults and lifetime ---- */

void sim_cloud_fault(struct sim_cloud *c, enum sim_rest_fault fault, unsigned count, double arg)
{
	c->fault_count[fault] = count;
	c->fault_arg[fault] = arg;
}

double sim_cloud_take_delay(struct sim_cloud *c)
{
	double d = c->pending_delay;
	c->pending_delay = 0;
	return d;
}

void sim_cloud_expire_tokens(struct sim_cloud *c)
{
	for (unsigned k = 0; k < MAX_TOKENS; k++)
		c->tokens[k].expires = 0;
}

static char *dup(const char *s, const char *def)
{
	return strdup(s ? s : def);
}

struct sim_cloud *sim_cloud_new(const struct sim_cloud_config *cfg,
				const struct sim_cloud_hooks *hooks, char *err, size_t errlen)
{
	struct sim_cloud *c = calloc(1, sizeof *c);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->hooks = *hooks;
	c->rng = ayla_random_seed();
	c->behave_rng = cfg->seed ? cfg->seed : 1;
	c->cfg.token_lifetime = cfg->token_lifetime > 0 ? cfg->token_lifetime : 86400;
	c->cfg.ack_delay = cfg->ack_delay > 0 ? cfg->ack_delay : 0.2;
	c->cfg.email = dup(cfg->email, SIM_DEMO_EMAIL);
	c->cfg.password = dup(cfg->password, SIM_DEMO_PASSWORD);
	c->cfg.app_id = dup(cfg->app_id, SIM_DEMO_APP_ID);
	c->cfg.app_secret = dup(cfg->app_secret, SIM_DEMO_APP_SECRET);
	json_error_t jerr;
	if (cfg->fleet_file) {
		c->fleet = json_load_file(cfg->fleet_file, 0, &jerr);
		if (!c->fleet && jerr.line < 0) /* could not read it at all */
			snprintf(err, errlen, "fleet %s: %s", cfg->fleet_file, jerr.text);
		else if (!c->fleet)
			snprintf(err, errlen, "fleet %s:%d: %s", cfg->fleet_file, jerr.line,
				 jerr.text);
	} else {
		c->fleet = json_loads(demo_fleet, 0, &jerr);
		if (!c->fleet)
			snprintf(err, errlen, "built-in fleet:%d: %s", jerr.line, jerr.text);
	}
	if (!c->fleet || normalise_fleet(c->fleet, err, errlen)) {
		sim_cloud_free(c);
		return NULL;
	}
	return c;
}

void sim_cloud_free(struct sim_cloud *c)
{
	if (!c)
		return;
	json_decref(c->fleet);
	for (size_t k = 0; k < c->nsubs; k++)
		json_decref(c->subs[k].fields);
	free(c->subs);
	for (unsigned k = 0; k < MAX_DATAPOINTS; k++)
		json_decref(c->dps[k].json);
	free((char *)c->cfg.email);
	free((char *)c->cfg.password);
	free((char *)c->cfg.app_id);
	free((char *)c->cfg.app_secret);
	free(c);
}
