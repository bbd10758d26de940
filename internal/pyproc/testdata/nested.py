# Test target: defines vLLM-shaped classes, blocks inside a nested call, prints "ready".
import sys, threading, time

class Scheduler:
    def schedule(self):
        return inner_wait()

def inner_wait():
    sys.stdout.write("ready %d\n" % threading.get_native_id())
    sys.stdout.flush()
    sys.stdin.readline()  # blocks until the test closes stdin

def worker():
    time.sleep(3600)

threading.Thread(target=worker, daemon=True).start()
time.sleep(0.05)
Scheduler().schedule()
