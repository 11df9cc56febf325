"""Double of ``modules/shared_cmd_options.py``: ``cmd_opts``, the parsed command line.

Parsed from no arguments (all defaults); tests set attributes or re-parse after applying an
extension's ``preload(parser)``, as the WebUI does before parsing.
"""
from modules import cmd_args

cmd_opts = cmd_args.parser.parse_args([])
