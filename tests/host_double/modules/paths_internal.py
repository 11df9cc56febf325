"""Double of ``modules/paths_internal.py``: the WebUI's folders.

``data_path`` comes from ``HOST_DOUBLE_DATA_DIR`` (the tests point it at a temporary folder);
``models_path`` is ``<data_path>/models`` as in the WebUI without ``--models-dir``.
"""
import os
import tempfile

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("HOST_DOUBLE_DATA_DIR") or tempfile.mkdtemp(prefix="host-double-data-")
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
cwd = os.getcwd()
