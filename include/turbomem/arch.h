/* turbomem/arch.h - the few compiler and CPU helpers the core needs.
 *
 * Plain C11 + GCC/Clang builtins; no Python, no libatomic.
 */
#ifndef TURBOMEM_ARCH_H
#define TURBOMEM_ARCH_H

#define TM_CACHE_LINE 64
#define TM_ALIGNED(n) __attribute__((aligned(n)))
#define TM_LIKELY(x) __builtin_expect(!!(x), 1)
#define TM_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* A spin-wait hint: lets the sibling hyper-thread run and saves power. */
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
