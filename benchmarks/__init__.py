"""The project's benchmarks: driver scripts (``python benchmarks/<name>.py``) and the lab package they run."""
