"""What every benchmark's report says about the machine and its goals."""
import pathlib
import platform


def cpu_model() -> str:
    """The processor's model name (Linux), else the machine type."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.machine()


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
