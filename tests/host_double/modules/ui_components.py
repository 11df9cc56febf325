"""Double of ``modules/ui_components.py``: ``ToolButton``, a small icon button (needs gradio)."""


def __getattr__(name):
    if name != "ToolButton":
        raise AttributeError(name)
    import gradio as gr

    class ToolButton(gr.Button):
        """Small button with a single emoji as text, fits inside gradio forms."""

        def __init__(self, *args, **kwargs):
            classes = kwargs.pop("elem_classes", [])
            kwargs.pop("tooltip", None)  # the WebUI patches gradio 3 components to accept it
            super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    globals()["ToolButton"] = ToolButton
    return ToolButton
