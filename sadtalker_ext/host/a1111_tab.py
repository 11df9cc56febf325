"""The WebUI adapter's tab callbacks (part of :mod:`sadtalker_ext.host.a1111`, which registers them).

* :func:`on_ui_tabs`: the tab (``sadtalker_ext.ui.tab.build_tab``), or the error tab
  (:func:`sadtalker_ext.frontend.error_tab`) when it cannot be built; never raises;
* "Send to Talking Head": :func:`on_after_component` adds a button after each results panel's "Send to
  extras" button of txt2img/img2img and remembers the gallery and generation info beside it;
  :func:`on_ui_tabs` binds the buttons to the tab's image (through the host's paste-params registry) and
  prompt (:func:`prompt_for_send`, our own click handler).
"""
from __future__ import annotations

import contextlib
import importlib
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

from ..frontend import TAB_ID, error_tab, optional_module

log = logging.getLogger(__name__)



class _SendTo:
    """State of one UI build: the results galleries, generation infos and our buttons."""

    def __init__(self):
        self.galleries: Dict[str, Any] = {}
        self.infotexts: Dict[str, Any] = {}
        self.buttons: List[Tuple[str, Any]] = []

    def clear(self):
        self.__init__()


_SEND_TO = _SendTo()
_SOURCE_TABS = ("txt2img", "img2img")


def _generation_info(generation_info: str) -> dict:
    try:
        info = json.loads(generation_info or "")
    except (ValueError, TypeError):
        return {}
    return info if isinstance(info, dict) else {}


def _first_infotext(generation_info: str) -> str:
    """The infotext of the first image of a generation_info JSON (what the WebUI shows first)."""
    info = _generation_info(generation_info)
    try:
        texts = info.get("infotexts") or []
        first = int(info.get("index_of_first_image", 0) or 0)
        return texts[first] if first < len(texts) else (texts[0] if texts else "")
    except (ValueError, TypeError, AttributeError, IndexError):
        return ""


def prompt_for_send(generation_info: str, gallery_index: Any = -1) -> str:
    """The prompt of the gallery image "Send to Talking Head" sends, from the results' generation_info
    JSON (``all_prompts`` per image; a grid in front counts in ``index_of_first_image``).

    gallery_index: the selected thumbnail (-1 or the grid: the first image). The prompt text is
    returned as it was generated (no infotext parsing); "" when the JSON holds none.
    """
    info = _generation_info(generation_info)
    try:
        index = int(float(gallery_index))
    except (TypeError, ValueError):
        index = -1
    try:
        first = int(info.get("index_of_first_image", 0) or 0)
    except (TypeError, ValueError):
        first = 0
    prompts = info.get("all_prompts")
    if isinstance(prompts, list) and prompts:
        i = index - first if index >= first else 0
        prompt = prompts[i] if i < len(prompts) else prompts[0]
        if isinstance(prompt, str):
            return prompt
    if isinstance(info.get("prompt"), str):
        return info["prompt"]
    text = _first_infotext(generation_info)
    return text.split("\nNegative prompt:")[0].rsplit("\nSteps: ", 1)[0].strip() if text else ""


#: Browser side of our prompt hand-over: the thumbnail selected in the sending tab's gallery.
_SELECTED_INDEX_JS = ("(info, index) => [info, (typeof selected_gallery_index_id === 'function') ? "
                      "selected_gallery_index_id('{tab}_gallery') : -1]")


def _new_button(tab: str):
    kwargs = dict(elem_id=f"{tab}_send_to_{TAB_ID}", tooltip="Send image and prompt to the Talking Head tab.")
    try:
        from modules.ui_components import ToolButton
        return ToolButton("\U0001f5e3\ufe0f", **kwargs)
    except Exception:  # WebUI without ToolButton: a plain small button
        import gradio as gr
        kwargs.pop("tooltip")
        return gr.Button("\U0001f5e3\ufe0f", elem_classes=["tool"], **kwargs)


def on_after_component(component, **kwargs) -> None:
    """Add a "Send to Talking Head" button after each results panel's "Send to extras" button and
    remember the gallery and generation info it sends from (wired in :func:`on_ui_tabs`)."""
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    if not elem_id:
        return
    for tab in _SOURCE_TABS:
        if elem_id == f"{tab}_gallery":
            _SEND_TO.galleries[tab] = component
        elif elem_id == f"{tab}_send_to_extras":
            _SEND_TO.buttons.append((tab, _new_button(tab)))
        elif elem_id == f"generation_info_{tab}":
            _SEND_TO.infotexts[tab] = component


def _hide_send_buttons() -> None:
    for _, button in _SEND_TO.buttons:
        button.visible = False


def _targets(ui) -> Optional[Dict[str, Any]]:
    """``ui.send_to_targets()``: ``{"image": component, "prompt": ..., "negative_prompt": ...,
    "fields": [(component, infotext label), ...]}`` (image required; fields default to the prompts)."""
    func = getattr(ui, "send_to_targets", None)
    targets = func() if callable(func) else None
    return targets if targets and targets.get("image") is not None else None


def _connect_send_to(ui, blocks=None) -> int:
    """Bind our buttons to the tab's image/prompt components; returns how many were bound.

    The image goes through the host's paste-params registry (``register_paste_params_button``, which
    also switches to our tab). The prompt does not: the host's paste handler returns a list of
    updates, and with a single registered field gradio puts that whole list into it (the prompt box
    showed ``[{'value': ..., '__type__': 'generic_update'}]`` on A1111, ``[{'__type__': 'update'}]``
    on Forge). Our own click handler (:func:`prompt_for_send`) fills the prompt box instead; it is
    added inside ``blocks`` (our tab's Blocks: the WebUI calls ``on_ui_tabs`` outside any Blocks and
    merges the tab's events into its page when it renders the tab).
    """
    from ..ui import compat

    targets = _targets(ui)
    if targets is None or not _SEND_TO.buttons:
        _hide_send_buttons()
        return 0
    infotext_utils = optional_module("modules.infotext_utils") or \
        importlib.import_module("modules.generation_parameters_copypaste")
    infotext_utils.add_paste_fields(TAB_ID, targets["image"], [])
    prompt = targets.get("prompt")
    bound = 0
    for tab, button in _SEND_TO.buttons:
        gallery = _SEND_TO.galleries.get(tab)
        if gallery is None:
            button.visible = False
            continue
        infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
            paste_button=button, tabname=TAB_ID, source_image_component=gallery))
        info = _SEND_TO.infotexts.get(tab)
        if prompt is not None and info is not None:
            with (blocks if blocks is not None else contextlib.nullcontext()):
                compat.listen(button.click, prompt_for_send, [info, info], [prompt],
                              js=_SELECTED_INDEX_JS.replace("{tab}", tab), queue=False, show_progress=False)
        bound += 1
    return bound


def _ui_module():
    """The module with ``build_tab`` / ``send_to_targets``: ``sadtalker_ext.ui.tab``."""
    return importlib.import_module("sadtalker_ext.ui.tab")


def on_ui_tabs():
    """The tab (``sadtalker_ext.ui.build_tab``); an error tab when it cannot be built. Never raises."""
    try:
        try:
            from .a1111 import get_host

            ui = _ui_module()
            result = ui.build_tab(get_host())
        except Exception as exc:
            log.exception("sd-talking-head: building the tab failed")
            _hide_send_buttons()
            return [error_tab(exc)]
        tabs = [result] if isinstance(result, tuple) else list(result)
        try:
            _connect_send_to(ui, tabs[0][0])
        except Exception:
            log.exception("sd-talking-head: 'Send to Talking Head' buttons are disabled")
            _hide_send_buttons()
        return tabs
    finally:
        _SEND_TO.clear()
