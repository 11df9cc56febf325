"""sd-talking-head: portrait + speech -> talking-head video.

Stage sub-packages, in data-flow order: ``audio`` (decode, VAD, mel, phonemes), ``face`` (landmarks,
alignment, crops), ``motion`` (expression / pose / viseme tracks), ``render`` (frames from motion),
``lipsync`` (Wav2Lip refinement), ``refine`` (img2img refinement), ``io`` (streaming video/audio
writing). ``engines`` bundles motion + renderer behind one interface; ``models`` finds, downloads and
loads checkpoint files; ``host`` adapts to the WebUI; ``ui``, ``api`` and ``cli`` are the front ends.
"""
__version__ = "0.1.0"
