"""Double of ``modules/devices.py`` (only ``torch_gc``, counted)."""
double_gc_calls = 0


def torch_gc():
    global double_gc_calls
    double_gc_calls += 1
