"""Several queue functions in a numbered folder.

Served at POST /01_getting_started/calc/worker/<function>/runsync. Like a script run in this
folder, it imports its sibling `settings` by that name.
"""

from settings import START

from runpod_flash import CpuLiveServerless, remote

calc = CpuLiveServerless(name="dev-app-calc")


@remote(calc)
def add(a: int, b: int = 1) -> int:
    """Add two numbers."""
    return START + a + b


@remote(calc)
def divide(a: float, b: float) -> float:
    """Divide a by b (b = 0 fails)."""
    if b == 0:
        raise ZeroDivisionError(f"cannot divide {a} by zero")
    return a / b
