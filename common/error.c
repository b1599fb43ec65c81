#include "tp_common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errmsg[TP_ERROR_MSG_MAX];
static _Thread_local int errcode;

static void vset(const char *fmt, va_list ap)
{
	vsnprintf(errmsg, sizeof(errmsg), fmt, ap);
	/* Messages are one line: fold any newline that crept in from input. */
	for (char *p = errmsg; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
}

int tp_error_set(int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vset(fmt, ap);
	va_end(ap);
	errcode = code;
	return code;
}

int tp_error_set_errno(int code, int errnum, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vset(fmt, ap);
	va_end(ap);
	size_t len = strlen(errmsg);
	snprintf(errmsg + len, sizeof(errmsg) - len, ": %s", strerror(errnum));
	errcode = code;
	return code;
}

int tp_error_from_errno(int errnum)
{
	switch (errnum) {
	case ENOENT: return TP_ENOTFOUND;
	case ENOMEM: return TP_ENOMEM;
	case EACCES: case EPERM: case EROFS: return TP_EAUTH;
	case ENOSPC: case EDQUOT: case EFBIG: return TP_ENOSPACE;
	case EINVAL: return TP_EINVAL;
	default: return TP_EIO;
	}
}

int tp_error_wrap(int code, const char *fmt, ...)
{
	char old[TP_ERROR_MSG_MAX];
	memcpy(old, errmsg, sizeof(old));
	va_list ap;
	va_start(ap, fmt);
	vset(fmt, ap);
	va_end(ap);
	if (old[0]) {
		size_t len = strlen(errmsg);
		/* Truncating the tail of an over-long message is fine. */
		size_t room = sizeof(errmsg) - len;
		if (room > 2) {
			memcpy(errmsg + len, ": ", 2);
			len += 2;
			room -= 2;
			size_t n = strlen(old);
			if (n >= room)
				n = room - 1;
			memcpy(errmsg + len, old, n);
			errmsg[len + n] = '\0';
		}
	}
	errcode = code;
	return code;
}

const char *tp_error_last(void)
{
	return errmsg[0] ? errmsg : "unknown error";
}

void tp_error_clear(void)
{
	errmsg[0] = '\0';
	errcode = 0;
}

void tp_error_state_capture(tp_error_state *st)
{
	st->code = errcode;
	memcpy(st->msg, errmsg, sizeof(st->msg));
}

int tp_error_state_restore(const tp_error_state *st)
{
	memcpy(errmsg, st->msg, sizeof(errmsg));
	errmsg[sizeof(errmsg) - 1] = '\0';
	errcode = st->code;
	return st->code;
}

const char *tp_error_name(int code)
{
	switch (code) {
	case TP_OK: return "ok";
	case TP_EINVAL: return "invalid input";
	case TP_ENOMEM: return "out of memory";
	case TP_EIO: return "I/O error";
	case TP_ENOTFOUND: return "not found";
	case TP_ECORRUPT: return "corrupt data";
	case TP_ETOOBIG: return "too big";
	case TP_EPROTO: return "protocol error";
	case TP_ECONFIG: return "bad configuration";
	case TP_EUNSUPPORTED: return "unsupported";
	case TP_EAUTH: return "permission denied";
	case TP_ENOSPACE: return "no space left";
	default: return "error";
	}
}
