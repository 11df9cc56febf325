"""The WebUI tab (gradio Blocks shared by AUTOMATIC1111, Forge and the standalone server).

``tab`` builds the Blocks (``build_tab``, ``build_blocks``, ``send_to_targets``) and holds the handlers,
``layout`` its components and events, ``models_panel`` the model panel, ``status`` the status line,
``controls`` derives a control for every generation option, ``compat`` hides the gradio 3.41 / 4.40 differences and
``standalone`` serves the tab without a host. gradio is imported only by ``tab``, ``compat`` and
``standalone``, on use.
"""
