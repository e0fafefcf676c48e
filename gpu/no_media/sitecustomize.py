"""On PYTHONPATH, makes this interpreter lack PyAV and MediaPipe, as the lent GPU machine does (gpu/rehearse.sh)."""

import sys


class _NotOnTheGpuMachine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("av", "mediapipe"):
            raise ModuleNotFoundError(f"No module named {name!r} (the GPU machine has neither PyAV nor MediaPipe)")
        return None


sys.meta_path.insert(0, _NotOnTheGpuMachine())
