"""sd-talking-head inside AUTOMATIC1111 WebUI / Forge: registers the tab, settings, API and send-to.

Thin on purpose: everything lives in ``sadtalker_ext`` (``sadtalker_ext.host.a1111``). If even
that cannot be imported, a "Talking Head" tab still appears and shows the error and its fix
(``sadtalker_ext.frontend.error_tab``, which needs the standard library and gradio only).
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:
    from sadtalker_ext.host import a1111 as _adapter
except Exception as _exc:  # noqa: BLE001 - any failure must still give the user a tab
    from modules import script_callbacks

    from sadtalker_ext.frontend import error_tab

    _error = _exc
    script_callbacks.on_ui_tabs(lambda: [error_tab(_error, "could not start")])
else:
    _adapter.register()
