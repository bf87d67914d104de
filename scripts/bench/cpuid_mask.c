/* An x86-64 CPU with AVX-512, shown to a process as one without: LD_PRELOAD this and
 * every `cpuid` the process runs afterwards traps (Linux's ARCH_SET_CPUID, CPUID
 * faulting; /proc/cpuinfo lists cpuid_fault where the CPU and kernel have it), and the
 * answer comes back with the AVX-512 feature bits (leaf 7) and its register state
 * (leaf 0xD) cleared. Runtimes that pick kernels by cpuid (neurodex through Rust's
 * feature detection, the gemm crate, onnxruntime's MLAS, PyTorch) then all take their
 * AVX2 paths in the same process tree: how scripts/bench.sh --cpu avx2 compares them
 * as on an AVX2-only machine. glibc reads cpuid before this library loads; the
 * bench script lowers it with GLIBC_TUNABLES. Not part of neurodex.
 *
 *   cc -O2 -shared -fPIC -o cpuid_mask.so cpuid_mask.c
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <asm/prctl.h>
static long set_cpuid(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on); }
static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}
/* A fault that is not a cpuid instruction goes to the default action (a crash as
 * before). The one cpuid of ours runs with faulting off for this thread only. */
static void on_segv(int sig, siginfo_t *si, void *uc_) {
  (void)sig; (void)si;
  ucontext_t *uc = uc_;
  greg_t *g = uc->uc_mcontext.gregs;
  const unsigned char *ip = (const unsigned char *)g[REG_RIP];
  if (ip[0] != 0x0f || ip[1] != 0xa2) { signal(SIGSEGV, SIG_DFL); return; }
  uint32_t leaf = g[REG_RAX], sub = g[REG_RCX], r[4];
  set_cpuid(1); real_cpuid(leaf, sub, r); set_cpuid(0);
  if (leaf == 7 && sub == 0) { /* F DQ IFMA PF ER CD BW VL; VBMI VBMI2 VNNI BITALG VPOPCNTDQ; 4VNNIW 4FMAPS VP2INTERSECT FP16 */
    r[1] &= ~((1u<<16)|(1u<<17)|(1u<<21)|(1u<<26)|(1u<<27)|(1u<<28)|(1u<<30)|(1u<<31));
    r[2] &= ~((1u<<1)|(1u<<6)|(1u<<11)|(1u<<12)|(1u<<14));
    r[3] &= ~((1u<<2)|(1u<<3)|(1u<<8)|(1u<<23));
  } else if (leaf == 7 && sub == 1) { /* BF16 */
    r[0] &= ~(1u<<5);
  } else if (leaf == 0xd && sub == 0) { /* opmask, ZMM_Hi256, Hi16_ZMM state */
    r[0] &= ~(7u<<5);
  }
  g[REG_RAX] = r[0]; g[REG_RBX] = r[1]; g[REG_RCX] = r[2]; g[REG_RDX] = r[3];
  g[REG_RIP] += 2;
}
__attribute__((constructor)) static void init(void) {
  struct sigaction sa; memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv; sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, 0);
  if (set_cpuid(0) != 0) {
    static const char m[] = "cpuid_mask: this CPU or kernel cannot fault cpuid (no cpuid_fault in /proc/cpuinfo)\n";
    if (write(2, m, sizeof m - 1) < 0) {}
    _exit(3);
  }
}
