"""A test double of AUTOMATIC1111 WebUI v1.10.1's ``modules`` package (and its ``launch`` module).

Put this folder on ``sys.path`` (``tests/host_double``) and ``import modules.shared`` etc. works as
inside the WebUI, without torch, a Stable Diffusion model or a GPU. Only the surface the extension
uses is provided; every module, class, function and argument name mirrors v1.10.1's
``modules/*.py`` (read from AUTOMATIC1111/stable-diffusion-webui). ``SIGNATURES`` in
``manifest.py`` lists those names; ``tests/test_host_adapter.py`` checks the double against it
always, and against a real WebUI checkout when ``SD_WEBUI_DIR`` points at one.

Test-only additions (not in the WebUI) carry a ``double_`` prefix: ``processing.double_calls``,
``shared.double_reset()``, ``script_callbacks.double_errors``, ``launch.double_pip_calls``.
"""
