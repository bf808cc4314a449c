/* council.h - the public C API of the CouncilEx native core.
 *
 * (Skeleton: the error codes are fixed here first because every module
 * returns them; the rest of the API is being written below.)
 */
#ifndef COUNCIL_H
#define COUNCIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. Every function that can fail returns 0 (COUNCIL_OK) or one of
 * these negative values; council_strerror() names them. */
typedef enum council_err {
    COUNCIL_OK = 0,
    COUNCIL_EINVAL = -1,        /* bad argument */
    COUNCIL_ENOMEM = -2,        /* allocation failed; nothing changed */
    COUNCIL_ELIMIT = -3,        /* a configured limit was reached */
    COUNCIL_EEXIST = -4,        /* run_id already registered */
    COUNCIL_ENOTFOUND = -5,     /* no such run (or it left retention) */
    COUNCIL_EUNKNOWN_RUN = -6,  /* whereis: nothing registered */
    COUNCIL_ERUNNER_DEAD = -7,  /* whereis: entry remains, run has ended */
    COUNCIL_ESPEC = -8,         /* invalid council spec (see error detail) */
    COUNCIL_ESTATE = -9,        /* operation not valid in the run's state */
    COUNCIL_EPROVIDER = -10,    /* unknown provider or provider failure */
    COUNCIL_ETIMEOUT = -11,     /* member call timed out */
    COUNCIL_ECANCELLED = -12,   /* run or call cancelled */
    COUNCIL_EPARSE = -13,       /* unparsable JSON / vote / ranking */
    COUNCIL_ETOOBIG = -14,      /* size limit (spec, output, frame) */
    COUNCIL_EIO = -15,          /* system call failed */
    COUNCIL_ERUNNING = -16      /* result asked for while still running */
} council_err;

/* Static, never NULL, for any int (unknown codes give "unknown error"). */
const char *council_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
