"""How much memory this process may still take, so that what cannot fit is refused
before it is loaded, with one line that says so, instead of an out-of-memory kill.

The memory available is the least of: the system's MemAvailable (/proc/meminfo), the
room left under the process's memory cgroup limits (containers, `systemd-run -p
MemoryMax=`; v1 and v2), and the room left under its address-space limit (`ulimit -v`).
Where none of them can be read (not Linux), nothing is refused.
"""
import os
import resource

GB = 1e9
# What TensorFlow and Keras take before any data: 0.66 GB measured (import, build the
# compact network, embed a batch) on Linux x86_64 with TensorFlow 2.21.
RESERVE_BYTES = int(0.7 * GB)


class NotEnoughMemory(ValueError):
    """What was asked for cannot fit in the memory available."""


def gigabytes(n_bytes):
    return f"{n_bytes / GB:.1f} GB"


def _read_number(path):
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return None if text == "max" else int(text)


def _stat_value(path, key):
    try:
        with open(path) as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except OSError:
        pass
    return 0


def _meminfo_available():
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cgroup_room():
    """Room under the tightest memory cgroup limit of this process and its parent
    cgroups: limit - usage + the page cache the kernel can drop (inactive files)."""
    try:
        with open("/proc/self/cgroup") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":  # cgroup v2
            base, files = "/sys/fs/cgroup", ("memory.max", "memory.current",
                                             "inactive_file")
        elif "memory" in controllers.split(","):  # cgroup v1
            base, files = "/sys/fs/cgroup/memory", ("memory.limit_in_bytes",
                                                    "memory.usage_in_bytes",
                                                    "total_inactive_file")
        else:
            continue
        limit_file, usage_file, inactive_key = files
        while True:
            folder = os.path.join(base, path.lstrip("/"))
            limit = _read_number(os.path.join(folder, limit_file))
            usage = _read_number(os.path.join(folder, usage_file))
            if limit is not None and usage is not None and limit < 2 ** 62:
                inactive = _stat_value(os.path.join(folder, "memory.stat"), inactive_key)
                rooms.append(limit - usage + inactive)
            if path in ("/", ""):
                break
            path = os.path.dirname(path)
    return min(rooms) if rooms else None


def _address_space_room():
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    return limit - int(line.split()[1]) * 1024
    except OSError:
        pass
    return limit


def available_bytes():
    """The memory this process can still take, or None where it cannot be known."""
    known = [room for room in (_meminfo_available(), _cgroup_room(),
                               _address_space_room()) if room is not None]
    return max(0, min(known)) if known else None


def check_fits(needed, what, fixes, reserve=RESERVE_BYTES):
    """Raise NotEnoughMemory, naming `what` takes `needed` bytes, the memory available
    (less `reserve` for the rest of the process) and `fixes`, when it cannot fit."""
    available = available_bytes()
    if available is not None and needed > available - reserve:
        room = max(0, available - reserve)
        raise NotEnoughMemory(
            f"{what} need {gigabytes(needed)} and {gigabytes(room)} of memory is free "
            f"({gigabytes(available)} available less {gigabytes(reserve)} for "
            f"TensorFlow): {fixes}")
