"""A running Python process that loads the agent late with ctypes (tests of pm_inject_start).

Usage: inject_prog.py <libprofilemate.so> <inject.conf> <mode>
  busy    the main thread spins in pure Python (the GIL changes hands every switch interval)
  sleep   the main thread sleeps (time.sleep releases the GIL)
  pydll   pm_inject_start is called through ctypes.PyDLL (GIL held during the call), then busy
  gilheld the main thread then holds the GIL for 1.5 s in a C call (libc usleep through PyDLL),
          then sleeps: the agent must keep serving its ring meanwhile; the hook starts after
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
lib = (ctypes.PyDLL if mode == "pydll" else ctypes.CDLL)(agent)
lib.pm_inject_start.argtypes = [ctypes.c_char_p]
t0 = time.monotonic()
rc = lib.pm_inject_start(conf.encode())
print("INJECT", rc, "%.3f" % (time.monotonic() - t0), flush=True)
if mode == "gilheld":
    libc = ctypes.PyDLL(None)
    libc.usleep(1500000)
    print("GIL_RELEASED", flush=True)
if mode in ("busy", "pydll"):
    x = 0
    while not done.is_set():
        x += 1
else:
    while not done.is_set():
        time.sleep(0.02)
print("MAIN_CLEAN", all(n not in globals() for n in ("late", "d", "c", "g", "profilemate_trace")), flush=True)
