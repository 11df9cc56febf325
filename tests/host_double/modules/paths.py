"""Double of ``modules/paths.py`` (re-exports the folders of ``paths_internal``)."""
from modules.paths_internal import (  # noqa: F401
    cwd, data_path, default_output_dir, extensions_builtin_dir, extensions_dir, models_path,
    script_path,
)
