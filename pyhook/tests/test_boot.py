"""Activation, Option 2 spill, fork/spawn, control socket, config: each in a fresh interpreter."""
import array
import glob
import json
import mmap
import os
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time

from conftest import FAKE, PYHOOK, decode


def run(code, env_extra=None, pythonpath=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING", "ENABLE_"))}
    env["PYTHONPATH"] = os.pathsep.join(pythonpath or [PYHOOK, FAKE])
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_raw(path):
    with open(path, "rb") as f:
        b = f.read()
    assert b[:8] == b"PMRAW\x00\x00\x01"
    ver, mlen = struct.unpack_from("<II", b, 8)
    meta = json.loads(b[16:16 + mlen])
    off = 16 + mlen + (8 - mlen % 8) % 8
    return ver, meta, decode(b[off:])


def test_sitecustomize_startup_line_and_noop_without_vllm(tmp_path):
    out = run("""
        import os, sys, threading
        print('sitecustomize' in sys.modules)
        links = [os.readlink('/proc/self/fd/' + f) for f in os.listdir('/proc/self/fd')
                 if os.path.islink('/proc/self/fd/' + f)]
        print(any('profilemate' in l for l in links), [t.name for t in threading.enumerate()])
        import profilemate_trace.runtime as rt; print(rt._started)
    """, {"VLLM_PROFILING_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["True", "False ['MainThread']", "False"]
    assert out.stderr.count("[sitecustomize] vLLM Comprehensive Instrumentation Loaded") == 1
    assert os.listdir(tmp_path) == []  # no session directory without vLLM


def test_chains_to_next_sitecustomize(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import builtins\nbuiltins.OTHER_SITE = 42\n")
    out = run("import builtins; print(builtins.OTHER_SITE)", pythonpath=[PYHOOK, str(other)])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "42" and "Instrumentation Loaded" in out.stderr


DRIVE = """
import multiprocessing as mp, os, sys
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.request import Request

def child():
    import vllm.v1.core.block_pool as bp
    bp.BlockPool(8, False, 16).get_new_blocks(3)

if __name__ == "__main__":
    s = Scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=16, max_num_seqs=4)
    for i in range(3):
        s.add_request(Request("r%d" % i, [1] * 8, max_tokens=6))
    while s.requests:
        so = s.schedule(); s.update_from_output(so, None)
    print("preemptions", s.num_preempted_total)
    sp = mp.get_context("spawn").Process(target=child); sp.start(); sp.join()
    fk = mp.get_context("fork").Process(target=child); fk.start(); fk.join()
    print("pids", os.getpid(), sp.pid, fk.pid)
"""


def test_option2_spill_session_fork_spawn(tmp_path):
    script = tmp_path / "drive.py"
    script.write_text(DRIVE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING"))}
    env.update(PYTHONPATH=os.pathsep.join([PYHOOK, FAKE]), VLLM_PROFILING_DIR=str(tmp_path / "prof"),
               PROFILEMATE_PYHOOK_AUTO_EXPORT="0", PATH="/usr/bin:/bin")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    npre = int(out.stdout.split("preemptions ")[1].split()[0])
    pids = [int(x) for x in out.stdout.split("pids ")[1].split()]
    sessions = glob.glob(str(tmp_path / "prof" / "session_*"))
    assert len(sessions) == 1
    sess = sessions[0]
    assert stat.S_IMODE(os.stat(sess).st_mode) == 0o700
    assert "profilemate-trace export -o %s.files %s" % (sess, sess) in out.stderr
    assert out.stderr.count("profilemate-trace export") == 1  # only the session root prints it
    files = {int(os.path.basename(f).split(".")[0]): f for f in glob.glob(sess + "/raw/*.pyhook.pmr")}
    assert set(files) == set(pids), (files, pids)
    for pid, f in files.items():
        ver, meta, recs = read_raw(f)
        assert ver == 1 and meta["source"] == "pyhook" and meta["pid"] == pid
        assert recs[0]["_name"] == "process_info" and recs[0]["pid"] == pid and recs[0]["source"] == 2
        assert recs[1]["_name"] == "py_process"
        assert recs[-1]["_name"] == "stream_stats" and recs[-1]["records_dropped"] == 0
        assert recs[-2]["_name"] == "py_hook_stats"
        if pid != pids[0]:
            kv = [r for r in recs if r["_name"] == "py_kv_blocks"]
            assert [(r["op"], list(array.array("I", r["block_ids"]))) for r in kv] == [(1, [1, 2, 3])]
    _, _, main = read_raw(files[pids[0]])
    assert sum(1 for r in main if r["_name"] == "py_preempt") == npre > 0
    assert files[pids[2]] and read_raw(files[pids[2]])[2][1]["flags"] & 1  # forked child flag


def test_control_socket_fd_passing_and_enable(tmp_path):
    sock_path = str(tmp_path / "ctl.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(4)
    code = """
        import time, sys
        import vllm.v1.core.block_pool as bp
        import profilemate_trace.runtime as rt
        print("on_at_start", rt.ON, flush=True)
        t = time.monotonic()
        while not rt.ON and time.monotonic() - t < 10:
            time.sleep(0.01)
        bp.BlockPool(8, False, 16).get_new_blocks(2)
        print("done", rt.ON, flush=True)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROFILEMATE_", "VLLM_PROFILING"))}
    env.update(PYTHONPATH=os.pathsep.join([PYHOOK, FAKE]), PROFILEMATE_CONTROL_SOCKET=sock_path,
               VLLM_PROFILING_DIR=str(tmp_path / "prof"))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    srv.settimeout(30)
    conn, _ = srv.accept()
    msg, fds, _flags, _addr = socket.recv_fds(conn, 256, 4)
    assert msg == ("pyhook %d\n" % proc.pid).encode() and len(fds) == 1
    mm = mmap.mmap(fds[0], 0)
    assert mm[:8] == b"PMRING\x00\x01"
    struct.pack_into("<III", mm, 64, 1, 1, 1)         # control_enable=1, detail=graph, seq=1
    struct.pack_into("<Q", mm, 80, time.monotonic_ns())  # heartbeat
    outs, errs = proc.communicate(timeout=30)
    assert proc.returncode == 0, errs
    assert "done True" in outs
    assert struct.unpack_from("<I", mm, 76)[0] == 1        # control_ack
    assert struct.unpack_from("<I", mm, 40)[0] == 2        # producer exited
    data_size = struct.unpack_from("<Q", mm, 16)[0]
    head = struct.unpack_from("<Q", mm, 128)[0]
    assert head < data_size
    recs = decode(mm[4096:4096 + head])
    names = [r["_name"] for r in recs]
    assert names[:2] == ["process_info", "py_process"]
    # dormant until the tracer's control word: one control_change (enable=1, seq=1, reason tracer)
    (cc,) = [r for r in recs if r["_name"] == "control_change"]
    assert (cc["enable"], cc["seq"], cc["reason"]) == (1, 1, 0)
    assert names.index("control_change") < names.index("py_kv_blocks")
    assert not os.path.exists(tmp_path / "prof")  # with a tracer nothing is spilled


def test_config_file_json_toml_and_env_precedence(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"ENABLE_KV_CACHE_TRACKING": False, "enable_cpu_timing": "0"}))
    t = tmp_path / "c.toml"
    t.write_text("[profilemate]\nENABLE_PREEMPTION_TRACKING = false\nLOG_INTERVAL = 7\n")
    code = """
        import profilemate_trace.config as c
        a = c.load()
        print(a.ENABLE_KV_CACHE_TRACKING, a.ENABLE_CPU_TIMING, a.ENABLE_PREEMPTION_TRACKING, a.LOG_INTERVAL, a.errors)
    """
    out = run(code, {"PROFILEMATE_PYHOOK_CONFIG": str(j), "PROFILEMATE_PYHOOK_QUIET": "1"})
    assert out.stdout.strip() == "False False True 100 []", out.stderr
    out = run(code, {"PROFILEMATE_PYHOOK_CONFIG": str(t), "VLLM_PROFILING_LOG_INTERVAL": "9",
                     "PROFILEMATE_PYHOOK_QUIET": "1"})
    assert out.stdout.strip() == "True True False 9 []", out.stderr
    out = run(code, {"PROFILEMATE_PYHOOK_CONFIG": str(j), "ENABLE_KV_CACHE_TRACKING": "1",
                     "VLLM_PROFILING_ENABLE_CPU_TIMING": "yes", "ENABLE_CPU_TIMING": "0", "PROFILEMATE_PYHOOK_QUIET": "1"})
    assert out.stdout.strip() == "True True True 100 []", out.stderr
    out = run(code, {"PROFILEMATE_PYHOOK_CONFIG": str(tmp_path / "missing.json"), "PROFILEMATE_PYHOOK_QUIET": "1"})
    assert "missing.json" in out.stdout


def test_switch_disables_patch_end_to_end(tmp_path):
    code = """
        import vllm.v1.core.block_pool as bp
        import vllm.v1.core.sched.scheduler
        import profilemate_trace.runtime as rt
        bp.BlockPool(8, False, 16).get_new_blocks(2)
        st = {p.name: (p.status, p.reason) for p in rt._patches}
        print(st["kv.block_pool"], st["scheduler.step"][0])
    """
    out = run(code, {"ENABLE_KV_CACHE_TRACKING": "0", "PROFILEMATE_PYHOOK_SPILL": "0", "PROFILEMATE_START": "graph"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(3, 'ENABLE_KV_CACHE_TRACKING=0') 1"


def test_broken_output_path_vllm_unaffected(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = """
        import vllm.v1.core.block_pool as bp
        p = bp.BlockPool(8, False, 16); b = p.get_new_blocks(2); p.free_blocks(b)
        print("free", p.get_num_free_blocks())
    """
    out = run(code, {"VLLM_PROFILING_DIR": str(blocker / "sub")})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "free 7"
    assert out.stderr.count("cannot create the session directory") == 1


def test_pth_activation(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    out = run("""
        import sys; sys.path.insert(0, %r)
        from profilemate_trace import install_pth; install_pth.main(["--site", %r])
    """ % (PYHOOK, str(site)), pythonpath=[FAKE])
    assert out.returncode == 0, out.stderr
    pth = (site / "profilemate_trace.pth").read_text()
    assert pth.splitlines()[0] == PYHOOK
    code = "import site, sys; site.addsitedir(%r); print('profilemate_trace._boot' in sys.modules)" % str(site)
    out = run(code, pythonpath=[FAKE])
    assert out.stdout.strip() == "True" and "Instrumentation Loaded" in out.stderr


def test_option2_auto_export_swaps_in_documented_files(tmp_path):
    """With the CLI available the session root runs `profilemate-trace export -o TMP SESSION`
    at exit and swaps the result in under the session's name."""
    stub = tmp_path / "profilemate-trace"
    stub.write_text("#!/bin/sh\n"
                    "# stub of the CLI: export -o OUT SESSION\n"
                    "[ \"$1\" = export ] && [ \"$2\" = -o ] || exit 3\n"
                    "mkdir -p \"$3\" && cp -r \"$4/raw\" \"$3/raw\" && echo '{}' > \"$3/metadata.json\" && "
                    "echo 'timestamp_sec,usage_pct,num_blocks,total_blocks' > \"$3/kv_cache_usage.csv\"\n")
    stub.chmod(0o755)
    out = run("""
        import vllm.v1.core.block_pool as bp
        bp.BlockPool(8, False, 16).get_new_blocks(2)
    """, {"VLLM_PROFILING_DIR": str(tmp_path / "prof"), "PROFILEMATE_TRACE_BIN": str(stub)})
    assert out.returncode == 0, out.stderr
    (sess,) = glob.glob(str(tmp_path / "prof" / "session_*"))
    assert sorted(os.listdir(sess)) == ["kv_cache_usage.csv", "metadata.json", "raw"]
    assert len(glob.glob(sess + "/raw/*.pyhook.pmr")) == 1
    assert os.listdir(tmp_path / "prof") == [os.path.basename(sess)]  # temp dirs cleaned up
    assert "session written: %s" % sess in out.stderr
