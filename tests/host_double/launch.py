"""Double of the WebUI's ``launch.py`` (what extensions' install.py files import)."""
from modules import launch_utils

is_installed = launch_utils.is_installed
run_pip = launch_utils.run_pip
double_pip_calls = launch_utils.double_pip_calls
