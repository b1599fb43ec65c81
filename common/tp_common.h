/*
 * tenpak common: errors, capped buffers, logging, sha256, small file helpers.
 *
 * This module depends on nothing else in tenpak. Every function that can fail
 * returns 0 or a negative TP_E* code and records a one-line message that
 * tp_error_last() returns (per thread).
 */
#ifndef TP_COMMON_H
#define TP_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors ------------------------------------------------------------ */

enum {
	TP_OK = 0,
	TP_EINVAL = -1,    /* bad argument or malformed input */
	TP_ENOMEM = -2,    /* allocation failed */
	TP_EIO = -3,       /* read/write/OS failure */
	TP_ENOTFOUND = -4, /* object, file or key absent */
	TP_ECORRUPT = -5,  /* data failed a checksum or structural check */
	TP_ETOOBIG = -6,   /* a size exceeded its cap or overflowed */
	TP_EPROTO = -7,    /* protocol violation from the peer */
	TP_ECONFIG = -8,   /* unusable configuration */
	TP_EUNSUPPORTED = -9,
	TP_EAUTH = -10,    /* permission or credentials refused */
	TP_ENOSPACE = -11, /* out of disk space or quota */
};

/* Record a message for the current thread; returns code so callers can
 * write `return tp_error_set(TP_EINVAL, "...")`. */
int tp_error_set(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* Like tp_error_set, appending ": strerror(errnum)". */
int tp_error_set_errno(int code, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Map an errno value to the closest TP_E* code. */
int tp_error_from_errno(int errnum);
/* Prefix the current message with more context ("reading X: <old>"). */
int tp_error_wrap(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
const char *tp_error_last(void);
void tp_error_clear(void);
/* Short stable name of a code, e.g. "not found". */
const char *tp_error_name(int code);

/* Longest message kept, NUL included; longer ones are truncated. */
#define TP_ERROR_MSG_MAX 1024

/* A thread's error (message and the code last set with it), saved while
 * cleanup that may fail overwrites it, or carried to another thread. */
typedef struct tp_error_state {
	int code;
	char msg[TP_ERROR_MSG_MAX];
} tp_error_state;

/* Copy the current thread's error into st; it stays set. */
void tp_error_state_capture(tp_error_state *st);
/* Make st the current thread's error; returns st's code. */
int tp_error_state_restore(const tp_error_state *st);

/* ---- capped dynamic buffer --------------------------------------------- */

/* A growable byte buffer that refuses to grow past `cap` bytes, so that
 * anything sized by untrusted input has a hard limit. Always NUL-terminated
 * one past `len` once anything was added. */
typedef struct tp_buf {
	char *ptr;
	size_t len;
	size_t alloc;
	size_t cap;
} tp_buf;

#define TP_BUF_INIT(cap_) { NULL, 0, 0, (cap_) }

void tp_buf_init(tp_buf *b, size_t cap);
void tp_buf_free(tp_buf *b);
void tp_buf_reset(tp_buf *b);
/* Make room for need more bytes (and the NUL) without adding any:
 * TP_ETOOBIG past the cap, TP_ENOMEM. */
int tp_buf_grow(tp_buf *b, size_t need);
int tp_buf_add(tp_buf *b, const void *data, size_t n);
int tp_buf_adds(tp_buf *b, const char *s);
int tp_buf_addf(tp_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int tp_buf_vaddf(tp_buf *b, const char *fmt, va_list ap);
/* Like tp_buf_addf, but text past the cap is cut (between UTF-8 sequences)
 * and the buffer then ends in "...": for messages that must never fail on
 * their length. Only TP_ENOMEM (or a bad format) is an error. */
int tp_buf_addf_cut(tp_buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int tp_buf_vaddf_cut(tp_buf *b, const char *fmt, va_list ap);
/* Hand the buffer's memory to the caller (NULL if empty) and reset it. */
char *tp_buf_detach(tp_buf *b);

/* Overflow-checked size arithmetic: return false on overflow. */
static inline bool tp_add_ok(size_t a, size_t b, size_t *out)
{
	return !__builtin_add_overflow(a, b, out);
}
static inline bool tp_mul_ok(size_t a, size_t b, size_t *out)
{
	return !__builtin_mul_overflow(a, b, out);
}

/* ---- numbers from text -------------------------------------------------- */

/* A whole decimal number in [min, max]: digits only, so no sign, space,
 * "0x" or trailing text; leading zeros are fine. TP_EINVAL, with a message
 * quoting s, for anything else (NULL included) or a value out of range. */
int tp_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);
/* The same for a number that text follows ("123 path"): the digits at the
 * start of s, which must be at least one; *end is set (only on success) to
 * what follows them, for the caller to check. */
int tp_parse_u64_prefix(const char *s, const char **end, uint64_t min, uint64_t max,
			uint64_t *out);
/* The same for a byte count: digits, then optionally K, M or G (binary
 * multiples, either case) followed by nothing, "B" or "iB": "64M", "64MiB",
 * "8g". The range applies to the bytes. */
int tp_parse_size(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* ---- logging (stderr, plus a trace file when asked) --------------------- */

enum { TP_LOG_ERROR = 0, TP_LOG_WARN = 1, TP_LOG_INFO = 2, TP_LOG_TRACE = 3 };

/* Reads TENPAK_TRACE / GIT_TRACE once; any value but "", "0" or "false"
 * enables tracing. */
void tp_log_init(const char *progname);
void tp_log_set_level(int level);
bool tp_log_enabled(int level);
/* TENPAK_TRACE is set to a true value (GIT_TRACE does not count). */
bool tp_log_trace_requested(void);
/* TENPAK_TRACE when it is an absolute path: the file to log to; else NULL. */
const char *tp_log_trace_file(void);
/* From now on also append each line, timestamped, to path (created 0600 in
 * an existing directory); the first line written says where the log goes. */
int tp_log_open_file(const char *path);
void tp_log(int level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
#define tp_trace(...) \
	do { if (tp_log_enabled(TP_LOG_TRACE)) tp_log(TP_LOG_TRACE, __VA_ARGS__); } while (0)

/* ---- sha256 (SHA-NI when the CPU has it) ------------------------------------------------ */

#define TP_SHA256_LEN 32
#define TP_OID_HEXLEN 64

typedef struct tp_sha256 {
	/* Opaque storage large and aligned enough for libsodium's state. */
	_Alignas(16) unsigned char state[128];
} tp_sha256;

void tp_sha256_init(tp_sha256 *h);
void tp_sha256_update(tp_sha256 *h, const void *data, size_t n);
void tp_sha256_final(tp_sha256 *h, unsigned char out[TP_SHA256_LEN]);
/* sha256 of one buffer, as 64 lowercase hex digits. */
void tp_sha256_hex_of(const void *data, size_t n, char out[TP_OID_HEXLEN + 1]);
/* Hex-encode a digest into out (65 bytes, NUL-terminated, lowercase). */
void tp_sha256_hex(const unsigned char digest[TP_SHA256_LEN], char out[TP_OID_HEXLEN + 1]);
/* True when s is exactly 64 lowercase hex digits (an LFS oid). */
bool tp_oid_valid(const char *s);
/* HMAC-SHA256 (RFC 2104) of msg under key, any key length. */
void tp_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
		    unsigned char out[TP_SHA256_LEN]);
/* sha256 of a whole regular file, streamed (a FIFO or device is TP_EINVAL,
 * never waited on); *size_out gets its length if non-NULL. */
int tp_sha256_file(const char *path, char out_hex[TP_OID_HEXLEN + 1], uint64_t *size_out);

/* ---- signatures (Ed25519, libsodium) ----------------------------------- */

#define TP_SIGN_PUBLIC_LEN 32
/* "ed25519:" + base64 of the 32-byte public key */
#define TP_SIGN_PUBLIC_TEXT_MAX 64
#define TP_SIGN_TEXT_MAX 100 /* base64 of a 64-byte signature, NUL included */

/* A signing key pair. The secret half lives in guarded memory (libsodium's
 * sodium_malloc: guard pages, no swap, inaccessible except while signing). */
typedef struct tp_sign_key tp_sign_key;

int tp_sign_key_generate(tp_sign_key **out);
/* Read a secret key file written by tp_sign_key_save. Refuses files that
 * others can read. */
int tp_sign_key_load(tp_sign_key **out, const char *path);
/* Write the secret key to path (mode 0600, never over an existing file). */
int tp_sign_key_save(const tp_sign_key *k, const char *path);
void tp_sign_key_free(tp_sign_key *k);
/* The public key as text: "ed25519:<base64>". */
void tp_sign_key_public(const tp_sign_key *k, char out[TP_SIGN_PUBLIC_TEXT_MAX]);
/* Detached signature of msg, as base64 text. */
int tp_sign(const tp_sign_key *k, const void *msg, size_t len, char out[TP_SIGN_TEXT_MAX]);
/* Check a base64 signature of msg by the public key in text form.
 * TP_EAUTH when it does not verify; TP_EINVAL for malformed key or text. */
int tp_sign_verify(const char *public_text, const void *msg, size_t len, const char *signature);

/* ---- secrets ------------------------------------------------------------ */

/* Zero n bytes at p with a store the compiler cannot drop as dead
 * (sodium_memzero): for keys, tokens and anything derived from them. */
void tp_secure_zero(void *p, size_t n);

/* ---- half precision ---------------------------------------------------- */

/* IEEE binary16 and bfloat16 from and to fp32: round to nearest even, NaN
 * stays NaN; widening is exact. */
uint16_t tp_fp16_from_f32(float f);
float tp_fp16_to_f32(uint16_t h);
uint16_t tp_bf16_from_f32(float f);
float tp_bf16_to_f32(uint16_t h);

/* ---- progress --------------------------------------------------------- */

/* Called as long work advances; `done` counts logical bytes of `total`.
 * A non-zero return aborts the work with that code. */
typedef int (*tp_progress_fn)(void *ctx, uint64_t done, uint64_t total);

/* ---- file helpers ------------------------------------------------------ */

/* mkdir -p with mode 0777 & ~umask; existing directories are fine. */
int tp_fs_mkdirs(const char *path);
/* write(2) all of buf, retrying on EINTR and short writes. */
int tp_fs_write_all(int fd, const void *buf, size_t n);
/* Create or truncate path (mode 0666 & ~umask) and write data[n] to it;
 * not durable (no fsync): for outputs a user can make again. */
int tp_fs_write_file(const char *path, const void *data, size_t n);
/* read(2) up to n bytes, retrying on EINTR; *got < n only at end of file. */
int tp_fs_read_full(int fd, void *buf, size_t n, size_t *got);
/* For a file fsync'd once written: after `written` bytes, start the
 * kernel's writeback of those past *flushed once TP_FS_WRITEBACK of them
 * have gathered, so the final fsync waits for the last few MiB only. Only a
 * hint (a no-op on pipes, devices and some file systems). */
#define TP_FS_WRITEBACK ((uint64_t)8 << 20)
void tp_fs_start_writeback(int fd, uint64_t written, uint64_t *flushed);
/* fsync a directory so a rename inside it is durable. */
int tp_fs_fsync_dir(const char *dir);
/* The same for an open directory; dir names it in errors. */
int tp_fs_fsync_dirfd(int fd, const char *dir);
/* Join two path parts with exactly one '/'; result malloc'd into *out. */
int tp_path_join(char **out, const char *a, const char *b);
bool tp_fs_is_dir(const char *path);
/* Open path read-only if it is a regular file (symlinks to one are fine).
 * Never blocks on a FIFO or device: those, directories and sockets are
 * TP_EINVAL "not a regular file"; a missing file is TP_ENOTFOUND. */
int tp_fs_open_regular(const char *path, int *fd);
/* The same relative to dirfd (AT_FDCWD: the working directory); flags may
 * add O_NOFOLLOW, which makes a symlink as the last component ELOOP. */
int tp_fs_openat_regular(int dirfd, const char *name, int flags, int *fd);
/* Append a whole regular file to out (its cap bounds the size: TP_ETOOBIG,
 * "<path> is larger than N bytes"); not regular is TP_EINVAL, as for
 * tp_fs_open_regular. On failure out may hold part of the file. The one
 * whole-file reader: use it rather than open-fstat-malloc-read. */
int tp_fs_read_regular(const char *path, tp_buf *out);
/* The same for the rest of an open file of any kind (a pipe, a FIFO the
 * caller chose to open); name is for messages. A regular file is sized
 * with fstat first and read straight into one allocation, so no other
 * copy of its bytes is made (credentials rely on that) unless it grows
 * while being read. */
int tp_fs_read_fd(int fd, const char *name, tp_buf *out);
/* True when path is a regular file (following symlinks); never opens it. */
bool tp_fs_is_regular(const char *path);

/* Human-readable byte count ("1.5 MiB") into out. */
void tp_fmt_bytes(uint64_t n, char *out, size_t outlen);

/* ---- system ----------------------------------------------------------- */

/* CPU cores this process may use, at least 1: the online cores, cut to
 * its affinity mask (sched_getaffinity, taskset) and to its cgroup's CPU
 * quota (cpu.max, rounded up). The default size of every thread pool;
 * callers cap it to what their work can use. */
unsigned tp_cpu_count(void);
/* Cores a cgroup cpu.max line ("QUOTA PERIOD", "max PERIOD") allows,
 * rounded up; 0 for no limit. TP_EINVAL for anything else. Pure. */
int tp_cpu_quota_parse(const char *text, unsigned *out);

#endif
