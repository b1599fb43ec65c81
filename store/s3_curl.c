/*
 * libcurl, loaded when the first S3 store is opened rather than linked:
 * with its dependencies (TLS, Kerberos, LDAP, ...) it is about half of what
 * every tenpak process spends starting, and git-lfs starts eight agents,
 * one after another, for each push or clone, most of which never touch S3.
 */
#include <dlfcn.h>
#include <stdio.h>

#include "s3_internal.h"

tp_s3_curl_api tp_s3_curl;

/* The names of libcurl's ABI (soname 4), most specific first. */
static const char *const libnames[] = { "libcurl.so.4", "libcurl-gnutls.so.4", "libcurl.so",
					"libcurl.4.dylib" };

static void *sym(void *lib, const char *name, bool *ok)
{
	void *p = dlsym(lib, name);
	if (!p)
		*ok = false;
	return p;
}

int tp_s3_curl_load(char *err, size_t errlen)
{
	void *lib = NULL;
	for (size_t i = 0; !lib && i < sizeof(libnames) / sizeof(libnames[0]); i++)
		lib = dlopen(libnames[i], RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(err, errlen, "cannot load libcurl (%s)", dlerror());
		return TP_EUNSUPPORTED;
	}
	bool ok = true;
	tp_s3_curl_api a;
	/* POSIX lets a dlsym result be converted to a function pointer. */
	*(void **)&a.global_init = sym(lib, "curl_global_init", &ok);
	*(void **)&a.easy_init = sym(lib, "curl_easy_init", &ok);
	*(void **)&a.easy_setopt = sym(lib, "curl_easy_setopt", &ok);
	*(void **)&a.easy_perform = sym(lib, "curl_easy_perform", &ok);
	*(void **)&a.easy_getinfo = sym(lib, "curl_easy_getinfo", &ok);
	*(void **)&a.easy_reset = sym(lib, "curl_easy_reset", &ok);
	*(void **)&a.easy_cleanup = sym(lib, "curl_easy_cleanup", &ok);
	*(void **)&a.easy_strerror = sym(lib, "curl_easy_strerror", &ok);
	*(void **)&a.slist_append = sym(lib, "curl_slist_append", &ok);
	*(void **)&a.slist_free_all = sym(lib, "curl_slist_free_all", &ok);
	if (!ok) {
		snprintf(err, errlen, "libcurl lacks a function tenpak uses (%s)", dlerror());
		dlclose(lib);
		return TP_EUNSUPPORTED;
	}
	tp_s3_curl = a; /* the library stays loaded for the process */
	return 0;
}
