"""Double of ``modules/infotext_utils.py`` (alias ``modules.generation_parameters_copypaste``):
the paste-params ("Send to ...") registry.

A tab that receives images registers its fields with ``add_paste_fields(tabname, init_img,
fields)``; a "Send to" button is bound with ``register_paste_params_button(ParamBinding(...))``;
after all tabs are built the WebUI calls ``connect_paste_params_buttons()``, which needs
``paste_fields[binding.tabname]`` for every binding (a KeyError there breaks the whole UI), wires
the image (``source_image_component`` -> ``init_img``), parses the infotext of
``source_text_component`` into the named fields, and calls the JS function ``switch_to_<tabname>``.
The double records the wiring in ``double_connections`` instead of creating gradio events.
"""
from __future__ import annotations

import sys

sys.modules['modules.generation_parameters_copypaste'] = sys.modules[__name__]


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))

    def __init__(self, component, target, *, api=None):
        super().__init__()
        self.api = api
        self.component = component
        self.label = target if isinstance(target, str) else None
        self.function = target if callable(target) else None


paste_fields: dict = {}
registered_param_bindings: list = []
double_connections: list = []  # dicts describing each wired binding, test-only


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()
    double_connections.clear()


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    if fields:
        for i in range(len(fields)):
            if not isinstance(fields[i], PasteField):
                fields[i] = PasteField(*fields[i])
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding: ParamBinding):
    registered_param_bindings.append(binding)


def parse_generation_parameters(x: str):
    """Prompt, negative prompt and the ``Key: value`` pairs of the last line of an infotext."""
    res = {}
    lines = x.strip().split("\n")
    last = lines[-1] if len(lines) > 1 and lines[-1].count(":") >= 3 else ""
    if last:
        lines = lines[:-1]
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line.strip())
    res["Prompt"] = "\n".join(prompt)
    res["Negative prompt"] = "\n".join(negative)
    for part in last.split(","):
        if ":" in part:
            k, v = part.split(":", 1)
            res[k.strip()] = v.strip()
    return res


def connect_paste_params_buttons():
    for binding in registered_param_bindings:
        destination_image_component = paste_fields[binding.tabname]["init_img"]
        fields = paste_fields[binding.tabname]["fields"]
        double_connections.append({
            "button": binding.paste_button,
            "image": (binding.source_image_component, destination_image_component)
            if binding.source_image_component and destination_image_component else None,
            "text": (binding.source_text_component, fields)
            if binding.source_text_component is not None and fields is not None else None,
            "js": f"switch_to_{binding.tabname}",
        })
