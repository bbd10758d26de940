"""A running Python process that loads the agent late with ctypes (tests of pm_inject_start).

Usage: inject_prog.py <libprofilemate.so> <inject.conf> <mode>
  busy    the main thread spins in pure Python (the GIL changes hands every switch interval)
  sleep   the main thread sleeps (time.sleep releases the GIL)
  pydll   pm_inject_start is called through ctypes.PyDLL (GIL held during the call), then busy
  gilheld pm_inject_start through PyDLL, then the main thread holds the GIL for 1.5 s more in a
          C call (libc usleep through PyDLL), never letting it go in between, then sleeps: the
          agent must keep serving its ring meanwhile; the hook starts after
Prints "PID n", "INJECT rc seconds", then on "quit" (stdin): "MAIN_CLEAN bool" (nothing was
bound in __main__ by the bootstrap) and exits.
"""
import ctypes
import os
import sys
import threading
import time

agent, conf, mode = sys.argv[1], sys.argv[2], sys.argv[3]
done = threading.Event()


def read_stdin():
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    done.set()


threading.Thread(target=read_stdin, daemon=True).start()
print("PID", os.getpid(), flush=True)
if mode == "gilheld":
    # The GIL must stay with this thread from before pm_inject_start until the usleep ends, or
    # the agent's hook starter (waiting for it) may take it in between: a PyDLL call keeps it,
    # a CDLL call or any Python I/O (print, os.write) lets it go, and a thread that waits for
    # it longer than the switch interval (5 ms, easily exceeded on a loaded machine) makes
    # the holder hand it over at the next bytecode check. So: a switch interval longer than
    # the test, the agent called through PyDLL, and the INJECT line written by libc.
    sys.setswitchinterval(60)
    libc = ctypes.PyDLL(None)
lib = (ctypes.PyDLL if mode in ("pydll", "gilheld") else ctypes.CDLL)(agent)
lib.pm_inject_start.argtypes = [ctypes.c_char_p]
t0 = time.monotonic()
rc = lib.pm_inject_start(conf.encode())
line = ("INJECT %d %.3f\n" % (rc, time.monotonic() - t0)).encode()
if mode == "gilheld":
    libc.write(1, line, len(line))
    libc.usleep(1500000)
    sys.setswitchinterval(0.005)
    print("GIL_RELEASED", flush=True)
else:
    sys.stdout.write(line.decode())
    sys.stdout.flush()
if mode in ("busy", "pydll"):
    x = 0
    while not done.is_set():
        x += 1
else:
    while not done.is_set():
        time.sleep(0.02)
print("MAIN_CLEAN", all(n not in globals() for n in ("late", "d", "c", "g", "profilemate_trace")), flush=True)
