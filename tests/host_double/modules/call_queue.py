"""Double of ``modules/call_queue.py``: ``queue_lock`` serialises every GPU job of the WebUI."""
import functools
import threading

queue_lock = threading.Lock()


def wrap_queued_call(func):
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    @functools.wraps(func)
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    @functools.wraps(func)
    def f(*args, **kwargs):
        return func(*args, **kwargs)
    return f
