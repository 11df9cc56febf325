"""Double of ``modules/ui_loadsave.py`` (v1.10.1 and Forge behave alike here): ``ui-config.json``.

After the tabs are built the WebUI walks every component with a label (``add_block``). Under the key
``"<tab path>/<label>/<field>"`` it stores the component's current ``value`` (and ``visible``) the first
time it sees the key, and on every later start puts the stored value back onto the component, over
whatever the extension chose when it built the tab. A component with ``do_not_save_to_config = True``
is left alone. Only the behaviour the extension meets is modelled (value / visible of the common
input components; a Radio or Dropdown value is restored only while it is one of the choices).
"""
from __future__ import annotations

import json
import os


def _choices(component) -> list:
    return [c[0] if isinstance(c, (tuple, list)) else c for c in getattr(component, "choices", None) or []]


class UiLoadsave:
    def __init__(self, filename: str):
        self.filename = filename
        self.ui_settings: dict = {}
        if os.path.exists(filename):
            with open(filename, encoding="utf8") as f:
                self.ui_settings = json.load(f)

    def _field(self, component, key: str, field: str, valid=None) -> None:
        if getattr(component, "do_not_save_to_config", False):
            return
        stored = self.ui_settings.get(key)
        if stored is None:
            self.ui_settings[key] = getattr(component, field)
        elif valid is None or valid(stored):
            setattr(component, field, stored)

    def add_component(self, path: str, x) -> None:
        import gradio as gr

        component = x
        kind = type(component)
        if kind in (gr.Slider, gr.Radio, gr.Checkbox, gr.Textbox, gr.Number, gr.Dropdown) and component.visible:
            self._field(component, f"{path}/visible", "visible")
        if kind in (gr.Radio, gr.Dropdown):
            if getattr(component, "multiselect", False):
                return
            self._field(component, f"{path}/value", "value", lambda v: v in _choices(component))
        elif kind in (gr.Slider, gr.Checkbox, gr.Textbox, gr.Number):
            self._field(component, f"{path}/value", "value")

    def add_block(self, x, path: str = "") -> None:
        block = x
        children = getattr(block, "children", None)
        if children is not None:
            for child in children:
                self.add_block(child, path)
        elif getattr(block, "label", None) is not None:
            self.add_component(f"{path}/{block.label}", block)

    def dump(self) -> None:
        with open(self.filename, "w", encoding="utf8") as f:
            json.dump(self.ui_settings, f, indent=4)
