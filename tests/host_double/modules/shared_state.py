"""Double of ``modules/shared_state.py``: ``State``, the progress of the current job.

``/sdapi/v1/progress`` and ``/internal/progress`` compute progress as
``job_no / job_count + sampling_step / sampling_steps / job_count`` and show ``textinfo`` and
``current_image`` (a PIL image); ``double_progress()`` does the same arithmetic for tests.
"""
import datetime
import time

from modules import devices


class State:
    skipped = False
    interrupted = False
    stopping_generation = False
    job = ""
    job_no = 0
    job_count = 0
    processing_has_refined_job_count = False
    job_timestamp = '0'
    sampling_step = 0
    sampling_steps = 0
    current_latent = None
    current_image = None
    current_image_sampling_step = 0
    id_live_preview = 0
    textinfo = None
    time_start = None
    server_start = None

    def __init__(self):
        self.server_start = time.time()
        self.double_events = []  # ("begin", job) / ("end", job), for tests

    def skip(self):
        self.skipped = True

    def interrupt(self):
        self.interrupted = True

    def stop_generating(self):
        self.stopping_generation = True

    def nextjob(self):
        self.job_no += 1
        self.sampling_step = 0
        self.current_image_sampling_step = 0

    def dict(self):
        return {
            "skipped": self.skipped, "interrupted": self.interrupted,
            "stopping_generation": self.stopping_generation, "job": self.job,
            "job_count": self.job_count, "job_timestamp": self.job_timestamp,
            "job_no": self.job_no, "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def begin(self, job: str = "(unknown)"):
        self.sampling_step = 0
        self.time_start = time.time()
        self.job_count = -1
        self.processing_has_refined_job_count = False
        self.job_no = 0
        self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
        self.current_latent = None
        self.current_image = None
        self.current_image_sampling_step = 0
        self.id_live_preview = 0
        self.skipped = False
        self.interrupted = False
        self.stopping_generation = False
        self.textinfo = None
        self.job = job
        devices.torch_gc()
        self.double_events.append(("begin", job))

    def end(self):
        self.double_events.append(("end", self.job))
        self.job = ""
        self.job_count = 0
        devices.torch_gc()

    def set_current_image(self):
        pass  # the real one decodes current_latent every N steps; there is no latent here

    def do_set_current_image(self):
        pass

    def assign_current_image(self, image):
        self.current_image = image
        self.id_live_preview += 1

    def double_progress(self) -> float:
        """Progress in [0, 1] as the WebUI's progress APIs compute it."""
        progress = 0.0
        if self.job_count > 0:
            progress += self.job_no / self.job_count
            if self.sampling_steps > 0:
                progress += 1 / self.job_count * self.sampling_step / self.sampling_steps
        return min(progress, 1.0)


def api_progress(state) -> tuple:
    """(progress, eta_relative) as v1.10.1's and Forge's ``/sdapi/v1/progress`` compute them
    (``modules/api/api.py``): 0.01 + job_no / job_count + sampling_step / sampling_steps / job_count,
    the ETA from that sum before it is clamped to 1 (so a sum over 1 gives a negative ETA)."""
    import time

    if state.job_count == 0:
        return 0.0, 0.0
    progress = 0.01
    if state.job_count > 0:
        progress += state.job_no / state.job_count
    if state.sampling_steps > 0:
        progress += 1 / state.job_count * state.sampling_step / state.sampling_steps
    elapsed = max(time.time() - (state.time_start or time.time()), 1e-3)
    return min(progress, 1.0), elapsed / progress - elapsed
