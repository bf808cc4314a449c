/* log.h - leveled logging to stderr for the C node.
 *
 * Owns one process-wide level (set once by main before the loop runs). Lines
 * look like "council_node warn: text". Not for data that must be parsed:
 * the readiness line goes to stdout from main.c, not through here.
 *
 * Rate-limited kinds: what a stranger can provoke at will (refused
 * connections, failed handshakes) goes through cn_log_limited with its
 * kind. Each kind prints at most CN_LOG_BURST lines per second (the first
 * of a burst always appears); the rest are counted and summarised in one
 * line, "(K more <kind> messages suppressed in the last S s)", by the next
 * line of that kind after its second is over or by cn_log_flush (the node
 * calls it once a second).
 */
#ifndef CN_LOG_H
#define CN_LOG_H

enum { CN_LOG_ERROR = 0, CN_LOG_WARN = 1, CN_LOG_INFO = 2, CN_LOG_DEBUG = 3 };

void cn_log_set_level(int level);
int cn_log_level(void);
/* Returns the level for "error|warn|info|debug", or -1. */
int cn_log_parse_level(const char *name);
void cn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum { CN_LOGK_REFUSED = 0, CN_LOGK_HANDSHAKE = 1, CN_LOGK_FRAME = 2, CN_LOGK_N = 3 };
#define CN_LOG_BURST 5
void cn_log_limited(int kind, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prints the summaries of kinds whose second is over. */
void cn_log_flush(void);
/* Lines suppressed so far, all kinds (tests). */
unsigned long long cn_log_suppressed_total(void);

#define cn_log_error(...) cn_log(CN_LOG_ERROR, __VA_ARGS__)
#define cn_log_warn(...) cn_log(CN_LOG_WARN, __VA_ARGS__)
#define cn_log_info(...) cn_log(CN_LOG_INFO, __VA_ARGS__)
#define cn_log_debug(...) cn_log(CN_LOG_DEBUG, __VA_ARGS__)

#endif
