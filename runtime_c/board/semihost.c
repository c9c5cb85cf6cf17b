/*
 * semihost.c -- Arm semihosting and the few newlib system calls a self-test needs.
 *
 * printf -> newlib -> _write() -> SYS_WRITE to the host's stdout (":tt" opened for
 * writing). exit(status) -> _exit() -> SYS_EXIT_EXTENDED (ADP_Stopped_ApplicationExit,
 * status), so QEMU exits with the program's status (QEMU's plain SYS_EXIT on 32-bit
 * Arm only knows success/failure). No heap beyond what stdio asks for through _sbrk(),
 * bounded by the linker script's heap region.
 *
 * On a real part replace sc_semihost_write() with a UART putchar loop and
 * sc_semihost_exit() with whatever ends a test there (see porting.h): semihosting
 * without a debugger attached stops the core at the BKPT instruction.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "sc_board.h"

int sc_semihost_call(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

/* Host handles for ":tt" opened as stdout (mode "w" = 4) and stderr (mode "a" = 8). */
static int sc_tt_handle[3] = { -1, -1, -1 };

static int sc_tt_open(int fd)
{
    if (sc_tt_handle[fd] < 0) {
        static char tt[] = ":tt";
        uint32_t block[3];
        block[0] = (uint32_t)(uintptr_t)tt;
        block[1] = (fd == 2) ? 8u : 4u;
        block[2] = 3u; /* strlen(":tt") */
        sc_tt_handle[fd] = sc_semihost_call(SC_SEMIHOST_SYS_OPEN, block);
    }
    return sc_tt_handle[fd];
}

int sc_semihost_write(int fd, const void *buf, size_t len)
{
    uint32_t block[3];
    int handle;
    int not_written;

    if (fd != 1 && fd != 2) {
        return -1;
    }
    handle = sc_tt_open(fd);
    if (handle < 0) {
        return -1;
    }
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)buf;
    block[2] = (uint32_t)len;
    not_written = sc_semihost_call(SC_SEMIHOST_SYS_WRITE, block);
    if (not_written < 0 || (size_t)not_written > len) {
        return -1;
    }
    return (int)(len - (size_t)not_written);
}

void sc_semihost_exit(int status)
{
    uint32_t block[2];
    block[0] = SC_ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    (void)sc_semihost_call(SC_SEMIHOST_SYS_EXIT_EXTENDED, block);
    /* A host without SYS_EXIT_EXTENDED returns here: fall back to plain SYS_EXIT,
     * which still tells success from failure. */
    (void)sc_semihost_call(SC_SEMIHOST_SYS_EXIT,
                           (void *)(uintptr_t)(status == 0 ? SC_ADP_STOPPED_APPLICATION_EXIT
                                                           : SC_ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
        __asm__ volatile("bkpt 0x00");
    }
}

/* ---- newlib system calls ----------------------------------------------------------- */

int _write(int fd, const char *buf, int len);
int _read(int fd, char *buf, int len);
int _close(int fd);
int _lseek(int fd, int offset, int whence);
int _fstat(int fd, struct stat *st);
int _isatty(int fd);
void *_sbrk(ptrdiff_t increment);
void _exit(int status) __attribute__((noreturn));
int _kill(int pid, int sig);
int _getpid(void);

int _write(int fd, const char *buf, int len)
{
    int n;
    if (len <= 0) {
        return 0;
    }
    n = sc_semihost_write(fd, buf, (size_t)len);
    if (n < 0) {
        errno = EBADF;
    }
    return n;
}

int _read(int fd, char *buf, int len)
{
    (void)fd;
    (void)buf;
    (void)len;
    return 0; /* end of file: the self-test reads nothing */
}

int _close(int fd)
{
    (void)fd;
    return 0;
}

int _lseek(int fd, int offset, int whence)
{
    (void)fd;
    (void)offset;
    (void)whence;
    errno = ESPIPE;
    return -1;
}

int _fstat(int fd, struct stat *st)
{
    (void)fd;
    st->st_mode = S_IFCHR; /* a terminal: stdout is line buffered */
    return 0;
}

int _isatty(int fd)
{
    return fd >= 0 && fd <= 2;
}

extern char __heap_start__[];
extern char __heap_end__[];

void *_sbrk(ptrdiff_t increment)
{
    static char *brk = __heap_start__;
    char *old = brk;
    if (increment > __heap_end__ - brk || increment < __heap_start__ - brk) {
        errno = ENOMEM;
        return (void *)-1;
    }
    brk += increment;
    return old;
}

void _exit(int status)
{
    sc_semihost_exit(status);
}

int _kill(int pid, int sig)
{
    (void)pid;
    (void)sig;
    errno = EINVAL;
    return -1;
}

int _getpid(void)
{
    return 1;
}
