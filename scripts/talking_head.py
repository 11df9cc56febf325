"""sd-talking-head inside AUTOMATIC1111 WebUI / Forge: registers the tab, settings, API and send-to.

Thin on purpose: everything lives in ``sadtalker_ext`` (``sadtalker_ext.host.a1111``). If even
that cannot be imported, a "Talking Head" tab still appears and shows the error and its fix.
"""
import os
import sys
import traceback

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

try:
    from sadtalker_ext.host import a1111 as _adapter
except Exception as _exc:  # noqa: BLE001 - any failure must still give the user a tab
    _adapter = None
    _error = _exc
    _details = traceback.format_exc()

if _adapter is not None:
    _adapter.register()
else:
    import html

    from modules import script_callbacks

    def _error_tab():
        import gradio as gr

        missing = getattr(_error, "name", None) if isinstance(_error, ImportError) else None
        fix = (f"Install the missing package '{missing}': restart the WebUI so that the extension's "
               f"install.py runs, or run '<webui python> -m pip install {missing}'."
               if missing and not missing.startswith("sadtalker_ext")
               else "Update or reinstall sd-talking-head (Extensions tab) and restart the WebUI.")
        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.HTML(f"<div id='talking_head_error'><h3>Talking Head could not start</h3>"
                    f"<p><b>Error:</b> {html.escape(type(_error).__name__ + ': ' + str(_error))}</p>"
                    f"<p><b>Fix:</b> {html.escape(fix)}</p>"
                    f"<details><summary>Details</summary><pre>{html.escape(_details)}</pre></details></div>")
        return [(blocks, "Talking Head", "talking_head")]

    script_callbacks.on_ui_tabs(_error_tab)
