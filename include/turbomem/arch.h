/*
 * turbomem/arch.h - small, generic architecture helpers shared by the
 * header-only TurboMem core.  Only compiler builtins; no includes.
 *
 *   TM_CACHE_LINE      assumed cache-line size in bytes (64 on every target
 *                      we build for; used for alignment/padding only)
 *   TM_ALIGNED(n)      align a type/variable/member to n bytes
 *   TM_LIKELY(x)       branch-prediction hints; evaluate to the truth value
 *   TM_UNLIKELY(x)     of x (0 or 1)
 *   TM_CPU_RELAX()     spin-wait hint for busy loops: PAUSE on x86, YIELD on
 *                      aarch64, otherwise just a compiler barrier.  It is a
 *                      hint, not a memory barrier: loops using it must still
 *                      (re)load the watched variable atomically.
 */
#ifndef TURBOMEM_ARCH_H
#define TURBOMEM_ARCH_H

#ifndef TM_CACHE_LINE
#define TM_CACHE_LINE 64
#endif

#define TM_ALIGNED(n) __attribute__((aligned(n)))

#define TM_LIKELY(x)   __builtin_expect(!!(x), 1)
#define TM_UNLIKELY(x) __builtin_expect(!!(x), 0)

#if defined(__x86_64__) || defined(__i386__)
#define TM_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define TM_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define TM_CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

/* Orders compiler-visible memory accesses only; emits no instruction. */
#define TM_COMPILER_BARRIER() __atomic_signal_fence(__ATOMIC_SEQ_CST)

#endif /* TURBOMEM_ARCH_H */
