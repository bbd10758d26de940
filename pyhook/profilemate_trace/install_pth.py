"""Write profilemate_trace.pth into a site-packages directory (the .pth alternative to
PYTHONPATH; survives interpreters that run another sitecustomize first).

    python -m profilemate_trace.install_pth [--site DIR] [--remove]
"""

import argparse
import os
import site
import sys


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--site", default=None, help="site-packages dir (default: site.getsitepackages()[0])")
    ap.add_argument("--remove", action="store_true")
    a = ap.parse_args(argv)
    d = a.site or site.getsitepackages()[0]
    path = os.path.join(d, "profilemate_trace.pth")
    if a.remove:
        if os.path.exists(path):
            os.unlink(path)
        print("removed %s" % path)
        return 0
    pyhook = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(path, "w") as f:
        f.write("%s\nimport profilemate_trace._boot as _pm; _pm.activate(\"pth\")\n" % pyhook)
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
