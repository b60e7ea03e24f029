"""Workers end when their platform does (kill -9 included), so none is left behind."""

from __future__ import annotations

import os
import signal
import threading
import time

CHECK_INTERVAL_S = 1.0


def exit_with_parent() -> None:
    """When the parent process goes away, SIGTERM this worker (its whole process group when
    it leads one, so what it started goes too); every worker mode exits on SIGTERM."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(CHECK_INTERVAL_S)
        if os.getpgid(0) == os.getpid():
            os.killpg(os.getpid(), signal.SIGTERM)
        else:
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="flash-lifeline", daemon=True).start()
