#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/* libxxhash's runtime dispatch (SSE2, AVX2 or AVX-512, whichever the CPU has): the plain XXH3 entry points of
   Debian's build use SSE2 only. XXH_DISPATCH_DISABLE_REPLACE keeps the names apart; XXH3.swift calls the
   _dispatch functions on x86. */
#define XXH_DISPATCH_DISABLE_REPLACE
#include <xxh_x86dispatch.h>
#endif
