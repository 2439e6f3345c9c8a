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


def print_rows(columns, rows) -> None:
    """A plain-text table: `columns` and then `rows`, each cell left-aligned."""
    widths = [max(len(str(row[i])) for row in (columns, *rows)) for i in range(len(columns))]
    for row in (columns, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
