"""Peak resident memory of a child interpreter, for the tests that bound decoding memory.

`ru_maxrss` is no good for a child of the test run: Linux carries the parent's peak over into a
forked-and-exec'd child (the pytest process, with torch loaded, is past 1 GB), so the child would
report that. `VmHWM` in /proc/self/status belongs to the child's own address space alone.
"""

# Code for the child: defines peak_mib(), the peak resident memory of this process in MiB.
PEAK_MEMORY = """
import resource, sys

def peak_mib():
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
"""
